"""Alert evaluation: gather the facts, apply the rules (`alert_rules`, pure), record the result.

One evaluation runs in one transaction under a transaction-level advisory lock, so the scheduler's
`alerts` job and a watchdog (`services/ops/monitor.py`, which evaluates when no leader is alive)
never interleave. It records the evaluation itself, every alert that starts, is reminded or ends,
its incident (opened with the alert, closed when it resolves), its events, and one queued delivery
per configured channel for each event that is not muted. Nothing is sent here: the delivery worker
(`services/ops/delivery.py`) sends in the background, so a slow channel never slows a job.

Mute windows (per rule) are set by analysts and operators on the Incidents page, audited.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, func, insert, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from config import get_settings
from db import rules
from db.engine import transaction
from db.models import (
    Alert,
    AlertEvaluation,
    AlertEventRow,
    AlertMute,
    FollowerCache,
    Incident,
    JobRun,
    Market,
    Proposal,
    SchedulerInstance,
    ScrapedKol,
    ScrapeRun,
    XApiState,
)
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.money.integrity import INTEGRITY_JOBS
from services.ops import audit, delivery
from services.ops.alert_rules import (
    Active,
    Condition,
    EndpointFacts,
    Facts,
    IntegrityFacts,
    JobFacts,
    ScrapeRunFacts,
    Step,
    Thresholds,
    TimeframeFacts,
    conditions,
    message,
    plan,
)
from services.ops.auth import Principal, require
from services.ops.jobs import HOST, JobContext
from services.vocabulary import (
    ACTIVE_INCIDENTS,
    AlertEvent,
    AlertRule,
    AlertState,
    IncidentState,
    JobStatus,
    MarketStatus,
    MarketType,
    Result,
    Role,
    ScrapeStatus,
    Timeframe,
)

log = logging.getLogger("kolops.alerts")

EVALUATION_LOCK_KEY = 0x4B4F4C414C5254  # "KOLALRT"
MAX_MUTE_MINUTES = 7 * 24 * 60


@dataclass
class EvaluationReport:
    evaluation_id: int
    conditions: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def thresholds() -> Thresholds:
    s = get_settings()
    return Thresholds(
        scrape_failures=s.alert_scrape_failures,
        scrape_drop_ratio=float(s.alert_scrape_drop_ratio),
        scrape_jump=float(s.alert_scrape_jump),
        max_scrape_lag=dt.timedelta(minutes=s.max_scrape_lag_minutes),
        leader_stale=dt.timedelta(seconds=s.alert_leader_stale_s),
        job_failures=s.alert_job_failures,
    )


# -- gathering ------------------------------------------------------------------------------------


def _ids(session: Session, condition: Any) -> tuple[int, ...]:
    return tuple(session.scalars(select(Market.id).where(condition).order_by(Market.id)))


def _scrape_facts(session: Session, history: int) -> tuple[TimeframeFacts, ...]:
    ranked = (
        select(
            ScrapeRun.id,
            ScrapeRun.timeframe,
            ScrapeRun.status,
            ScrapeRun.rows_stored,
            ScrapeRun.rows_rejected,
            func.row_number()
            .over(partition_by=ScrapeRun.timeframe, order_by=ScrapeRun.id.desc())
            .label("n"),
        )
        .where(ScrapeRun.status != ScrapeStatus.RUNNING.value)
        .subquery()
    )
    runs: dict[str, list[ScrapeRunFacts]] = {}
    latest = select(ranked).where(ranked.c.n <= history).order_by(ranked.c.id.desc()).subquery()
    rows = session.execute(
        select(
            latest,
            select(func.count())
            .where(ScrapedKol.run_id == latest.c.id, ScrapedKol.x_handle.is_(None))
            .scalar_subquery()
            .label("missing"),
        ).order_by(latest.c.id.desc())
    ).all()
    for r in rows:
        runs.setdefault(r.timeframe, []).append(
            ScrapeRunFacts(r.id, r.status, r.rows_stored, r.rows_rejected, r.missing)
        )
    usable = dict(
        session.execute(
            select(ScrapeRun.timeframe, func.max(ScrapeRun.snapshot_at))
            .where(rules.usable_run(ScrapeRun))
            .group_by(ScrapeRun.timeframe)
        ).all()
    )
    return tuple(
        TimeframeFacts(tf.value, tuple(runs.get(tf.value, ())), usable.get(tf.value))
        for tf in Timeframe
    )


def _job_facts(session: Session, depth: int) -> tuple[JobFacts, ...]:
    ranked = (
        select(
            JobRun.id,
            JobRun.job,
            JobRun.status,
            JobRun.error,
            func.row_number().over(partition_by=JobRun.job, order_by=JobRun.id.desc()).label("n"),
        )
        .where(JobRun.status != JobStatus.RUNNING.value)
        .subquery()
    )
    rows = session.execute(
        select(ranked).where(ranked.c.n <= depth).order_by(ranked.c.job, ranked.c.n)
    ).all()
    per_job: dict[str, list[Any]] = {}
    for r in rows:
        per_job.setdefault(r.job, []).append(r)
    return tuple(
        JobFacts(
            job,
            tuple(r.status for r in runs),
            tuple(r.id for r in runs),
            next((r.error for r in runs if r.error), None),
        )
        for job, runs in sorted(per_job.items())
    )


def gather(session: Session) -> Facts:
    """Everything the rules look at, read in the caller's transaction (one snapshot of `now`)."""
    s = get_settings()
    now = session.scalar(select(func.now()))
    assert now is not None
    window = dt.timedelta(minutes=s.alert_cancelled_window_minutes)
    cancelled: dict[str, list[int]] = {}
    for reason, market_id in session.execute(
        select(Market.cancel_reason, Market.id)
        .where(
            Market.status == MarketStatus.CANCELLED.value,
            Market.cancel_reason != ErrorCode.OPERATOR_CANCELLED.value,
            Market.cancelled_at > now - window,
        )
        .order_by(Market.id)
    ):
        cancelled.setdefault(reason, []).append(market_id)
    grace = dt.timedelta(minutes=s.resolution_grace_minutes)
    overdue = _ids(session, rules.overdue(Market, grace))
    attention = _ids(
        session, and_(Market.status == MarketStatus.OPEN.value, Market.needs_attention)
    )

    # Follower markets closing within the horizon whose account has no cached count that could
    # stand for the count if the market closed now (the rule the resolver applies at close).
    usable_count = exists().where(
        FollowerCache.x_user_id == rules.pinned_x_user_id(Market),
        rules.follower_count_usable(
            FollowerCache.fetched_at,
            opens_at=Market.opens_at,
            closes_at=now,
            max_age=dt.timedelta(minutes=s.follower_cache_max_age_minutes),
            lag=dt.timedelta(minutes=s.max_scrape_lag_minutes),
            now=now,
        ),
    )
    horizon = now + dt.timedelta(minutes=s.alert_follower_horizon_minutes)
    uncovered = _ids(
        session,
        and_(
            Market.status == MarketStatus.OPEN.value,
            Market.type == MarketType.FOLLOWER_GROWTH.value,
            Market.closes_at > now,
            Market.closes_at <= horizon,
            ~usable_count,
        ),
    )
    x_api = tuple(
        EndpointFacts(r.endpoint, r.last_status, r.last_error, r.remaining, r.limit, r.reset_at)
        for r in session.scalars(select(XApiState).order_by(XApiState.endpoint))
    )
    leader = session.scalar(
        select(func.max(SchedulerInstance.heartbeat_at)).where(
            SchedulerInstance.is_leader, SchedulerInstance.stopped_at.is_(None)
        )
    )
    if leader is None:
        # No leader yet: measure its absence from the newest scheduler's start, so that a
        # scheduler still taking the lock (at every start of the product) is not an alert.
        leader = session.scalar(select(func.max(SchedulerInstance.started_at)))
    latest_checks = session.execute(
        select(JobRun.id, JobRun.status, JobRun.counts, JobRun.error)
        .ext(distinct_on(JobRun.job))
        .where(JobRun.job.in_(INTEGRITY_JOBS), JobRun.status != JobStatus.RUNNING.value)
        .order_by(JobRun.job, JobRun.id.desc())
    ).all()
    # A failed full audit keeps firing until the next full audit is clean, however clean the
    # periodic checks since (they do not look behind their checkpoint).
    integrity_row = next(
        (r for r in latest_checks if r.status != JobStatus.SUCCESS.value),
        max(latest_checks, key=lambda r: r.id, default=None),
    )
    integrity = (
        IntegrityFacts(
            integrity_row.id,
            integrity_row.status,
            int((integrity_row.counts or {}).get("violations", 0)),
            integrity_row.error,
        )
        if integrity_row
        else None
    )
    return Facts(
        now=now,
        cancelled={k: tuple(v) for k, v in cancelled.items()},
        overdue=overdue,
        needs_attention=attention,
        scrapes=_scrape_facts(session, s.alert_scrape_history),
        x_api=x_api,
        followers_uncovered=uncovered,
        leader_heartbeat_at=leader,
        jobs=_job_facts(session, max(1, s.alert_job_failures)),
        integrity=integrity,
        proposals_waiting=tuple(
            session.scalars(
                select(Proposal.id).where(rules.proposal_waiting(Proposal)).order_by(Proposal.id)
            )
        ),
    )


# -- recording ------------------------------------------------------------------------------------


def incident_url(incident_id: int) -> str:
    return f"{get_settings().dashboard_url}/incidents?incident={incident_id}"


def _record_event(
    session: Session, alert: Alert, event: AlertEvent, *, muted: bool, now: dt.datetime
) -> int:
    incident_id = session.scalar(select(Incident.id).where(Incident.alert_id == alert.id))
    title, body = message(
        event,
        AlertRule(alert.rule),
        alert.key,
        alert.summary,
        started_at=alert.started_at,
        now=now,
        incident_url=incident_url(incident_id) if incident_id else None,
    )
    event_id = session.scalar(
        insert(AlertEventRow)
        .values(alert_id=alert.id, kind=event.value, muted=muted, title=title, body=body)
        .returning(AlertEventRow.id)
    )
    assert event_id is not None
    if not muted:
        delivery.queue(session, event_id)
    return event_id


def _apply(session: Session, step: Step, now: dt.datetime, counts: dict[str, int]) -> None:
    c: Condition | None = step.condition
    if step.alert_id is None:
        assert c is not None
        alert = Alert(
            rule=c.rule.value,
            key=c.key,
            severity=c.severity.value,
            state=AlertState.FIRING.value,
            summary=c.summary,
            subjects=dict(c.subjects),
            started_at=now,
            last_seen_at=now,
            notified_at=None if step.muted else now,
        )
        session.add(alert)
        session.flush()
        session.add(Incident(alert_id=alert.id, opened_at=now))
        session.flush()
        counts["fired"] += 1
    else:
        alert = session.get(Alert, step.alert_id, with_for_update=True)
        assert alert is not None
        if c is not None:
            alert.summary = c.summary
            alert.subjects = dict(c.subjects)
            alert.last_seen_at = now
            if step.event is not None:
                alert.notified_at = now
                counts["reminded" if step.event is AlertEvent.REMINDER else "notified"] += 1
        else:
            alert.state = AlertState.RESOLVED.value
            alert.resolved_at = now
            session.execute(
                update(Incident)
                .where(
                    Incident.alert_id == alert.id,
                    Incident.state.in_([s.value for s in ACTIVE_INCIDENTS]),
                )
                .values(state=IncidentState.CLOSED.value, closed_at=now)
            )
            counts["resolved"] += 1
        session.flush()
    if step.event is not None:
        _record_event(session, alert, step.event, muted=step.muted, now=now)


def muted_rules(session: Session, now: dt.datetime) -> frozenset[AlertRule]:
    return frozenset(
        AlertRule(r)
        for r in session.scalars(
            select(AlertMute.rule).where(AlertMute.starts_at <= now, AlertMute.ends_at > now)
        )
    )


def evaluate(evaluator: str | None = None) -> EvaluationReport:
    """Evaluate every rule once and record what changed (one transaction)."""
    who = evaluator or f"{HOST}:{os.getpid()}"
    s = get_settings()
    try:
        with transaction() as session:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVALUATION_LOCK_KEY})
            evaluation_id = session.scalar(
                insert(AlertEvaluation).values(evaluator=who).returning(AlertEvaluation.id)
            )
            assert evaluation_id is not None
            facts = gather(session)
            found = conditions(facts, thresholds())
            active = [
                Active(a.id, AlertRule(a.rule), a.key, a.notified_at)
                for a in session.scalars(
                    select(Alert).where(Alert.state == AlertState.FIRING.value)
                )
            ]
            steps = plan(
                found,
                active,
                muted_rules=muted_rules(session, facts.now),
                now=facts.now,
                reminder=dt.timedelta(minutes=s.alert_reminder_minutes),
            )
            counts = {"conditions": len(found), "fired": 0, "notified": 0, "reminded": 0}
            counts["resolved"] = 0
            for step in steps:
                _apply(session, step, facts.now, counts)
            held = [f"{c.rule.value}:{c.key}" if c.key else c.rule.value for c in found]
            session.execute(
                update(AlertEvaluation)
                .where(AlertEvaluation.id == evaluation_id)
                .values(
                    finished_at=func.clock_timestamp(), conditions={"held": held}, counts=counts
                )
            )
    except Exception as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]
        with transaction() as session:
            session.execute(
                insert(AlertEvaluation).values(
                    evaluator=who, finished_at=func.clock_timestamp(), error=error
                )
            )
        raise
    if counts["fired"] or counts["resolved"]:
        log.info("alerts: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    delivery.wake()
    return EvaluationReport(evaluation_id, held, counts)


def job(ctx: JobContext) -> None:
    """The scheduler's `alerts` job: evaluate, and make sure this process sends what it queued."""
    delivery.ensure_worker()
    report = evaluate(f"{HOST}:{os.getpid()} scheduler")
    ctx.counts.update(report.counts)


# -- mute windows ---------------------------------------------------------------------------------


def mute(principal: Principal | None, rule: str, minutes: int, reason: object) -> int:
    """Mute `rule` from now for `minutes`: its alerts still open incidents, nothing is sent."""
    with transaction() as session:
        who = require(session, principal, Role.ANALYST, "mute_alert_rule")
        why = free_text(reason, what="reason", max_len=500, missing=ErrorCode.REASON_REQUIRED)
        if rule not in {r.value for r in AlertRule}:
            raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown alert rule {rule!r}")
        if not isinstance(minutes, int) or not 1 <= minutes <= MAX_MUTE_MINUTES:
            raise ServiceError(
                ErrorCode.INVALID_INPUT, f"a mute lasts 1 to {MAX_MUTE_MINUTES} minutes"
            )
        mute_id = session.scalar(
            insert(AlertMute)
            .values(
                rule=rule,
                starts_at=func.now(),
                ends_at=func.now() + literal_column(f"interval '{minutes} minutes'"),
                reason=why,
                created_by=who.username,
            )
            .returning(AlertMute.id)
        )
        audit.record(
            who,
            action="mute_alert_rule",
            result=Result.OK,
            target_type="alert_rule",
            target_id=rule,
            reason=why,
            after={"mute_id": mute_id, "minutes": minutes},
            session=session,
        )
    assert mute_id is not None
    return mute_id


def end_mute(principal: Principal | None, mute_id: int) -> Result:
    """End a mute window now (its rule's alerts are sent again from the next evaluation)."""
    with transaction() as session:
        who = require(session, principal, Role.ANALYST, "end_alert_mute")
        row = session.get(AlertMute, mute_id, with_for_update=True)
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no mute #{mute_id}")
        now = session.scalar(select(func.now()))
        assert now is not None
        result = Result.ALREADY_DONE if row.ends_at <= now else Result.OK
        before = {"ends_at": row.ends_at.isoformat()}
        if result is Result.OK:
            row.ends_at = max(now, row.starts_at + dt.timedelta(microseconds=1))
        audit.record(
            who,
            action="end_alert_mute",
            result=result,
            target_type="alert_rule",
            target_id=row.rule,
            before=before,
            after={"mute_id": mute_id, "ends_at": row.ends_at.isoformat()},
            session=session,
        )
    return result
