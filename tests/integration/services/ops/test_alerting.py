"""Alerts end to end on the real database, with real channels on 127.0.0.1: a webhook receiver
(the demo's stand-in) and an SMTP server (aiosmtpd), through apprise and the delivery worker."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

import scheduler
from config import get_settings
from services.errors import ServiceError
from services.ops import alerting, delivery, jobs, monitor
from services.ops.auth import Principal
from services.vocabulary import AlertRule
from standins.webhook_standin import WebhookStandin
from tests.conftest import Standins
from tests.support import accounts
from tests.support.alerts import (
    SmtpReceiver,
    alerts,
    deliveries,
    incidents,
    plant_integrity_run,
    rows,
    smtp_server,
    wait_for,
)

ANALYST = Principal("ana", "analyst")
VIEWER = Principal("vic", "viewer")


@pytest.fixture(autouse=True)
def _accounts(db: str) -> None:
    """The services check every caller against its account: these principals' accounts exist."""
    accounts.ensure(ANALYST, VIEWER)


@pytest.fixture()
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WebhookStandin, SmtpReceiver]]:
    """A webhook receiver and an SMTP server as the two channels, and this process's delivery
    worker running (stopped before the database goes)."""
    with WebhookStandin() as hook, smtp_server() as smtp:
        monkeypatch.setenv("ALERT_CHANNELS", f"{hook.apprise_url} {smtp.apprise_url}")
        monkeypatch.setenv("ALERT_DELIVERY_BACKOFF_S", "0.2")
        # The test's leader heartbeat must not age into an alert on a slow machine (the
        # leader rule has tests of its own).
        monkeypatch.setenv("ALERT_LEADER_STALE_S", "3600")
        get_settings.cache_clear()
        delivery.ensure_worker()
        try:
            yield hook, smtp
        finally:
            delivery.stop_worker()
            get_settings.cache_clear()


def _leader_alive() -> None:
    """A scheduler leader's heartbeat, so that "no leader" stays quiet."""
    jobs.heartbeat("test:1:leader", is_leader=True, started_at=dt.datetime.now(dt.UTC))


def test_an_outage_sends_one_firing_and_one_resolved_message_to_each_channel(
    db: str, standins: Standins, channels: tuple[WebhookStandin, SmtpReceiver]
) -> None:
    hook, smtp = channels
    _leader_alive()
    assert scheduler.run_job("scrape_daily")
    assert alerting.evaluate().conditions == []

    # The outage starts: kolscan answers 500; the second failure in a row fires the alert.
    standins.kolscan.set_variant("error")
    assert not scheduler.run_job("scrape_daily")
    assert alerting.evaluate().conditions == []
    assert not scheduler.run_job("scrape_daily")
    fired = alerting.evaluate()
    assert fired.conditions == ["scrape_failing:daily"]
    assert fired.counts["fired"] == 1
    # Still failing: recorded, not sent again.
    assert not scheduler.run_job("scrape_daily")
    assert alerting.evaluate().counts["fired"] == 0
    wait_for(lambda: len(hook.received()) == 1 and len(smtp.subjects()) == 1, 20, "firing")
    assert incidents(db) == [("scrape_failing", "OPEN")]

    # The outage ends: the next scrape works and the alert resolves.
    standins.kolscan.set_variant("normal")
    assert scheduler.run_job("scrape_daily")
    resolved = alerting.evaluate()
    assert resolved.conditions == [] and resolved.counts["resolved"] == 1
    wait_for(lambda: len(hook.received()) == 2 and len(smtp.subjects()) == 2, 20, "resolved")
    time.sleep(1.5)  # nothing more arrives
    alerting.evaluate()
    time.sleep(0.5)

    messages = hook.received()
    assert [m["type"] for m in messages] == ["failure", "success"]
    assert messages[0]["title"] == "[FIRING] Leaderboard scrapes failing (daily)"
    assert messages[1]["title"] == "[RESOLVED] Leaderboard scrapes failing (daily)"
    assert "/incidents?incident=" in messages[0]["message"]
    assert smtp.subjects() == [m["title"] for m in messages]
    assert alerts(db) == [("scrape_failing", "daily", "RESOLVED")]
    assert incidents(db) == [("scrape_failing", "CLOSED")]
    assert sorted(deliveries(db)) == [
        ("FIRING", "json", "SENT", 1, None),
        ("FIRING", "mailto", "SENT", 1, None),
        ("RESOLVED", "json", "SENT", 1, None),
        ("RESOLVED", "mailto", "SENT", 1, None),
    ]
    # Every evaluation is recorded, with what held.
    held = [r[0] for r in rows(db, "SELECT conditions->'held' FROM alert_evaluations ORDER BY id")]
    assert held == [[], [], ["scrape_failing:daily"], ["scrape_failing:daily"], [], []]


def test_a_hanging_channel_is_a_failed_delivery_and_slows_no_job(
    db: str, standins: Standins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_DELIVERY_TIMEOUT_S", "1")
    monkeypatch.setenv("ALERT_DELIVERY_ATTEMPTS", "2")
    monkeypatch.setenv("ALERT_DELIVERY_BACKOFF_S", "0.2")
    monkeypatch.setenv("ALERT_LEADER_STALE_S", "3600")
    with WebhookStandin(hang_s=30) as hanging:
        monkeypatch.setenv("ALERT_CHANNELS", hanging.apprise_url)
        get_settings.cache_clear()
        delivery.ensure_worker()
        try:
            _leader_alive()
            # The pace of a job and an evaluation with nothing to deliver, measured here: the
            # receiver hangs for 30 s, so waiting on it would show far beyond this.
            started = time.monotonic()
            assert scheduler.run_job("resolve")
            assert alerting.evaluate().counts["fired"] == 0
            usual = time.monotonic() - started
            plant_integrity_run(db, violations=2)
            started = time.monotonic()
            report = alerting.evaluate()
            assert report.conditions == ["integrity_violation"]
            assert time.monotonic() - started < usual + 5
            # While the worker waits on the hanging channel, jobs run at their usual pace.
            wait_for(lambda: rows(db, "SELECT 1 FROM alert_deliveries WHERE attempts > 0"), 5, "")
            started = time.monotonic()
            assert scheduler.run_job("resolve")
            assert alerting.evaluate().counts["fired"] == 0
            assert time.monotonic() - started < usual + 5
            wait_for(lambda: deliveries(db)[0][2] == "FAILED", 15, "the delivery to give up")
        finally:
            delivery.stop_worker()
            get_settings.cache_clear()
    [(kind, scheme, status, attempts, error)] = deliveries(db)
    assert (kind, scheme, status, attempts) == ("FIRING", "json", "FAILED", 2)
    assert error == "no answer within 1s"


def test_no_channel_configured_records_and_sends_nothing(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERT_CHANNELS", raising=False)
    get_settings.cache_clear()
    _leader_alive()
    plant_integrity_run(db, violations=1)
    assert delivery.channels() == []
    assert alerting.evaluate().counts["fired"] == 1
    assert incidents(db) == [("integrity_violation", "OPEN")]
    assert deliveries(db) == []
    assert rows(db, "SELECT kind, muted FROM alert_events") == [("FIRING", False)]


def test_a_mute_window_sends_nothing_and_the_firing_follows_when_it_ends(
    db: str, channels: tuple[WebhookStandin, SmtpReceiver]
) -> None:
    hook, _ = channels
    _leader_alive()
    mute_id = alerting.mute(ANALYST, AlertRule.INTEGRITY_VIOLATION, 30, "ledger migration tonight")
    plant_integrity_run(db, violations=1)
    alerting.evaluate()
    # The incident opens all the same; the event is kept, marked muted, and sent nowhere.
    assert incidents(db) == [("integrity_violation", "OPEN")]
    assert rows(db, "SELECT kind, muted FROM alert_events") == [("FIRING", True)]
    assert deliveries(db) == []
    alerting.evaluate()
    assert deliveries(db) == []

    alerting.end_mute(ANALYST, mute_id)
    alerting.evaluate()  # still firing, never announced: announced now
    wait_for(lambda: len(hook.received()) == 1, 20, "the late firing")
    assert hook.received()[0]["title"] == "[FIRING] Integrity violation"
    audit_rows = rows(
        db,
        "SELECT username, action, result FROM audit_log WHERE target_type = 'alert_rule'"
        " ORDER BY id",
    )
    assert audit_rows == [
        ("ana", "mute_alert_rule", "OK"),
        ("ana", "end_alert_mute", "OK"),
    ]

    # Muted again, the condition ends: the resolve is recorded but not sent.
    alerting.mute(ANALYST, AlertRule.INTEGRITY_VIOLATION, 30, "fixing it")
    plant_integrity_run(db, violations=0)
    alerting.evaluate()
    assert rows(db, "SELECT kind, muted FROM alert_events ORDER BY id")[-1] == ("RESOLVED", True)
    time.sleep(1)
    assert len(hook.received()) == 1
    with pytest.raises(ServiceError):
        alerting.mute(VIEWER, AlertRule.SCRAPE_STALE, 30, "viewers cannot")


def test_a_failed_full_audit_fires_until_the_next_full_audit_is_clean(db: str) -> None:
    """The periodic check does not look behind its checkpoint: its clean runs after a failed full
    audit must not end the alert."""
    _leader_alive()
    plant_integrity_run(db, violations=0)
    plant_integrity_run(db, violations=3, job="integrity_full")
    plant_integrity_run(db, violations=0)  # a later, clean periodic check
    assert alerting.evaluate().conditions == ["integrity_violation"]
    assert incidents(db) == [("integrity_violation", "OPEN")]
    plant_integrity_run(db, violations=0, job="integrity_full")
    assert alerting.evaluate().conditions == []
    assert incidents(db) == [("integrity_violation", "CLOSED")]


def test_a_condition_that_stays_true_is_reminded_after_the_interval(
    db: str, channels: tuple[WebhookStandin, SmtpReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, _ = channels
    _leader_alive()
    plant_integrity_run(db, violations=1)
    assert alerting.evaluate().counts["fired"] == 1
    assert alerting.evaluate().counts["reminded"] == 0  # within the 240 min interval
    monkeypatch.setenv("ALERT_REMINDER_MINUTES", "0")
    get_settings.cache_clear()
    assert alerting.evaluate().counts["reminded"] == 1
    wait_for(lambda: len(hook.received()) == 2, 20, "the reminder")
    assert [m["title"] for m in hook.received()] == [
        "[FIRING] Integrity violation",
        "[REMINDER] Integrity violation",
    ]


def test_no_leader_is_seen_by_the_monitor_which_is_not_the_leader(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERT_CHANNELS", raising=False)
    get_settings.cache_clear()
    _leader_alive()
    assert monitor.watch_once() is None  # a live leader evaluates; the monitor only watches
    rows(db, "UPDATE scheduler_instances SET heartbeat_at = now() - interval '5 minutes'")
    report = monitor.watch_once()
    assert report is not None and report.conditions == ["leader_missing"]
    assert incidents(db) == [("leader_missing", "OPEN")]
    evaluator = rows(db, "SELECT evaluator FROM alert_evaluations")[0][0]
    assert evaluator.endswith(" monitor")


def test_a_scheduler_still_taking_the_lock_is_not_a_missing_leader(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: every start of the product fired "no scheduler leader" (and resolved it a
    few seconds later) because the monitor looked before the scheduler took the lock."""
    monkeypatch.delenv("ALERT_CHANNELS", raising=False)
    get_settings.cache_clear()
    jobs.heartbeat("test:1:standby", is_leader=False, started_at=dt.datetime.now(dt.UTC))
    assert alerting.evaluate().conditions == []
    # Still no leader once the grace has passed: that is an alert.
    rows(db, "UPDATE scheduler_instances SET started_at = now() - interval '5 minutes'")
    assert alerting.evaluate().conditions == ["leader_missing"]


def test_an_integrity_violation_is_told_at_once_by_the_integrity_job(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERT_CHANNELS", raising=False)
    get_settings.cache_clear()
    _leader_alive()
    # A balance that no longer matches its ledger entries.
    rows(db, "UPDATE accounts SET balance = balance + 1 WHERE kind = 'HOUSE'")
    try:
        assert not scheduler.run_job("integrity")
    finally:
        delivery.stop_worker()
    assert incidents(db) == [("integrity_violation", "OPEN")]
    assert [job for (job,) in rows(db, "SELECT job FROM job_runs ORDER BY id")] == [
        "integrity",
        "alerts",
    ]


def test_the_scheduler_runs_the_evaluation_as_its_alerts_job(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERT_CHANNELS", raising=False)
    get_settings.cache_clear()
    plant_integrity_run(db, violations=1)
    try:
        assert scheduler.run_job("alerts")
    finally:
        delivery.stop_worker()
    [(status, counts)] = rows(db, "SELECT status, counts FROM job_runs WHERE job = 'alerts'")
    assert status == "SUCCESS"
    assert counts["fired"] == 2  # the integrity violation, and no scheduler leader
    assert sorted(r for r, _ in incidents(db)) == ["integrity_violation", "leader_missing"]
