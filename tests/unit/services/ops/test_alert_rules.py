"""The alert rules and the firing / reminder / mute / resolve plan, table-driven (no database)."""

from __future__ import annotations

import datetime as dt

import pytest

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
from services.vocabulary import AlertEvent, AlertRule

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
T = Thresholds(
    scrape_failures=2,
    scrape_drop_ratio=0.5,
    scrape_jump=0.2,
    max_scrape_lag=dt.timedelta(minutes=60),
    leader_stale=dt.timedelta(seconds=30),
    job_failures=3,
)
ALIVE = NOW - dt.timedelta(seconds=5)


def ok(run_id: int, stored: int = 100, rejected: int = 0, missing: int = 0) -> ScrapeRunFacts:
    return ScrapeRunFacts(run_id, "SUCCESS", stored, rejected, missing)


def failed(run_id: int) -> ScrapeRunFacts:
    return ScrapeRunFacts(run_id, "FAILED", 0, 0, 0)


def daily(*runs: ScrapeRunFacts, last_usable: dt.datetime | None = NOW) -> Facts:
    return Facts(
        now=NOW,
        scrapes=(TimeframeFacts("daily", runs, last_usable),),
        leader_heartbeat_at=ALIVE,
    )


def held(facts: Facts) -> list[str]:
    return [f"{c.rule.value}:{c.key}" if c.key else c.rule.value for c in conditions(facts, T)]


CASES = [
    ("nothing wrong", Facts(now=NOW, leader_heartbeat_at=ALIVE), []),
    (
        "system cancellations, one alert per reason",
        Facts(
            now=NOW,
            leader_heartbeat_at=ALIVE,
            cancelled={"SCRAPE_FAILED": (3, 1, 2), "X_API_UNAVAILABLE": (9,)},
        ),
        ["markets_cancelled:SCRAPE_FAILED", "markets_cancelled:X_API_UNAVAILABLE"],
    ),
    (
        "overdue and flagged markets",
        Facts(now=NOW, leader_heartbeat_at=ALIVE, overdue=(1, 2), needs_attention=(2,)),
        ["markets_overdue", "markets_need_attention"],
    ),
    ("one failed scrape is not yet an alert", daily(failed(3), ok(2), ok(1)), []),
    ("two failed scrapes in a row", daily(failed(3), failed(2), ok(1)), ["scrape_failing:daily"]),
    ("a failure before a success is over", daily(ok(3), failed(2), failed(1)), []),
    (
        "rows fall well below the median",
        daily(ok(5, stored=40), ok(4), ok(3), ok(2), ok(1)),
        ["scrape_rows_dropped:daily"],
    ),
    ("rows fall a little", daily(ok(5, stored=60), ok(4), ok(3), ok(2), ok(1)), []),
    ("too little history to compare", daily(ok(3, stored=1), ok(2), ok(1)), []),
    (
        "rejected rows jump",
        daily(ok(5, stored=70, rejected=30), ok(4, rejected=2), ok(3), ok(2), ok(1)),
        ["scrape_rejects_jumped:daily"],
    ),
    (
        "X handles go missing",
        daily(ok(5, missing=60), ok(4, missing=10), ok(3, missing=10), ok(2, missing=10), ok(1)),
        ["scrape_handles_missing:daily"],
    ),
    (
        "no usable snapshot within the lag",
        daily(ok(1), last_usable=NOW - dt.timedelta(minutes=61)),
        ["scrape_stale:daily"],
    ),
    (
        "a snapshot just within the lag",
        daily(ok(1), last_usable=NOW - dt.timedelta(minutes=60)),
        [],
    ),
    ("never scraped is not stale", daily(last_usable=None), []),
    (
        "scraped but never usable is stale",
        daily(failed(1), last_usable=None),
        ["scrape_stale:daily"],
    ),
    (
        "X API unavailable, another endpoint's budget spent",
        Facts(
            now=NOW,
            leader_heartbeat_at=ALIVE,
            x_api=(
                EndpointFacts("a", "X_API_UNAVAILABLE", "HTTP 500", 10, 300, None),
                EndpointFacts("b", "OK", None, 0, 300, NOW + dt.timedelta(minutes=5)),
                EndpointFacts("c", "OK", None, 0, 300, NOW - dt.timedelta(minutes=1)),
                EndpointFacts("d", "X_API_UNAUTHORIZED", "401", None, None, None),
            ),
        ),
        ["x_api_failing:a", "x_api_failing:d", "x_api_budget_exhausted:b"],
    ),
    (
        "follower markets closing without a usable count",
        Facts(now=NOW, leader_heartbeat_at=ALIVE, followers_uncovered=(7,)),
        ["follower_counts_missing"],
    ),
    ("no leader at all", Facts(now=NOW), ["leader_missing"]),
    (
        "a stale leader heartbeat",
        Facts(now=NOW, leader_heartbeat_at=NOW - dt.timedelta(seconds=31)),
        ["leader_missing"],
    ),
    (
        "a job failing three times in a row; scrapes and integrity have rules of their own",
        Facts(
            now=NOW,
            leader_heartbeat_at=ALIVE,
            jobs=(
                JobFacts("resolve", ("FAILED", "TIMEOUT", "FAILED"), (3, 2, 1), "boom"),
                JobFacts("generate", ("FAILED", "FAILED", "SUCCESS"), (3, 2, 1), "boom"),
                JobFacts("followers", ("FAILED", "FAILED"), (2, 1), "boom"),
                JobFacts("scrape_daily", ("FAILED",) * 3, (3, 2, 1), "boom"),
                JobFacts("integrity", ("FAILED",) * 3, (3, 2, 1), "boom"),
            ),
        ),
        ["job_failing:resolve"],
    ),
    (
        "an integrity violation, at once",
        Facts(now=NOW, leader_heartbeat_at=ALIVE, integrity=IntegrityFacts(1, "FAILED", 1, "x")),
        ["integrity_violation"],
    ),
    (
        "money actions waiting for a second operator",
        Facts(now=NOW, leader_heartbeat_at=ALIVE, proposals_waiting=(4, 2)),
        ["approvals_waiting"],
    ),
    (
        "a clean integrity check",
        Facts(now=NOW, leader_heartbeat_at=ALIVE, integrity=IntegrityFacts(1, "SUCCESS", 0, None)),
        [],
    ),
]


@pytest.mark.parametrize(("facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conditions(facts: Facts, expected: list[str]) -> None:
    assert held(facts) == expected


def test_cancellations_name_their_markets() -> None:
    facts = Facts(now=NOW, leader_heartbeat_at=ALIVE, cancelled={"SCRAPE_FAILED": (3, 1, 2)})
    [c] = conditions(facts, T)
    assert c.subjects == {"markets": [1, 2, 3]}
    assert c.summary == "3 markets cancelled and refunded: SCRAPE_FAILED"


# -- plan -----------------------------------------------------------------------------------------

C = Condition(AlertRule.SCRAPE_FAILING, "daily", "daily: the last 2 scrapes failed")
REMIND = dt.timedelta(hours=4)


def active(notified_min_ago: float | None) -> Active:
    at = None if notified_min_ago is None else NOW - dt.timedelta(minutes=notified_min_ago)
    return Active(7, AlertRule.SCRAPE_FAILING, "daily", at)


PLANS = [
    ("starts: fires", [C], [], False, [Step(C, None, AlertEvent.FIRING)]),
    ("starts muted: recorded, muted", [C], [], True, [Step(C, None, AlertEvent.FIRING, True)]),
    ("still true: nothing sent", [C], [active(10)], False, [Step(C, 7, None)]),
    ("still true past the reminder", [C], [active(240)], False, [Step(C, 7, AlertEvent.REMINDER)]),
    ("reminder due but muted", [C], [active(300)], True, [Step(C, 7, None)]),
    ("mute ended, never announced", [C], [active(None)], False, [Step(C, 7, AlertEvent.FIRING)]),
    ("ends: resolved", [], [active(10)], False, [Step(None, 7, AlertEvent.RESOLVED)]),
    ("ends muted: not sent", [], [active(10)], True, [Step(None, 7, AlertEvent.RESOLVED, True)]),
    (
        "ends, never announced: not sent",
        [],
        [active(None)],
        False,
        [Step(None, 7, AlertEvent.RESOLVED, True)],
    ),
]


@pytest.mark.parametrize(
    ("found", "firing", "muted", "expected"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS]
)
def test_plan(
    found: list[Condition], firing: list[Active], muted: bool, expected: list[Step]
) -> None:
    rules = frozenset({AlertRule.SCRAPE_FAILING}) if muted else frozenset()
    assert plan(found, firing, muted_rules=rules, now=NOW, reminder=REMIND) == expected


def test_a_mute_of_another_rule_changes_nothing() -> None:
    steps = plan([C], [], muted_rules=frozenset({AlertRule.SCRAPE_STALE}), now=NOW, reminder=REMIND)
    assert steps == [Step(C, None, AlertEvent.FIRING)]


def test_message() -> None:
    title, body = message(
        AlertEvent.RESOLVED,
        AlertRule.SCRAPE_FAILING,
        "daily",
        C.summary,
        started_at=NOW - dt.timedelta(minutes=12),
        now=NOW,
        incident_url="http://127.0.0.1:8501/incidents?incident=4",
    )
    assert title == "[RESOLVED] Leaderboard scrapes failing (daily)"
    assert body.splitlines() == [
        "resolved: daily: the last 2 scrapes failed",
        "rule: scrape_failing, severity: critical",
        "since: 2026-12-01 11:48:00 UTC (12 min)",
        "http://127.0.0.1:8501/incidents?incident=4",
    ]
