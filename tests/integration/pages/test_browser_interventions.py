"""Interventions in a real browser (Playwright, Debian's Chromium, `streamlit run app.py` on
127.0.0.1, the test database): an analyst quarantines a run that decided markets of several
types and an operator applies their re-evaluation; an operator's big refund waits for a second
operator's approval. Screenshots go to test-artifacts/screenshots/interventions-*.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from services.money.integrity import check_integrity
from services.ops import audit, auth
from services.views import proposals as proposal_views
from services.vocabulary import Verdict
from tests.conftest import running_dashboard
from tests.support.browser import settled, shot
from tests.support.interventions import plant
from tests.support.pages import market_row, overdue_market_with_bets, settlement_count

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


def _dashboard(db: str, tmp_path: Path, **env: str) -> Iterator[str]:
    log_path = tmp_path / "streamlit.log"
    with running_dashboard(log_path, {**os.environ, "DATABASE_URL": db, **env}) as url:
        yield url
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def _logged_in(browser: Browser, base: str, username: str, path: str = "") -> Page:
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base + path)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()
    return page


def _go(page: Page, name: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    settled(page)


def _pick_run(page: Page, run_id: int) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text="Run").click()
    page.get_by_role("option", name=f"#{run_id} ").click()
    settled(page)


def test_an_analyst_quarantines_a_run_and_an_operator_applies_its_reevaluation(
    db: str, browser: Browser, tmp_path: Path
) -> None:
    planted = plant(db)
    auth.create_account("ana", PASSWORD, "analyst")
    auth.create_account("olga", PASSWORD, "operator")
    for base in _dashboard(db, tmp_path):
        ana = _logged_in(browser, base, "ana")
        _go(ana, "Scrapes")
        _pick_run(ana, planted.run_id)
        ana.get_by_role("button", name="Quarantine this run").click()
        dialog = ana.get_by_role("dialog")
        expect(dialog.get_by_text("4 markets whose settlement rests on it")).to_be_visible()
        dialog.get_by_label("Reason (required, kept in the audit log)").fill(
            "Alpha and Beta swapped ranks on the page"
        )
        shot(ana, "01-quarantine-dialog")
        dialog.get_by_label("Reason (required, kept in the audit log)").press("Control+Enter")
        dialog.get_by_role("button", name="Quarantine run").click()
        expect(ana.get_by_text(f"Run {planted.run_id} quarantined.")).to_be_visible()
        settled(ana)
        # An analyst sees what it changes but cannot apply it.
        _pick_run(ana, planted.run_id)
        expect(ana.get_by_text("Applying it needs the operator role.")).to_be_visible()

        olga = _logged_in(browser, base, "olga")
        _go(olga, "Scrapes")
        _pick_run(olga, planted.run_id)
        section = olga.get_by_role("heading", name="What this quarantine changes")
        expect(section).to_be_visible()
        expect(olga.get_by_text("Applying re-settles 2 markets and refunds 1")).to_be_visible()
        section.scroll_into_view_if_needed()
        shot(olga, "02-reevaluation-preview")
        reason = olga.get_by_label("Reason for applying (required, kept in the audit log)")
        reason.fill("run quarantined: re-settling from the next good snapshot")
        reason.press("Control+Enter")
        olga.get_by_role("button", name="Apply re-evaluation").click()
        expect(olga.get_by_text("Applied: 4 of 4 markets changed or confirmed")).to_be_visible()
        settled(olga)
        expect(olga.get_by_text("No market's active settlement rests on this run")).to_be_visible()
        shot(olga, "03-reevaluation-applied")

    for market_id, verdict in planted.expected.items():
        row = market_row(market_id)
        if verdict is Verdict.FLIPS:
            assert (row["status"], row["outcome"]) == ("RESOLVED", "NO")
        elif verdict is Verdict.STAYS:
            assert (row["status"], row["outcome"]) == ("RESOLVED", "YES")
        else:
            assert row["status"] == "CANCELLED"
    assert check_integrity().ok
    applied = [r for r in audit.recent(action="apply_reevaluation") if r["username"] == "olga"]
    assert sorted(r["result"] for r in applied) == ["OK"] * 4


def test_a_big_refund_waits_for_a_second_operator(
    db: str, browser: Browser, tmp_path: Path
) -> None:
    s = overdue_market_with_bets(db)  # 225.50 to refund
    auth.create_account("olga", PASSWORD, "operator")
    auth.create_account("otto", PASSWORD, "operator")
    for base in _dashboard(db, tmp_path, APPROVAL_MIN_AMOUNT="100"):
        olga = _logged_in(browser, base, "olga", f"/markets?market={s.market_id}")
        expect(olga.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
        settled(olga)
        olga.get_by_role("button", name="Cancel & refund").click()
        dialog = olga.get_by_role("dialog")
        dialog.get_by_label("Reason (required, kept in the audit log)").fill("KOL data is bad")
        dialog.get_by_label("Reason (required, kept in the audit log)").press("Control+Enter")
        dialog.get_by_role("button", name="Confirm cancel & refund").click()
        expect(olga.get_by_text("recorded as proposal #")).to_be_visible()
        settled(olga)
        shot(olga, "04-proposed")
        assert market_row(s.market_id)["status"] == "OPEN"

        # The proposer sees it waiting but cannot approve it.
        olga.get_by_test_id("stSidebarNav").get_by_role("link", name="Overview").click()
        expect(olga.get_by_text("Proposals waiting for approval (1)")).to_be_visible()
        settled(olga)
        expect(
            olga.get_by_text("Every waiting proposal is yours: another operator must decide them.")
        ).to_be_visible()

        otto = _logged_in(browser, base, "otto")
        expect(otto.get_by_text("Proposals waiting for approval (1)")).to_be_visible()
        settled(otto)
        otto.get_by_label("Note (kept in the audit log)").fill("checked the feed: agreed")
        otto.get_by_label("Note (kept in the audit log)").press("Enter")
        shot(otto, "05-approval-waiting")
        otto.get_by_role("button", name="Approve").click()
        expect(otto.get_by_text("approved: 1 markets carried out.")).to_be_visible()
        settled(otto)
        shot(otto, "06-approved")

    assert market_row(s.market_id)["status"] == "CANCELLED"
    assert settlement_count(s.market_id) == {"REFUND": 1}
    [done] = proposal_views.recent()
    assert (done["status"], done["proposed_by"], done["decided_by"]) == ("APPROVED", "olga", "otto")
    assert check_integrity().ok


def test_an_operator_bulk_cancels_a_page_of_markets(
    db: str, browser: Browser, tmp_path: Path
) -> None:
    markets = [overdue_market_with_bets(db) for _ in range(3)]
    auth.create_account("olga", PASSWORD, "operator")
    for base in _dashboard(db, tmp_path, BULK_CONFIRM_MARKETS="2"):
        olga = _logged_in(browser, base, "olga")
        _go(olga, "Markets")
        olga.get_by_text("every market on this page").click()
        settled(olga)
        olga.get_by_role("button", name="Cancel & refund: 3 markets…").click()
        dialog = olga.get_by_role("dialog")
        expect(dialog.get_by_text("Markets to act on")).to_be_visible()
        expect(dialog.get_by_text("676.50")).to_be_visible()  # 3 x 225.50 back to users
        dialog.get_by_label("Reason (required, kept in the audit log)").fill("feed broken all day")
        dialog.get_by_label("Reason (required, kept in the audit log)").press("Control+Enter")
        settled(olga)
        # (A wrong count is refused and changes nothing: tests/integration/services/ops.)
        typed = dialog.get_by_label("Type the number of markets (3) to confirm")
        typed.fill("3")
        typed.press("Enter")
        settled(olga)
        assert {market_row(m.market_id)["status"] for m in markets} == {"OPEN"}
        shot(olga, "07-bulk-preview")
        dialog.get_by_role("button", name="Confirm cancel & refund of 3 markets").click()
        expect(olga.get_by_text("Cancel & refund of 3 markets done — OK: 3.")).to_be_visible()
        settled(olga)
        shot(olga, "08-bulk-done")
    for m in markets:
        assert market_row(m.market_id)["status"] == "CANCELLED"
        assert settlement_count(m.market_id) == {"REFUND": 1}
    assert audit.recent(action="bulk_cancel")[0]["result"] == "OK"
    assert check_integrity().ok
