"""The Prometheus endpoint and the health check, scraped over HTTP on 127.0.0.1; the figures are
checked against the database."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import launch
from config import PROJECT_ROOT, get_settings
from services.ops import alerting, jobs, metrics
from tests.support.alerts import free_port, incidents, plant_integrity_run, rows, wait_for
from tests.support.factories import close_market
from tests.support.pages import open_market_now
from tests.support.scrape_data import board, scrape_run

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture()
def endpoint(db: str) -> Iterator[str]:
    server, _ = metrics.serve("127.0.0.1", free_port())
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def scrape(base: str) -> Samples:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def one(db: str, sql: str) -> float:
    return float(rows(db, sql)[0][0])


def test_metrics_match_the_database(db: str, endpoint: str) -> None:
    open_market_now()
    due = open_market_now()
    close_market(db, due, 5)  # past close, within the 30 min grace
    overdue = open_market_now()
    close_market(db, overdue, 120)
    now = dt.datetime.now(dt.UTC)
    scrape_run(db, "daily", now - dt.timedelta(minutes=3), board(7))
    scrape_run(db, "daily", None, [], status="FAILED", error=("SCRAPE_HTTP_ERROR", "500"))
    scrape_run(db, "weekly", now - dt.timedelta(minutes=9), board(4))
    plant_integrity_run(db, violations=3)
    rows(
        db,
        'INSERT INTO x_api_state (endpoint, "limit", remaining, reset_at, last_status)'
        " VALUES ('GET /2/users', 300, 42, now() + interval '5 minutes', 'OK')",
    )
    jobs.heartbeat("test:1:leader", is_leader=True, started_at=now)
    alerting.evaluate()

    m = scrape(endpoint)
    assert m[("kolops_database_up", ())] == 1
    for status in ("OPEN", "RESOLVED", "CANCELLED"):
        assert m[("kolops_markets", (("status", status),))] == one(
            db, f"SELECT count(*) FROM markets WHERE status = '{status}'"
        )
    assert m[("kolops_markets", (("status", "OPEN"),))] == 3
    assert m[("kolops_markets_due", ())] == 2
    assert m[("kolops_markets_overdue", ())] == 1

    for timeframe in ("daily", "weekly"):
        label = (("timeframe", timeframe),)
        assert m[("kolops_scrape_rows_stored", label)] == one(
            db,
            "SELECT rows_stored FROM scrape_runs WHERE status = 'SUCCESS'"
            f" AND timeframe = '{timeframe}' ORDER BY id DESC LIMIT 1",
        )
        assert m[("kolops_scrape_last_success_timestamp_seconds", label)] == pytest.approx(
            one(
                db,
                "SELECT extract(epoch FROM finished_at) FROM scrape_runs WHERE status = 'SUCCESS'"
                f" AND timeframe = '{timeframe}' ORDER BY id DESC LIMIT 1",
            )
        )
    assert m[("kolops_scrape_rows_stored", (("timeframe", "daily"),))] == 7
    assert ("kolops_scrape_rows_stored", (("timeframe", "monthly"),)) not in m

    assert m[("kolops_x_api_budget_remaining", (("endpoint", "GET /2/users"),))] == 42
    assert m[("kolops_x_api_budget_limit", (("endpoint", "GET /2/users"),))] == 300
    assert m[("kolops_integrity_violations", ())] == 3

    integrity = (("job", "integrity"),)
    assert (("kolops_job_last_success_timestamp_seconds", integrity)) not in m  # never succeeded
    assert m[("kolops_job_last_run_ok", integrity)] == 0
    assert m[("kolops_job_last_duration_seconds", integrity)] == pytest.approx(
        one(db, "SELECT extract(epoch FROM finished_at - started_at) FROM job_runs")
    )

    firing = dict(rows(db, "SELECT rule, count(*) FROM alerts WHERE state = 'FIRING' GROUP BY 1"))
    assert firing == {"markets_overdue": 1, "integrity_violation": 1}
    for (name, labels), value in m.items():
        if name == "kolops_alerts_firing":
            assert value == firing.get(dict(labels)["rule"], 0), labels
    assert m[("kolops_incidents_open", ())] == 2


def test_job_success_and_durations(db: str, endpoint: str) -> None:
    rows(
        db,
        "INSERT INTO job_runs (job, host, pid, started_at, finished_at, status) VALUES"
        " ('resolve', 'h', 1, now() - interval '7 seconds', now() - interval '4 seconds',"
        "  'SUCCESS'),"
        " ('resolve', 'h', 1, now() - interval '3 seconds', now() - interval '1 second',"
        "  'FAILED')",
    )
    m = scrape(endpoint)
    resolve = (("job", "resolve"),)
    assert m[("kolops_job_last_success_timestamp_seconds", resolve)] == pytest.approx(
        one(db, "SELECT extract(epoch FROM min(finished_at)) FROM job_runs")
    )
    assert m[("kolops_job_last_duration_seconds", resolve)] == pytest.approx(2.0)
    assert m[("kolops_resolve_sweep_duration_seconds", ())] == pytest.approx(2.0)
    assert m[("kolops_job_last_run_ok", resolve)] == 0


def test_health_answers_whether_the_database_is_reachable(
    db: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = httpx.get(f"{endpoint}/healthz", timeout=10)
    assert (ok.status_code, ok.json()["database"]) == (200, "ok")
    monkeypatch.setenv("DATABASE_APP_URL", f"postgresql://kolops@127.0.0.1:{free_port()}/nothing")
    get_settings.cache_clear()
    try:
        down = httpx.get(f"{endpoint}/healthz", timeout=10)
        assert (down.status_code, down.json()["database"]) == (503, "unreachable")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_the_monitor_process_serves_metrics_and_health(db: str) -> None:
    port = free_port()
    env = {**os.environ, "METRICS_PORT": str(port), "ALERT_CHANNELS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ops.monitor"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        launch.wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=30, alive=proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["database"] == "ok"
        assert "kolops_markets" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        # It is not the leader, and no leader runs: it evaluates, and "no leader" fires.
        wait_for(lambda: ("leader_missing", "OPEN") in incidents(db), 30, "leader_missing")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
