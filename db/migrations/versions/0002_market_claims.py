"""market claims: a resolver pass's lease on a due market

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("markets", sa.Column("claimed_by", sa.String(length=128), nullable=True))
    op.add_column(
        "markets", sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("markets", "claim_expires_at")
    op.drop_column("markets", "claimed_by")
