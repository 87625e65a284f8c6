"""The row rules of db/rules.py, evaluated by PostgreSQL on real rows, against the rules stated
directly in Python; and the partial index built from the same rule."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import psycopg
import pytest
from sqlalchemy import DateTime, Interval, literal_column, select, text
from sqlalchemy.orm import aliased

from db import rules
from db.engine import read_session, transaction
from db.models import Market, ScrapeRun
from services.vocabulary import MarketStatus, ScrapeStatus
from tests.support.factories import new_market

GRACE = dt.timedelta(minutes=30)


def test_usable_run_is_succeeded_read_and_not_quarantined(db: str) -> None:
    cases = list(itertools.product(ScrapeStatus, (False, True), (False, True)))
    with transaction() as s:
        for status, quarantined, read in cases:
            s.execute(
                text(
                    "INSERT INTO scrape_runs (timeframe, trigger, source_url, status,"
                    " snapshot_at, quarantined, quarantine_reason)"
                    " VALUES ('daily', 'MANUAL', :url, :status, :at, :q, :why)"
                ),
                {
                    "url": f"{status}/{quarantined}/{read}",
                    "status": status,
                    "at": dt.datetime.now(dt.UTC) if read else None,
                    "q": quarantined,
                    "why": "bad" if quarantined else None,
                },
            )
    with read_session() as s:
        usable = set(
            s.execute(select(ScrapeRun.source_url).where(rules.usable_run(ScrapeRun))).scalars()
        )
    expected = {
        f"{status}/{quarantined}/{read}"
        for status, quarantined, read in cases
        if status in (ScrapeStatus.SUCCESS, ScrapeStatus.PARTIAL) and not quarantined and read
    }
    assert usable == expected


@pytest.mark.parametrize(
    ("status", "closed_ago", "due", "overdue"),
    [
        (MarketStatus.OPEN, -dt.timedelta(minutes=1), False, False),
        (MarketStatus.OPEN, dt.timedelta(minutes=1), True, False),
        (MarketStatus.OPEN, GRACE + dt.timedelta(minutes=1), True, True),
        (MarketStatus.RESOLVED, GRACE + dt.timedelta(minutes=1), False, False),
        (MarketStatus.CANCELLED, GRACE + dt.timedelta(minutes=1), False, False),
    ],
)
def test_due_and_overdue(
    db: str, status: MarketStatus, closed_ago: dt.timedelta, due: bool, overdue: bool
) -> None:
    with transaction() as s:
        mid = new_market(s)
    with psycopg.connect(db) as conn:
        # Move the close into the past, and set the final state by hand (the CHECKs still hold).
        conn.execute(
            "UPDATE markets SET opens_at = now() - interval '2 days', closes_at = now() - %s,"
            " status = %s, outcome = CASE WHEN %s = 'RESOLVED' THEN 'YES' END,"
            " cancel_reason = CASE WHEN %s = 'CANCELLED' THEN 'OPERATOR_CANCELLED' END"
            " WHERE id = %s",
            (closed_ago, status.value, status.value, status.value, mid),
        )
    m = aliased(Market, name="m")
    with read_session() as s:
        got = s.execute(select(rules.due(m), rules.overdue(m, GRACE)).where(m.id == mid)).one()
        # The same rules as SQL text, as the read models use them.
        as_text = s.execute(
            text(
                f"SELECT {rules.sql(rules.due(m))},"
                f" {rules.sql(rules.overdue(m, literal_column('make_interval(mins => :grace)')))}"
                " FROM markets m WHERE m.id = :id"
            ),
            {"id": mid, "grace": int(GRACE.total_seconds() // 60)},
        ).one()
    assert tuple(got) == tuple(as_text) == (due, overdue)


def test_the_usable_snapshot_index_is_the_usable_run_rule(db: str) -> None:
    with psycopg.connect(db) as conn:
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_scrape_runs_usable_snapshot'"
        ).fetchone() or ("",)
    assert "snapshot_at IS NOT NULL" in definition and "NOT quarantined" in definition
    assert "'SUCCESS'" in definition and "'PARTIAL'" in definition


# (closed ago, held now, earlier held time after close) -> (held, due, overdue): a hold stops
# the grace clock; the time held after the close extends it.
@pytest.mark.parametrize(
    ("closed_ago", "held", "held_for", "expected"),
    [
        (GRACE + dt.timedelta(minutes=1), True, dt.timedelta(0), (True, False, False)),
        (GRACE + dt.timedelta(minutes=1), False, dt.timedelta(minutes=2), (False, True, False)),
        (GRACE + dt.timedelta(minutes=3), False, dt.timedelta(minutes=2), (False, True, True)),
        (dt.timedelta(minutes=1), True, dt.timedelta(0), (True, False, False)),
    ],
)
def test_a_hold_stops_resolution_and_the_grace_clock(
    db: str,
    closed_ago: dt.timedelta,
    held: bool,
    held_for: dt.timedelta,
    expected: tuple[bool, bool, bool],
) -> None:
    with transaction() as s:
        mid = new_market(s)
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET opens_at = now() - interval '2 days', closes_at = now() - %s,"
            " held_at = CASE WHEN %s THEN now() END, held_for = %s WHERE id = %s",
            (closed_ago, held, held_for, mid),
        )
    m = aliased(Market, name="m")
    with read_session() as s:
        got = s.execute(
            select(rules.held(m), rules.due(m), rules.overdue(m, GRACE)).where(m.id == mid)
        ).one()
    assert tuple(got) == expected


def test_release_adds_only_the_time_held_after_the_close(db: str) -> None:
    with transaction() as s:
        mid = new_market(s)
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET opens_at = now() - interval '2 days',"
            " closes_at = now() - interval '10 minutes',"
            " held_at = now() - interval '1 hour' WHERE id = %s",
            (mid,),
        )
    m = aliased(Market, name="m")
    with read_session() as s:
        (stopped,) = s.execute(select(rules.held_after_close(m)).where(m.id == mid)).one()
    assert dt.timedelta(minutes=9) < stopped < dt.timedelta(minutes=11)


# The resolution windows: the Python membership the resolver applies and the SQL one that the
# resolver's reads, retention and the views render must agree, at each bound and a microsecond
# beyond it.
_CLOSE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
_LAG = dt.timedelta(minutes=60)
_MAX_AGE = dt.timedelta(minutes=30)
_TICK = dt.timedelta(microseconds=1)
# Offsets from the close, and whether an instant there lies in the window.
_WINDOWS = {
    "snapshot": {-_TICK: False, dt.timedelta(0): True, _LAG: True, _LAG + _TICK: False},
    "follower": {
        -_MAX_AGE - _TICK: False,
        -_MAX_AGE: True,
        dt.timedelta(0): True,
        _LAG: True,
        _LAG + _TICK: False,
    },
}


def _window(name: str, close: Any, lag: Any, max_age: Any) -> rules.Window:
    if name == "snapshot":
        return rules.snapshot_window(close, lag)
    return rules.follower_window(close, max_age, lag)


@pytest.mark.parametrize("name", ["snapshot", "follower"])
def test_python_and_sql_agree_on_a_resolution_window(db: str, name: str) -> None:
    window = _window(name, _CLOSE, _LAG, _MAX_AGE)
    # Rendered as the services render it: SQL text over bound parameters (retention, views).
    rendered = text(
        "SELECT "
        + rules.sql(
            _window(
                name,
                literal_column(":close", DateTime(timezone=True)),
                literal_column(":lag", Interval()),
                literal_column(":max_age", Interval()),
            ).contains(literal_column(":at", DateTime(timezone=True)))
        )
    )
    params = {"close": _CLOSE, "lag": _LAG, "max_age": _MAX_AGE}
    with read_session() as s:
        for offset, expected in _WINDOWS[name].items():
            at = _CLOSE + offset
            assert window.holds(at) is expected, offset
            assert s.scalar(select(window.contains(at))) is expected, offset
            assert s.scalar(rendered, {**params, "at": at}) is expected, offset
