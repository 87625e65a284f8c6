"""Delivery of alert events to the team's channels, through apprise, in the background.

Channels are apprise URLs in `ALERT_CHANNELS` (one per channel, separated by spaces): `json://`
for a generic webhook, `mailto://` for e-mail, `slack://`, `discord://`, `tgram://`... With none
configured nothing is queued or sent, and the dashboard says so.

The evaluation queues one `alert_deliveries` row per channel and event, in its own transaction.
A worker thread (one per process: the scheduler's, the monitor's) claims due rows with
`FOR UPDATE SKIP LOCKED`, sends each in a thread of its own and waits at most
`ALERT_DELIVERY_TIMEOUT_S` for it: a channel that hangs or refuses is a failed attempt, retried
with exponential backoff up to `ALERT_DELIVERY_ATTEMPTS`, then FAILED; every attempt's outcome is
on the row. A channel gets an alert's messages in order: a message waits while an earlier one of
the same alert to the same channel is still pending. Delivery is at least once: a send that
times out here may still arrive later, and its retry arrives again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import apprise
from sqlalchemy import text
from sqlalchemy.orm import Session

from config import get_settings
from db.engine import transaction
from services.vocabulary import AlertEvent, DeliveryStatus

log = logging.getLogger("kolops.delivery")

BATCH = 20
MAX_BACKOFF_S = 600.0
IDLE_WAIT_S = 1.0


@dataclass(frozen=True)
class Channel:
    url: str = ""  # with its secrets: never stored nor shown
    label: str = ""  # apprise's privacy form, stored on deliveries and shown
    error: str | None = None  # why the URL cannot be used


@lru_cache(maxsize=64)
def _channel(url: str) -> Channel:
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        return Channel(url, f"{scheme}://(invalid)", "not a URL apprise understands")
    return Channel(url, plugin.url(privacy=True))


def channels() -> list[Channel]:
    """The configured channels, in order (invalid ones carry their error)."""
    return [_channel(url) for url in get_settings().alert_channels]


def usable_channels() -> list[Channel]:
    return [c for c in channels() if c.error is None]


def queue(session: Session, event_id: int) -> int:
    """Queue event `event_id` to every usable channel, in the caller's transaction."""
    labels = [c.label for c in usable_channels()]
    for label in labels:
        session.execute(
            text(
                "INSERT INTO alert_deliveries (event_id, channel, status) VALUES (:e, :c, :pending)"
            ),
            {"e": event_id, "c": label, "pending": DeliveryStatus.PENDING.value},
        )
    return len(labels)


# -- sending --------------------------------------------------------------------------------------

_CLAIM = text(
    """
    WITH due AS (
      SELECT d.id FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id
      WHERE d.status = :pending AND d.next_attempt_at <= now()
        AND NOT EXISTS (
          SELECT 1 FROM alert_deliveries d2 JOIN alert_events e2 ON e2.id = d2.event_id
          WHERE d2.status = :pending AND d2.channel = d.channel
            AND e2.alert_id = e.alert_id AND d2.id < d.id)
      ORDER BY d.id LIMIT :batch FOR UPDATE OF d SKIP LOCKED)
    UPDATE alert_deliveries d
       SET attempts = d.attempts + 1,
           next_attempt_at = now() + make_interval(secs => :lease)
      FROM due, alert_events e
     WHERE d.id = due.id AND e.id = d.event_id
    RETURNING d.id, d.channel, d.attempts, e.kind, e.title, e.body
    """
)


def _send(url: str, title: str, body: str, kind: str) -> str | None:
    """Send one message; None when the channel took it, else why not."""
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return "not a URL apprise understands"
    notify_type = (
        apprise.NotifyType.SUCCESS if kind == AlertEvent.RESOLVED else apprise.NotifyType.FAILURE
    )
    try:
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = bool(notifier.notify(title=title, body=body, notify_type=notify_type))
            logs = captured.getvalue() if hasattr(captured, "getvalue") else ""
    except Exception as exc:  # a plugin bug must not kill the worker
        return f"{type(exc).__name__}: {exc}"[:1000]
    if ok:
        return None
    lines = [line.strip() for line in str(logs).splitlines() if line.strip()]
    return (lines[-1] if lines else "the channel did not accept the message")[:1000]


def _attempt(url: str, row: Any, timeout_s: float) -> str | None:
    outcome: dict[str, str | None] = {}

    def run() -> None:
        outcome["error"] = _send(url, row.title, row.body, row.kind)

    worker = threading.Thread(target=run, name=f"deliver-{row.id}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return f"no answer within {timeout_s:g}s"
    return outcome.get("error", "the sender stopped without a result")


def _record(row: Any, error: str | None) -> None:
    s = get_settings()
    if error is None:
        sql = (
            "UPDATE alert_deliveries SET status = :sent, finished_at = now(), last_error = NULL"
            " WHERE id = :id"
        )
        params: dict[str, Any] = {"id": row.id, "sent": DeliveryStatus.SENT.value}
    elif row.attempts >= s.alert_delivery_attempts:
        sql = (
            "UPDATE alert_deliveries SET status = :failed, finished_at = now(), last_error = :err"
            " WHERE id = :id"
        )
        params = {"id": row.id, "failed": DeliveryStatus.FAILED.value, "err": error}
    else:
        backoff = min(MAX_BACKOFF_S, s.alert_delivery_backoff_s * 2 ** (row.attempts - 1))
        sql = (
            "UPDATE alert_deliveries SET last_error = :err,"
            " next_attempt_at = now() + make_interval(secs => :wait) WHERE id = :id"
        )
        params = {"id": row.id, "err": error, "wait": backoff}
    with transaction() as session:
        session.execute(text(sql), params)
    if error is not None:
        log.warning("delivery %s to %s attempt %s: %s", row.id, row.channel, row.attempts, error)


def deliver_due(*, limit: int = BATCH) -> int:
    """Claim the due deliveries, send them in parallel (each bounded by the delivery timeout) and
    record each outcome; returns how many were attempted."""
    s = get_settings()
    timeout = s.alert_delivery_timeout_s
    with transaction() as session:
        rows = session.execute(
            _CLAIM,
            {"pending": DeliveryStatus.PENDING.value, "batch": limit, "lease": timeout + 30},
        ).all()
    if not rows:
        return 0
    by_label = {c.label: c.url for c in usable_channels()}
    results: dict[int, str | None] = {}

    def one(row: Any) -> None:
        url = by_label.get(row.channel)
        results[row.id] = (
            "the channel is no longer configured" if url is None else _attempt(url, row, timeout)
        )

    threads = [threading.Thread(target=one, args=(row,), daemon=True) for row in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    for row in rows:
        _record(row, results.get(row.id, f"no answer within {timeout:g}s"))
    return len(rows)


class DeliveryWorker(threading.Thread):
    """Sends due deliveries until stopped; `wake()` makes it look at once."""

    def __init__(self) -> None:
        super().__init__(name="alert-delivery", daemon=True)
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                busy = deliver_due() > 0
            except Exception as exc:  # the database may be briefly away; keep going
                log.warning("delivery worker: %s", exc)
                busy = False
            if not busy:
                self.wake_event.wait(IDLE_WAIT_S)
                self.wake_event.clear()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        self.wake_event.set()
        self.join(timeout_s)


_worker: DeliveryWorker | None = None
_worker_lock = threading.Lock()


def ensure_worker() -> DeliveryWorker:
    """This process's delivery worker, started on first use."""
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = DeliveryWorker()
            _worker.start()
        return _worker


def stop_worker() -> None:
    global _worker
    with _worker_lock:
        worker, _worker = _worker, None
    if worker is not None:
        worker.stop()


def wake() -> None:
    """Tell this process's worker (if it runs) that something was queued."""
    worker = _worker
    if worker is not None:
        worker.wake_event.set()


def wait_until_idle(timeout_s: float) -> bool:
    """Wait until every pending delivery has had an attempt with a recorded outcome (tests,
    `--once`); True when that happened in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with transaction() as session:
            due = session.scalar(
                text(
                    "SELECT count(*) FROM alert_deliveries"
                    " WHERE status = :pending AND last_error IS NULL"
                ),
                {"pending": DeliveryStatus.PENDING.value},
            )
        if not due:
            return True
        time.sleep(0.1)
    return False
