"""bets: an optional caller-supplied request key, unique per user, and the slippage limit

A caller whose connection broke while committing cannot tell whether its bet was placed; with a
request key, retrying returns the original bet instead of placing a second one (a retry is the
same request when its market, side, action, amount and slippage limit are the bet's). Only keyed
bets are indexed, so unkeyed placement writes nothing more.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bets", sa.Column("request_key", sa.Text(), nullable=True))
    op.add_column("bets", sa.Column("max_slippage", sa.Numeric(), nullable=True))
    op.create_index(
        "uq_bets_user_request_key",
        "bets",
        ["user_id", "request_key"],
        unique=True,
        postgresql_where=sa.text("request_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_bets_user_request_key", table_name="bets")
    op.drop_column("bets", "max_slippage")
    op.drop_column("bets", "request_key")
