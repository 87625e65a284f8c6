"""scrape_runs: a partial index of usable snapshots, the resolver's and dashboard's lookup

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_scrape_runs_usable_snapshot",
        "scrape_runs",
        ["timeframe", "snapshot_at"],
        postgresql_where=sa.text("status IN ('SUCCESS', 'PARTIAL') AND NOT quarantined"),
    )


def downgrade() -> None:
    op.drop_index("ix_scrape_runs_usable_snapshot", table_name="scrape_runs")
