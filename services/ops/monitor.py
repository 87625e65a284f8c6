"""The monitor: a small process beside the scheduler that is never its leader.

    python -m services.ops.monitor        serve /metrics and /healthz, send alerts, watch the leader

It serves the Prometheus endpoint and the health check on METRICS_HOST:METRICS_PORT, runs a
delivery worker (so queued alerts go out even while no scheduler runs), and watches the leader's
heartbeat: while no leader is alive it evaluates the alert rules itself, so "no scheduler leader"
(and whatever else goes wrong meanwhile) still reaches the team. While a leader is alive, the
scheduler's `alerts` job evaluates and this process only serves and sends.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading

from config import get_settings, setup_logging
from services.ops import alerting, delivery, metrics
from services.ops.jobs import HOST, scheduler_state

log = logging.getLogger("kolops.monitor")


def leader_alive() -> bool:
    age = scheduler_state().leader_age_s
    return age is not None and age <= get_settings().alert_leader_stale_s


def watch_once() -> alerting.EvaluationReport | None:
    """Evaluate the alert rules when no leader is alive (else the leader's job does)."""
    if leader_alive():
        return None
    return alerting.evaluate(f"{HOST}:{os.getpid()} monitor")


def run(stop: threading.Event) -> None:
    s = get_settings()
    server, _ = metrics.serve(s.metrics_host, s.metrics_port)
    log.info("metrics at http://%s:%s/metrics, health at /healthz", s.metrics_host, s.metrics_port)
    delivery.ensure_worker()
    period = max(1, min(s.alert_interval_s, s.alert_leader_stale_s))
    try:
        while not stop.is_set():
            try:
                report = watch_once()
                if report is not None:
                    log.warning("no scheduler leader: evaluated alerts %s", report.counts)
            except Exception as exc:  # the database may be away; /healthz says so
                log.warning("monitor: %s", exc)
            stop.wait(period)
    finally:
        server.shutdown()
        delivery.stop_worker()


def main() -> int:
    setup_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("monitor starting at %s", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
