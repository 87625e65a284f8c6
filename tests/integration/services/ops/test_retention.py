"""Retention on the real database (issue 19): it removes what the policy says, and never the
evidence of a market that is open or final within its re-settle window."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config import get_settings
from db.engine import transaction
from services.ops import retention
from services.ops.retention_policy import REMOVED
from services.resolution import resolver
from services.vocabulary import MarketStatus
from tests.support.factories import new_market
from tests.support.money import plant_final

NOW = dt.datetime.now(dt.UTC)


def _ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def _policy(**changes: Any) -> retention.Policy:
    return dataclasses.replace(retention.Policy.of(get_settings()), **changes)


def _run(
    db: str,
    *,
    started: dt.datetime,
    timeframe: str = "daily",
    status: str = "SUCCESS",
    rows: int = 3,
    html: str | None = None,
) -> int:
    """A scrape run started at `started`, its snapshot 19 s later, with `rows` scraped rows."""
    with psycopg.connect(db) as conn:
        run_id = conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, started_at, finished_at,"
            " snapshot_at, status, rows_found, rows_stored, html_path)"
            " VALUES (%s, 'SCHEDULE', 'http://127.0.0.1/', %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (
                timeframe,
                started,
                started + dt.timedelta(seconds=20),
                None if status == "FAILED" else started + dt.timedelta(seconds=19),
                status,
                rows,
                rows,
                html,
            ),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO scraped_kols (run_id, rank, username, wallet, wins, losses, sol_gain,"
            " usd_gain, timeframe, scraped_at)"
            " SELECT %s, g, 'k' || g, 'w' || g, 1, 1, 1, 1, %s, %s FROM generate_series(1, %s) g",
            (run_id, timeframe, started, rows),
        )
    return int(run_id)


def _final_market(
    db: str,
    status: MarketStatus,
    *,
    closed: dt.datetime,
    final: dt.datetime,
    evidence_run: int | None = None,
    **fields: Any,
) -> int:
    """A market closed at `closed`, RESOLVED or CANCELLED at `final`, with an attempt citing
    `evidence_run` when given."""
    with transaction() as s:
        market_id = new_market(s, **fields)
        plant_final(s, market_id, status)
    column = "resolved_at" if status is MarketStatus.RESOLVED else "cancelled_at"
    with psycopg.connect(db) as conn:
        conn.execute(
            f"UPDATE markets SET opens_at = %s, closes_at = %s, {column} = %s WHERE id = %s",
            (closed - dt.timedelta(days=1), closed, final, market_id),
        )
        if evidence_run is not None:
            conn.execute(
                "INSERT INTO resolution_attempts (market_id, trigger, started_at, finished_at,"
                " result, evidence) VALUES (%s, 'schedule', %s, %s, 'RESOLVED_YES',"
                " jsonb_build_object('source', 'scrape_run', 'run_id', %s::bigint))",
                (market_id, closed, closed, evidence_run),
            )
    return market_id


def _alive(db: str, run_ids: list[int]) -> dict[int, int]:
    """For each run still there: its scraped rows."""
    with psycopg.connect(db) as conn:
        return dict(
            conn.execute(
                "SELECT r.id, count(k.id) FROM scrape_runs r"
                " LEFT JOIN scraped_kols k ON k.run_id = r.id WHERE r.id = ANY(%s) GROUP BY r.id",
                (run_ids,),
            ).fetchall()
        )


def test_retention_never_removes_evidence_of_open_or_recently_final_markets(db: str) -> None:
    old = 200  # days: far past the 90-day scrape window
    baseline_run = _run(db, started=_ago(days=old))
    used_by_resolved = _run(db, started=_ago(days=old - 1))
    in_window_of_cancelled = _run(db, started=_ago(days=old - 2))
    used_by_long_final = _run(db, started=_ago(days=old - 3))
    unused = _run(db, started=_ago(days=old - 4))
    failed = _run(db, started=_ago(days=old - 5), status="FAILED", rows=0)
    young = _run(db, started=_ago(days=10))

    # An open market whose baseline was read from an old run.
    with transaction() as s:
        new_market(
            s,
            baseline={"a": {"rank": 1, "wins": 1, "losses": 1}, "source": {"run_id": baseline_run}},
            closes_at=NOW + dt.timedelta(days=1),
            opens_at=_ago(days=old),
        )
    # Resolved 10 days ago (inside the 30-day re-settle window) from an old run.
    _final_market(
        db,
        MarketStatus.RESOLVED,
        closed=_ago(days=old - 1),
        final=_ago(days=10),
        evidence_run=used_by_resolved,
    )
    # Cancelled 5 days ago; a usable run lies in its resolution window [close, close + lag]:
    # what a re-settle or a re-evaluation would read.
    _final_market(
        db,
        MarketStatus.CANCELLED,
        closed=_ago(days=old - 2) - dt.timedelta(minutes=5),
        final=_ago(days=5),
    )
    # Resolved 60 days ago: outside the window, its evidence may go.
    _final_market(
        db,
        MarketStatus.RESOLVED,
        closed=_ago(days=old - 3),
        final=_ago(days=60),
        evidence_run=used_by_long_final,
    )

    report = retention.run(_policy())

    assert _alive(
        db,
        [
            baseline_run,
            used_by_resolved,
            in_window_of_cancelled,
            used_by_long_final,
            unused,
            failed,
            young,
        ],
    ) == {
        baseline_run: 3,
        used_by_resolved: 3,
        in_window_of_cancelled: 3,
        young: 3,
    }
    assert report.removed["scrape_runs"] == 3
    assert report.removed["scraped_kols"] == 6
    assert set(report.removed) == set(REMOVED)  # every count has its label on the Jobs page


def test_the_resolver_and_retention_agree_on_the_snapshot_window(db: str, tmp_path: Path) -> None:
    """A run at each bound of a market's snapshot window, and a microsecond outside it: the
    runs a re-evaluation reads are exactly the runs retention keeps (one rule, `db.rules`)."""
    lag = dt.timedelta(minutes=get_settings().max_scrape_lag_minutes)
    tick = dt.timedelta(microseconds=1)
    cases = {-tick: False, dt.timedelta(0): True, lag: True, lag + tick: False}
    snapshot_after_start = dt.timedelta(seconds=19)  # as `_run` dates its snapshot
    markets: dict[int, tuple[int, bool]] = {}
    for day, (offset, inside) in enumerate(cases.items()):
        closed = _ago(days=150 + day)  # a day apart: each window holds one run of the four
        run = _run(db, started=closed + offset - snapshot_after_start)
        market = _final_market(
            db, MarketStatus.CANCELLED, closed=closed, final=_ago(days=1), timeframe="daily"
        )
        markets[market] = (run, inside)

    found = resolver.reevaluate(list(markets), trigger="test")
    retention.run(_policy(artifacts_dir=tmp_path))

    alive = _alive(db, [run for run, _ in markets.values()])
    for market, (run, inside) in markets.items():
        assert (found[market].evidence.get("run_id") == run) is inside, (market, inside)
        assert (run in alive) is inside, (market, inside)


def test_a_shorter_resettle_window_releases_the_evidence(db: str) -> None:
    run = _run(db, started=_ago(days=200))
    _final_market(
        db, MarketStatus.RESOLVED, closed=_ago(days=199), final=_ago(days=10), evidence_run=run
    )
    retention.run(_policy(resettle_window_days=30))
    assert _alive(db, [run]) == {run: 3}
    retention.run(_policy(resettle_window_days=7))
    assert _alive(db, [run]) == {}


def _readings(db: str, handle: str, start: dt.datetime, end: dt.datetime, every_min: int) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO follower_history (handle, followers, fetched_at)"
            " SELECT %s, 1000, g FROM generate_series(%s::timestamptz, %s::timestamptz,"
            " make_interval(mins => %s)) g",
            (handle, start, end, every_min),
        )


def _history(db: str, handle: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    with psycopg.connect(db) as conn:
        return [
            at
            for (at,) in conn.execute(
                "SELECT fetched_at FROM follower_history WHERE handle = %s"
                " AND fetched_at >= %s AND fetched_at < %s ORDER BY fetched_at",
                (handle, start, end),
            )
        ]


def test_follower_history_thinned_to_one_an_hour_after_a_week_and_dropped_after_a_year(
    db: str,
) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("SELECT follower_history_add_partitions(14, 2)")
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    old_start, old_end = hour - dt.timedelta(days=10), hour - dt.timedelta(days=9)
    _readings(db, "thin", old_start, old_end - dt.timedelta(minutes=5), 5)  # 12 per hour
    recent = hour - dt.timedelta(days=2)
    _readings(db, "thin", recent, recent + dt.timedelta(hours=1), 5)
    ancient = hour - dt.timedelta(days=420)
    _readings(db, "thin", ancient, ancient + dt.timedelta(hours=1), 5)
    # A follower market pinned to @kept closed 9 days ago and resolved then: within its window,
    # so every reading around its close stays at full resolution.
    close = hour - dt.timedelta(days=9, minutes=-30)
    _readings(db, "kept", close - dt.timedelta(hours=2), close + dt.timedelta(hours=2), 5)
    _final_market(
        db,
        MarketStatus.RESOLVED,
        closed=close,
        final=close + dt.timedelta(minutes=2),
        type="follower_growth",
        timeframe=None,
        threshold=10,
        baseline={"a": {"followers": 900, "x_user_id": "42", "x_handle": "Kept"}},
    )

    report = retention.run(_policy())

    thinned = _history(db, "thin", old_start, old_end)
    assert thinned == [old_start + dt.timedelta(hours=h) for h in range(24)]
    assert len(_history(db, "thin", recent, recent + dt.timedelta(hours=2))) == 13  # untouched
    assert _history(db, "thin", ancient, ancient + dt.timedelta(days=1)) == []
    s = get_settings()
    lo = close - dt.timedelta(minutes=s.follower_cache_max_age_minutes)
    hi = close + dt.timedelta(minutes=s.max_scrape_lag_minutes)
    kept = _history(db, "kept", close - dt.timedelta(hours=2), close + dt.timedelta(hours=3))
    assert [t for t in kept if lo <= t <= hi] == [
        lo + dt.timedelta(minutes=5 * i) for i in range(int((hi - lo).total_seconds() // 300) + 1)
    ]
    # Outside the kept window, the same hours are thinned like any other.
    outside = [t for t in kept if t < lo]
    assert len({t.replace(minute=0) for t in outside}) == len(outside)
    assert report.removed["follower_partitions_dropped"] >= 1
    assert report.removed["follower_rows_thinned"] >= 24 * 11
    with psycopg.connect(db) as conn:
        partitions = {
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'follower_history'::regclass"
            )
        }
    assert f"follower_history_{ancient:%Y%m}" not in partitions
    assert f"follower_history_{hour:%Y%m}" in partitions
    # Run again: nothing more to do.
    again = retention.run(_policy())
    assert again.removed["follower_rows_thinned"] == 0
    assert again.removed["follower_rows_removed"] == 0


def test_job_runs_and_deliveries_removed_after_their_windows(db: str) -> None:
    with psycopg.connect(db) as conn:
        for job, days in (("resolve", 40), ("resolve", 35), ("resolve", 1), ("generate", 50)):
            conn.execute(
                "INSERT INTO job_runs (job, host, pid, started_at, finished_at, status)"
                " VALUES (%s, 'h', 1, %s, %s, 'SUCCESS')",
                (job, _ago(days=days), _ago(days=days)),
            )
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, started_at, status)"
            " VALUES ('stuck', 'h', 1, %s, 'RUNNING')",
            (_ago(days=60),),
        )
    report = retention.run(_policy(job_run_days=30))
    with psycopg.connect(db) as conn:
        left = sorted(conn.execute("SELECT job, status FROM job_runs").fetchall())
    # The two old resolve runs go; generate's only run stays (its latest); RUNNING is not ours.
    assert left == [("generate", "SUCCESS"), ("resolve", "SUCCESS"), ("stuck", "RUNNING")]
    assert report.removed["job_runs"] == 2


def _file(path: Path, size: int, days_old: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    at = (NOW - dt.timedelta(days=days_old)).timestamp()
    os.utime(path, (at, at))
    return path


def test_artifacts_removed_by_age_then_by_budget(db: str, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    outside = _file(tmp_path / "elsewhere" / "precious.html", 5000, 100)
    old = _file(root / "run-1.html", 1000, 40)
    older_young = _file(root / "run-2.html", 3000, 3)
    young = _file(root / "sub" / "run-3.png", 3000, 1)
    youngest = _file(root / "run-4.png", 3000, 0.1)
    (root / "link").symlink_to(outside)

    report = retention.run(
        _policy(artifacts_dir=root, artifact_days=30, artifact_budget_bytes=7000)
    )

    assert not old.exists()  # past the age window
    assert not older_young.exists()  # the oldest of the rest, over the 7,000-byte budget
    assert young.exists() and youngest.exists()
    assert outside.exists() and (root / "link").is_symlink()
    assert report.removed["artifact_files"] == 2
    assert report.removed["artifact_bytes"] == 4000
    assert report.artifact_bytes_after == 6000


def test_a_removed_runs_artifacts_go_with_it(db: str, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    page = _file(root / "run.html", 100, 1)  # young: only its run's removal takes it
    run = _run(db, started=_ago(days=200), status="FAILED", rows=0, html=str(page))
    retention.run(_policy(artifacts_dir=root))
    assert _alive(db, [run]) == {}
    assert not page.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT follower_history_drop_partitions(now())",
        "SELECT follower_history_drop_partitions(now() - interval '6 days')",
        "SELECT follower_history_drop_partitions(NULL)",
        "SELECT follower_history_add_partitions(-1, 2)",
        "SELECT follower_history_add_partitions(0, 25)",
        "SELECT follower_history_add_partitions(NULL, 1)",
    ],
)
def test_partition_functions_refuse_bad_arguments(db: str, sql: str) -> None:
    with psycopg.connect(db) as conn:
        before = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'follower_history'::regclass"
        ).fetchone()
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute(sql)
        conn.rollback()
        after = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'follower_history'::regclass"
        ).fetchone()
    assert before == after
