"""The dashboard in a real browser: `streamlit run app.py` on 127.0.0.1, driven by Playwright and
Debian's Chromium, on the test database. An operator opens an overdue market by its deep link,
cancels and refunds it through the confirmation dialog, and the database shows the result.

A screenshot of every page is saved in test-artifacts/screenshots/ (git-ignored) for a person to
look at.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from services.ops import audit, auth, operator
from tests.support.accounts import principal
from tests.support.browser import settled, shot
from tests.support.pages import (
    DEPOSIT,
    balances,
    bet_statuses,
    market_audit,
    market_row,
    overdue_market_with_bets,
    settlement_count,
)
from tests.support.settling import settle

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
HOSTILE_KOL = '<img src=x onerror="document.title=1">'
HOSTILE_TITLE = "Will **Eve** ![t](http://198.51.100.1/t.png) stay <b>up</b>?"
TIMEOUT_MS = 30_000


def _log_in(page: Page, base: str, username: str) -> None:
    page.goto(base)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_operator_cancels_an_overdue_market_through_the_dialog(
    db: str, dashboard: str, browser: Browser
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    s = overdue_market_with_bets(db, kol_name=HOSTILE_KOL, title=HOSTILE_TITLE)
    # Some history for the charts and the audit log.
    resolved = overdue_market_with_bets(db)
    settle(resolved.market_id, "YES", actor="resolver", reason="evidence")
    cancelled = overdue_market_with_bets(db)
    operator.cancel_and_refund(
        principal("otto", "operator"), cancelled.market_id, "bad feed", expected_status="OPEN"
    )
    page = browser.new_page(viewport={"width": 1440, "height": 1300})
    page.set_default_timeout(TIMEOUT_MS)

    _log_in(page, dashboard, "olga")
    expect(page.get_by_role("heading", name="Market health")).to_be_visible()
    expect(page.get_by_text("Needs attention, on hold or overdue (1)")).to_be_visible()
    settled(page)
    shot(page, "01-overview", full_page=False)

    # The overview links the overdue market by its deep link.
    page.get_by_role("link", name=f"Market #{s.market_id}").click()
    expect(page.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
    assert page.url == f"{dashboard}/markets?market={s.market_id}"
    settled(page)
    # Database text is shown literally: no image or HTML from the title or the KOL name.
    expect(page.get_by_text(HOSTILE_TITLE, exact=True)).to_be_visible()
    assert page.locator("img[src='x'], img[src*='198.51.100.1']").count() == 0
    assert page.title() != "1"
    expect(page.get_by_text("Overdue:")).to_be_visible()
    shot(page, "03-market-detail", full_page=False)

    page.get_by_role("button", name="Cancel & refund").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Bets affected")).to_be_visible()
    expect(dialog.get_by_text("225.50")).to_be_visible()
    confirm = dialog.get_by_role("button", name="Confirm cancel & refund")
    confirm.click()  # no reason yet
    expect(dialog.get_by_text("a reason is required for this action")).to_be_visible()
    dialog.get_by_label("Reason (required, kept in the audit log)").fill(
        "KOL data never arrived; refunding"
    )
    shot(page, "04-cancel-dialog", full_page=False)
    dialog.get_by_label("Reason (required, kept in the audit log)").press("Control+Enter")
    confirm.click()
    expect(
        page.get_by_text("Cancelled and refunded 4 bets: 3 users got 225.50 back.")
    ).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    settled(page)
    shot(page, "05-market-cancelled", full_page=False)

    assert market_row(s.market_id) == {
        "status": "CANCELLED",
        "outcome": None,
        "cancel_reason": "OPERATOR_CANCELLED",
        "cancel_detail": "KOL data never arrived; refunding",
    }
    assert bet_statuses(s.market_id) == ["REFUNDED"] * s.bets
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    assert settlement_count(s.market_id) == {"REFUND": 1}
    results = [(r["username"], r["action"], r["result"]) for r in market_audit(s.market_id)]
    assert results == [
        ("olga", "cancel_and_refund", "REFUSED"),
        ("olga", "cancel_and_refund", "OK"),
    ]
    assert market_audit(s.market_id)[-1]["after"]["status"] == "CANCELLED"

    page.get_by_role("button", name="← All markets").click()
    expect(page.get_by_role("heading", name="Markets", exact=True)).to_be_visible()
    settled(page)
    shot(page, "02-markets-list", full_page=False)

    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    settled(page)
    shot(page, "06-audit-log", full_page=False)
    assert audit.recent(action="cancel_and_refund", username="olga")[0]["result"] == "OK"

    # Every other page the navigation offers an operator renders without an error.
    # A link's text is its icon's name, then its title.
    titles = [text.split("\n")[-1] for text in nav.get_by_role("link").all_inner_texts()]
    others = [t for t in titles if t not in ("Overview", "Markets", "Audit log")]
    assert others, "the navigation lists no other page"
    for i, name in enumerate(others, start=7):
        nav.get_by_role("link", name=name).click()
        expect(page.get_by_role("heading").first).to_be_visible()
        settled(page)
        shot(page, f"{i:02d}-{re.sub(r'[^a-z]+', '-', name.lower()).strip('-')}", full_page=False)


def test_a_pasted_deep_link_opens_the_market_after_login(
    db: str, dashboard: str, browser: Browser
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    s = overdue_market_with_bets(db)
    # The very first request to a fresh server: Streamlit's legacy pages/ discovery runs the
    # page file without app.py; it must still end at the login form and then at the market.
    fresh = browser.new_page(viewport={"width": 1440, "height": 1300})
    fresh.set_default_timeout(15_000)
    fresh.goto(f"{dashboard}/markets?market={s.market_id}")
    fresh.get_by_role("textbox", name="Username").fill("olga")
    fresh.get_by_role("textbox", name="Password").fill(PASSWORD)
    fresh.get_by_role("button", name="Log in").click()
    expect(fresh.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
