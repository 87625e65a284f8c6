"""Logins and sessions in a real browser: `streamlit run app.py` on 127.0.0.1, Debian's Chromium.

Every check waits for a definite state (the login form, or a page's heading), never for a quiet
period: a slow page and a leaking page look different.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from services.ops import audit, auth
from tests.conftest import running_dashboard
from tests.support.browser import settled, shot
from tests.support.pages import market_row, overdue_market_with_bets

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
KOL = "Leaky McLeakface"
TIMEOUT_MS = 30_000
# A loaded machine is slow, not wrong: every wait is for a definite state, with room to reach it.
expect.set_options(timeout=TIMEOUT_MS)
# Every page's address, a deep link, the helpers module Streamlit's legacy discovery would also
# offer as a page, and an address no page has.
ADDRESSES = [
    "/",
    "/incidents",
    "/markets",
    "/markets?market=1",
    "/freshness",
    "/jobs",
    "/kols",
    "/scrapes",
    "/ledger",
    "/audit",
    "/accounts",
    "/ui",
    "/overview",
    "/kol_data",
    "/no-such-page",
]
# What any page that shows data draws; the login form draws none of them.
DATA = '[data-testid="stDataFrame"], [data-testid="stMetric"], [data-testid="stTable"]'


def _login_form(page: Page) -> None:
    """Wait for the login form: the definite state of a visitor without a session."""
    expect(page.locator('input[name="password"]')).to_be_visible()


def _log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    _login_form(page)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_first_request_to_a_fresh_server_shows_only_the_login_form(
    db: str, dashboard: str, browser: Browser, address: str
) -> None:
    """Defect: Streamlit's legacy pages/ discovery ran the page file itself on a fresh server's
    first request, and pages that did not ask for a principal showed their data."""
    auth.create_account("olga", PASSWORD, "operator")
    overdue_market_with_bets(db, kol_name=KOL)
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(dashboard + address)
    _login_form(page)
    settled(page)
    assert page.locator(DATA).count() == 0
    assert KOL not in page.content()
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    # The password field is a current password, so password managers fill it in.
    field = page.locator('input[name="password"]')
    assert field.get_attribute("autocomplete") == "current-password"
    assert field.get_attribute("type") == "password"


def test_a_session_survives_reload_and_new_tabs_and_logout_kills_the_cookie(
    db: str, dashboard: str, browser: Browser
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    s = overdue_market_with_bets(db)
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(dashboard)
    _log_in(page, "olga")
    expect(page.get_by_role("heading", name="Market health")).to_be_visible()
    [cookie] = [c for c in context.cookies() if c["name"] == "kolops_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("kolops_session") == -1

    page.reload()
    expect(page.get_by_role("heading", name="Market health")).to_be_visible()

    # A pasted market link in a new tab of the same browser: no second login.
    tab = context.new_page()
    tab.goto(f"{dashboard}/markets?market={s.market_id}")
    expect(tab.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
    settled(tab)

    tab.get_by_role("button", name="Log out").click()
    _login_form(tab)
    assert not [c for c in context.cookies() if c["name"] == "kolops_session"]
    assert [r["result"] for r in audit.recent(action="logout")] == ["OK"]

    # The old cookie, replayed from another browser, opens nothing: the session is over.
    thief = browser.new_context(viewport={"width": 1440, "height": 1100})
    thief.set_default_timeout(TIMEOUT_MS)
    thief.add_cookies([cookie])
    stolen = thief.new_page()
    stolen.goto(f"{dashboard}/ledger")
    _login_form(stolen)
    settled(stolen)
    assert stolen.locator(DATA).count() == 0


def test_a_page_refreshing_on_its_own_stops_when_the_session_ends(
    db: str, browser: Browser, tmp_path: Path
) -> None:
    """Defect: the Overview's self-refreshing parts kept reading fresh data for a session that
    had ended (a fragment's own run skipped the login check)."""
    auth.create_account("ada", PASSWORD, "admin")
    auth.create_account("vic", PASSWORD, "viewer")
    admin, _ = auth.log_in("ada", PASSWORD, None)
    env = {**os.environ, "DATABASE_URL": db, "DASHBOARD_REFRESH_S": "1"}
    with running_dashboard(tmp_path / "streamlit.log", env) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        _log_in(page, "vic")
        expect(page.get_by_role("heading", name="Market health")).to_be_visible()
        [live] = [s for s in auth.list_sessions(actor=admin) if s["username"] == "vic"]
        auth.end_session(live["id"], actor=admin)
        _login_form(page)  # by itself, at the next refresh: no click, no reload
        settled(page)  # the run that drew the form has cleared the page's earlier elements
        assert page.locator(DATA).count() == 0


def test_a_deactivated_accounts_open_session_cannot_act(
    db: str, dashboard: str, browser: Browser
) -> None:
    auth.create_account("ada", PASSWORD, "admin")
    auth.create_account("olga", PASSWORD, "operator")
    admin, _ = auth.log_in("ada", PASSWORD, "127.0.0.1")
    s = overdue_market_with_bets(db)
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{dashboard}/markets?market={s.market_id}")
    _log_in(page, "olga")
    expect(page.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
    settled(page)
    page.get_by_role("button", name="Cancel & refund").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason (required, kept in the audit log)").fill("feed broken")

    auth.set_active("olga", False, actor=admin)  # while her tab is open, mid-action

    dialog.get_by_label("Reason (required, kept in the audit log)").press("Control+Enter")
    dialog.get_by_role("button", name="Confirm cancel & refund").click()
    # The dialog reruns on its own; the service re-checks the account in its transaction.
    expect(dialog.get_by_text("your account is not active: log in again")).to_be_visible()
    page.reload()
    _login_form(page)  # and the deactivation ended her session
    assert market_row(s.market_id)["status"] == "OPEN"
    assert not [r for r in audit.recent(action="cancel_and_refund") if r["result"] == "OK"]


def test_a_failed_login_says_the_same_for_unknown_and_wrong_and_keeps_the_deep_link(
    db: str, dashboard: str, browser: Browser
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    s = overdue_market_with_bets(db)
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{dashboard}/markets?market={s.market_id}")
    _log_in(page, "nobody", "whatever password")
    expect(page.get_by_text("wrong username or password")).to_be_visible()
    _log_in(page, "olga", "wrong password!!")
    expect(page.get_by_text("wrong username or password")).to_be_visible()
    settled(page)
    shot(page, "00-login-refused", full_page=False)
    _log_in(page, "olga")
    expect(page.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
    assert page.url == f"{dashboard}/markets?market={s.market_id}"
