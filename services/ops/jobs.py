"""Job runs and scheduler heartbeats: how the ops team knows timed work happened.

A job run is a `job_runs` row: committed RUNNING before the work starts (`start_run`), so a hung
or killed run is visible, and finished afterwards in a fresh transaction (`finish_run`), or marked
TIMEOUT when the scheduler killed it at its deadline (`mark_timed_out`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from db.engine import read_session, transaction
from db.models import JobRun, SchedulerInstance
from services.errors import ErrorCode
from services.vocabulary import JobStatus, ScrapeStatus

log = logging.getLogger("kolops.jobs")

HOST = socket.gethostname()


@dataclass
class JobContext:
    """What a running job reports: its counts, and a deadline it must respect."""

    name: str
    run_id: int
    deadline: float  # time.monotonic() value
    counts: dict[str, Any]

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def start_run(name: str) -> int:
    """A RUNNING row for one run of `name`, committed before the work starts."""
    with transaction() as session:
        run_id = session.scalar(
            insert(JobRun).values(job=name, host=HOST, pid=os.getpid()).returning(JobRun.id)
        )
    assert run_id is not None
    return run_id


def finish_run(
    name: str,
    run_id: int,
    *,
    status: JobStatus,
    counts: dict[str, Any],
    error: str | None,
    took_s: float,
) -> None:
    """The run's outcome; only a RUNNING row is finished: a run already marked TIMEOUT (or
    closed by the reaper) keeps that verdict."""
    with transaction() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.id == run_id, JobRun.status == JobStatus.RUNNING.value)
            .values(finished_at=func.now(), status=status.value, counts=counts, error=error)
        )
    summary = " ".join(f"{k}={v}" for k, v in counts.items()) or "-"
    line = f"job={name} run={run_id} status={status} took={took_s:.2f}s {summary}"
    if error:
        log.error("%s error=%s", line, error)
    else:
        log.info(line)


def mark_timed_out(run_id: int, timeout_s: float) -> None:
    """The run overran its deadline and its process was killed."""
    with transaction() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.id == run_id, JobRun.status == JobStatus.RUNNING.value)
            .values(
                finished_at=func.now(),
                status=JobStatus.TIMEOUT.value,
                error=f"still running after {timeout_s:g}s: killed",
            )
        )
    log.error("job run=%s TIMEOUT after %gs: killed", run_id, timeout_s)


def reap_abandoned(older_than_s: float) -> dict[str, int]:
    """Close the job and scrape runs a dead process left RUNNING: a live run of either never
    lasts `older_than_s` (jobs are bounded by their timeout, scrapes by theirs)."""
    params = {
        "age": older_than_s,
        "code": ErrorCode.ABANDONED.value,
        "why": "abandoned: the process running it stopped before finishing",
        "running": JobStatus.RUNNING.value,
        "failed": JobStatus.FAILED.value,
        "scrape_running": ScrapeStatus.RUNNING.value,
        "scrape_failed": ScrapeStatus.FAILED.value,
    }
    with transaction() as session:
        jobs_closed = session.execute(
            text(
                "UPDATE job_runs SET status = :failed, finished_at = now(), error = :why"
                " WHERE status = :running AND started_at < now() - make_interval(secs => :age)"
            ),
            params,
        ).rowcount
        scrapes_closed = session.execute(
            text(
                "UPDATE scrape_runs SET status = :scrape_failed, finished_at = now(),"
                " error_code = :code, error_message = :why"
                " WHERE status = :scrape_running"
                " AND started_at < now() - make_interval(secs => :age)"
            ),
            params,
        ).rowcount
    return {"job_runs": jobs_closed, "scrape_runs": scrapes_closed}


def heartbeat(instance_id: str, *, is_leader: bool, started_at: dt.datetime) -> None:
    with transaction() as session:
        stmt = pg_insert(SchedulerInstance).values(
            id=instance_id,
            host=HOST,
            pid=os.getpid(),
            started_at=started_at,
            heartbeat_at=func.now(),
            is_leader=is_leader,
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[SchedulerInstance.id],
                set_={"heartbeat_at": func.now(), "is_leader": is_leader, "stopped_at": None},
            )
        )


def mark_stopped(instance_id: str) -> None:
    with transaction() as session:
        session.execute(
            update(SchedulerInstance)
            .where(SchedulerInstance.id == instance_id)
            .values(stopped_at=func.now(), is_leader=False)
        )


# -- read side, for the dashboard -----------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerState:
    instances: list[dict[str, Any]]
    leader_heartbeat_at: dt.datetime | None
    leader_age_s: float | None


def scheduler_state() -> SchedulerState:
    with read_session() as session:
        now = session.scalar(select(func.now()))
        rows = (
            session.execute(
                select(SchedulerInstance)
                .where(SchedulerInstance.stopped_at.is_(None))
                .order_by(SchedulerInstance.heartbeat_at.desc())
                .limit(20)
            )
            .scalars()
            .all()
        )
    instances = [
        {
            "instance": r.id,
            "host": r.host,
            "pid": r.pid,
            "leader": r.is_leader,
            "heartbeat_at": r.heartbeat_at,
            "started_at": r.started_at,
        }
        for r in rows
    ]
    leader = next((r for r in rows if r.is_leader), None)
    age = (now - leader.heartbeat_at).total_seconds() if leader and now else None
    return SchedulerState(instances, leader.heartbeat_at if leader else None, age)


def recent_runs(*, job: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    with read_session() as session:
        stmt = select(JobRun).order_by(JobRun.started_at.desc()).limit(limit)
        if job:
            stmt = stmt.where(JobRun.job == job)
        rows = session.execute(stmt).scalars().all()
    return [
        {
            "id": r.id,
            "job": r.job,
            "status": r.status,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "host": r.host,
            "pid": r.pid,
            "counts": r.counts,
            "error": r.error,
        }
        for r in rows
    ]


def last_run_per_job() -> list[dict[str, Any]]:
    """Each job's latest run, its number of runs and of failures (one query)."""
    with read_session() as session:
        latest = (
            select(
                JobRun.job,
                func.max(JobRun.id).label("last_id"),
                func.count().label("runs"),
                func.count().filter(JobRun.status != JobStatus.SUCCESS.value).label("failures"),
            )
            .group_by(JobRun.job)
            .subquery()
        )
        rows = session.execute(
            select(
                latest.c.job,
                latest.c.runs,
                latest.c.failures,
                JobRun.status,
                JobRun.started_at,
                JobRun.finished_at,
                JobRun.error,
            )
            .join(JobRun, JobRun.id == latest.c.last_id)
            .order_by(latest.c.job)
        ).all()
    return [
        {
            "job": r.job,
            "runs": r.runs,
            "failures": r.failures,
            "last_status": r.status,
            "last_started_at": r.started_at,
            "last_finished_at": r.finished_at,
            "last_error": r.error,
        }
        for r in rows
    ]
