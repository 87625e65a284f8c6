"""The incident inbox in a real browser (Playwright, Debian's Chromium, `streamlit run app.py`):
a stand-in kolscan outage opens an incident, an analyst acknowledges it with a comment, and it
closes by itself when the outage ends. Screenshots go to test-artifacts/screenshots/incidents-*.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

import scheduler
from config import get_settings
from services.ops import alerting, auth, jobs
from standins.webhook_standin import WebhookStandin
from tests.conftest import Standins, running_dashboard
from tests.support.alerts import incidents, rows
from tests.support.browser import settled, shot

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
TIMEOUT_MS = 30_000
COMMENT = "kolscan answers 500; watching, will cancel nothing by hand"


def test_an_outage_incident_is_acknowledged_and_closes_when_the_outage_ends(
    db: str,
    standins: Standins,
    browser: Browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with WebhookStandin() as hook:
        env = {
            "ALERT_CHANNELS": hook.apprise_url,
            "ALERT_LEADER_STALE_S": "3600",
            "DASHBOARD_REFRESH_S": "2",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        auth.create_account("ana", PASSWORD, "analyst")
        auth.create_account("olga", PASSWORD, "operator")
        jobs.heartbeat("test:1:leader", is_leader=True, started_at=dt.datetime.now(dt.UTC))
        assert scheduler.run_job("scrape_daily")

        # The stand-in outage starts; two failed scrapes in a row open an incident.
        standins.kolscan.set_variant("error")
        assert not scheduler.run_job("scrape_daily")
        assert not scheduler.run_job("scrape_daily")
        assert alerting.evaluate().conditions == ["scrape_failing:daily"]
        [(incident_id,)] = rows(db, "SELECT id FROM incidents")

        log_path = tmp_path / "streamlit.log"
        with running_dashboard(log_path, {**os.environ, "DATABASE_URL": db}) as base:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(base)
            page.get_by_role("textbox", name="Username").fill("ana")
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("Open incidents: 1")).to_be_visible()
            settled(page)
            shot(page, "incidents-01-overview")

            page.get_by_role("link", name="Incident inbox").click()
            expect(page.get_by_role("heading", name="Incidents", exact=True)).to_be_visible()
            expect(page.get_by_text("Open incidents (1)")).to_be_visible()
            expect(page.get_by_text("Alerts are sent to: json://")).to_be_visible()
            settled(page)
            shot(page, "incidents-02-inbox")

            page.get_by_role("link", name=f"Incident #{incident_id}").click()
            expect(page.get_by_role("heading", name=f"Incident #{incident_id}")).to_be_visible()
            assert page.url == f"{base}/incidents?incident={incident_id}"
            expect(page.get_by_text("daily: the last 2 scrapes failed")).to_be_visible()
            expect(page.get_by_role("link", name="Scrape runs #")).to_be_visible()
            # No delivery worker runs in this test: the timeline shows the message queued.
            expect(page.get_by_text("delivery pending").first).to_be_visible()
            settled(page)
            shot(page, "incidents-03-incident-open")

            page.get_by_role("button", name="Acknowledge").click()
            expect(page.get_by_text("a non-empty comment is required")).to_be_visible()
            page.get_by_label("Comment (required, kept in the audit log)").fill(COMMENT)
            page.get_by_role("button", name="Acknowledge").click()
            expect(page.get_by_text(f"Acknowledged by ana: {COMMENT}")).to_be_visible()
            settled(page)
            shot(page, "incidents-04-incident-acknowledged")
            assert incidents(db) == [("scrape_failing", "ACKNOWLEDGED")]
            audit_rows = rows(
                db,
                "SELECT username, action, result, reason FROM audit_log"
                " WHERE target_type = 'incident' ORDER BY id",
            )
            assert audit_rows == [("ana", "acknowledge_incident", "OK", COMMENT)]

            # The outage ends; the next evaluation resolves the alert and closes the incident,
            # which the open page shows on its next refresh.
            standins.kolscan.set_variant("normal")
            assert scheduler.run_job("scrape_daily")
            assert alerting.evaluate().counts["resolved"] == 1
            expect(page.get_by_text("CLOSED").first).to_be_visible()
            expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
            settled(page)
            shot(page, "incidents-05-incident-closed")
            assert incidents(db) == [("scrape_failing", "CLOSED")]

            page.get_by_role("button", name="← All incidents").click()
            expect(page.get_by_text("Open incidents (0)")).to_be_visible()
            settled(page)
        assert "Traceback" not in log_path.read_text(), log_path.read_text()
    get_settings.cache_clear()
