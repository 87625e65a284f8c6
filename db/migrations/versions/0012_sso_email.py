"""single sign-on: an account's SSO email (issue 15)

- `dashboard_accounts.sso_email`: the verified email an OIDC identity provider vouches for that
  signs in as the account; unique whatever its case (an index on lower(sso_email)).
- `dashboard_sessions.end_reason` gains SSO_CHANGED (the account's SSO email was changed, so
  the sessions it opened end). The CHECK lists SessionEnd as it is at this revision.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_END_REASONS = ("LOGOUT", "ENDED_BY_ADMIN", "DEACTIVATED", "ROLE_CHANGED")


def _end_reason_check(reasons: tuple[str, ...]) -> None:
    op.drop_constraint(
        op.f("ck_dashboard_sessions_end_reason"), "dashboard_sessions", type_="check"
    )
    listed = ", ".join(f"'{r}'" for r in reasons)
    op.create_check_constraint(
        op.f("ck_dashboard_sessions_end_reason"),
        "dashboard_sessions",
        f"end_reason IN ({listed})",
    )


def upgrade() -> None:
    op.add_column("dashboard_accounts", sa.Column("sso_email", sa.Text(), nullable=True))
    op.create_index(
        "uq_dashboard_accounts_sso_email",
        "dashboard_accounts",
        [sa.text("lower(sso_email)")],
        unique=True,
    )
    _end_reason_check((*_END_REASONS, "SSO_CHANGED"))


def downgrade() -> None:
    op.execute(
        "UPDATE dashboard_sessions SET end_reason = 'ENDED_BY_ADMIN'"
        " WHERE end_reason = 'SSO_CHANGED'"
    )
    _end_reason_check(_END_REASONS)
    op.drop_index("uq_dashboard_accounts_sso_email", table_name="dashboard_accounts")
    op.drop_column("dashboard_accounts", "sso_email")
