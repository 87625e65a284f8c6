"""scrape_runs: the usable-snapshot index's predicate is the usable-run rule itself

The partial index was written out by hand without `snapshot_at IS NOT NULL`; it is now built from
`db.rules.usable_run`, the same expression every query uses, so the planner can always use it.
Migrations keep their SQL as written on the day, so the predicate is spelled out here.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USABLE = "status IN ('SUCCESS', 'PARTIAL') AND NOT quarantined"


def _index(predicate: str) -> None:
    op.drop_index("ix_scrape_runs_usable_snapshot", table_name="scrape_runs")
    op.create_index(
        "ix_scrape_runs_usable_snapshot",
        "scrape_runs",
        ["timeframe", "snapshot_at"],
        postgresql_where=sa.text(predicate),
    )


def upgrade() -> None:
    _index(f"{USABLE} AND snapshot_at IS NOT NULL")


def downgrade() -> None:
    _index(USABLE)
