"""The alert rules, as pure functions over facts gathered from the database (no I/O here).

`conditions(facts, thresholds)` says which conditions hold now, one per rule and subject (a
timeframe, an endpoint, a job, a cancel reason); `plan(...)` compares them with the alerts that
fire already and says what to record and what to tell the channels: a FIRING message when a
condition starts, RESOLVED when it ends, a REMINDER when it still holds after the reminder
interval, and nothing while the rule is muted (the alert and its incident are still recorded).
`services/ops/alerting.py` gathers the facts and records the plan.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.vocabulary import AlertEvent, AlertRule, JobStatus, ScrapeStatus, Severity

SEVERITY: Mapping[AlertRule, Severity] = {
    AlertRule.MARKETS_CANCELLED: Severity.WARNING,
    AlertRule.MARKETS_OVERDUE: Severity.CRITICAL,
    AlertRule.MARKETS_NEED_ATTENTION: Severity.CRITICAL,
    AlertRule.SCRAPE_FAILING: Severity.CRITICAL,
    AlertRule.SCRAPE_ROWS_DROPPED: Severity.WARNING,
    AlertRule.SCRAPE_REJECTS_JUMPED: Severity.WARNING,
    AlertRule.SCRAPE_HANDLES_MISSING: Severity.WARNING,
    AlertRule.SCRAPE_STALE: Severity.CRITICAL,
    AlertRule.X_API_FAILING: Severity.CRITICAL,
    AlertRule.X_API_BUDGET_EXHAUSTED: Severity.WARNING,
    AlertRule.FOLLOWER_COUNTS_MISSING: Severity.WARNING,
    AlertRule.LEADER_MISSING: Severity.CRITICAL,
    AlertRule.JOB_FAILING: Severity.CRITICAL,
    AlertRule.INTEGRITY_VIOLATION: Severity.CRITICAL,
    AlertRule.APPROVALS_WAITING: Severity.WARNING,
}

TITLES: Mapping[AlertRule, str] = {
    AlertRule.MARKETS_CANCELLED: "Markets cancelled by the system",
    AlertRule.MARKETS_OVERDUE: "Markets past their grace period",
    AlertRule.MARKETS_NEED_ATTENTION: "Markets flagged as needing attention",
    AlertRule.SCRAPE_FAILING: "Leaderboard scrapes failing",
    AlertRule.SCRAPE_ROWS_DROPPED: "Scrape row count dropped",
    AlertRule.SCRAPE_REJECTS_JUMPED: "Scrape rejected rows jumped",
    AlertRule.SCRAPE_HANDLES_MISSING: "Scrape X handles missing",
    AlertRule.SCRAPE_STALE: "No usable leaderboard snapshot",
    AlertRule.X_API_FAILING: "X API failing",
    AlertRule.X_API_BUDGET_EXHAUSTED: "X API rate budget exhausted",
    AlertRule.FOLLOWER_COUNTS_MISSING: "Follower markets closing without a usable count",
    AlertRule.LEADER_MISSING: "No scheduler leader",
    AlertRule.JOB_FAILING: "Job failing repeatedly",
    AlertRule.INTEGRITY_VIOLATION: "Integrity violation",
    AlertRule.APPROVALS_WAITING: "Money actions waiting for a second operator",
}

# The X API statuses (`x_api_state.last_status`, an ErrorCode) that mean the API cannot be used.
X_API_DOWN = ("X_API_UNAVAILABLE", "X_API_UNAUTHORIZED")
# Jobs whose failures other rules already report.
JOBS_WITH_THEIR_OWN_RULE = ("scrape_", "integrity")
# A run's quality is compared with the median of at least this many earlier successful runs.
MIN_HISTORY = 3
MAX_SUBJECTS = 50


@dataclass(frozen=True)
class ScrapeRunFacts:
    id: int
    status: str  # a ScrapeStatus
    rows_stored: int
    rows_rejected: int
    missing_handles: int  # stored rows without an X handle


@dataclass(frozen=True)
class TimeframeFacts:
    timeframe: str
    runs: tuple[ScrapeRunFacts, ...]  # finished runs, newest first
    last_usable_at: dt.datetime | None


@dataclass(frozen=True)
class EndpointFacts:
    endpoint: str
    last_status: str | None
    last_error: str | None
    remaining: int | None
    limit: int | None
    reset_at: dt.datetime | None


@dataclass(frozen=True)
class JobFacts:
    job: str
    statuses: tuple[str, ...]  # finished runs' JobStatus, newest first
    run_ids: tuple[int, ...]
    last_error: str | None


@dataclass(frozen=True)
class IntegrityFacts:
    run_id: int
    status: str  # the last finished integrity run's JobStatus
    violations: int
    error: str | None


@dataclass(frozen=True)
class Facts:
    now: dt.datetime
    cancelled: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # reason -> markets
    overdue: tuple[int, ...] = ()
    needs_attention: tuple[int, ...] = ()
    scrapes: tuple[TimeframeFacts, ...] = ()
    x_api: tuple[EndpointFacts, ...] = ()
    followers_uncovered: tuple[int, ...] = ()  # follower markets closing soon, no usable count
    # The leader's last heartbeat, or without a leader the newest scheduler's start (None: no
    # scheduler ever ran).
    leader_heartbeat_at: dt.datetime | None = None
    jobs: tuple[JobFacts, ...] = ()
    integrity: IntegrityFacts | None = None
    # Proposals a second operator may still approve (pending, not expired).
    proposals_waiting: tuple[int, ...] = ()


@dataclass(frozen=True)
class Thresholds:
    scrape_failures: int = 2
    scrape_drop_ratio: float = 0.5
    scrape_jump: float = 0.2
    max_scrape_lag: dt.timedelta = dt.timedelta(minutes=60)
    leader_stale: dt.timedelta = dt.timedelta(seconds=30)
    job_failures: int = 3


@dataclass(frozen=True)
class Condition:
    rule: AlertRule
    key: str
    summary: str
    subjects: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.rule]


def _ids(values: Iterable[int]) -> list[int]:
    return sorted(values)[:MAX_SUBJECTS]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _age(now: dt.datetime, then: dt.datetime) -> str:
    minutes = int((now - then).total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


def _market_conditions(f: Facts) -> list[Condition]:
    out = [
        Condition(
            AlertRule.MARKETS_CANCELLED,
            reason,
            f"{_plural(len(ids), 'market')} cancelled and refunded: {reason}",
            {"markets": _ids(ids)},
        )
        for reason, ids in sorted(f.cancelled.items())
        if ids
    ]
    if f.overdue:
        out.append(
            Condition(
                AlertRule.MARKETS_OVERDUE,
                "",
                f"{_plural(len(f.overdue), 'market')} past close and grace, still open",
                {"markets": _ids(f.overdue)},
            )
        )
    if f.needs_attention:
        out.append(
            Condition(
                AlertRule.MARKETS_NEED_ATTENTION,
                "",
                f"{_plural(len(f.needs_attention), 'market')} flagged: an operator must look",
                {"markets": _ids(f.needs_attention)},
            )
        )
    if f.proposals_waiting:
        out.append(
            Condition(
                AlertRule.APPROVALS_WAITING,
                "",
                f"{_plural(len(f.proposals_waiting), 'proposal')} waiting for a second"
                " operator's approval (Overview page)",
                {"proposals": _ids(f.proposals_waiting)},
            )
        )
    if f.followers_uncovered:
        out.append(
            Condition(
                AlertRule.FOLLOWER_COUNTS_MISSING,
                "",
                f"{_plural(len(f.followers_uncovered), 'follower market')} closing soon with no"
                " usable cached follower count",
                {"markets": _ids(f.followers_uncovered)},
            )
        )
    return out


def _fraction(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def _scrape_conditions(f: Facts, t: Thresholds) -> list[Condition]:
    out: list[Condition] = []
    for tf in f.scrapes:
        failed: list[ScrapeRunFacts] = []
        for run in tf.runs:
            if run.status != ScrapeStatus.FAILED:
                break
            failed.append(run)
        if len(failed) >= t.scrape_failures:
            out.append(
                Condition(
                    AlertRule.SCRAPE_FAILING,
                    tf.timeframe,
                    f"{tf.timeframe}: the last {len(failed)} scrapes failed",
                    {"runs": _ids(r.id for r in failed), "timeframe": tf.timeframe},
                )
            )
        if tf.last_usable_at is None:
            stale = bool(tf.runs)  # scraping was tried and never gave a usable snapshot
            age = "never"
        else:
            stale = f.now - tf.last_usable_at > t.max_scrape_lag
            age = f"{_age(f.now, tf.last_usable_at)} ago"
        if stale:
            out.append(
                Condition(
                    AlertRule.SCRAPE_STALE,
                    tf.timeframe,
                    f"{tf.timeframe}: last usable snapshot {age}, longer than the"
                    f" {int(t.max_scrape_lag.total_seconds() // 60)} min resolution allows",
                    {"timeframe": tf.timeframe},
                )
            )
        out.extend(_quality_conditions(tf, t))
    return out


def _quality_conditions(tf: TimeframeFacts, t: Thresholds) -> list[Condition]:
    """The newest successful run against the median of the successful runs before it."""
    good = [r for r in tf.runs if r.status != ScrapeStatus.FAILED]
    if len(good) < MIN_HISTORY + 1:
        return []
    latest, history = good[0], good[1:]
    out: list[Condition] = []
    median_rows = statistics.median(r.rows_stored for r in history)
    if latest.rows_stored < t.scrape_drop_ratio * median_rows:
        out.append(
            Condition(
                AlertRule.SCRAPE_ROWS_DROPPED,
                tf.timeframe,
                f"{tf.timeframe}: run {latest.id} stored {latest.rows_stored} rows, median of"
                f" the last {len(history)} runs is {median_rows:g}",
                {"runs": [latest.id], "timeframe": tf.timeframe},
            )
        )
    checks = (
        (
            AlertRule.SCRAPE_REJECTS_JUMPED,
            "rejected rows",
            lambda r: _fraction(r.rows_rejected, r.rows_stored + r.rows_rejected),
        ),
        (
            AlertRule.SCRAPE_HANDLES_MISSING,
            "rows without an X handle",
            lambda r: _fraction(r.missing_handles, r.rows_stored),
        ),
    )
    for rule, what, share in checks:
        now_share = share(latest)
        usual = statistics.median(share(r) for r in history)
        if now_share > usual + t.scrape_jump:
            out.append(
                Condition(
                    rule,
                    tf.timeframe,
                    f"{tf.timeframe}: run {latest.id} has {now_share:.0%} {what}, usually"
                    f" {usual:.0%}",
                    {"runs": [latest.id], "timeframe": tf.timeframe},
                )
            )
    return out


def _x_api_conditions(f: Facts) -> list[Condition]:
    out: list[Condition] = []
    for e in f.x_api:
        if e.last_status in X_API_DOWN:
            out.append(
                Condition(
                    AlertRule.X_API_FAILING,
                    e.endpoint,
                    f"X API {e.endpoint}: {e.last_status} ({e.last_error or 'no detail'})",
                    {"endpoints": [e.endpoint]},
                )
            )
        exhausted = e.remaining is not None and e.remaining <= 0
        if exhausted and (e.reset_at is None or e.reset_at > f.now):
            until = f" until {e.reset_at:%H:%M:%S}Z" if e.reset_at else ""
            out.append(
                Condition(
                    AlertRule.X_API_BUDGET_EXHAUSTED,
                    e.endpoint,
                    f"X API {e.endpoint}: budget of {e.limit} spent{until}",
                    {"endpoints": [e.endpoint]},
                )
            )
    return out


def _system_conditions(f: Facts, t: Thresholds) -> list[Condition]:
    out: list[Condition] = []
    if f.leader_heartbeat_at is None:
        out.append(
            Condition(AlertRule.LEADER_MISSING, "", "no scheduler holds the leader lock", {})
        )
    elif f.now - f.leader_heartbeat_at > t.leader_stale:
        age = int((f.now - f.leader_heartbeat_at).total_seconds())
        out.append(
            Condition(
                AlertRule.LEADER_MISSING, "", f"the leader's last heartbeat is {age}s old", {}
            )
        )
    for job in f.jobs:
        if job.job.startswith(JOBS_WITH_THEIR_OWN_RULE):
            continue
        recent = job.statuses[: t.job_failures]
        if len(recent) >= t.job_failures and all(s != JobStatus.SUCCESS for s in recent):
            out.append(
                Condition(
                    AlertRule.JOB_FAILING,
                    job.job,
                    f"job {job.job}: the last {len(recent)} runs failed or timed out"
                    f" ({(job.last_error or 'no error recorded')[:200]})",
                    {"jobs": [job.job], "job_runs": list(job.run_ids[: t.job_failures])},
                )
            )
    i = f.integrity
    if i is not None and i.status != JobStatus.SUCCESS and i.status != JobStatus.RUNNING:
        out.append(
            Condition(
                AlertRule.INTEGRITY_VIOLATION,
                "",
                f"integrity check found {_plural(i.violations, 'violation')}:"
                f" {(i.error or '')[:300]}",
                {"jobs": ["integrity"], "job_runs": [i.run_id]},
            )
        )
    return out


def conditions(facts: Facts, thresholds: Thresholds) -> list[Condition]:
    """Every condition that holds now, in rule order."""
    found = [
        *_market_conditions(facts),
        *_scrape_conditions(facts, thresholds),
        *_x_api_conditions(facts),
        *_system_conditions(facts, thresholds),
    ]
    order = list(AlertRule)
    return sorted(found, key=lambda c: (order.index(c.rule), c.key))


# -- what to do about them ------------------------------------------------------------------------


@dataclass(frozen=True)
class Active:
    """An alert that fires already."""

    alert_id: int
    rule: AlertRule
    key: str
    notified_at: dt.datetime | None


@dataclass(frozen=True)
class Step:
    """One thing to record. A new alert has no `alert_id`; an ending one has no `condition`.
    `event` is the event to record (None: only refresh the alert); `muted` events are recorded
    but sent to no channel."""

    condition: Condition | None
    alert_id: int | None
    event: AlertEvent | None
    muted: bool = False


def plan(
    found: Iterable[Condition],
    active: Iterable[Active],
    *,
    muted_rules: frozenset[AlertRule],
    now: dt.datetime,
    reminder: dt.timedelta,
) -> list[Step]:
    by_subject = {(a.rule, a.key): a for a in active}
    steps: list[Step] = []
    seen: set[tuple[AlertRule, str]] = set()
    for c in found:
        seen.add((c.rule, c.key))
        muted = c.rule in muted_rules
        a = by_subject.get((c.rule, c.key))
        if a is None:
            steps.append(Step(c, None, AlertEvent.FIRING, muted))
        elif muted:
            steps.append(Step(c, a.alert_id, None))
        elif a.notified_at is None:  # it started during a mute that has ended: tell now
            steps.append(Step(c, a.alert_id, AlertEvent.FIRING))
        elif now - a.notified_at >= reminder:
            steps.append(Step(c, a.alert_id, AlertEvent.REMINDER))
        else:
            steps.append(Step(c, a.alert_id, None))
    for key, a in by_subject.items():
        if key not in seen:
            # Nobody was told it fired (muted throughout): nobody is told it ended either.
            silent = a.rule in muted_rules or a.notified_at is None
            steps.append(Step(None, a.alert_id, AlertEvent.RESOLVED, silent))
    return steps


def message(
    event: AlertEvent,
    rule: AlertRule,
    key: str,
    summary: str,
    *,
    started_at: dt.datetime,
    now: dt.datetime,
    incident_url: str | None = None,
) -> tuple[str, str]:
    """The title and body a channel receives."""
    subject = f" ({key})" if key else ""
    title = f"[{event.value}] {TITLES[rule]}{subject}"
    lines = [
        summary,
        f"rule: {rule.value}, severity: {SEVERITY[rule].value}",
        f"since: {started_at:%Y-%m-%d %H:%M:%S} UTC ({_age(now, started_at)})",
    ]
    if event is AlertEvent.RESOLVED:
        lines[0] = f"resolved: {summary}"
    if incident_url:
        lines.append(incident_url)
    return title, "\n".join(lines)
