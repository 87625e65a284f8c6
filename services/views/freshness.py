"""Is the data fresh enough to resolve markets, and is timed work on time? (read-only)

- follower cache age against OPEN follower markets: the cache row a market would fall back on if
  the X API failed, classified by the resolver's rule (`db.rules.follower_count_usable`) as if
  the market closed now (or at its close, once due);
- scrape age per timeframe, against the max scrape lag and the generator's max snapshot age;
- what would be cancelled if nothing changes: due OPEN markets the resolver cannot decide from
  the data held now, and when it will give up on them (closes_at + the shorter of the grace
  period and the max scrape lag: after that, stale data can no longer become fresh);
- each scheduler job's last run and next run, from the schedule in config.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal_column, text
from sqlalchemy.orm import aliased

from config import get_settings
from db import rules
from db.engine import read_session
from db.models import FollowerCache, Market, ScrapeRun
from services.errors import ErrorCode
from services.ops.jobs import last_run_per_job
from services.ops.schedule import schedules
from services.views.paging import Page, check_page
from services.vocabulary import FollowerState, MarketStatus, MarketType, ScrapeStatus, Timeframe

LATE_AFTER = dt.timedelta(minutes=1)


# The rules as SQL over `markets m`, `follower_cache c` and `scrape_runs r`; the max cache age and
# the max scrape lag are bound parameters (intervals).
_M = aliased(Market, name="m")
_C = aliased(FollowerCache, name="c")
_MAX_AGE = literal_column(":max_age")
_LAG = literal_column(":lag")
_USABLE_RUN = rules.sql(rules.usable_run(aliased(ScrapeRun, name="r")))
# An open market judged as if it closed now, or at its close once due.
_USABLE_NOW = rules.sql(
    rules.follower_count_usable(
        _C.fetched_at,
        opens_at=_M.opens_at,
        closes_at=func.least(func.now(), _M.closes_at),
        max_age=_MAX_AGE,
        lag=_LAG,
        now=func.now(),
    )
)
_USABLE_AT_CLOSE = rules.sql(
    rules.follower_count_usable(
        _C.fetched_at,
        opens_at=_M.opens_at,
        closes_at=_M.closes_at,
        max_age=_MAX_AGE,
        lag=_LAG,
        now=func.now(),
    )
)
_IN_SNAPSHOT_WINDOW = rules.sql(
    rules.snapshot_window(_M.closes_at, _LAG).contains(aliased(ScrapeRun, name="r").snapshot_at)
)
_OPEN = MarketStatus.OPEN.value
_FOLLOWER_GROWTH = MarketType.FOLLOWER_GROWTH.value


def _minutes(value: int) -> dt.timedelta:
    return dt.timedelta(minutes=value)


# -- follower cache -------------------------------------------------------------------------------

# The cache row of KOL A of every OPEN follower market, classified by the resolver's rule at
# least(now, closes_at): a count from before the open, older than the max age, later than the
# lag after the close, or dated in the future is STALE.
_PINNED = rules.sql(rules.pinned_x_user_id(_M))
_PINNED_HANDLE = rules.sql(rules.pinned_x_handle(_M))

# Every OPEN follower market with the latest cached count of the account it was opened on, FRESH
# when some cached count of that account may stand for the count at min(now, close) as the
# resolver decides it.
_FOLLOWER_MARKETS = f"""
    SELECT m.id AS market_id, m.title, m.opens_at, m.closes_at,
           {_PINNED_HANDLE} AS handle, latest.followers, latest.fetched_at,
           CASE WHEN {_PINNED} IS NULL THEN '{FollowerState.NO_HANDLE}'
                WHEN latest.fetched_at IS NULL THEN '{FollowerState.NEVER_FETCHED}'
                WHEN EXISTS (SELECT 1 FROM follower_cache c
                             WHERE c.x_user_id = {_PINNED} AND {_USABLE_NOW})
                THEN '{FollowerState.FRESH}'
                ELSE '{FollowerState.STALE}' END AS state
    FROM markets m
    LEFT JOIN LATERAL (SELECT c.followers, c.fetched_at FROM follower_cache c
                       WHERE c.x_user_id = {_PINNED}
                       ORDER BY c.fetched_at DESC LIMIT 1) latest ON true
    WHERE m.status = '{_OPEN}' AND m.type = '{_FOLLOWER_GROWTH}'"""


@dataclass(frozen=True)
class FollowerFreshness:
    now: dt.datetime
    max_age: dt.timedelta
    counts: dict[str, int]  # every FollowerState
    oldest_fetch: dt.datetime | None  # of the FRESH and STALE cache rows in use
    problems: Page  # markets not FRESH, soonest close first


def follower_freshness(*, limit: int = 50, offset: int = 0) -> FollowerFreshness:
    check_page(limit, offset)
    settings = get_settings()
    max_age = _minutes(settings.follower_cache_max_age_minutes)
    params = {
        "max_age": max_age,
        "lag": _minutes(settings.max_scrape_lag_minutes),
        "limit": limit,
        "offset": offset,
    }
    with read_session() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
        summary = s.execute(
            text(
                f"SELECT state, count(*), min(fetched_at) FROM ({_FOLLOWER_MARKETS}) f"
                " GROUP BY state"
            ),
            params,
        ).all()
        rows = s.execute(
            text(
                f"SELECT * FROM ({_FOLLOWER_MARKETS}) f WHERE state <> '{FollowerState.FRESH}'"
                " ORDER BY closes_at, market_id LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        problems = [dict(r._mapping) for r in rows]
    counts = {state.value: 0 for state in FollowerState} | {state: n for state, n, _ in summary}
    fetches = [oldest for _, _, oldest in summary if oldest is not None]
    return FollowerFreshness(
        now=now,
        max_age=max_age,
        counts=counts,
        oldest_fetch=min(fetches) if fetches else None,
        problems=Page(
            problems, sum(n for state, n in counts.items() if state != FollowerState.FRESH), offset
        ),
    )


# -- scrapes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeAge:
    timeframe: str
    last_good_at: dt.datetime | None  # snapshot time of the latest usable run
    age_s: float | None
    stale: bool  # older than the max scrape lag: a market closing now could not use it
    # Older than GENERATOR_MAX_SNAPSHOT_AGE_MINUTES (or none): the generator opens no market
    # of this timeframe.
    too_old_to_generate: bool
    last_status: str | None
    last_started_at: dt.datetime | None
    last_error_code: str | None
    runs_24h: int
    failed_24h: int


def scrape_ages() -> list[ScrapeAge]:
    settings = get_settings()
    lag = _minutes(settings.max_scrape_lag_minutes)
    generator_max_age = _minutes(settings.generator_max_snapshot_age_minutes)
    with read_session() as s:
        rows = s.execute(
            text(
                "SELECT tf.timeframe, extract(epoch FROM now() - good.at) AS age_s,"
                " good.at AS last_good_at, last.status, last.started_at, last.error_code,"
                " recent.runs, recent.failed"
                " FROM unnest(CAST(:tfs AS text[])) WITH ORDINALITY AS tf(timeframe, n)"
                " LEFT JOIN LATERAL (SELECT max(r.snapshot_at) AS at FROM scrape_runs r"
                f"   WHERE r.timeframe = tf.timeframe AND {_USABLE_RUN}) good ON true"
                " LEFT JOIN LATERAL (SELECT status, started_at, error_code FROM scrape_runs"
                "   WHERE timeframe = tf.timeframe ORDER BY started_at DESC LIMIT 1) last ON true"
                " LEFT JOIN LATERAL (SELECT count(*) AS runs,"
                f"   count(*) FILTER (WHERE status = '{ScrapeStatus.FAILED}') AS failed"
                "   FROM scrape_runs"
                "   WHERE timeframe = tf.timeframe AND started_at > now() - interval '24 hours'"
                " ) recent ON true"
                " ORDER BY tf.n"
            ),
            {"tfs": [tf.value for tf in Timeframe]},
        ).all()
    return [
        ScrapeAge(
            timeframe=r.timeframe,
            last_good_at=r.last_good_at,
            age_s=float(r.age_s) if r.age_s is not None else None,
            stale=r.age_s is None or r.age_s > lag.total_seconds(),
            too_old_to_generate=r.age_s is None or r.age_s > generator_max_age.total_seconds(),
            last_status=r.status,
            last_started_at=r.started_at,
            last_error_code=r.error_code,
            runs_24h=r.runs,
            failed_24h=r.failed,
        )
        for r in rows
    ]


# -- what would be cancelled ----------------------------------------------------------------------

# Due OPEN markets without the evidence the resolver needs, judged from the data held now: a
# follower market needs a handle and a cached count usable at its close (the X API may still
# answer, so these are at risk, not doomed); a leaderboard market needs a timeframe and a usable
# snapshot taken within its snapshot window (`db.rules.snapshot_window`).
_BLOCKED = f"""
    SELECT d.id AS market_id, d.type, d.title, d.closes_at,
           CASE WHEN d.code = '{ErrorCode.MISSING_METADATA}' THEN now()
                ELSE d.closes_at + least(:grace, :lag) END AS cancel_at,
           d.code
    FROM (SELECT m.id, m.type, m.title, m.closes_at,
                 CASE WHEN m.type = '{_FOLLOWER_GROWTH}' THEN
                        CASE WHEN {_PINNED} IS NULL THEN '{ErrorCode.MISSING_METADATA}'
                             WHEN NOT EXISTS (SELECT 1 FROM follower_cache c
                                  WHERE c.x_user_id = {_PINNED} AND {_USABLE_AT_CLOSE})
                             THEN '{ErrorCode.STALE_FOLLOWER_DATA}' END
                      WHEN m.timeframe IS NULL THEN '{ErrorCode.MISSING_METADATA}'
                      WHEN NOT EXISTS (SELECT 1 FROM scrape_runs r
                           WHERE r.timeframe = m.timeframe AND {_USABLE_RUN}
                             AND {_IN_SNAPSHOT_WINDOW})
                      THEN '{ErrorCode.STALE_SCRAPE_DATA}' END AS code
          FROM markets m
          WHERE {rules.sql(rules.due(_M))}) d
    WHERE d.code IS NOT NULL"""


@dataclass(frozen=True)
class AtRisk:
    now: dt.datetime
    by_code: dict[str, int]
    past_deadline: int  # the next resolver pass cancels these
    markets: Page  # soonest cancellation first


def would_be_cancelled(*, limit: int = 50, offset: int = 0) -> AtRisk:
    check_page(limit, offset)
    settings = get_settings()
    params = {
        "grace": _minutes(settings.resolution_grace_minutes),
        "lag": _minutes(settings.max_scrape_lag_minutes),
        "max_age": _minutes(settings.follower_cache_max_age_minutes),
        "limit": limit,
        "offset": offset,
    }
    with read_session() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
        summary = s.execute(
            text(
                "SELECT code, count(*), count(*) FILTER (WHERE cancel_at <= now())"
                f" FROM ({_BLOCKED}) b GROUP BY code ORDER BY code"
            ),
            params,
        ).all()
        rows = s.execute(
            text(f"{_BLOCKED} ORDER BY cancel_at, market_id LIMIT :limit OFFSET :offset"),
            params,
        )
        page = [dict(r._mapping) for r in rows]
    by_code = {code: n for code, n, _ in summary}
    past = sum(p for _, _, p in summary)
    return AtRisk(now, by_code, past, Page(page, sum(by_code.values()), offset))


# -- jobs -----------------------------------------------------------------------------------------


def job_schedule() -> list[dict[str, Any]]:
    """Every scheduled job with its schedule, last run and result, and next run: the trigger's
    next fire time after the last start. `late`: that time passed more than a minute ago."""
    with read_session() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
    last = {r["job"]: r for r in last_run_per_job()}
    out = []
    for name, sched in schedules().items():
        trigger = sched.trigger()
        run = last.get(name)
        previous = run["last_started_at"] if run else None
        next_run = trigger.get_next_fire_time(previous, now)
        out.append(
            {
                "job": name,
                "schedule": sched.describe,
                "last_status": run["last_status"] if run else None,
                "last_started_at": previous,
                "last_finished_at": run["last_finished_at"] if run else None,
                "next_run_at": next_run,
                "late": next_run is not None and next_run < now - LATE_AFTER,
                "runs": run["runs"] if run else 0,
                "failures": run["failures"] if run else 0,
                "last_error": run["last_error"] if run else None,
            }
        )
    return out
