"""The scheduler process: job runs recorded, failures survived, leader failover, kill -9 safety,
graceful shutdown, and the run-once command line. Real processes, real PostgreSQL, stand-ins."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import scheduler
from config import PROJECT_ROOT
from db.engine import transaction
from services.money import bets, users
from services.money.integrity import check_integrity
from services.ops import jobs
from services.vocabulary import MarketType
from tests.conftest import Standins
from tests.support.factories import new_market
from tests.support.processes import browsers_watched


def _runs(db: str, job: str) -> list[tuple[str, Any, str | None]]:
    with psycopg.connect(db) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT status, counts, error FROM job_runs WHERE job = %s ORDER BY id", (job,)
        ).fetchall()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def spawn(standins: Standins) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python scheduler.py ...` processes with the test's environment; always reaped."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "scheduler.py", *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_every_job_runs_once_and_records_its_run(db: str, standins: Standins) -> None:
    for name in (
        "scrape_daily",
        "followers",
        "generate",
        "resolve",
        "integrity",
        "integrity_full",
        "retention",
    ):
        assert scheduler.run_job(name), _runs(db, name)
        [(status, _counts, error)] = _runs(db, name)
        assert (status, error) == ("SUCCESS", None)
    assert _runs(db, "scrape_daily")[0][1]["status"] == "SUCCESS"
    assert _runs(db, "generate")[0][1]["created"] > 0
    # The periodic check verified what the jobs before it wrote; retention recorded its figures.
    assert _runs(db, "integrity")[0][1]["transactions_verified"] > 0
    assert _runs(db, "retention")[0][1]["db_bytes_after"] > 0


def test_a_failing_job_is_recorded_failed_and_the_caller_goes_on(
    db: str, standins: Standins
) -> None:
    standins.kolscan.set_variant("error")
    assert scheduler.run_job("scrape_daily") is False
    [(status, counts, error)] = _runs(db, "scrape_daily")
    assert status == "FAILED" and "SCRAPE_HTTP_ERROR" in error
    assert counts["status"] == "FAILED"
    # An integrity violation is a failed run too, with the violation in its error.
    with psycopg.connect(db) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE accounts SET balance = 1 WHERE kind = 'FEE'")
    assert scheduler.run_job("integrity") is False
    assert _runs(db, "integrity")[0][0] == "FAILED"
    assert scheduler.run_job("integrity_full") is False
    assert "ledger_total_zero" in _runs(db, "integrity_full")[0][2]
    standins.kolscan.set_variant("normal")
    assert scheduler.run_job("scrape_daily") is True


def test_a_hung_job_is_killed_at_its_deadline_and_the_next_run_goes_ahead(
    db: str, standins: Standins, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page that never yields, and a scrape budget far beyond the job's deadline: the job
    # really hangs, in Playwright, until something kills it.
    standins.kolscan.set_variant("busy")
    monkeypatch.setenv("SCRAPE_TIMEOUT_S", "600")
    with browsers_watched() as chromium:
        started = time.monotonic()
        assert scheduler.run_job("scrape_daily", timeout_s=4) is False
        took = time.monotonic() - started
    assert chromium, "the hung job never started a browser"
    assert took < 4 + 3
    [(status, _counts, error)] = _runs(db, "scrape_daily")
    assert status == "TIMEOUT" and "killed" in error
    # The next run is not refused because of the hung one: it runs, and succeeds.
    standins.kolscan.set_variant("normal")
    assert scheduler.run_job("scrape_daily", timeout_s=60) is True
    assert [r[0] for r in _runs(db, "scrape_daily")] == ["TIMEOUT", "SUCCESS"]


def test_run_once_command_line(db: str, standins: Standins) -> None:
    ok = subprocess.run(
        [sys.executable, "scheduler.py", "--once", "integrity"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "job=integrity" in ok.stdout and "status=SUCCESS" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "scheduler.py", "--once", "nope"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown job" in bad.stderr
    listed = subprocess.run(
        [sys.executable, "scheduler.py", "--list"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and "resolve" in listed.stdout


def _leaders(db: str) -> list[int]:
    with psycopg.connect(db) as conn:
        return [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM scheduler_instances WHERE is_leader AND stopped_at IS NULL"
                " AND heartbeat_at > now() - interval '4 seconds'"
            )
        ]


QUIET = {
    "RESOLVE_INTERVAL_S": "3600",
    "INTEGRITY_INTERVAL_S": "3600",
    "SCRAPE_CRON": "0 0 1 1 *",
    "FOLLOWER_REFRESH_INTERVAL_S": "3600",
    "GENERATE_INTERVAL_S": "3600",
}


def test_leader_failover_and_graceful_shutdown(db: str, spawn: Callable[..., Any]) -> None:
    first = spawn(**QUIET)
    _wait(lambda: _leaders(db) == [first.pid], 30, "the first process to lead")
    second = spawn(**QUIET)
    _wait(lambda: len(jobs.scheduler_state().instances) == 2, 30, "the standby's heartbeat")
    assert _leaders(db) == [first.pid]

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.monotonic()
    _wait(lambda: _leaders(db) == [second.pid], 15, "the standby to take over")
    assert time.monotonic() - killed_at < 10

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    with psycopg.connect(db) as conn:
        stopped = conn.execute(
            "SELECT stopped_at FROM scheduler_instances WHERE pid = %s", (second.pid,)
        ).fetchone()
    assert stopped and stopped[0] is not None


@pytest.mark.slow
def test_kill_9_mid_sweep_leaves_the_database_consistent(
    db: str, standins: Standins, spawn: Callable[..., Any]
) -> None:
    from services.sources import scraper

    scraper.scrape_leaderboard("daily", trigger="MANUAL")  # kols, and a snapshot for the close
    with psycopg.connect(db) as conn:
        kol_ids = [k for (k,) in conn.execute("SELECT id FROM kols ORDER BY id LIMIT 10")]
    with transaction() as s:
        users.fund_house(s, Decimal("1000000"), key="house", actor="test")
    uids = [users.register(f"k9u{i}", Decimal("500"), actor="test") for i in range(6)]
    now = dt.datetime.now(dt.UTC)
    market_ids = []
    for i in range(150):
        with transaction() as s:
            market_ids.append(
                new_market(
                    s,
                    kol_a_id=kol_ids[i % len(kol_ids)],
                    type=MarketType.SOL_GAIN_THRESHOLD,
                    threshold=Decimal(i % 7 - 3),
                    baseline={"a": {"rank": 1}},
                    opens_at=now - dt.timedelta(hours=1),
                    closes_at=now + dt.timedelta(hours=1),
                )
            )
        bets.place_bet(
            user_id=uids[i % 6],
            market_id=market_ids[-1],
            side="YES",
            action="BUY",
            amount=Decimal("3"),
        )
        bets.place_bet(
            user_id=uids[(i + 1) % 6],
            market_id=market_ids[-1],
            side="NO",
            action="BUY",
            amount=Decimal("2"),
        )
    with psycopg.connect(db) as conn:  # they closed just before the snapshot was taken
        conn.execute(
            "UPDATE markets SET closes_at = (SELECT snapshot_at FROM scrape_runs LIMIT 1)"
            " - interval '1 second'"
        )

    proc = spawn("--once", "resolve")
    _wait(lambda: _final(db) >= 10, 60, "the sweep to be under way")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_before = _final(db)
    assert done_before < len(market_ids), "the sweep finished before it could be killed"
    assert check_integrity().ok, check_integrity().violations

    with psycopg.connect(db) as conn:  # the killed process's leases would otherwise wait 5 min
        conn.execute("UPDATE markets SET claim_expires_at = now() WHERE status = 'OPEN'")
    assert scheduler.run_job("resolve")
    assert _final(db) == len(market_ids)
    assert check_integrity().ok
    with psycopg.connect(db) as conn:
        per_market = conn.execute(
            "SELECT count(*) FILTER (WHERE active), count(*) FROM settlements GROUP BY market_id"
        ).fetchall()
    assert len(per_market) == len(market_ids)
    assert set(per_market) == {(1, 1)}


def _final(db: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM markets WHERE status <> 'OPEN'").fetchone()
    return row[0] if row else 0


def test_runs_left_running_by_a_dead_process_are_reaped(db: str, standins: Standins) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, started_at) VALUES"
            " ('resolve', 'h', 1, now() - interval '2 hours'), ('resolve', 'h', 2, now())"
        )
        conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, started_at) VALUES"
            " ('daily', 'SCHEDULE', 'u', now() - interval '2 hours'),"
            " ('daily', 'SCHEDULE', 'u', now())"
        )
    assert scheduler.run_job("reap")
    [(_status, counts, _error)] = _runs(db, "reap")
    assert counts == {"job_runs": 1, "scrape_runs": 1}
    with psycopg.connect(db) as conn:
        jobs_left = conn.execute(
            "SELECT pid, status FROM job_runs WHERE job = 'resolve' ORDER BY pid"
        ).fetchall()
        scrapes = conn.execute(
            "SELECT status, error_code FROM scrape_runs ORDER BY started_at"
        ).fetchall()
    assert jobs_left == [(1, "FAILED"), (2, "RUNNING")]  # the live one is left alone
    assert scrapes == [("FAILED", "ABANDONED"), ("RUNNING", None)]


def _markets_needing_a_fresh_scrape(db: str, count: int) -> list[int]:
    """Due markets whose close comes after the only snapshot: deciding them needs an on-demand
    scrape of the daily board."""
    from services.sources import scraper

    scraper.scrape_leaderboard("daily", trigger="MANUAL")
    with psycopg.connect(db) as conn:
        kol_ids = [k for (k,) in conn.execute("SELECT id FROM kols ORDER BY id LIMIT 5")]
    with transaction() as s:
        users.fund_house(s, Decimal("100000"), key="house", actor="test")
    now = dt.datetime.now(dt.UTC)
    market_ids = []
    for i in range(count):
        with transaction() as s:
            market_ids.append(
                new_market(
                    s,
                    kol_a_id=kol_ids[i % len(kol_ids)],
                    type=MarketType.SOL_GAIN_THRESHOLD,
                    threshold=Decimal(i - 2),
                    baseline={"a": {"rank": 1}},
                    opens_at=now - dt.timedelta(hours=1),
                    closes_at=now + dt.timedelta(hours=1),
                )
            )
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE markets SET closes_at = now()")
    return market_ids


def _resolve_runs(db: str) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
    with psycopg.connect(db) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT status, started_at, finished_at FROM job_runs WHERE job = 'resolve' ORDER BY id"
        ).fetchall()


RESOLVE_EVERY_S = 4
HUNG_JOB_TIMEOUT_S = 6


@pytest.mark.slow
@pytest.mark.parametrize("schedulers", [1, 2], ids=["one scheduler", "with a standby"])
def test_resolution_stalls_at_most_one_interval_after_a_hung_job(
    db: str, standins: Standins, spawn: Callable[..., Any], schedulers: int
) -> None:
    market_ids = _markets_needing_a_fresh_scrape(db, 5)
    # The resolve job's on-demand scrape meets a page that never yields, with a scrape budget
    # far beyond the job's deadline: the job hangs for real.
    standins.kolscan.set_variant("busy")
    env = {
        **QUIET,
        "RESOLVE_INTERVAL_S": str(RESOLVE_EVERY_S),
        "JOB_TIMEOUT_S": str(HUNG_JOB_TIMEOUT_S),
        "SCRAPE_TIMEOUT_S": "600",
    }
    procs = [spawn(**env)]
    _wait(lambda: len(_leaders(db)) == 1, 30, "a leader")
    if schedulers == 2:
        procs.append(spawn(**env))
        _wait(lambda: len(jobs.scheduler_state().instances) == 2, 30, "the standby")

    _wait(lambda: any(r[0] == "TIMEOUT" for r in _resolve_runs(db)), 60, "the hung resolve run")
    standins.kolscan.set_variant("normal")  # the page recovers; resolution must follow at once

    def resolved_after_the_hung_run() -> bool:
        statuses = [r[0] for r in _resolve_runs(db)]
        return _final(db) >= len(market_ids) and "SUCCESS" in statuses[statuses.index("TIMEOUT") :]

    _wait(resolved_after_the_hung_run, 60, "the markets to be resolved after the hung run")
    runs = _resolve_runs(db)
    hung = next(i for i, r in enumerate(runs) if r[0] == "TIMEOUT")
    assert hung + 1 < len(runs), runs
    timed_out_at = runs[hung][2]
    following = runs[hung + 1]
    assert timed_out_at is not None
    # The next run starts within one interval of the hung one's deadline, and it decides.
    assert (following[1] - timed_out_at).total_seconds() <= RESOLVE_EVERY_S + 1.5, runs
    assert following[0] == "SUCCESS", runs
    with psycopg.connect(db) as conn:
        statuses = conn.execute(
            "SELECT DISTINCT status FROM markets WHERE id = ANY(%s)", (market_ids,)
        ).fetchall()
    assert statuses == [("RESOLVED",)]
    assert check_integrity().ok
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=30) == 0
