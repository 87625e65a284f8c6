"""The rules that are conditions on rows, each one SQLAlchemy expression used by every caller.

Each function takes the table it reads (a model, an `aliased` model, or a table's columns), so the
same rule serves an ORM query, a partial index (`db/models.py`) and, rendered by `sql()`, the SQL
text of a read model. Parameters that vary per call (a grace period, a lag) are SQL expressions
too: a bound parameter, `literal_column(":grace")` in SQL text, or a literal value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, between, func, literal, literal_column, not_, or_
from sqlalchemy.dialects import postgresql

from services.vocabulary import SUCCEEDED_SCRAPES, MarketStatus, Pin, ProposalStatus

_DIALECT = postgresql.dialect()

Interval = ColumnElement[dt.timedelta] | dt.timedelta
Instant = ColumnElement[dt.datetime] | dt.datetime


def _sql_value(value: Any) -> Any:
    # A column or expression as it is; a Python value as a literal.
    if isinstance(value, ColumnElement) or hasattr(value, "__clause_element__"):
        return value
    return literal(value)


def usable_run(run: Any) -> ColumnElement[bool]:
    """A scrape run that counts as evidence (for resolution, generation and the dashboard):
    succeeded fully or partly, read at a known time, not quarantined by an analyst."""
    return and_(
        run.status.in_([s.value for s in SUCCEEDED_SCRAPES]),
        not_(run.quarantined),
        run.snapshot_at.is_not(None),
    )


def held(market: Any) -> ColumnElement[bool]:
    """An OPEN market an operator put on hold: no bets, no automatic resolution, no grace running
    out (a hold on a market that was cancelled since is history, not a state)."""
    return and_(market.status == MarketStatus.OPEN.value, market.held_at.is_not(None))


def due(market: Any) -> ColumnElement[bool]:
    """An OPEN market past its close and not on hold: the resolver's to decide."""
    return and_(
        market.status == MarketStatus.OPEN.value,
        market.held_at.is_(None),
        market.closes_at <= func.now(),
    )


def grace_ends(market: Any, grace: Interval) -> ColumnElement[dt.datetime]:
    """When a market's grace period runs out: `grace` after its close, plus the time it spent on
    hold after its close (a hold stops the clock)."""
    return market.closes_at + market.held_for + _sql_value(grace)


def overdue(market: Any, grace: Interval) -> ColumnElement[bool]:
    """A due market past its grace period: the resolver should have finished."""
    return and_(due(market), grace_ends(market, grace) <= func.now())


def held_after_close(market: Any) -> ColumnElement[dt.timedelta]:
    """How long the current hold has stopped the grace clock so far: the held time after the
    close (added to `held_for` when the hold is released)."""
    return func.greatest(
        literal_column("interval '0'"), func.now() - func.greatest(market.held_at, market.closes_at)
    )


def proposal_waiting(proposal: Any) -> ColumnElement[bool]:
    """A proposal a second operator may still approve or reject: pending and not expired."""
    return and_(proposal.status == ProposalStatus.PENDING.value, proposal.expires_at > func.now())


def resettle_window_open(market: Any, window: Interval) -> ColumnElement[bool]:
    """A RESOLVED or CANCELLED market that became final less than `window` ago
    (RESETTLE_WINDOW_DAYS): it may still be re-settled or re-evaluated, so its evidence stays."""
    return and_(
        market.status.in_([MarketStatus.RESOLVED.value, MarketStatus.CANCELLED.value]),
        _final_at(market) > func.now() - _sql_value(window),
    )


def resettle_closed(market: Any, window: Interval) -> ColumnElement[bool]:
    """A RESOLVED or CANCELLED market final for `window` or longer: no longer re-settled."""
    return and_(
        market.status.in_([MarketStatus.RESOLVED.value, MarketStatus.CANCELLED.value]),
        _final_at(market) <= func.now() - _sql_value(window),
    )


def _final_at(market: Any) -> ColumnElement[dt.datetime]:
    # When it last became final; a final market without the time counts as final just now, so
    # it keeps its evidence and its re-settle rather than losing both.
    return func.coalesce(func.greatest(market.resolved_at, market.cancelled_at), func.now())


def keeps_evidence(market: Any, window: Interval) -> ColumnElement[bool]:
    """A market whose evidence retention never removes: open, or final within its re-settle
    window."""
    return or_(market.status == MarketStatus.OPEN.value, resettle_window_open(market, window))


# -- resolution windows: which evidence stands for a market's close --------------------------------


@dataclass(frozen=True)
class Window:
    """A closed interval of instants: both ends count. Its bounds are Python datetimes or SQL
    expressions alike (the same arithmetic builds both), so the resolver's Python and the SQL
    that reads or keeps evidence test membership by this one definition."""

    start: Any
    end: Any

    def holds(self, at: dt.datetime) -> bool:
        """Whether the instant `at` lies in the window (Python bounds)."""
        return bool(self.start <= at <= self.end)

    def contains(self, at: Instant) -> ColumnElement[bool]:
        """The same membership as a SQL condition on `at` (a column or expression)."""
        return between(_sql_value(at), _sql_value(self.start), _sql_value(self.end))


def snapshot_window(closes_at: Instant, lag: Interval) -> Window:
    """When a leaderboard snapshot may decide a market closing at `closes_at`: taken from the
    close to `lag` (MAX_SCRAPE_LAG_MINUTES) after it."""
    return Window(closes_at, closes_at + lag)  # type: ignore[operator]


def follower_window(closes_at: Instant, max_age: Interval, lag: Interval) -> Window:
    """When a follower count may stand for the count at `closes_at`: fetched no more than
    `max_age` (FOLLOWER_CACHE_MAX_AGE_MINUTES) before the close, nor more than `lag` after it.
    `follower_count_usable` narrows it per market (not before the open, never after now)."""
    return Window(closes_at - max_age, closes_at + lag)  # type: ignore[operator]


def follower_count_usable(
    fetched_at: Instant,
    *,
    opens_at: Instant,
    closes_at: Instant,
    max_age: Interval,
    lag: Interval,
    now: Instant,
) -> ColumnElement[bool]:
    """May a follower count fetched at `fetched_at` stand for the count at `closes_at`?

    Usable iff it lies in `follower_window(closes_at, max_age, lag)` (both bounds inclusive), not
    before the market's open, and never dated after now (a count from the future is clock skew
    or a bad row, not an observation).
    """
    window = follower_window(_sql_value(closes_at), _sql_value(max_age), _sql_value(lag))
    return Window(
        func.greatest(_sql_value(opens_at), window.start),
        func.least(_sql_value(now), window.end),
    ).contains(fetched_at)


def pinned_x_user_id(market: Any) -> ColumnElement[str]:
    """The X account a follower market was opened on: its baseline's pin (`outcomes.XAccount`,
    read in Python by `outcomes.pinned_account`); NULL when the market has none."""
    return market.baseline["a"][Pin.USER_ID.value].astext


def pinned_x_handle(market: Any) -> ColumnElement[str]:
    """The handle that pinned account had when the market opened."""
    return market.baseline["a"][Pin.HANDLE.value].astext


def sql(condition: ColumnElement[Any]) -> str:
    """A rule as SQL text, for the read models written as SQL: constants inlined, parameters
    left as the `:name` placeholders they were given."""
    return str(condition.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
