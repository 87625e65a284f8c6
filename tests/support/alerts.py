"""What the alert tests share: a real SMTP server (aiosmtpd) on 127.0.0.1, channel settings, and
read-backs of alerts, incidents and deliveries."""

from __future__ import annotations

import email
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import psycopg
from aiosmtpd.controller import Controller


@dataclass
class SmtpReceiver:
    """Every message the SMTP server accepted, parsed."""

    port: int = 0
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def apprise_url(self) -> str:
        return (
            f"mailto://127.0.0.1:{self.port}?mode=insecure"
            "&from=kolops@example.com&to=ops@example.com"
        )

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m["Subject"]) for m in self.messages]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(port=free_port())
    controller = Controller(receiver, hostname="127.0.0.1", port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rows(db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run `sql` (committed) and return its rows, if it has any."""
    with psycopg.connect(db) as conn:
        cursor = conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def alerts(db: str) -> list[tuple[str, str, str]]:
    """(rule, key, state) of every alert, oldest first."""
    return [(r, k, s) for r, k, s in rows(db, "SELECT rule, key, state FROM alerts ORDER BY id")]


def incidents(db: str) -> list[tuple[str, str]]:
    """(rule, incident state) of every incident, oldest first."""
    return [
        (r, s)
        for r, s in rows(
            db,
            "SELECT a.rule, i.state FROM incidents i JOIN alerts a ON a.id = i.alert_id"
            " ORDER BY i.id",
        )
    ]


def deliveries(db: str) -> list[tuple[str, str, str, int, str | None]]:
    """(event kind, channel scheme, status, attempts, last error) of every delivery."""
    return [
        (kind, channel.split("://")[0], status, attempts, error)
        for kind, channel, status, attempts, error in rows(
            db,
            "SELECT e.kind, d.channel, d.status, d.attempts, d.last_error"
            " FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id ORDER BY d.id",
        )
    ]


def plant_integrity_run(db: str, *, violations: int, job: str = "integrity") -> None:
    """A finished run of an integrity job (the periodic check, or "integrity_full"): failed with
    `violations`, or clean when 0."""
    status = "FAILED" if violations else "SUCCESS"
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, finished_at, status, counts, error)"
            " VALUES (%s, 'test', 1, now(), %s, %s::jsonb, %s)",
            (
                job,
                status,
                f'{{"violations": {violations}}}',
                f"{violations} violations: ledger:1" if violations else None,
            ),
        )
