"""The Data freshness read models: the follower cache against open follower markets (by the
resolver's own rule), scrape ages, what would be cancelled, and the job schedule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import transaction
from services.sources import followers
from services.views import freshness
from services.vocabulary import FollowerState, MarketType, Timeframe
from standins.xapi_standin import user_id
from tests.support.factories import new_market
from tests.support.scrape_data import NOW, board, cached_count, fund_house, kol, scrape_run


def _market(
    kol_id: int,
    type_: MarketType | str,
    *,
    opened_ago: dt.timedelta,
    closes_in: dt.timedelta,
    timeframe: Timeframe | None = Timeframe.DAILY,
) -> int:
    extra: dict[str, Any] = {}
    with transaction() as s:
        if type_ == MarketType.FOLLOWER_GROWTH:
            handle = s.execute(
                text("SELECT x_handle FROM kols WHERE id = :id"), {"id": kol_id}
            ).scalar_one()
            # Opened on the account the handle had then (none: an unpinned, invalid market).
            pin = {"x_user_id": user_id(handle), "x_handle": handle} if handle else {}
            extra = {"threshold": 100, "baseline": {"a": {"followers": 1000, **pin}}}
        elif type_ == MarketType.TOP_RANK_MAINTAIN:
            extra = {"target_rank": 5}
        return new_market(
            s,
            kol_a_id=kol_id,
            type=type_,
            title=f"{type_} <b>{kol_id}</b>",
            timeframe=timeframe,
            opens_at=NOW - opened_ago,
            closes_at=NOW + closes_in,
            **extra,
        )


def _max_age() -> dt.timedelta:
    return dt.timedelta(minutes=get_settings().follower_cache_max_age_minutes)


def _lag() -> dt.timedelta:
    return dt.timedelta(minutes=get_settings().max_scrape_lag_minutes)


def test_follower_cache_staleness_agrees_with_the_resolver_rule(db: str) -> None:
    fund_house()
    max_age = _max_age()
    day = dt.timedelta(days=1)
    fresh = _market(kol("F", "WF", "Fresh"), "follower_growth", opened_ago=day, closes_in=day)
    old = _market(kol("O", "WO", "old"), "follower_growth", opened_ago=day, closes_in=day)
    early = _market(
        kol("E", "WE", "early"),
        "follower_growth",
        opened_ago=dt.timedelta(minutes=1),
        closes_in=day,
    )
    never = _market(kol("N", "WN", "never"), "follower_growth", opened_ago=day, closes_in=day)
    nohandle = _market(kol("H", "WH", None), "follower_growth", opened_ago=day, closes_in=day)
    _market(kol("L", "WL", "lb"), "top_rank_maintain", opened_ago=day, closes_in=day)
    cached = {
        "fresh": NOW - dt.timedelta(minutes=1),
        "old": NOW - max_age - dt.timedelta(minutes=5),
        "early": NOW - dt.timedelta(minutes=3),  # fetched before this market opened
    }
    for handle, at in cached.items():
        cached_count(db, handle, at)
    cached_count(db, "lb", NOW - dt.timedelta(days=5))  # no follower market: not counted

    report = freshness.follower_freshness()
    assert report.counts == {"FRESH": 1, "STALE": 2, "NEVER_FETCHED": 1, "NO_HANDLE": 1}
    states = {r["market_id"]: r["state"] for r in report.problems.rows}
    assert states == {old: "STALE", early: "STALE", never: "NEVER_FETCHED", nohandle: "NO_HANDLE"}
    assert fresh not in states and report.problems.total == 4
    # The database's verdict is the resolver's own rule applied as if the market closed now.
    with transaction() as s:
        opens = {r.id: r.opens_at for r in s.execute(text("SELECT id, opens_at FROM markets"))}
        for market_id, handle in ((fresh, "fresh"), (old, "old"), (early, "early")):
            reading = followers.usable_cached_reading(
                s,
                user_id(handle),
                opens_at=opens[market_id],
                closes_at=report.now,
                max_age=max_age,
                lag=_lag(),
                now=report.now,
            )
            assert (reading is not None) == (market_id == fresh)


def test_a_count_dated_after_the_close_and_the_lag_is_not_fresh(db: str) -> None:
    """Regression: the page once called FRESH a count the resolver refuses, one fetched later
    than the allowed lag after a due market's close."""
    fund_house()
    hour = dt.timedelta(hours=1)
    late = _market(
        kol("L", "WL", "late"),
        MarketType.FOLLOWER_GROWTH,
        opened_ago=_lag() + 5 * hour,
        closes_in=-_lag() - 2 * hour,
    )
    in_time = _market(
        kol("T", "WT", "timely"),
        MarketType.FOLLOWER_GROWTH,
        opened_ago=_lag() + 5 * hour,
        closes_in=-_lag() - 2 * hour,
    )
    closes_at = NOW - _lag() - 2 * hour
    cached_count(db, "late", closes_at + _lag() + dt.timedelta(minutes=30))
    cached_count(db, "timely", closes_at + _lag() - dt.timedelta(minutes=1))

    report = freshness.follower_freshness()
    states = {r["market_id"]: r["state"] for r in report.problems.rows}
    assert states == {late: FollowerState.STALE}
    assert in_time not in states
    assert report.counts[FollowerState.FRESH] == 1


def test_scrape_age_per_timeframe(db: str) -> None:
    lag = get_settings().max_scrape_lag_minutes
    scrape_run(db, "daily", NOW - dt.timedelta(minutes=5), board(2))
    scrape_run(db, "daily", None, [], status="FAILED", error=("SCRAPE_NO_ROWS", "empty"))
    scrape_run(db, "weekly", NOW - dt.timedelta(minutes=lag + 10), board(2))
    scrape_run(db, "weekly", NOW - dt.timedelta(minutes=1), board(2), quarantined=True)
    ages = {a.timeframe: a for a in freshness.scrape_ages()}
    assert not ages["daily"].stale and ages["daily"].last_status == "FAILED"
    assert ages["daily"].last_error_code == "SCRAPE_NO_ROWS"
    assert (ages["daily"].runs_24h, ages["daily"].failed_24h) == (2, 1)
    assert ages["weekly"].stale and ages["weekly"].age_s is not None
    assert ages["weekly"].age_s > (lag + 9) * 60  # the quarantined newer run does not count
    assert ages["monthly"].last_good_at is None and ages["monthly"].stale


def test_would_be_cancelled_lists_due_markets_without_usable_evidence(db: str) -> None:
    fund_house()
    s = get_settings()
    window = dt.timedelta(minutes=min(s.resolution_grace_minutes, s.max_scrape_lag_minutes))
    hour = dt.timedelta(hours=1)
    alpha = kol("A", "WA", "alpha")
    # Closed 10 minutes ago: a snapshot 5 minutes ago is in its window; a quarantined one is not.
    covered = _market(alpha, "profit_streak", opened_ago=hour, closes_in=-dt.timedelta(minutes=10))
    bare = _market(
        alpha,
        "top_rank_maintain",
        opened_ago=hour,
        closes_in=-dt.timedelta(minutes=10),
        timeframe="weekly",
    )
    long_ago = _market(alpha, "rank_improvement", opened_ago=4 * hour, closes_in=-3 * hour)
    follower_stale = _market(
        alpha, "follower_growth", opened_ago=hour, closes_in=-dt.timedelta(minutes=2)
    )
    no_handle = _market(
        kol("B", "WB", None),
        "follower_growth",
        opened_ago=hour,
        closes_in=-dt.timedelta(minutes=2),
    )
    _market(alpha, "sol_gain_threshold", opened_ago=hour, closes_in=hour)  # not due
    scrape_run(db, "daily", NOW - dt.timedelta(minutes=5), board(3))
    scrape_run(db, "weekly", NOW - dt.timedelta(minutes=5), board(3), quarantined=True)
    cached_count(db, "alpha", NOW - hour + dt.timedelta(minutes=1))  # after the open, but too old

    risk = freshness.would_be_cancelled()
    got = {r["market_id"]: r for r in risk.markets.rows}
    assert set(got) == {bare, long_ago, follower_stale, no_handle}
    assert covered not in got
    assert got[bare]["code"] == "STALE_SCRAPE_DATA"
    assert got[follower_stale]["code"] == "STALE_FOLLOWER_DATA"
    assert got[no_handle]["code"] == "MISSING_METADATA"
    assert got[bare]["cancel_at"] == got[bare]["closes_at"] + window
    assert risk.by_code == {"MISSING_METADATA": 1, "STALE_FOLLOWER_DATA": 1, "STALE_SCRAPE_DATA": 2}
    assert risk.past_deadline == 2  # closed 3 hours ago, and the one missing its handle
    assert [r["market_id"] for r in risk.markets.rows][:2] == sorted(
        [long_ago, no_handle], key=lambda m: got[m]["cancel_at"]
    )

    # A fresh count taken after the close makes the follower market decidable.
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE follower_cache SET fetched_at = now() WHERE handle = 'alpha'")
    assert follower_stale not in {
        r["market_id"] for r in freshness.would_be_cancelled().markets.rows
    }
    page = freshness.would_be_cancelled(limit=1, offset=1)
    assert page.markets.total == 3 and len(page.markets.rows) == 1


def test_job_schedule_shows_next_run_after_the_last(db: str) -> None:
    started = NOW - dt.timedelta(seconds=10)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, started_at, finished_at, status)"
            " VALUES ('resolve', 'h', 1, %s, %s, 'SUCCESS')",
            (started, started),
        )
    jobs = {j["job"]: j for j in freshness.job_schedule()}
    assert set(jobs) == {
        "resolve",
        "scrape_daily",
        "scrape_weekly",
        "scrape_monthly",
        "followers",
        "generate",
        "integrity",
        "reap",
        "alerts",
        "integrity_full",
        "retention",
    }
    resolve = jobs["resolve"]
    interval = dt.timedelta(seconds=get_settings().resolve_interval_s)
    assert resolve["last_status"] == "SUCCESS" and resolve["runs"] == 1
    assert resolve["next_run_at"] == started + interval
    assert jobs["integrity"]["last_status"] is None and jobs["integrity"]["next_run_at"]


@pytest.fixture()
def generator_bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[dt.timedelta]:
    """The generator refuses snapshots older than 30 minutes for this test."""
    monkeypatch.setenv("GENERATOR_MAX_SNAPSHOT_AGE_MINUTES", "30")
    get_settings.cache_clear()
    yield dt.timedelta(minutes=30)
    get_settings.cache_clear()


def test_scrape_ages_say_which_snapshots_the_generator_refuses(
    db: str, generator_bound: dt.timedelta
) -> None:
    scrape_run(db, "daily", NOW - generator_bound - dt.timedelta(minutes=5), board(2))
    scrape_run(db, "weekly", NOW - dt.timedelta(minutes=5), board(2))
    ages = {a.timeframe: a for a in freshness.scrape_ages()}
    assert ages["daily"].too_old_to_generate
    assert not ages["weekly"].too_old_to_generate
    assert ages["monthly"].too_old_to_generate  # no usable run at all
