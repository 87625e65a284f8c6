"""The follower cache on the real database and the stand-in over real HTTP, and the freshness rule
(`db.rules.follower_count_usable`, evaluated by PostgreSQL) at its boundaries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from sqlalchemy import func, select

from db import rules
from db.engine import read_session
from db.models import FollowerCache, FollowerHistory, XApiState
from services.errors import ErrorCode
from services.sources.followers import (
    FollowerReading,
    RefreshReport,
    fetch_followers,
    fetch_followers_by_id,
    refresh_open_market_handles,
    usable_cached_reading,
)
from services.sources.xapi import (
    BATCH_ENDPOINT,
    IDS_ENDPOINT,
    XApiClient,
    XRateLimited,
    XUnavailable,
    XUserNotFound,
    XUserSuspended,
)
from standins.xapi_standin import XApiStandin, user_id

TOKEN = "tok-F0llowerSecret-987654"
UTC = dt.UTC
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
US = dt.timedelta(microseconds=1)


@pytest.fixture()
def standin() -> Iterator[XApiStandin]:
    with XApiStandin(token=TOKEN) as s:
        yield s


@pytest.fixture()
def client(standin: XApiStandin) -> Iterator[XApiClient]:
    with XApiClient(
        standin.base_url, TOKEN, read_timeout=1, max_retries=1, max_wait_s=0.2, backoff_base_s=0.01
    ) as c:
        yield c


def _cache() -> dict[str, tuple[int, dt.datetime]]:
    with read_session() as s:
        return {r.handle: (r.followers, r.fetched_at) for r in s.scalars(select(FollowerCache))}


def _history_count(handle: str) -> int:
    with read_session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(FollowerHistory)
                .where(FollowerHistory.handle == handle)
            )
            or 0
        )


def _state() -> dict[str, XApiState]:
    with read_session() as s:
        return {r.endpoint: r for r in s.scalars(select(XApiState))}


# -- fetching -------------------------------------------------------------------------------------


def test_success_writes_cache_and_history_failures_write_nothing(
    db: str, standin: XApiStandin, client: XApiClient
) -> None:
    standin.set_followers("cented_sol", 1_000)
    standin.set_fault("suspended", handles=["jijo_sol"])
    results = fetch_followers(["Cented_Sol", "jijo_sol", "nobody_here"], client=client)

    reading = results["Cented_Sol"]
    assert isinstance(reading, FollowerReading)
    assert (reading.handle, reading.followers) == ("cented_sol", 1_000)
    assert isinstance(results["jijo_sol"], XUserSuspended)
    assert isinstance(results["nobody_here"], XUserNotFound)
    assert _cache() == {"cented_sol": (1_000, reading.fetched_at)}
    assert _history_count("cented_sol") == 1

    standin.set_followers("cented_sol", 1_250)
    fetch_followers(["cented_sol"], client=client)
    followers, fetched_at = _cache()["cented_sol"]
    assert followers == 1_250 and fetched_at > reading.fetched_at
    assert _history_count("cented_sol") == 2
    window = {
        "opens_at": fetched_at - dt.timedelta(hours=1),
        "closes_at": fetched_at,
        "max_age": dt.timedelta(minutes=15),
        "lag": dt.timedelta(minutes=60),
        "now": fetched_at + dt.timedelta(minutes=1),
    }
    assert reading.x_user_id == user_id("cented_sol")
    with read_session() as s:
        assert usable_cached_reading(s, user_id("cented_sol"), **window) == FollowerReading(
            "cented_sol", 1_250, fetched_at, reading.x_user_id
        )
        assert usable_cached_reading(s, user_id("jijo_sol"), **window) is None
        # A count fetched after the window the market allows is not used.
        too_late = {**window, "closes_at": fetched_at - dt.timedelta(hours=2)}
        assert usable_cached_reading(s, user_id("cented_sol"), **too_late) is None


def test_fetching_by_id_stores_under_the_handle_x_gives_now(
    db: str, standin: XApiStandin, client: XApiClient
) -> None:
    standin.set_followers("cented_sol", 1_000)
    standin.set_fault("suspended", handles=["jijo_sol"])
    pinned, gone = user_id("cented_sol"), "12345"
    results = fetch_followers_by_id([pinned, user_id("jijo_sol"), gone], client=client)

    reading = results[pinned]
    assert isinstance(reading, FollowerReading)
    assert reading == FollowerReading("cented_sol", 1_000, reading.fetched_at, pinned)
    assert isinstance(results[user_id("jijo_sol")], XUserSuspended)
    assert isinstance(results[gone], XUserNotFound)
    assert _cache() == {"cented_sol": (1_000, reading.fetched_at)}
    assert _history_count("cented_sol") == 1
    [request] = standin.requests
    assert request.endpoint == IDS_ENDPOINT
    assert _state()[IDS_ENDPOINT].last_status == "OK"


def test_the_cached_count_of_an_account_is_found_by_its_id_whatever_handle_it_is_under(
    db: str,
) -> None:
    """The fallback reads the pinned account's latest usable count, never a count cached under
    its handle that is of another account (a handle given up and taken by someone else)."""
    now = dt.datetime.now(UTC)
    with psycopg.connect(db) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO follower_cache (handle, x_user_id, followers, fetched_at)"
            " VALUES (%s, %s, %s, %s)",
            [
                ("alice", "2", 900_000, now - dt.timedelta(minutes=1)),  # the handle's new owner
                ("alice_old", "1", 1_000, now - dt.timedelta(minutes=10)),  # before the rename
                ("alice_new", "1", 1_100, now - dt.timedelta(minutes=2)),
            ],
        )
    window = {
        "opens_at": now - dt.timedelta(hours=1),
        "closes_at": now,
        "max_age": dt.timedelta(minutes=15),
        "lag": dt.timedelta(minutes=60),
        "now": now,
    }
    with read_session() as s:
        reading = usable_cached_reading(s, "1", **window)
        assert reading is not None and (reading.handle, reading.followers) == ("alice_new", 1_100)
        assert usable_cached_reading(s, "3", **window) is None


def test_an_outage_leaves_the_cache_alone_and_is_recorded_for_the_dashboard(
    db: str, standin: XApiStandin, client: XApiClient
) -> None:
    standin.set_followers("cented_sol", 500)
    fetch_followers(["cented_sol"], client=client)
    before = _cache()
    standin.set_fault("error_500")
    results = fetch_followers(["cented_sol", "cupsey_sol"], client=client)

    assert all(isinstance(r, XUnavailable) for r in results.values())
    assert _cache() == before
    assert _history_count("cented_sol") == 1
    state = _state()[BATCH_ENDPOINT]
    assert state.last_status == ErrorCode.X_API_UNAVAILABLE.value
    assert state.last_error and "HTTP 500" in state.last_error
    assert (state.limit, state.remaining) == (300, 299)  # from the one successful response
    assert state.reset_at is not None


def test_a_racing_older_reading_never_moves_the_cache_back(
    db: str, standin: XApiStandin, client: XApiClient
) -> None:
    later = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO follower_cache (handle, followers, fetched_at)"
            " VALUES ('cented_sol', 9, %s)",
            (later,),
        )
    fetch_followers(["cented_sol"], client=client)
    assert _cache()["cented_sol"] == (9, later)
    assert _history_count("cented_sol") == 1  # the reading is still history


def test_rate_limit_state_is_recorded_without_secrets(
    db: str, standin: XApiStandin, client: XApiClient
) -> None:
    standin.set_fault("rate_limit", reset_in_s=120)
    results = fetch_followers(["cented_sol"], client=client)
    assert isinstance(results["cented_sol"], XRateLimited)
    standin.clear_faults()
    standin.set_fault("unauthorized")
    with XApiClient(standin.base_url, "wrong-" + TOKEN) as other:
        fetch_followers(["cented_sol"], client=other)
    assert _cache() == {}
    with psycopg.connect(db) as conn:
        dump = conn.execute("SELECT x_api_state::text FROM x_api_state").fetchall()
    assert dump and all(TOKEN not in row for (row,) in dump)
    state = _state()[BATCH_ENDPOINT]
    assert state.last_status == ErrorCode.X_API_UNAUTHORIZED.value
    assert state.remaining == 0 and state.reset_at is not None


# -- the refresh job ------------------------------------------------------------------------------


def _kol(conn: psycopg.Connection, name: str, handle: str | None) -> int:
    row = conn.execute(
        "INSERT INTO kols (display_name, wallet, x_handle) VALUES (%s, %s, %s) RETURNING id",
        (name, f"wallet-{name}", handle),
    ).fetchone()
    assert row
    return int(row[0])


def _market(
    conn: psycopg.Connection,
    kol: int,
    *,
    pinned: str | None,
    kind: str = "follower_growth",
    status: str = "OPEN",
    closes_in_h: int = 24,
) -> None:
    """A market on `kol`, its baseline pinned to the stand-in's account of handle `pinned`."""
    baseline = {"a": {"x_user_id": user_id(pinned), "x_handle": pinned}} if pinned else {}
    conn.execute(
        """INSERT INTO markets (type, title, question_key, kol_a_id, kol_b_id, threshold, opens_at,
               closes_at, status, outcome, resolved_at, pool_yes, pool_no, liquidity, baseline)
           VALUES (%s, 't', %s, %s, NULL, 100, now() - interval '1 hour',
               now() + %s * interval '1 hour', %s, %s, %s, 500, 500, 1000, %s)""",
        (
            kind,
            f"{kind}:{kol}:{status}:{closes_in_h}",
            kol,
            closes_in_h,
            status,
            "YES" if status == "RESOLVED" else None,
            dt.datetime.now(UTC) if status == "RESOLVED" else None,
            Jsonb(baseline),
        ),
    )


def test_refresh_fetches_exactly_the_accounts_open_follower_markets_are_pinned_to(
    db: str, standin: XApiStandin, client: XApiClient
) -> None:
    with psycopg.connect(db) as conn:
        a, b = _kol(conn, "A", "Cented_sol"), _kol(conn, "B", "jijo_sol")
        c, d = _kol(conn, "C", "cupsey_sol"), _kol(conn, "D", "euris_sol")
        e, f = _kol(conn, "E", None), _kol(conn, "F", "nobody_here")
        _market(conn, a, pinned="cented_sol")
        _market(conn, a, pinned="cented_sol", closes_in_h=48)  # same account twice: fetched once
        _market(conn, b, pinned="jijo_sol")
        _market(conn, c, pinned="cupsey_sol", status="RESOLVED")
        _market(conn, d, pinned="euris_sol", kind="profit_streak")
        _market(conn, e, pinned=None)  # pins no account: nothing to refresh
        _market(conn, f, pinned="nobody_here")
        # The KOL now shows another handle: the pinned account is refreshed, not this one.
        conn.execute("UPDATE kols SET x_handle = 'ansem_sol' WHERE id = %s", (b,))
    report = refresh_open_market_handles(client=client)

    gone = user_id("nobody_here")
    assert report == RefreshReport(
        wanted=3, refreshed=2, failed={gone: ErrorCode.X_USER_NOT_FOUND.value}
    )
    assert set(_cache()) == {"cented_sol", "jijo_sol"}
    [request] = standin.requests
    assert sorted(request.ids) == sorted([user_id("cented_sol"), user_id("jijo_sol"), gone])


def test_refresh_stops_within_the_budget_and_reports_what_is_left(db: str) -> None:
    many = [f"kol_{i:04d}" for i in range(150)]
    with psycopg.connect(db) as conn:
        for i, handle in enumerate(many):
            _market(conn, _kol(conn, handle, handle), pinned=handle, closes_in_h=1 + i)
    with (
        XApiStandin(token=TOKEN, handles=many, rate_limit=1) as standin,
        XApiClient(standin.base_url, TOKEN, max_retries=0, max_wait_s=0.1) as client,
    ):
        report = refresh_open_market_handles(client=client)
        assert len(standin.requests) == 1
    assert (report.wanted, report.refreshed, report.not_attempted) == (150, 100, 50)
    assert report.rate_limited_until is not None
    assert report.rate_limited_until > dt.datetime.now(UTC)
    # The soonest-closing markets' handles were refreshed first.
    assert set(_cache()) == set(many[:100])
    assert report.counts()["not_attempted"] == 50


# -- the freshness rule ---------------------------------------------------------------------------

OPEN = T0
CLOSE = T0 + dt.timedelta(hours=24)
AGE = dt.timedelta(minutes=15)
LAG = dt.timedelta(minutes=60)
NOW = CLOSE + dt.timedelta(minutes=5)


def usable(
    fetched_at: dt.datetime,
    *,
    opens_at: dt.datetime = OPEN,
    closes_at: dt.datetime = CLOSE,
    max_age: dt.timedelta = AGE,
    lag: dt.timedelta = LAG,
    now: dt.datetime = NOW,
) -> bool:
    """The rule's verdict, as PostgreSQL evaluates it."""
    condition = rules.follower_count_usable(
        fetched_at, opens_at=opens_at, closes_at=closes_at, max_age=max_age, lag=lag, now=now
    )
    with read_session() as s:
        return bool(s.execute(select(condition)).scalar_one())


@pytest.mark.parametrize(
    ("fetched_at", "expected"),
    [
        (OPEN - US, False),  # predates the market's open
        (OPEN, False),  # at the open, but far older than the allowed age
        (CLOSE - AGE - US, False),
        (CLOSE - AGE, True),
        (CLOSE - AGE + US, True),
        (CLOSE, True),
        (CLOSE + dt.timedelta(minutes=1), True),
        (NOW, True),
        (NOW + US, False),  # after now: not an observation
    ],
)
def test_freshness_at_the_allowed_age_boundaries(
    db: str, fetched_at: dt.datetime, expected: bool
) -> None:
    assert usable(fetched_at) is expected


def test_freshness_ends_at_the_lag_after_the_close(db: str) -> None:
    later = CLOSE + LAG + dt.timedelta(hours=1)
    assert usable(CLOSE + LAG, now=later) is True
    assert usable(CLOSE + LAG + US, now=later) is False


# A short market: the open is later than close - max_age, so the open is the binding bound.
SHORT_CLOSE = OPEN + dt.timedelta(minutes=10)


@pytest.mark.parametrize(
    ("fetched_at", "expected"),
    [(OPEN - US, False), (OPEN, True), (OPEN + US, True), (SHORT_CLOSE, True)],
)
def test_freshness_at_the_market_open(db: str, fetched_at: dt.datetime, expected: bool) -> None:
    assert usable(fetched_at, closes_at=SHORT_CLOSE) is expected


_times = st.datetimes(
    min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 1, 3), timezones=st.just(UTC)
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fetched_at=_times,
    opens_at=_times,
    length=st.timedeltas(min_value=dt.timedelta(seconds=1), max_value=dt.timedelta(days=1)),
    age=st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(hours=6)),
    lag=st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(hours=6)),
    now=_times,
)
def test_freshness_is_exactly_the_window_rule(
    db: str,
    fetched_at: dt.datetime,
    opens_at: dt.datetime,
    length: dt.timedelta,
    age: dt.timedelta,
    lag: dt.timedelta,
    now: dt.datetime,
) -> None:
    # The oracle: PRODUCT.md section 3 point 4, stated directly on Python datetimes.
    closes_at = opens_at + length
    expected = max(opens_at, closes_at - age) <= fetched_at <= min(now, closes_at + lag)
    got = usable(fetched_at, opens_at=opens_at, closes_at=closes_at, max_age=age, lag=lag, now=now)
    assert got is expected
