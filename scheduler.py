"""The scheduler process: APScheduler 3 runs every timed job through the service modules.

    python scheduler.py                 run (leader or standby)
    python scheduler.py --once resolve  run one job once now and exit
    python scheduler.py --list          list the jobs

Several instances may run. The leader holds a session-level PostgreSQL advisory lock on a
connection of its own; the others poll for it and take over within seconds when the leader dies
(its connection closes, PostgreSQL releases the lock). Leadership only avoids wasted work: the
services claim rows (`FOR UPDATE SKIP LOCKED`, status re-checked under the lock), so a brief
overlap of two leaders cannot double anything. APScheduler keeps its jobs in memory only; its
job stores are never shared between processes (they would not prevent duplicate runs).

Scheduling choices: `coalesce=True` (a job that missed several runs, e.g. after a pause, runs
once, not once per missed tick), `max_instances=1` (a job never overlaps itself), and a
`misfire_grace_time` of half the interval for frequent jobs (a run that is too late is skipped:
the next tick does the same work with fresher data).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psycopg
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from config import get_settings, setup_logging
from db.engine import libpq_url
from services.money.integrity import (
    INTEGRITY_JOBS,
    IntegrityReport,
    check_integrity,
    check_recent,
)
from services.ops import alerting, jobs, retention
from services.ops.jobs import JobContext
from services.ops.schedule import schedules
from services.processes import become_subreaper, kill_tree
from services.resolution import generator, resolver
from services.sources import followers, scraper
from services.vocabulary import JobStatus, ScrapeStatus, ScrapeTrigger, Timeframe

log = logging.getLogger("kolops.scheduler")

LEADER_LOCK_KEY = 0x4B4F4C4F5053  # "KOLOPS"
HEARTBEAT_S = 2.0


class IntegrityViolations(Exception):
    """The integrity check found violations: recorded as a failed job run so it shows red."""


def integrity_job(ctx: JobContext) -> None:
    """The periodic check: what changed since the last verified point."""
    report = check_recent()
    ctx.counts["transactions_verified"] = report.transactions_verified
    _fail_on_violations(ctx, report)


def integrity_full_job(ctx: JobContext) -> None:
    """The full audit of every invariant over every row (nightly)."""
    _fail_on_violations(ctx, check_integrity())


def retention_job(ctx: JobContext) -> None:
    ctx.counts.update(retention.run().counts())


def _fail_on_violations(ctx: JobContext, report: IntegrityReport) -> None:
    ctx.counts["violations"] = len(report.violations)
    if not report.ok:
        for v in report.violations:
            log.error("integrity violation check=%s subject=%s %s", v.check, v.subject, v.detail)
        summary = "; ".join(f"{v.check}:{v.subject}" for v in report.violations[:10])
        raise IntegrityViolations(f"{len(report.violations)} violations: {summary}")


def resolve_job(ctx: JobContext) -> None:
    report = resolver.sweep(trigger="schedule", should_stop=lambda: ctx.remaining_s() <= 0)
    ctx.counts.update(report.counts())


def scrape_job(timeframe: Timeframe) -> Callable[[JobContext], None]:
    def run(ctx: JobContext) -> None:
        result = scraper.scrape_leaderboard(timeframe, trigger=ScrapeTrigger.SCHEDULE)
        ctx.counts.update(
            run_id=result.run_id,
            status=result.status.value,
            stored=result.rows_stored,
            rejected=result.rows_rejected,
        )
        if result.status is ScrapeStatus.FAILED:
            raise ScrapeFailed(
                f"scrape run {result.run_id} ({timeframe}) failed: "
                f"{result.error_code} {result.error_message or ''}".strip()
            )

    return run


class ScrapeFailed(Exception):
    """A scheduled scrape failed: recorded as a failed job run (the run row holds the detail)."""


def followers_job(ctx: JobContext) -> None:
    report = followers.refresh_open_market_handles()
    ctx.counts.update(report.counts())


def reap_job(ctx: JobContext) -> None:
    ctx.counts.update(jobs.reap_abandoned(older_than_s=2 * get_settings().job_timeout_s))


def generate_job(ctx: JobContext) -> None:
    ctx.counts.update(generator.generate().counts())


@dataclass(frozen=True)
class JobSpec:
    name: str
    run: Callable[[JobContext], None]
    trigger: Callable[[], BaseTrigger]
    misfire_grace_s: int


JOBS: dict[str, Callable[[JobContext], None]] = {
    "resolve": resolve_job,
    **{f"scrape_{tf}": scrape_job(tf) for tf in Timeframe},
    "followers": followers_job,
    "generate": generate_job,
    "integrity": integrity_job,
    "integrity_full": integrity_full_job,
    "retention": retention_job,
    "reap": reap_job,
    "alerts": alerting.job,  # services/ops/alerting.py: evaluate the alert rules, queue deliveries
}


def job_specs() -> dict[str, JobSpec]:
    """Every job with its schedule (services/ops/schedule.py, shared with the dashboard)."""
    return {
        name: JobSpec(name, JOBS[name], sched.trigger, sched.misfire_grace_s)
        for name, sched in schedules().items()
    }


# How long a job's process may take to exit once it has reported, before it is killed.
_EXIT_S = 10.0


def run_job(name: str, *, timeout_s: float | None = None) -> bool:
    """Run one job now, recording its run; True when it succeeded. Never raises: a failing job
    must not stop the scheduler.

    The job runs in a process of its own (spawned: no threads, locks or connections inherited)
    and must report by its deadline, `timeout_s` (JOB_TIMEOUT_S). One that does not is killed
    with everything it started (a browser included) and recorded TIMEOUT, and the markets it had
    leased are freed: a hung job costs its own run only, never the next one. Its transactions
    roll back when its connections drop, so the database stays consistent.
    """
    spec = job_specs()[name]
    timeout = timeout_s if timeout_s is not None else get_settings().job_timeout_s
    started = time.monotonic()
    deadline = started + timeout
    try:
        run_id = jobs.start_run(name)
    except Exception:
        log.exception("job=%s could not be recorded; not run", name)
        return False
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_job_process, args=(spec.name, run_id, deadline, sender), name=f"job-{name}"
    )
    try:
        child.start()
        sender.close()
        outcome = _outcome(receiver, deadline)
        if outcome is None and child.is_alive():
            kill_tree(child.pid or 0)
            child.join()
            jobs.mark_timed_out(run_id, timeout)
            released = resolver.release_leases(child.pid or 0)
            if released:
                log.warning("job=%s run=%s: freed %d leased markets", name, run_id, released)
            return False
        child.join(_EXIT_S)
        if child.is_alive():
            kill_tree(child.pid or 0)
            child.join()
        if outcome is None:
            ended = f"the job's process ended (exit code {child.exitcode}) without reporting"
            outcome = _JobOutcome(False, {}, ended)
        jobs.finish_run(
            name,
            run_id,
            status=JobStatus.SUCCESS if outcome.ok else JobStatus.FAILED,
            counts=outcome.counts,
            error=outcome.error,
            took_s=time.monotonic() - started,
        )
        if name in INTEGRITY_JOBS and not outcome.ok:
            # Money that does not add up is told at once, not at the next alerts evaluation.
            run_job("alerts")
        return outcome.ok
    except Exception:
        log.exception("job=%s run=%s: the scheduler could not follow it", name, run_id)
        if child.pid is not None and child.is_alive():
            kill_tree(child.pid)
        return False
    finally:
        receiver.close()


@dataclass(frozen=True)
class _JobOutcome:
    ok: bool
    counts: dict[str, Any]
    error: str | None


def _outcome(receiver: Connection, deadline: float) -> _JobOutcome | None:
    """The child's report, or None when it gave none by the deadline (or died first)."""
    try:
        if receiver.poll(max(0.0, deadline - time.monotonic())):
            outcome: _JobOutcome = receiver.recv()
            return outcome
    except EOFError:
        pass
    return None


def _job_process(name: str, run_id: int, deadline: float, sender: Connection) -> None:
    """A job's process: run it, report how it went."""
    setup_logging()
    become_subreaper()  # what the job starts stays in its tree, for kill_tree
    ctx = JobContext(name=name, run_id=run_id, deadline=deadline, counts={})
    try:
        JOBS[name](ctx)
        outcome = _JobOutcome(True, ctx.counts, None)
    except Exception as exc:
        log.exception("job=%s run=%s failed", name, run_id)
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]
        outcome = _JobOutcome(False, ctx.counts, error)
    sender.send(outcome)
    sender.close()


class LeaderLock:
    """A session-level advisory lock held on a dedicated connection."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, application_name="kolops-scheduler-leader"
                )
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)
            ).fetchone()
            return bool(row and row[0])
        except psycopg.Error as exc:
            log.warning("leader lock: %s", exc)
            self.release()
            return False

    def still_held(self) -> bool:
        """A session-level lock lives as long as its session: alive connection = lock held."""
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


class SchedulerProcess:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.started_at = dt.datetime.now(dt.UTC)
        self.instance_id = f"{jobs.HOST}:{os.getpid()}:{int(self.started_at.timestamp())}"

    def _build(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            # A thread per job: each only waits for its job's process, and a job at its deadline
            # must not hold up another job's start.
            executors={"default": ThreadPoolExecutor(max_workers=len(JOBS))},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=dt.UTC,
        )
        for spec in job_specs().values():
            scheduler.add_job(
                run_job,
                spec.trigger(),
                args=[spec.name],
                id=spec.name,
                name=spec.name,
                misfire_grace_time=spec.misfire_grace_s,
                next_run_time=dt.datetime.now(dt.UTC),
            )
        return scheduler

    def _beat(self, *, leader: bool) -> None:
        try:
            jobs.heartbeat(self.instance_id, is_leader=leader, started_at=self.started_at)
        except Exception as exc:  # the database may be briefly away; keep going
            log.warning("heartbeat failed: %s", exc)

    def run(self) -> None:
        lock = LeaderLock(libpq_url())
        log.info("scheduler %s starting (standby until leader)", self.instance_id)
        while not self.stop.is_set():
            if not lock.try_acquire():
                self._beat(leader=False)
                self.stop.wait(HEARTBEAT_S)
                continue
            log.info("scheduler %s is the leader", self.instance_id)
            scheduler = self._build()
            scheduler.start()
            try:
                while not self.stop.is_set():
                    self._beat(leader=True)
                    if not lock.still_held():
                        log.error("leader lock lost; back to standby")
                        break
                    self.stop.wait(HEARTBEAT_S)
            finally:
                # Stop taking new work; running jobs finish (or roll back) before we go on.
                scheduler.shutdown(wait=True)
                lock.release()
        jobs.mark_stopped(self.instance_id)
        log.info("scheduler %s stopped", self.instance_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", metavar="JOB", help="run one job once now and exit")
    parser.add_argument("--list", action="store_true", help="list the jobs and exit")
    args = parser.parse_args(argv)
    setup_logging()
    specs = job_specs()
    if args.list:
        for sched in schedules().values():
            print(f"{sched.name:<20} {sched.describe}")
        return 0
    if args.once:
        if args.once not in specs:
            print(f"unknown job {args.once!r}; jobs: {', '.join(specs)}", file=sys.stderr)
            return 2
        return 0 if run_job(args.once) else 1

    process = SchedulerProcess()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the current work", signal.Signals(signum).name)
        process.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    process.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
