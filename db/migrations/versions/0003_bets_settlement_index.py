"""bets: an index that presents a market's bets by user and side for set-based settlement;
fillfactor on bets and positions so settlement's status/payout updates stay HOT

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Leads with market_id, so it also serves every lookup the old market_id index did.
    op.create_index(
        "ix_bets_market_user_side", "bets", ["market_id", "user_id", "side", "action", "id"]
    )
    op.drop_index("ix_bets_market_id", table_name="bets")
    op.execute("ALTER TABLE bets SET (fillfactor = 90)")
    op.execute("ALTER TABLE positions SET (fillfactor = 90)")


def downgrade() -> None:
    op.execute("ALTER TABLE positions RESET (fillfactor)")
    op.execute("ALTER TABLE bets RESET (fillfactor)")
    op.create_index("ix_bets_market_id", "bets", ["market_id"])
    op.drop_index("ix_bets_market_user_side", table_name="bets")
