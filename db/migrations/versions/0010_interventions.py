"""interventions at scale (issue 17): a hold on a market, the settlement each resolution attempt
decided, proposals waiting for a second operator's approval, and the alert rule that says so

The CHECKs list the vocabulary's members as they are at this revision (`services/vocabulary.py`:
ProposalKind, ProposalStatus, AlertRule); a later member needs a migration of its CHECK.

Existing attempts are linked to the settlement they made: the resolver settles a market at most
once (only an OPEN market), and writes its RESOLVED attempt only with that settlement.

Revision ID: 0010
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "'cancel_and_refund', 'resettle', 'bulk_cancel', 'apply_reevaluation'"
STATUSES = "'PENDING', 'APPROVED', 'REJECTED', 'EXPIRED'"
RULES_0008 = (
    "'markets_cancelled', 'markets_overdue', 'markets_need_attention', 'scrape_failing', "
    "'scrape_rows_dropped', 'scrape_rejects_jumped', 'scrape_handles_missing', 'scrape_stale', "
    "'x_api_failing', 'x_api_budget_exhausted', 'follower_counts_missing', 'leader_missing', "
    "'job_failing', 'integrity_violation'"
)
RULES = RULES_0008 + ", 'approvals_waiting'"
RULE_TABLES = ("alerts", "alert_mutes")


def _rule_check(rules: str, *, keep_history: bool = False) -> None:
    # Downgrading keeps the alerts already recorded under the newer rule (NOT VALID: only new
    # rows are checked) rather than deleting history.
    for table in RULE_TABLES:
        op.drop_constraint(op.f(f"ck_{table}_rule"), table, type_="check")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_rule CHECK (rule IN ({rules}))"
            + (" NOT VALID" if keep_history else "")
        )


def upgrade() -> None:
    op.add_column("markets", sa.Column("held_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("markets", sa.Column("held_by", sa.String(length=64), nullable=True))
    op.add_column("markets", sa.Column("hold_reason", sa.Text(), nullable=True))
    op.add_column(
        "markets",
        sa.Column(
            "held_for", sa.Interval(), server_default=sa.text("interval '0'"), nullable=False
        ),
    )

    op.add_column("resolution_attempts", sa.Column("settlement_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_resolution_attempts_settlement_id_settlements"),
        "resolution_attempts",
        "settlements",
        ["settlement_id"],
        ["id"],
    )
    op.create_index(
        op.f("ix_resolution_attempts_settlement_id"), "resolution_attempts", ["settlement_id"]
    )
    op.execute(
        "UPDATE resolution_attempts a SET settlement_id = s.id FROM settlements s"
        " WHERE s.market_id = a.market_id AND s.kind = 'SETTLE' AND s.actor = 'resolver'"
        " AND a.result IN ('RESOLVED_YES', 'RESOLVED_NO') AND s.outcome = substr(a.result, 10)"
    )

    op.create_table(
        "proposals",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="PENDING", nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("items", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("markets", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("proposed_by", sa.String(length=64), nullable=False),
        sa.Column(
            "proposed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("results", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f("ck_proposals_kind")),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_proposals_status")),
        sa.CheckConstraint(
            "expires_at > proposed_at", name=op.f("ck_proposals_expires_after_proposed")
        ),
        sa.CheckConstraint(
            "decided_by IS NULL OR decided_by <> proposed_by",
            name=op.f("ck_proposals_other_decider"),
        ),
        sa.CheckConstraint(
            "(status IN ('APPROVED', 'REJECTED')) = (decided_by IS NOT NULL)",
            name=op.f("ck_proposals_decided_iff_decider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proposals")),
    )
    op.create_index("ix_proposals_status_expires", "proposals", ["status", "expires_at"])
    _rule_check(RULES)


def downgrade() -> None:
    _rule_check(RULES_0008, keep_history=True)
    op.drop_index("ix_proposals_status_expires", table_name="proposals")
    op.drop_table("proposals")
    op.drop_index(op.f("ix_resolution_attempts_settlement_id"), table_name="resolution_attempts")
    op.drop_constraint(
        op.f("fk_resolution_attempts_settlement_id_settlements"),
        "resolution_attempts",
        type_="foreignkey",
    )
    op.drop_column("resolution_attempts", "settlement_id")
    for column in ("held_for", "hold_reason", "held_by", "held_at"):
        op.drop_column("markets", column)
