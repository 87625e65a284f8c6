"""ledger_entries: the at-most-once-reversed index covers reversal entries only

Every bet writes ledger entries that reverse nothing; a unique constraint on reverses_entry_id
indexed each of their NULLs for no purpose. A partial unique index enforces the same rule.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("uq_ledger_entries_reverses_entry_id", "ledger_entries", type_="unique")
    op.create_index(
        "uq_ledger_entries_reverses_entry_id",
        "ledger_entries",
        ["reverses_entry_id"],
        unique=True,
        postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_ledger_entries_reverses_entry_id", table_name="ledger_entries")
    op.create_unique_constraint(
        "uq_ledger_entries_reverses_entry_id", "ledger_entries", ["reverses_entry_id"]
    )
