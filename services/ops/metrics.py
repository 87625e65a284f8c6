"""Metrics for Prometheus and a health answer for load balancers, read from the database.

Every figure is read when Prometheus scrapes (a custom collector, one read transaction), so any
process serving it reports the same numbers: markets by status, due and overdue, each job's last
success and duration, each timeframe's last successful scrape and rows stored, the X API budget,
integrity violations, settlement and sweep durations, alerts firing and open incidents.

`serve(host, port)` runs prometheus_client's WSGI app on a thread: `/metrics` and `/healthz`
(200 when this process reaches the database, 503 when it does not).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import aliased

from db import rules
from db.engine import libpq_url, read_session
from db.models import ScrapeRun
from services.ops.alert_rules import SEVERITY
from services.views import health
from services.vocabulary import (
    ACTIVE_INCIDENTS,
    SUCCEEDED_SCRAPES,
    AlertRule,
    AlertState,
    AttemptResult,
    JobStatus,
    MarketStatus,
    Severity,
    Timeframe,
    sql_in,
)

log = logging.getLogger("kolops.metrics")

HEALTH_TIMEOUT_S = 3
_USABLE = rules.sql(rules.usable_run(aliased(ScrapeRun, name="r")))
# Attempts that moved money: a settlement or a cancel and refund.
_SETTLED = sql_in(
    "a.result", (AttemptResult.RESOLVED_YES, AttemptResult.RESOLVED_NO, AttemptResult.CANCELLED)
)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class DatabaseCollector(Collector):
    """Reads every figure from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        up = _gauge("kolops_database_up", "1 when the database answered this scrape")
        started = time.monotonic()
        try:
            families = self._families()
        except Exception as exc:  # the endpoint must answer even when the database does not
            log.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        took = _gauge("kolops_metrics_collect_seconds", "time to read the figures")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _families(self) -> list[Metric]:
        out: list[Metric] = []
        # The Overview's own figures: one definition of due, overdue and attention.
        market = health.market_health()
        markets = _gauge("kolops_markets", "markets by status", ["status"])
        for status in MarketStatus:
            markets.add_metric([status.value], market.by_status.get(status.value, 0))
        due, overdue, attention = market.due, market.overdue, market.needs_attention
        with read_session() as s:
            for name, doc, value in (
                ("kolops_markets_due", "open markets past their close", due),
                ("kolops_markets_overdue", "open markets past close and grace period", overdue),
                (
                    "kolops_markets_needs_attention",
                    "open markets flagged for an operator",
                    attention,
                ),
                ("kolops_markets_held", "open markets on an operator's hold", market.held),
            ):
                g = _gauge(name, doc)
                g.add_metric([], value)
                out.append(g)
            out.append(markets)

            jobs = s.execute(
                text(
                    "SELECT job,"
                    " max(extract(epoch FROM finished_at))"
                    f"   FILTER (WHERE status = '{JobStatus.SUCCESS}') AS last_success,"
                    " (array_agg(extract(epoch FROM finished_at - started_at) ORDER BY id DESC)"
                    f"   FILTER (WHERE status <> '{JobStatus.RUNNING}'))[1] AS last_duration,"
                    " (array_agg(status ORDER BY id DESC)"
                    f"   FILTER (WHERE status <> '{JobStatus.RUNNING}'))[1] AS last_status"
                    " FROM job_runs GROUP BY job ORDER BY job"
                )
            ).all()
            last_success = _gauge(
                "kolops_job_last_success_timestamp_seconds",
                "when each job last finished successfully (Unix time)",
                ["job"],
            )
            duration = _gauge(
                "kolops_job_last_duration_seconds", "how long each job's last run took", ["job"]
            )
            ok = _gauge("kolops_job_last_run_ok", "1 when each job's last run succeeded", ["job"])
            for job, success_at, took, status in jobs:
                if success_at is not None:
                    last_success.add_metric([job], float(success_at))
                if took is not None:
                    duration.add_metric([job], float(took))
                if status is not None:
                    ok.add_metric([job], 1 if status == JobStatus.SUCCESS else 0)
            out += [last_success, duration, ok]
            sweep = _gauge(
                "kolops_resolve_sweep_duration_seconds", "how long the last resolution sweep took"
            )
            for job, _, took, _ in jobs:
                if job == "resolve" and took is not None:
                    sweep.add_metric([], float(took))
            out.append(sweep)

            scrapes = {
                r.timeframe: r
                for r in s.execute(
                    text(
                        "SELECT DISTINCT ON (timeframe) timeframe, extract(epoch FROM"
                        " finished_at) AS at, rows_stored FROM scrape_runs"
                        f" WHERE {sql_in('status', SUCCEEDED_SCRAPES)}"
                        " ORDER BY timeframe, id DESC"
                    )
                )
            }
            usable = dict(
                s.execute(
                    text(
                        "SELECT r.timeframe, extract(epoch FROM max(r.snapshot_at))"
                        f" FROM scrape_runs r WHERE {_USABLE} GROUP BY r.timeframe"
                    )
                ).all()
            )
            scrape_at = _gauge(
                "kolops_scrape_last_success_timestamp_seconds",
                "when each timeframe's last successful scrape finished (Unix time)",
                ["timeframe"],
            )
            rows = _gauge(
                "kolops_scrape_rows_stored",
                "rows stored by each timeframe's last successful scrape",
                ["timeframe"],
            )
            snapshot = _gauge(
                "kolops_scrape_last_usable_snapshot_timestamp_seconds",
                "the newest snapshot resolution may use, per timeframe (Unix time)",
                ["timeframe"],
            )
            for tf in Timeframe:
                if tf.value in scrapes:
                    scrape_at.add_metric([tf.value], float(scrapes[tf.value].at))
                    rows.add_metric([tf.value], scrapes[tf.value].rows_stored)
                if usable.get(tf.value) is not None:
                    snapshot.add_metric([tf.value], float(usable[tf.value]))
            out += [scrape_at, rows, snapshot]

            remaining = _gauge(
                "kolops_x_api_budget_remaining", "X API calls left in the window", ["endpoint"]
            )
            limit = _gauge("kolops_x_api_budget_limit", "X API calls per window", ["endpoint"])
            x_ok = _gauge("kolops_x_api_ok", "1 when the endpoint's last call worked", ["endpoint"])
            for endpoint, left, lim, status in s.execute(
                text('SELECT endpoint, remaining, "limit", last_status FROM x_api_state')
            ):
                if left is not None:
                    remaining.add_metric([endpoint], left)
                if lim is not None:
                    limit.add_metric([endpoint], lim)
                x_ok.add_metric([endpoint], 1 if status == "OK" else 0)
            out += [remaining, limit, x_ok]

            integrity = s.execute(
                text(
                    "SELECT coalesce((counts->>'violations')::int, 0),"
                    " extract(epoch FROM finished_at) FROM job_runs"
                    f" WHERE job = 'integrity' AND status <> '{JobStatus.RUNNING}'"
                    " ORDER BY id DESC LIMIT 1"
                )
            ).first()
            violations = _gauge(
                "kolops_integrity_violations", "violations found by the last integrity check"
            )
            checked = _gauge(
                "kolops_integrity_last_check_timestamp_seconds", "when integrity was last checked"
            )
            if integrity is not None:
                violations.add_metric([], integrity[0])
                checked.add_metric([], float(integrity[1]))
            out += [violations, checked]

            last, worst, count = s.execute(
                text(
                    "SELECT (array_agg(extract(epoch FROM a.finished_at - a.started_at)"
                    "   ORDER BY a.id DESC))[1],"
                    " max(extract(epoch FROM a.finished_at - a.started_at)), count(*)"
                    f" FROM resolution_attempts a WHERE {_SETTLED}"
                    " AND a.finished_at > now() - interval '1 hour'"
                )
            ).one()
            settle = _gauge(
                "kolops_settlement_duration_seconds",
                "resolution attempts that settled or refunded in the last hour: the last and"
                " the longest",
                ["stat"],
            )
            if count:
                settle.add_metric(["last"], float(last))
                settle.add_metric(["max_1h"], float(worst))
            settled = _gauge(
                "kolops_settlements_1h", "markets settled or refunded in the last hour"
            )
            settled.add_metric([], count)
            out += [settle, settled]

            firing = dict(
                ((rule, severity), n)
                for rule, severity, n in s.execute(
                    text(
                        "SELECT rule, severity, count(*) FROM alerts"
                        f" WHERE state = '{AlertState.FIRING}' GROUP BY rule, severity"
                    )
                )
            )
            alerts = _gauge("kolops_alerts_firing", "alerts firing, per rule", ["rule", "severity"])
            for rule in AlertRule:
                sev: Severity = SEVERITY[rule]
                alerts.add_metric([rule.value, sev.value], firing.get((rule.value, sev.value), 0))
            incidents = _gauge("kolops_incidents_open", "incidents open or acknowledged")
            incidents.add_metric(
                [],
                s.execute(
                    text(
                        f"SELECT count(*) FROM incidents WHERE {sql_in('state', ACTIVE_INCIDENTS)}"
                    )
                ).scalar_one(),
            )
            deliveries = _gauge("kolops_alert_deliveries", "alert deliveries by status", ["status"])
            for status, n in s.execute(
                text("SELECT status, count(*) FROM alert_deliveries GROUP BY status")
            ):
                deliveries.add_metric([status], n)
            out += [alerts, incidents, deliveries]
        return out


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector())
    return reg


def database_reachable() -> tuple[bool, str]:
    """Can this process open a connection to the database and run a query?"""
    try:
        with psycopg.connect(libpq_url(), connect_timeout=HEALTH_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def app() -> Callable[..., Iterable[bytes]]:
    """The WSGI app: `/healthz` answers whether the database is reachable, anything else is
    Prometheus' exposition of the figures."""
    metrics_app = make_wsgi_app(registry())

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, detail = database_reachable()
            body = json.dumps({"database": "ok" if ok else "unreachable", "detail": detail})
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [body.encode()]
        return metrics_app(environ, start_response)

    return wsgi


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Serve `/metrics` and `/healthz` on a daemon thread; `server.shutdown()` stops it."""
    server = make_server(host, port, app(), ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread
