"""alerts, their events and deliveries, evaluations, mute windows and incidents (issue 18)

The CHECKs list the vocabulary's members as they are at this revision (`services/vocabulary.py`:
AlertRule, Severity, AlertState, AlertEvent, DeliveryStatus, IncidentState); a later member needs
a migration of its CHECK.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RULES = (
    "'markets_cancelled', 'markets_overdue', 'markets_need_attention', 'scrape_failing', "
    "'scrape_rows_dropped', 'scrape_rejects_jumped', 'scrape_handles_missing', 'scrape_stale', "
    "'x_api_failing', 'x_api_budget_exhausted', 'follower_counts_missing', 'leader_missing', "
    "'job_failing', 'integrity_violation'"
)


def _now() -> sa.TextClause:
    return sa.text("now()")


def _jsonb(name: str) -> sa.Column:
    return sa.Column(
        name,
        postgresql.JSONB(astext_type=sa.Text()),
        server_default=sa.text("'{}'::jsonb"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), server_default="", nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="FIRING", nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        _jsonb("subjects"),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"rule IN ({RULES})", name=op.f("ck_alerts_rule")),
        sa.CheckConstraint("severity IN ('critical', 'warning')", name=op.f("ck_alerts_severity")),
        sa.CheckConstraint("state IN ('FIRING', 'RESOLVED')", name=op.f("ck_alerts_state")),
        sa.CheckConstraint(
            "(state = 'RESOLVED') = (resolved_at IS NOT NULL)",
            name=op.f("ck_alerts_resolved_iff_at"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "uq_alerts_firing_rule_key",
        "alerts",
        ["rule", "key"],
        unique=True,
        postgresql_where=sa.text("state = 'FIRING'"),
    )
    op.create_index("ix_alerts_started_at", "alerts", ["started_at"])

    op.create_table(
        "alert_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("muted", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('FIRING', 'REMINDER', 'RESOLVED')", name=op.f("ck_alert_events_kind")
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_events_alert_id_alerts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
    )
    op.create_index("ix_alert_events_alert_id", "alert_events", ["alert_id"])

    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('PENDING', 'SENT', 'FAILED')", name=op.f("ck_alert_deliveries_status")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["alert_events.id"],
            name=op.f("fk_alert_deliveries_event_id_alert_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    op.create_index("ix_alert_deliveries_event_id", "alert_deliveries", ["event_id"])
    op.create_index(
        "ix_alert_deliveries_pending",
        "alert_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )

    op.create_table(
        "alert_evaluations",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evaluator", sa.String(length=255), nullable=False),
        _jsonb("conditions"),
        _jsonb("counts"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_evaluations")),
    )
    op.create_index("ix_alert_evaluations_started_at", "alert_evaluations", ["started_at"])

    op.create_table(
        "alert_mutes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(f"rule IN ({RULES})", name=op.f("ck_alert_mutes_rule")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_alert_mutes_ends_after_starts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_mutes")),
    )
    op.create_index("ix_alert_mutes_rule_ends", "alert_mutes", ["rule", "ends_at"])

    op.create_table(
        "incidents",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="OPEN", nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('OPEN', 'ACKNOWLEDGED', 'CLOSED')", name=op.f("ck_incidents_state")
        ),
        sa.CheckConstraint(
            "(state = 'CLOSED') = (closed_at IS NOT NULL)", name=op.f("ck_incidents_closed_iff_at")
        ),
        sa.CheckConstraint(
            "state <> 'ACKNOWLEDGED' OR acknowledged_at IS NOT NULL",
            name=op.f("ck_incidents_acknowledged_has_at"),
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_incidents_alert_id_alerts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint("alert_id", name=op.f("uq_incidents_alert_id")),
    )
    op.create_index("ix_incidents_state_opened", "incidents", ["state", "opened_at"])


def downgrade() -> None:
    op.drop_table("incidents")
    op.drop_table("alert_mutes")
    op.drop_table("alert_evaluations")
    op.drop_table("alert_deliveries")
    op.drop_table("alert_events")
    op.drop_table("alerts")
