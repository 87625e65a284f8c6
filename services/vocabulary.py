"""The product's vocabulary: every closed set of terms, defined once (pure; no I/O).

The database's CHECK constraints (`db/models.py`), the SQL the services write, the pages' choices
and the tests all derive from these enums. A member's value is stored in the database, so it
never changes once released; adding a member needs a migration of the CHECK that lists them.
"""

from __future__ import annotations

from enum import StrEnum


class Timeframe(StrEnum):
    """A kolscan leaderboard's period."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    @property
    def days(self) -> int:
        """How many days the board covers; also how long a generated market lasts."""
        return {"daily": 1, "weekly": 7, "monthly": 30}[self.value]

    @property
    def kolscan_param(self) -> str:
        """kolscan.io's `?timeframe=N` names a board by its number of days."""
        return str(self.days)


class MarketType(StrEnum):
    """The twelve questions a market can ask (PRODUCT.md section 2)."""

    RANK_FLIPPENING = "rank_flippening"
    PROFIT_STREAK = "profit_streak"
    FOLLOWER_GROWTH = "follower_growth"
    SOL_GAIN_FLIPPENING = "sol_gain_flippening"
    USD_GAIN_FLIPPENING = "usd_gain_flippening"
    WIN_RATE_FLIPPENING = "win_rate_flippening"
    WL_RATIO_FLIPPENING = "wl_ratio_flippening"
    TOP_RANK_MAINTAIN = "top_rank_maintain"
    STREAK_CONTINUATION = "streak_continuation"
    RANK_IMPROVEMENT = "rank_improvement"
    SOL_GAIN_THRESHOLD = "sol_gain_threshold"
    WL_RATIO_MAINTAIN = "wl_ratio_maintain"


class MarketStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"
    CANCELLED = "CANCELLED"


class Side(StrEnum):
    """A side of a market: what a bet is on, and what a resolved market's outcome is."""

    YES = "YES"
    NO = "NO"


class TradeAction(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class BetStatus(StrEnum):
    OPEN = "OPEN"
    WON = "WON"
    LOST = "LOST"
    REFUNDED = "REFUNDED"


class SettlementKind(StrEnum):
    SETTLE = "SETTLE"
    REFUND = "REFUND"


class LedgerKind(StrEnum):
    DEPOSIT = "DEPOSIT"
    BET = "BET"
    FEE = "FEE"
    SELL = "SELL"
    PAYOUT = "PAYOUT"
    REFUND = "REFUND"
    LIQUIDITY = "LIQUIDITY"
    REVERSAL = "REVERSAL"


class AccountKind(StrEnum):
    USER = "USER"
    ESCROW = "ESCROW"
    FEE = "FEE"
    HOUSE = "HOUSE"
    EXTERNAL = "EXTERNAL"


# Accounts whose balance may never go below zero: a user's money and a market's escrow.
NON_NEGATIVE_ACCOUNTS = (AccountKind.USER, AccountKind.ESCROW)
# The accounts that exist once, not per user or market.
SYSTEM_ACCOUNTS = (AccountKind.FEE, AccountKind.HOUSE, AccountKind.EXTERNAL)


class Pin(StrEnum):
    """The fields of KOL A's baseline that pin a follower market to one X account."""

    USER_ID = "x_user_id"
    HANDLE = "x_handle"


class FollowerState(StrEnum):
    """How the cached count of an OPEN follower market's pinned account stands."""

    FRESH = "FRESH"  # usable at the market's close, by the resolver's rule
    STALE = "STALE"
    NEVER_FETCHED = "NEVER_FETCHED"
    NO_HANDLE = "NO_HANDLE"  # no X account pinned


class Role(StrEnum):
    """A dashboard account's role; each one may do everything the ones before it may."""

    VIEWER = "viewer"
    ANALYST = "analyst"
    OPERATOR = "operator"
    ADMIN = "admin"

    def includes(self, other: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(other)


class ScrapeStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


# A scrape run whose rows may be used as evidence (unless quarantined): see `db.rules.usable_run`.
SUCCEEDED_SCRAPES = (ScrapeStatus.SUCCESS, ScrapeStatus.PARTIAL)


class ScrapeTrigger(StrEnum):
    SCHEDULE = "SCHEDULE"
    ON_DEMAND = "ON_DEMAND"
    MANUAL = "MANUAL"


class JobStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"


class AttemptResult(StrEnum):
    """How one resolution attempt of a market ended."""

    RESOLVED_YES = "RESOLVED_YES"
    RESOLVED_NO = "RESOLVED_NO"
    CANCELLED = "CANCELLED"
    DEFERRED = "DEFERRED"
    ERROR = "ERROR"

    @classmethod
    def resolved(cls, side: Side) -> AttemptResult:
        return cls(f"RESOLVED_{side.value}")


class MarketAction(StrEnum):
    """What an operator may do to one market (see `services.lifecycle.allowed_actions`)."""

    CANCEL = "cancel"
    RESETTLE = "resettle"
    RETRY = "retry"
    # A hold on an OPEN market while it is investigated (issue 17).
    HOLD = "hold"
    RELEASE = "release"


class Result(StrEnum):
    """How a requested change ended; also an audit row's `result`."""

    OK = "OK"
    # The target already is where the call wanted it (a double click, a late second caller).
    ALREADY_DONE = "ALREADY_DONE"
    # The target moved to another state than the caller saw; nothing was done.
    STATE_CHANGED = "STATE_CHANGED"
    # The caller may not, or the input was wrong; nothing was done.
    REFUSED = "REFUSED"
    # The work failed and was rolled back.
    FAILED = "FAILED"
    # Above the approval thresholds: recorded as a proposal for a second operator (issue 17).
    PROPOSED = "PROPOSED"


class AlertRule(StrEnum):
    """What the alert evaluation watches (`services/ops/alert_rules.py` decides each one)."""

    MARKETS_CANCELLED = "markets_cancelled"
    MARKETS_OVERDUE = "markets_overdue"
    MARKETS_NEED_ATTENTION = "markets_need_attention"
    SCRAPE_FAILING = "scrape_failing"
    SCRAPE_ROWS_DROPPED = "scrape_rows_dropped"
    SCRAPE_REJECTS_JUMPED = "scrape_rejects_jumped"
    SCRAPE_HANDLES_MISSING = "scrape_handles_missing"
    SCRAPE_STALE = "scrape_stale"
    X_API_FAILING = "x_api_failing"
    X_API_BUDGET_EXHAUSTED = "x_api_budget_exhausted"
    FOLLOWER_COUNTS_MISSING = "follower_counts_missing"
    LEADER_MISSING = "leader_missing"
    JOB_FAILING = "job_failing"
    INTEGRITY_VIOLATION = "integrity_violation"
    # Money actions waiting for a second operator's approval (issue 17).
    APPROVALS_WAITING = "approvals_waiting"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


class AlertState(StrEnum):
    """An alert (one condition of one rule, from its start to its end)."""

    FIRING = "FIRING"
    RESOLVED = "RESOLVED"


class AlertEvent(StrEnum):
    """What happened to an alert; FIRING, REMINDER and RESOLVED are what channels are told."""

    FIRING = "FIRING"
    REMINDER = "REMINDER"
    RESOLVED = "RESOLVED"


class IncidentState(StrEnum):
    """An incident in the inbox: one firing alert, as people handle it."""

    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    CLOSED = "CLOSED"


# Incidents still waiting for their condition to end.
ACTIVE_INCIDENTS = (IncidentState.OPEN, IncidentState.ACKNOWLEDGED)


class DeliveryStatus(StrEnum):
    """One message to one channel: PENDING (queued or waiting to retry), SENT, or FAILED (every
    attempt failed)."""

    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


# -- dashboard sessions and login throttling (issue 15) -------------------------------------------


class ThrottleScope(StrEnum):
    """What a run of failed logins is counted against: the username tried, or the client address."""

    ACCOUNT = "ACCOUNT"
    ADDRESS = "ADDRESS"


class SessionEnd(StrEnum):
    """Why a dashboard session ended before it expired."""

    LOGOUT = "LOGOUT"
    ENDED_BY_ADMIN = "ENDED_BY_ADMIN"
    DEACTIVATED = "DEACTIVATED"
    ROLE_CHANGED = "ROLE_CHANGED"
    # Single sign-on (issue 15): the account's SSO email was set, changed or cleared.
    SSO_CHANGED = "SSO_CHANGED"


# -- interventions at scale (issue 17) ------------------------------------------------------------


class ProposalKind(StrEnum):
    """A money action held for a second operator's approval (`services/ops/approvals.py`)."""

    CANCEL = "cancel_and_refund"
    RESETTLE = "resettle"
    BULK_CANCEL = "bulk_cancel"
    REEVALUATION = "apply_reevaluation"


class ProposalStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"  # approved and carried out (its per-market results are kept)
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class Verdict(StrEnum):
    """What re-evaluating a resolved market from the evidence usable now says should happen."""

    STAYS = "stays"
    FLIPS = "flips"
    UNDECIDABLE = "undecidable"


def sql_in(column: str, values: type[StrEnum] | tuple[StrEnum, ...]) -> str:
    """`column IN ('a', 'b')` for a CHECK constraint or a WHERE clause, from enum members."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"
