"""The follower cache: fresh counts from the X API, the cache and its history, and the cached count
a market may fall back on (PRODUCT.md section 3 point 4; `db.rules.follower_count_usable`).

The cache is keyed by handle, as X spelled it when the count was read, and says which account (X
user id) the count is of: a follower market pins its account's id when it opens, so counts are
fetched and fallen back on by that id, whoever holds a handle now.

Only successful lookups touch `follower_cache` and `follower_history`; every lookup, failed or
not, records the API's budget and health in `x_api_state` for the dashboard.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db import rules
from db.engine import retrying, transaction
from db.models import FollowerCache, FollowerHistory, Market, XApiState
from services.sources.xapi import (
    MAX_BATCH,
    EndpointStatus,
    XApiClient,
    XApiError,
    XRateLimited,
    XUnauthorized,
    XUser,
)
from services.vocabulary import MarketStatus, MarketType


@dataclass(frozen=True)
class FollowerReading:
    handle: str  # lower-cased
    followers: int
    fetched_at: dt.datetime
    x_user_id: str | None


# -- reading the cache ----------------------------------------------------------------------------


def usable_cached_reading(
    session: Session,
    x_user_id: str,
    *,
    opens_at: dt.datetime,
    closes_at: dt.datetime,
    max_age: dt.timedelta,
    lag: dt.timedelta,
    now: dt.datetime,
) -> FollowerReading | None:
    """The latest cached count of the account `x_user_id` if it may stand for the count at
    `closes_at` (`db.rules.follower_count_usable`), else None (never fetched, or outside that
    window). A count cached under the account's handle but of another account never qualifies."""
    row = session.execute(
        select(FollowerCache)
        .where(
            FollowerCache.x_user_id == x_user_id,
            rules.follower_count_usable(
                FollowerCache.fetched_at,
                opens_at=opens_at,
                closes_at=closes_at,
                max_age=max_age,
                lag=lag,
                now=now,
            ),
        )
        # After a rename the account's older count may still sit under its old handle.
        .order_by(FollowerCache.fetched_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        return None
    return FollowerReading(row.handle, row.followers, row.fetched_at, row.x_user_id)


# -- fetching -------------------------------------------------------------------------------------


@contextmanager
def _client(client: XApiClient | None) -> Iterator[XApiClient]:
    if client is not None:
        yield client
        return
    with XApiClient() as own:
        yield own


def fetch_followers(
    handles: Iterable[str], *, client: XApiClient | None = None
) -> dict[str, FollowerReading | XApiError]:
    """Fetch fresh counts (batched), keyed by the handles as given.

    In one transaction, each success upserts `follower_cache` and appends to `follower_history`,
    and the endpoints' budget and health are written to `x_api_state`. A failure writes nothing
    to the cache. A cache row is never moved back to an older reading (two fetches racing).
    """
    return _fetch(lambda api: api.get_users(handles), client)


def fetch_followers_by_id(
    user_ids: Iterable[str], *, client: XApiClient | None = None
) -> dict[str, FollowerReading | XApiError]:
    """Fetch fresh counts of the accounts with these X user ids (batched), keyed by the ids as
    given; stored as `fetch_followers` stores them, under each account's handle now."""
    return _fetch(lambda api: api.get_users_by_id(user_ids), client)


def _fetch(
    lookup: Callable[[XApiClient], dict[str, XUser | XApiError]], client: XApiClient | None
) -> dict[str, FollowerReading | XApiError]:
    with _client(client) as api:
        results = lookup(api)
        statuses = api.endpoint_statuses()
    readings: dict[str, FollowerReading | XApiError] = {
        handle: _reading(result) if isinstance(result, XUser) else result
        for handle, result in results.items()
    }
    unique = {r.handle: r for r in readings.values() if isinstance(r, FollowerReading)}

    def write(session: Session) -> None:
        if unique:
            _store(session, list(unique.values()))
        for status in statuses:
            _record_status(session, status)

    retrying(write, what="fetch followers")
    return readings


def _record_status(session: Session, status: EndpointStatus) -> None:
    values: dict[str, object] = {
        "last_status": status.last_status,
        "last_error": status.last_error,
        "updated_at": status.at,
    }
    # A client that has not seen the budget yet (say, its only answer was a 401) keeps the last
    # known one rather than blanking it.
    if status.rate_limit is not None:
        values |= {
            "limit": status.rate_limit.limit,
            "remaining": status.rate_limit.remaining,
            "reset_at": status.rate_limit.reset_at,
        }
    stmt = insert(XApiState).values(endpoint=status.endpoint, **values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[XApiState.endpoint],
            set_=values,
            where=XApiState.updated_at <= stmt.excluded.updated_at,
        )
    )


def _reading(user: XUser) -> FollowerReading:
    return FollowerReading(user.username.lower(), user.followers, user.fetched_at, user.id)


def _store(session: Session, readings: list[FollowerReading]) -> None:
    rows = [
        {
            "handle": r.handle,
            "followers": r.followers,
            "fetched_at": r.fetched_at,
            "x_user_id": r.x_user_id,
        }
        for r in sorted(readings, key=lambda r: r.handle)  # one lock order across writers
    ]
    stmt = insert(FollowerCache).values(rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FollowerCache.handle],
            set_={
                "followers": stmt.excluded.followers,
                "fetched_at": stmt.excluded.fetched_at,
                "x_user_id": stmt.excluded.x_user_id,
            },
            where=FollowerCache.fetched_at <= stmt.excluded.fetched_at,
        )
    )
    session.execute(
        insert(FollowerHistory),
        [{k: row[k] for k in ("handle", "followers", "fetched_at")} for row in rows],
    )


# -- the scheduler job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshReport:
    wanted: int  # distinct accounts (X user ids) open follower markets are pinned to
    refreshed: int
    failed: dict[str, str] = field(default_factory=dict)  # X user id -> ErrorCode value
    not_attempted: int = 0  # left for the next run: the budget ran out or credentials failed
    rate_limited_until: dt.datetime | None = None

    def counts(self) -> dict[str, object]:
        """For `job_runs.counts`."""
        return {
            "wanted": self.wanted,
            "refreshed": self.refreshed,
            "failed": len(self.failed),
            "not_attempted": self.not_attempted,
            "rate_limited_until": (
                self.rate_limited_until.isoformat() if self.rate_limited_until else None
            ),
        }


def open_market_user_ids(session: Session) -> list[str]:
    """The X user ids every OPEN follower_growth market is pinned to, soonest close first."""
    pinned = rules.pinned_x_user_id(Market)
    rows = session.execute(
        select(pinned)
        .where(
            Market.type == MarketType.FOLLOWER_GROWTH,
            Market.status == MarketStatus.OPEN,
            pinned.is_not(None),
        )
        .group_by(pinned)
        .order_by(func.min(Market.closes_at), pinned)
    )
    return list(rows.scalars())


def refresh_open_market_handles(*, client: XApiClient | None = None) -> RefreshReport:
    """Refresh the counts of the accounts (by pinned X user id, not by the handles KOLs show now)
    open follower markets are decided by, one batch (and transaction) at a time, stopping with a
    report when the API's budget runs out or it refuses the credentials."""
    with transaction() as session:
        user_ids = open_market_user_ids(session)
    refreshed = 0
    failed: dict[str, str] = {}
    with _client(client) as api:
        for start in range(0, len(user_ids), MAX_BATCH):
            batch = user_ids[start : start + MAX_BATCH]
            results = fetch_followers_by_id(batch, client=api)
            stop = next(
                (r for r in results.values() if isinstance(r, XRateLimited | XUnauthorized)),
                None,
            )
            if stop is not None:
                return RefreshReport(
                    wanted=len(user_ids),
                    refreshed=refreshed,
                    failed=failed,
                    not_attempted=len(user_ids) - start,
                    rate_limited_until=stop.reset_at if isinstance(stop, XRateLimited) else None,
                )
            for user_id, result in results.items():
                if isinstance(result, FollowerReading):
                    refreshed += 1
                else:
                    failed[user_id] = result.code.value
    return RefreshReport(wanted=len(user_ids), refreshed=refreshed, failed=failed)
