"""Retention and integrity as a person sees them: the Jobs page's storage section after a
retention run, and the Ledger page's full audit on demand, in real Chromium (issue 19).
Screenshots go to test-artifacts/screenshots/ for a person to look at."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect

from services.ops import auth, jobs, retention
from services.vocabulary import JobStatus
from tests.support.browser import settled, shot
from tests.support.money import register

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


@pytest.fixture()
def page(browser: Browser) -> Page:
    p = browser.new_page(viewport={"width": 1440, "height": 1800})
    p.set_default_timeout(30_000)
    return p


def test_jobs_page_storage_and_ledger_full_audit_in_a_browser(
    db: str, dashboard: str, page: Page
) -> None:
    auth.create_account("vera", PASSWORD, "viewer")
    register("ann", "25")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=200)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, started_at, status)"
            " SELECT 'daily', 'SCHEDULE', 'http://127.0.0.1/', %s, 'FAILED'"
            " FROM generate_series(1, 4)",
            (old,),
        )
    run_id = jobs.start_run("retention")
    report = retention.run()
    jobs.finish_run(
        "retention",
        run_id,
        status=JobStatus.SUCCESS,
        counts=report.counts(),
        error=None,
        took_s=0.1,
    )

    page.goto(dashboard)
    page.get_by_role("textbox", name="Username").fill("vera")
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Storage and retention")).to_be_visible()
    settled(page)
    expect(page.get_by_text("Database on disk")).to_be_visible()
    expect(page.get_by_text("Last retention run")).to_be_visible()
    shot(page, "19-jobs-storage")

    nav.get_by_role("link", name="Ledger & integrity").click()
    expect(page.get_by_role("heading", name="Ledger & integrity")).to_be_visible()
    settled(page)
    page.get_by_role("button", name="Run the full audit now").click()
    expect(page.get_by_text("Integrity clean")).to_be_visible()
    settled(page)
    shot(page, "19-ledger-full-audit")
