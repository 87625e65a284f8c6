"""Single sign-on (OIDC, `st.login`) in a real browser: the stand-in identity provider on
127.0.0.1, `streamlit run app.py` configured for it, Debian's Chromium.

Every check waits for a definite state (the login page, the refusal, or a page's heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from services.ops import audit, auth
from tests.support.browser import settled, shot
from tests.support.pages import market_row, overdue_market_with_bets
from tests.support.sso import SIGN_IN, sso_dashboard, sso_sign_in

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)
DATA = '[data-testid="stDataFrame"], [data-testid="stMetric"], [data-testid="stTable"]'


def _login_page(page: Page) -> None:
    expect(page.get_by_role("button", name=SIGN_IN)).to_be_visible()


def _refused(page: Page) -> None:
    expect(page.get_by_text(auth.SSO_REFUSED)).to_be_visible()
    settled(page)
    assert page.locator(DATA).count() == 0
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0


def _admin() -> auth.Principal:
    auth.create_account("ada", PASSWORD, "admin")
    admin, _ = auth.log_in("ada", PASSWORD, "127.0.0.1")
    return admin


def _context(browser: Browser) -> BrowserContext:
    """A browser profile of its own (cookies included), at the screenshots' size."""
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    return context


def test_a_verified_mapped_email_signs_in_survives_reload_and_logout_kills_the_cookie(
    db: str, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    auth.set_sso_email("olga", "Olga@Example.com", actor=admin)
    s = overdue_market_with_bets(db)
    with sso_dashboard(db, monkeypatch, tmp_path / "streamlit.log") as (url, _):
        context = _context(browser)
        page = context.new_page()
        page.goto(url)
        _login_page(page)
        # Local login stays beside SSO by default (break-glass).
        expect(page.locator('input[name="password"]')).to_be_visible()
        settled(page)
        shot(page, "sso-01-login-page", full_page=False)

        sso_sign_in(page, "olga@example.COM")  # the provider's case is not the admin's
        expect(page.get_by_role("heading", name="Market health")).to_be_visible()
        expect(page.get_by_text("Signed in as olga (operator)")).to_be_visible()
        [row] = [r for r in audit.recent(action="sso_login")]
        assert (row["result"], row["username"]) == ("OK", "olga")
        [live] = [x for x in auth.list_sessions(actor=admin) if x["username"] == "olga"]

        page.reload()
        expect(page.get_by_role("heading", name="Market health")).to_be_visible()
        tab = context.new_page()
        tab.goto(f"{url}/markets?market={s.market_id}")
        expect(tab.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
        settled(tab)
        # Reload and the new tab used the session the sign-in opened: no second one.
        assert [x["id"] for x in auth.list_sessions(actor=admin) if x["username"] == "olga"] == [
            live["id"]
        ]
        saved = context.cookies()
        assert any(c["name"] == "_streamlit_user" for c in saved)

        tab.get_by_role("button", name="Log out").click()
        _login_page(tab)
        assert not [x for x in auth.list_sessions(actor=admin) if x["username"] == "olga"]
        assert [r["result"] for r in audit.recent(action="logout")] == ["OK"]

        # The identity cookie saved before the logout, replayed from another browser: the
        # sign-in it names has ended, so it opens nothing (and no new session).
        thief = _context(browser)
        thief.add_cookies(saved)  # type: ignore[arg-type]
        stolen = thief.new_page()
        stolen.goto(f"{url}/ledger")
        expect(stolen.get_by_text(auth.SSO_ENDED)).to_be_visible()
        _login_page(stolen)
        settled(stolen)
        assert stolen.locator(DATA).count() == 0
        assert not [x for x in auth.list_sessions(actor=admin) if x["username"] == "olga"]
        assert audit.recent(action="sso_login")[0]["result"] == "REFUSED"

        # Beside single sign-on, a dashboard account's password still logs in (break-glass).
        stolen.get_by_role("textbox", name="Username").fill("olga")
        stolen.get_by_label("Password").fill(PASSWORD)
        stolen.get_by_role("button", name="Log in").click()
        expect(stolen.get_by_text("Signed in as olga (operator)")).to_be_visible()


def test_a_sign_in_started_on_a_deep_link_opens_that_page_once(
    db: str, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamlit's callback always returns to the root: the page the button was pressed on is
    opened once the sign-in is back, only right after it, and only if the role may open it."""
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    auth.set_sso_email("olga", "olga@example.com", actor=admin)
    s = overdue_market_with_bets(db)
    with sso_dashboard(db, monkeypatch, tmp_path / "streamlit.log") as (url, _):
        context = _context(browser)
        page = context.new_page()
        page.goto(f"{url}/markets?market={s.market_id}")
        _login_page(page)
        sso_sign_in(page, "olga@example.com")
        expect(page.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
        assert page.url == f"{url}/markets?market={s.market_id}"

        # Afterwards the root is the overview again: the remembered page was for that sign-in.
        page.goto(url)
        expect(page.get_by_role("heading", name="Market health")).to_be_visible()
        settled(page)
        assert page.url.rstrip("/") == url

        # A page the role may not open is not opened by a sign-in either.
        page.get_by_role("button", name="Log out").click()
        _login_page(page)
        page.goto(f"{url}/accounts")
        _login_page(page)
        sso_sign_in(page, "olga@example.com")
        expect(page.get_by_role("heading", name="Market health")).to_be_visible()
        settled(page)
        assert page.get_by_role("heading", name="Accounts").count() == 0


@pytest.mark.parametrize(
    ("email", "verified", "reason"),
    [
        ("stranger@example.com", True, "no account has this email"),
        ("olga@example.com", False, "email not verified"),
        ("vic@example.com", True, "account 'vic' is inactive"),
    ],
)
def test_an_unknown_unverified_or_inactive_email_gets_no_access_and_is_audited(
    db: str,
    browser: Browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    email: str,
    verified: bool,
    reason: str,
) -> None:
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    auth.set_sso_email("olga", "olga@example.com", actor=admin)
    auth.create_account("vic", PASSWORD, "viewer")
    auth.set_sso_email("vic", "vic@example.com", actor=admin)
    auth.set_active("vic", False, actor=admin)
    with sso_dashboard(db, monkeypatch, tmp_path / "streamlit.log") as (url, _):
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        _login_page(page)
        sso_sign_in(page, email, verified=verified)
        _refused(page)
        if reason == "email not verified":
            shot(page, "sso-02-refused", full_page=False)
        refusals = [r for r in audit.recent(action="sso_login") if r["result"] == "REFUSED"]
        assert refusals and refusals[0]["target"] == f"sso_email:{email}"
        assert refusals[0]["detail"].startswith(reason)
        assert not [r for r in audit.recent(action="sso_login") if r["result"] == "OK"]
        assert not auth.list_sessions(actor=admin)[1:]  # only the admin's own

        # Every address answers with the refusal, and the way out is offered.
        page.goto(f"{url}/ledger")
        _refused(page)
        page.get_by_role("button", name="Log out").click()
        _login_page(page)
        assert not [c for c in page.context.cookies() if c["name"] == "_streamlit_user"]


def test_deactivating_the_account_while_its_sso_session_is_open_refuses_the_next_action(
    db: str, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _admin()
    auth.create_account("olga", PASSWORD, "operator")
    auth.set_sso_email("olga", "olga@example.com", actor=admin)
    s = overdue_market_with_bets(db)
    with sso_dashboard(db, monkeypatch, tmp_path / "streamlit.log") as (url, _):
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        _login_page(page)
        sso_sign_in(page, "olga@example.com")
        expect(page.get_by_role("heading", name="Market health")).to_be_visible()
        page.goto(f"{url}/markets?market={s.market_id}")
        expect(page.get_by_role("heading", name=f"Market #{s.market_id}")).to_be_visible()
        settled(page)
        page.get_by_role("button", name="Cancel & refund").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Reason (required, kept in the audit log)").fill("feed broken")

        auth.set_active("olga", False, actor=admin)  # while her tab is open, mid-action

        dialog.get_by_label("Reason (required, kept in the audit log)").press("Control+Enter")
        dialog.get_by_role("button", name="Confirm cancel & refund").click()
        expect(dialog.get_by_text("your account is not active: log in again")).to_be_visible()
        page.reload()
        # Her sign-in's session ended with the deactivation; the identity cookie opens nothing.
        expect(page.get_by_text(auth.SSO_ENDED)).to_be_visible()
        assert market_row(s.market_id)["status"] == "OPEN"
        assert not [r for r in audit.recent(action="cancel_and_refund") if r["result"] == "OK"]


def test_with_nothing_configured_there_is_no_sso_and_the_local_login_works(
    db: str, dashboard: str, browser: Browser
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(dashboard)
    expect(page.locator('input[name="password"]')).to_be_visible()
    settled(page)
    assert page.get_by_role("button", name=re.compile("Sign in with")).count() == 0
    assert page.get_by_text("Or log in with a dashboard account").count() == 0
    page.get_by_role("textbox", name="Username").fill("olga")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Market health")).to_be_visible()
    # Streamlit's own login route has no provider to send anyone to.
    page.goto(f"{dashboard}/auth/login?provider=default")
    expect(page.get_by_role("heading", name="Market health")).to_be_visible()


def test_with_local_login_off_only_sso_signs_in(
    db: str, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_account("olga", PASSWORD, "operator")
    with sso_dashboard(db, monkeypatch, tmp_path / "streamlit.log", LOCAL_LOGIN="false") as (
        url,
        _,
    ):
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        _login_page(page)
        settled(page)
        assert page.locator('input[name="password"]').count() == 0
        # A password posted anyway (a saved form, a script) is refused and audited.
        answer = page.request.post(
            f"{url}/auth/login",
            form={"username": "olga", "password": PASSWORD},
            headers={"Origin": url, "Referer": f"{url}/"},
            max_redirects=0,
        )
        assert (
            answer.status == 303 and "login_error=PERMISSION_DENIED" in answer.headers["location"]
        )
        assert not [c for c in page.context.cookies() if c["name"] == "kolops_session"]
        assert audit.recent(action="login")[0]["result"] == "REFUSED"
