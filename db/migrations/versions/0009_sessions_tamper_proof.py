"""dashboard sessions, login throttling; audit_log append-only; ledger transactions closed at
commit and balanced (issue 15)

The CHECKs list the vocabulary's members as they are at this revision (`services/vocabulary.py`:
SessionEnd, ThrottleScope); a later member needs a migration of its CHECK.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("token_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.CheckConstraint(
            "end_reason IN ('LOGOUT', 'ENDED_BY_ADMIN', 'DEACTIVATED', 'ROLE_CHANGED')",
            name=op.f("ck_dashboard_sessions_end_reason"),
        ),
        sa.CheckConstraint(
            "(ended_at IS NULL) = (end_reason IS NULL)",
            name=op.f("ck_dashboard_sessions_ended_iff_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["dashboard_accounts.id"],
            name=op.f("fk_dashboard_sessions_account_id_dashboard_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_sessions")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_dashboard_sessions_token_sha256")),
    )
    op.create_index(
        "ix_dashboard_sessions_account_id", "dashboard_sessions", ["account_id"], unique=False
    )
    op.create_table(
        "login_throttle",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope IN ('ACCOUNT', 'ADDRESS')", name=op.f("ck_login_throttle_scope")),
        sa.PrimaryKeyConstraint("scope", "subject", name=op.f("pk_login_throttle")),
    )

    # One function refuses every change to an append-only table: the ledger's, now the audit
    # log's too (a correction is a new row, never an edit).
    op.execute("ALTER FUNCTION ledger_refuse_change() RENAME TO refuse_change")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% rows are immutable: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()"
    )

    # A ledger transaction is written whole by one database transaction. Closed: entries are
    # added only by the database transaction that inserted the header (the header's xmin is
    # that transaction's id; once it has committed, no later one matches), checked once per
    # INSERT statement over its new rows. Balanced: when the header's transaction commits, its
    # entries sum to zero (deferred, so the entries may follow the header in any statements).
    # One check per statement and one per header keep a settlement's thousands of entries linear.
    op.execute(
        """
        CREATE FUNCTION ledger_entries_closed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            closed bigint;
        BEGIN
            SELECT t.id INTO closed
              FROM (SELECT DISTINCT transaction_id FROM new_entries) n
              JOIN ledger_transactions t ON t.id = n.transaction_id
             WHERE t.xmin <> pg_current_xact_id()::xid
             LIMIT 1;
            IF closed IS NOT NULL THEN
                RAISE EXCEPTION 'ledger transaction % is closed: entries are added only by the'
                    ' database transaction that created it', closed
                    USING ERRCODE = 'restrict_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_closed AFTER INSERT ON ledger_entries "
        "REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT "
        "EXECUTE FUNCTION ledger_entries_closed()"
    )
    op.execute(
        """
        CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            total numeric;
        BEGIN
            SELECT coalesce(sum(amount), 0) INTO total
              FROM ledger_entries WHERE transaction_id = NEW.id;
            IF total <> 0 THEN
                RAISE EXCEPTION 'ledger transaction % does not balance: its entries sum to %',
                    NEW.id, total
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON "
        "ledger_transactions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        "EXECUTE FUNCTION ledger_transaction_balanced()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_transactions_balanced ON ledger_transactions")
    op.execute("DROP FUNCTION ledger_transaction_balanced()")
    op.execute("DROP TRIGGER ledger_entries_closed ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_closed()")
    op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER audit_log_immutable ON audit_log")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END $$
        """
    )
    op.execute("ALTER FUNCTION refuse_change() RENAME TO ledger_refuse_change")
    op.drop_table("login_throttle")
    op.drop_index("ix_dashboard_sessions_account_id", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
