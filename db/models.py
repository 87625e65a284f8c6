"""The whole schema as SQLAlchemy 2 typed models.

The migrations in `db/migrations` are the only way this schema reaches a database; these models
describe it for queries. Money and shares are NUMERIC and `Decimal`; timestamps are timestamptz.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import DOMAIN, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.operators import OperatorClass

from db.rules import usable_run
from services.vocabulary import (
    NON_NEGATIVE_ACCOUNTS,
    SYSTEM_ACCOUNTS,
    AccountKind,
    AlertEvent,
    AlertRule,
    AlertState,
    AttemptResult,
    BetStatus,
    DeliveryStatus,
    IncidentState,
    JobStatus,
    LedgerKind,
    MarketStatus,
    MarketType,
    ProposalKind,
    ProposalStatus,
    Role,
    ScrapeStatus,
    ScrapeTrigger,
    SessionEnd,
    SettlementKind,
    Severity,
    Side,
    ThrottleScope,
    Timeframe,
    TradeAction,
)
from services.vocabulary import sql_in as _in

# Money and shares carry 6 decimals: user inputs are whole cents, but CPMM shares, sale proceeds
# and payouts need finer steps, and every amount a user receives is rounded down to this scale.
MONEY = Numeric(24, 6)
SHARES = Numeric(24, 6)
MONEY_SCALE = 6


class _EnumDomain(DOMAIN):
    """A domain over text that compares as text (SQLAlchemy 2.1's DOMAIN names no operator
    class, and warns at every comparison)."""

    operator_classes = OperatorClass.STRING


_ENUMS: dict[str, _EnumDomain] = {}


def _enum(values: type[StrEnum]) -> _EnumDomain:
    """The type of a column holding a member of `values`: a domain named after the enum
    (`MarketStatus`: `market_status`) whose CHECK lists the members.

    A domain rather than a table CHECK because PostgreSQL re-reads a table's CHECKs from their
    stored text for every statement that writes the table, whatever columns it sets: a bet's
    pool update re-read the market's type, status, outcome and timeframe lists, a sixth of a
    bet's server time. A domain's check is read once per session and runs only when a value is
    stored in the column.
    """
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", values.__name__).lower()
    return _ENUMS.setdefault(
        name, _EnumDomain(name, Text, constraint_name=f"{name}_value", check=_in("VALUE", values))
    )


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def include_in_autogenerate(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's `include_object`: everything but the partitions of a partitioned table
    (`follower_history_202601`, its DEFAULT, their indexes), which migration 0011's functions
    make and the models do not describe."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return not (reflected and (getattr(table, "name", "") or "").startswith("follower_history_"))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: DateTime(timezone=True),
        Decimal: MONEY,
        dict[str, Any]: JSONB,
    }


class User(Base):
    """A user of the market. Their money lives in their USER account."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    bets_count: Mapped[int] = mapped_column(Integer, server_default="0")
    wins: Mapped[int] = mapped_column(Integer, server_default="0")
    profit: Mapped[Decimal] = mapped_column(MONEY, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Account(Base):
    """A ledger account. `balance` is the materialised sum of its ledger entries."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(
            f"NOT {_in('kind', NON_NEGATIVE_ACCOUNTS)} OR balance >= 0", name="balance_nonneg"
        ),
        CheckConstraint(
            f"(kind = '{AccountKind.USER}') = (user_id IS NOT NULL)", name="user_shape"
        ),
        CheckConstraint(
            f"(kind = '{AccountKind.ESCROW}') = (market_id IS NOT NULL)", name="escrow_shape"
        ),
        Index(
            "uq_accounts_system_kind",
            "kind",
            unique=True,
            postgresql_where=text(_in("kind", SYSTEM_ACCOUNTS)),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(_enum(AccountKind))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    market_id: Mapped[int | None] = mapped_column(ForeignKey("markets.id"), unique=True)
    balance: Mapped[Decimal] = mapped_column(MONEY, server_default="0")


class Kol(Base):
    __tablename__ = "kols"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    wallet: Mapped[str] = mapped_column(String(64), unique=True)
    x_handle: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class ScrapeRun(Base):
    __tablename__ = "scrape_runs"
    __table_args__ = (
        CheckConstraint(
            "NOT quarantined OR quarantine_reason IS NOT NULL", name="quarantine_reason"
        ),
        Index("ix_scrape_runs_timeframe_started", "timeframe", "started_at"),
        Index("ix_scrape_runs_status_started", "status", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    timeframe: Mapped[str] = mapped_column(_enum(Timeframe))
    trigger: Mapped[str] = mapped_column(_enum(ScrapeTrigger))
    source_url: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[dt.datetime | None]
    # When the rows were read off the page: the time the snapshot describes.
    snapshot_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(
        _enum(ScrapeStatus), server_default=ScrapeStatus.RUNNING.value
    )
    rows_found: Mapped[int] = mapped_column(Integer, server_default="0")
    rows_stored: Mapped[int] = mapped_column(Integer, server_default="0")
    rows_rejected: Mapped[int] = mapped_column(Integer, server_default="0")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    html_path: Mapped[str | None] = mapped_column(Text)
    screenshot_path: Mapped[str | None] = mapped_column(Text)
    quarantined: Mapped[bool] = mapped_column(Boolean, server_default="false")
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    quarantined_by: Mapped[str | None] = mapped_column(String(64))
    quarantined_at: Mapped[dt.datetime | None]


# The resolver's and generator's look-up of usable snapshots per timeframe.
Index(
    "ix_scrape_runs_usable_snapshot",
    ScrapeRun.timeframe,
    ScrapeRun.snapshot_at,
    postgresql_where=usable_run(ScrapeRun.__table__.c),
)


class ScrapedKol(Base):
    """One KOL's normalised numbers in one scrape run."""

    __tablename__ = "scraped_kols"
    __table_args__ = (
        CheckConstraint("rank >= 1", name="rank_pos"),
        CheckConstraint("wins >= 0 AND losses >= 0", name="record_nonneg"),
        UniqueConstraint("run_id", "wallet", name="uq_scraped_kols_run_wallet"),
        Index("ix_scraped_kols_wallet_scraped", "wallet", "scraped_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("scrape_runs.id", ondelete="CASCADE"))
    kol_id: Mapped[int | None] = mapped_column(ForeignKey("kols.id"))
    rank: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(Text)
    wallet: Mapped[str] = mapped_column(String(64))
    x_handle: Mapped[str | None] = mapped_column(String(32))
    wins: Mapped[int] = mapped_column(Integer)
    losses: Mapped[int] = mapped_column(Integer)
    sol_gain: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    usd_gain: Mapped[Decimal] = mapped_column(Numeric(24, 2))
    timeframe: Mapped[str] = mapped_column(String(16))
    scraped_at: Mapped[dt.datetime]


class ScrapeReject(Base):
    """A scraped row that could not be parsed: kept raw with the reason, never stored as zeros."""

    __tablename__ = "scrape_rejects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("scrape_runs.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    raw: Mapped[dict[str, Any]]
    field: Mapped[str | None] = mapped_column(String(32))
    reason_code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)


class FollowerCache(Base):
    __tablename__ = "follower_cache"
    __table_args__ = (CheckConstraint("followers >= 0", name="followers_nonneg"),)

    handle: Mapped[str] = mapped_column(String(32), primary_key=True)  # lower-cased
    x_user_id: Mapped[str | None] = mapped_column(String(32))
    followers: Mapped[int] = mapped_column(BigInteger)
    fetched_at: Mapped[dt.datetime]


class FollowerHistory(Base):
    """Partitioned by month on `fetched_at` (migration 0011), hence the two-column key."""

    __tablename__ = "follower_history"
    __table_args__ = (
        Index("ix_follower_history_handle_fetched", "handle", "fetched_at"),
        {"postgresql_partition_by": "RANGE (fetched_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    handle: Mapped[str] = mapped_column(String(32))
    followers: Mapped[int] = mapped_column(BigInteger)
    fetched_at: Mapped[dt.datetime] = mapped_column(primary_key=True)


class XApiState(Base):
    """The X API's last known rate-limit budget and health, for the dashboard (one row/endpoint)."""

    __tablename__ = "x_api_state"

    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    limit: Mapped[int | None] = mapped_column(Integer)
    remaining: Mapped[int | None] = mapped_column(Integer)
    reset_at: Mapped[dt.datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Market(Base):
    __tablename__ = "markets"
    __table_args__ = (
        CheckConstraint(
            f"(status = '{MarketStatus.RESOLVED}') = (outcome IS NOT NULL)",
            name="outcome_iff_resolved",
        ),
        CheckConstraint(
            f"(status = '{MarketStatus.CANCELLED}') = (cancel_reason IS NOT NULL)",
            name="reason_iff_cancelled",
        ),
        CheckConstraint("closes_at > opens_at", name="closes_after_opens"),
        CheckConstraint("pool_yes > 0 AND pool_no > 0", name="pools_pos"),
        Index("ix_markets_status_closes_at", "status", "closes_at"),
        # One open market per question, so generation never duplicates.
        Index(
            "uq_markets_open_question",
            "question_key",
            unique=True,
            postgresql_where=text(f"status = '{MarketStatus.OPEN}'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(_enum(MarketType))
    title: Mapped[str] = mapped_column(Text)
    question_key: Mapped[str] = mapped_column(Text)
    kol_a_id: Mapped[int] = mapped_column(ForeignKey("kols.id"))
    kol_b_id: Mapped[int | None] = mapped_column(ForeignKey("kols.id"))
    timeframe: Mapped[str | None] = mapped_column(_enum(Timeframe))
    threshold: Mapped[Decimal | None] = mapped_column(Numeric(24, 6))
    target_rank: Mapped[int | None] = mapped_column(Integer)
    baseline: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    opens_at: Mapped[dt.datetime]
    closes_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(_enum(MarketStatus), server_default=MarketStatus.OPEN.value)
    outcome: Mapped[str | None] = mapped_column(_enum(Side))
    cancel_reason: Mapped[str | None] = mapped_column(String(64))
    cancel_detail: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[dt.datetime | None]
    cancelled_at: Mapped[dt.datetime | None]
    pool_yes: Mapped[Decimal] = mapped_column(SHARES)
    pool_no: Mapped[Decimal] = mapped_column(SHARES)
    liquidity: Mapped[Decimal] = mapped_column(MONEY)
    # Set when the system could neither settle nor cancel: an operator must look.
    # A resolver pass's lease on this market, so overlapping sweeps do not duplicate work; the
    # settlement re-checks status under the row lock, so an expired lease can never double pay.
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_expires_at: Mapped[dt.datetime | None]
    needs_attention: Mapped[bool] = mapped_column(Boolean, server_default="false")
    attention_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    # An operator's hold (issue 17; `db.rules.held`), and the time earlier holds stopped the
    # grace clock after the close (`db.rules.grace_ends`).
    held_at: Mapped[dt.datetime | None]
    held_by: Mapped[str | None] = mapped_column(String(64))
    hold_reason: Mapped[str | None] = mapped_column(Text)
    held_for: Mapped[dt.timedelta] = mapped_column(Interval, server_default=text("interval '0'"))


class Bet(Base):
    """One trade. BUY: `amount` is what the user paid, fee included. SELL: what they received."""

    __tablename__ = "bets"
    __table_args__ = (
        CheckConstraint("amount > 0 AND fee >= 0 AND shares > 0", name="amounts_pos"),
        Index("ix_bets_market_user_side", "market_id", "user_id", "side", "action", "id"),
        Index("ix_bets_user_id", "user_id"),
        # A caller's key for one bet request: retrying it can never place the bet twice.
        Index(
            "uq_bets_user_request_key",
            "user_id",
            "request_key",
            unique=True,
            postgresql_where=text("request_key IS NOT NULL"),
        ),
        {"postgresql_with": {"fillfactor": 90}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    market_id: Mapped[int] = mapped_column(ForeignKey("markets.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    side: Mapped[str] = mapped_column(_enum(Side))
    action: Mapped[str] = mapped_column(_enum(TradeAction))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    fee: Mapped[Decimal] = mapped_column(MONEY)
    shares: Mapped[Decimal] = mapped_column(SHARES)
    price_before: Mapped[Decimal] = mapped_column(Numeric(12, 8))
    price_after: Mapped[Decimal] = mapped_column(Numeric(12, 8))
    status: Mapped[str] = mapped_column(_enum(BetStatus), server_default=BetStatus.OPEN.value)
    payout: Mapped[Decimal | None] = mapped_column(MONEY)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    request_key: Mapped[str | None] = mapped_column(Text)
    max_slippage: Mapped[Decimal | None] = mapped_column(Numeric())


class Position(Base):
    """A user's holding on one side of one market, kept by bet placement."""

    __tablename__ = "positions"
    __table_args__ = (
        CheckConstraint("shares >= 0 AND paid_in >= 0 AND received >= 0", name="nonneg"),
        Index("ix_positions_market_id", "market_id"),
        {"postgresql_with": {"fillfactor": 90}},
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    market_id: Mapped[int] = mapped_column(ForeignKey("markets.id"), primary_key=True)
    side: Mapped[str] = mapped_column(_enum(Side), primary_key=True)
    shares: Mapped[Decimal] = mapped_column(SHARES, server_default="0")
    # Money put in (fees included) and taken out by selling: what a refund is computed from.
    paid_in: Mapped[Decimal] = mapped_column(MONEY, server_default="0")
    received: Mapped[Decimal] = mapped_column(MONEY, server_default="0")
    payout: Mapped[Decimal | None] = mapped_column(MONEY)


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"
    __table_args__ = (Index("ix_ledger_transactions_market_id", "market_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(_enum(LedgerKind))
    market_id: Mapped[int | None] = mapped_column(ForeignKey("markets.id"))
    bet_id: Mapped[int | None] = mapped_column(ForeignKey("bets.id"))
    actor: Mapped[str] = mapped_column(String(64))
    memo: Mapped[str | None] = mapped_column(Text)
    reverses_transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id")
    )
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class LedgerEntry(Base):
    """One signed movement on one account: positive adds to the account's balance."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_nonzero"),
        Index("ix_ledger_entries_account_id", "account_id"),
        Index("ix_ledger_entries_transaction_id", "transaction_id"),
        # An entry is reversed at most once. Only reversal entries carry the column, so the
        # index skips the rest: nothing to write for the entries every bet adds.
        Index(
            "uq_ledger_entries_reverses_entry_id",
            "reverses_entry_id",
            unique=True,
            postgresql_where=text("reverses_entry_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    reverses_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))


class Settlement(Base):
    """Each settle or refund of a market; at most one is active per market."""

    __tablename__ = "settlements"
    __table_args__ = (
        CheckConstraint(
            f"(kind = '{SettlementKind.SETTLE}') = (outcome IS NOT NULL)", name="outcome_iff_settle"
        ),
        CheckConstraint("active OR reversed_at IS NOT NULL", name="inactive_means_reversed"),
        Index(
            "uq_settlements_active_market",
            "market_id",
            unique=True,
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    market_id: Mapped[int] = mapped_column(ForeignKey("markets.id"), index=True)
    kind: Mapped[str] = mapped_column(_enum(SettlementKind))
    outcome: Mapped[str | None] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    reversed_at: Mapped[dt.datetime | None]
    reversal_transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id")
    )


class ResolutionAttempt(Base):
    __tablename__ = "resolution_attempts"
    __table_args__ = (
        Index("ix_resolution_attempts_market_started", "market_id", "started_at"),
        Index("ix_resolution_attempts_started", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    market_id: Mapped[int] = mapped_column(ForeignKey("markets.id"))
    trigger: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime]
    result: Mapped[str] = mapped_column(_enum(AttemptResult))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # The settlement this attempt decided (written in its transaction): which evidence the
    # active settlement of a market rests on (issue 17, `services/ops/reevaluation.py`).
    settlement_id: Mapped[int | None] = mapped_column(ForeignKey("settlements.id"), index=True)


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        Index("ix_job_runs_job_started", "job", "started_at"),
        Index("ix_job_runs_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(_enum(JobStatus), server_default=JobStatus.RUNNING.value)
    counts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)


class SchedulerInstance(Base):
    """A scheduler process's heartbeat; the leader is the one holding the advisory lock."""

    __tablename__ = "scheduler_instances"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:start
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    heartbeat_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    is_leader: Mapped[bool] = mapped_column(Boolean, server_default="false")
    stopped_at: Mapped[dt.datetime | None]


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    username: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(16))  # a vocabulary.Result
    detail: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class DashboardAccount(Base):
    __tablename__ = "dashboard_accounts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(_enum(Role))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_login_at: Mapped[dt.datetime | None]
    # Single sign-on (issue 15, migration 0012): the verified email an identity provider vouches
    # for that signs in as this account; one account per email, whatever its case.
    sso_email: Mapped[str | None] = mapped_column(Text)


Index(
    "uq_dashboard_accounts_sso_email",
    func.lower(DashboardAccount.sso_email),
    unique=True,
)

# -- alerts, deliveries and incidents (migration 0008) --------------------------------------------


class Alert(Base):
    """One condition of one rule from the evaluation that saw it start to the one that saw it
    end. At most one FIRING alert per (rule, key); `key` names the subject ('daily', a job)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(
            f"(state = '{AlertState.RESOLVED}') = (resolved_at IS NOT NULL)",
            name="resolved_iff_at",
        ),
        Index(
            "uq_alerts_firing_rule_key",
            "rule",
            "key",
            unique=True,
            postgresql_where=text(f"state = '{AlertState.FIRING}'"),
        ),
        Index("ix_alerts_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rule: Mapped[str] = mapped_column(_enum(AlertRule))
    key: Mapped[str] = mapped_column(String(128), server_default="")
    severity: Mapped[str] = mapped_column(_enum(Severity))
    state: Mapped[str] = mapped_column(_enum(AlertState), server_default=AlertState.FIRING.value)
    summary: Mapped[str] = mapped_column(Text)
    # What it is about: {"markets": [ids], "runs": [ids], "jobs": [names], "endpoints": [...]}.
    subjects: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    resolved_at: Mapped[dt.datetime | None]
    # When channels were last told it fires (FIRING or REMINDER); NULL while muted from the start.
    notified_at: Mapped[dt.datetime | None]


class AlertEventRow(Base):
    """Something that happened to an alert; a non-muted one is queued to every channel."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_alert_id", "alert_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    kind: Mapped[str] = mapped_column(_enum(AlertEvent))
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    muted: Mapped[bool] = mapped_column(Boolean, server_default="false")
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)


class AlertDelivery(Base):
    """One event's message to one channel, and its attempts."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        Index("ix_alert_deliveries_event_id", "event_id"),
        Index(
            "ix_alert_deliveries_pending",
            "next_attempt_at",
            postgresql_where=text(f"status = '{DeliveryStatus.PENDING}'"),
        ),
        Index(
            "ix_alert_deliveries_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id"))
    # The channel's URL with its secrets masked (apprise's privacy form).
    channel: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        _enum(DeliveryStatus), server_default=DeliveryStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[dt.datetime | None]


class AlertEvaluation(Base):
    """One evaluation of every rule: what held, and what changed."""

    __tablename__ = "alert_evaluations"
    __table_args__ = (Index("ix_alert_evaluations_started_at", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[dt.datetime | None]
    evaluator: Mapped[str] = mapped_column(String(255))
    # "rule:key" of every condition that held, and the counts of what changed.
    conditions: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    counts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)


class AlertMute(Base):
    """A window during which a rule's alerts still open incidents but send nothing."""

    __tablename__ = "alert_mutes"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ends_after_starts"),
        Index("ix_alert_mutes_rule_ends", "rule", "ends_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rule: Mapped[str] = mapped_column(_enum(AlertRule))
    starts_at: Mapped[dt.datetime]
    ends_at: Mapped[dt.datetime]
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Incident(Base):
    """A firing alert in the inbox: acknowledged, assigned, and closed when the alert resolves."""

    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint(
            f"(state = '{IncidentState.CLOSED}') = (closed_at IS NOT NULL)", name="closed_iff_at"
        ),
        CheckConstraint(
            f"state <> '{IncidentState.ACKNOWLEDGED}' OR acknowledged_at IS NOT NULL",
            name="acknowledged_has_at",
        ),
        Index("ix_incidents_state_opened", "state", "opened_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), unique=True)
    state: Mapped[str] = mapped_column(
        _enum(IncidentState), server_default=IncidentState.OPEN.value
    )
    opened_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    closed_at: Mapped[dt.datetime | None]
    assignee: Mapped[str | None] = mapped_column(String(64))
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[dt.datetime | None]
    ack_comment: Mapped[str | None] = mapped_column(Text)


# -- dashboard sessions and login throttling (migration 0009, issue 15) ----------------------------


class DashboardSession(Base):
    """One login of one dashboard account. The browser holds the token in a cookie; only its
    SHA-256 is stored, so a copy of this table opens nothing."""

    __tablename__ = "dashboard_sessions"
    __table_args__ = (
        CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ended_iff_reason"),
        Index("ix_dashboard_sessions_account_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("dashboard_accounts.id"))
    token_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    end_reason: Mapped[str | None] = mapped_column(_enum(SessionEnd))


class LoginThrottle(Base):
    """Recent failed logins of one username or one client address (ThrottleScope)."""

    __tablename__ = "login_throttle"

    scope: Mapped[str] = mapped_column(_enum(ThrottleScope), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[dt.datetime]
    locked_until: Mapped[dt.datetime | None]


# -- interventions at scale (issue 17) ------------------------------------------------------------


class Proposal(Base):
    """A money action above the approval thresholds, waiting for a second operator: exactly what
    it will do (`items`, each market with the state it was previewed in), and how it ended."""

    __tablename__ = "proposals"
    __table_args__ = (
        CheckConstraint("expires_at > proposed_at", name="expires_after_proposed"),
        # The second pair of eyes, enforced by the database too.
        CheckConstraint("decided_by IS NULL OR decided_by <> proposed_by", name="other_decider"),
        CheckConstraint(
            f"(status IN ('{ProposalStatus.APPROVED}', '{ProposalStatus.REJECTED}'))"
            " = (decided_by IS NOT NULL)",
            name="decided_iff_decider",
        ),
        Index("ix_proposals_status_expires", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(_enum(ProposalKind))
    status: Mapped[str] = mapped_column(
        _enum(ProposalStatus), server_default=ProposalStatus.PENDING.value
    )
    reason: Mapped[str] = mapped_column(Text)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    markets: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    proposed_by: Mapped[str] = mapped_column(String(64))
    proposed_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[dt.datetime]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime | None]
    decision_note: Mapped[str | None] = mapped_column(Text)
    results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)


# -- incremental integrity (migration 0011) -------------------------------------------------------


class IntegrityPending(Base):
    """A ledger transaction not yet verified by the periodic integrity check; a trigger on
    `ledger_transactions` inserts it, the check deletes it once verified."""

    __tablename__ = "integrity_pending"

    transaction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class IntegrityAccountMark(Base):
    """An account's balance as the periodic integrity check last verified it."""

    __tablename__ = "integrity_account_marks"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(MONEY)
