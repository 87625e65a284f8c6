"""the ledger's closed and balanced checks always read by key (issue 15)

A session plans a trigger's queries once and keeps the plans until a table's statistics change.
Planned right after autovacuum first analyzed a young ledger (one page, where reading the table
whole is cheapest), the checks read the whole ledger on every post until the next analyze: bet
placement went from 0.8 to 1.7 ms of server time within a minute of betting. Both checks look
rows up by key, which is right at every size, so their functions plan without sequential scans.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECKS = ("ledger_entries_closed()", "ledger_transaction_balanced()")


def upgrade() -> None:
    for function in _CHECKS:
        op.execute(f"ALTER FUNCTION {function} SET enable_seqscan = off")


def downgrade() -> None:
    for function in _CHECKS:
        op.execute(f"ALTER FUNCTION {function} RESET enable_seqscan")
