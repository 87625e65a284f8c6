"""The Scrapes read models: runs, failures, rejects, saved artifacts and success over time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from config import get_settings
from services.errors import ErrorCode, ServiceError
from services.views import scrapes as scrape_views
from tests.support.scrape_data import NOW, board, scrape_run


def test_runs_refuse_an_unknown_status(db: str) -> None:
    with pytest.raises(ServiceError) as err:
        scrape_views.runs(status="BROKEN")
    assert err.value.code == ErrorCode.INVALID_INPUT


def test_scrape_runs_failures_rejects_and_artifacts(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    ok = scrape_run(db, "daily", NOW - dt.timedelta(hours=1), board(2))
    failed = scrape_run(
        db,
        "daily",
        None,
        [],
        status="FAILED",
        error=("SCRAPE_LAYOUT_CHANGED", "no rows"),
        rejects=[(1, {"name": "x"}, "PARSE_MISSING_FIELD")],
    )
    html = tmp_path / "scrapes" / f"{failed}.html"
    html.parent.mkdir()
    html.write_text("<html><script>alert(1)</script></html>")
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE scrape_runs SET html_path = %s, screenshot_path = %s WHERE id = %s",
            (str(html), str(tmp_path / "scrapes" / "gone.png"), failed),
        )

    all_runs = scrape_views.runs()
    assert [r["id"] for r in all_runs.rows] == [failed, ok] and all_runs.total == 2
    failures = scrape_views.runs(status="FAILED")
    assert [(r["id"], r["error_code"]) for r in failures.rows] == [
        (failed, "SCRAPE_LAYOUT_CHANGED")
    ]
    assert scrape_views.runs(timeframe="weekly").total == 0
    detail = scrape_views.run(failed)
    assert scrape_views.artifact(detail["html_path"]) == html.read_bytes()
    assert scrape_views.artifact(detail["screenshot_path"]) is None  # the file is gone
    with pytest.raises(ServiceError) as err:
        scrape_views.artifact("/etc/passwd")
    assert err.value.code == ErrorCode.INVALID_INPUT
    rej = scrape_views.rejects(run_id=failed)
    assert rej.total == 1 and rej.rows[0]["reason_code"] == "PARSE_MISSING_FIELD"
    over_time = scrape_views.success_over_time(days=2)
    assert {(r["status"], r["runs"]) for r in over_time} == {("SUCCESS", 1), ("FAILED", 1)}
    get_settings.cache_clear()
