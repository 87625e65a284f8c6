"""What every dashboard run does once the visitor is known: the login form for no one, the
refusal for a single sign-on that opens no account, else the navigation over the pages the
account's role may use (every action is re-checked by the services, which also write the audit
log)."""

from __future__ import annotations

import html
from urllib.parse import parse_qsl, unquote, urlsplit

import streamlit as st

from config import get_settings
from dashboard.routes import (
    AFTER_SSO,
    LOGIN_ERROR,
    LOGIN_PATH,
    LOGOUT_PATH,
    SSO_PATH,
    SSO_START,
    local_target,
)
from pages.ui import ENDED_BY_REFRESH, page_file
from services.errors import ErrorCode
from services.ops import auth
from services.ops.auth import BAD_CREDENTIALS, PASSWORD_LOGIN_OFF, Principal, SsoRefused
from services.ops.sessions import COOKIE
from services.vocabulary import Role

# (section, page file, title, icon, url path, least role); the first page is the default.
PAGES = [
    ("Operations", "overview", "Overview", "monitor_heart", "", Role.VIEWER),
    ("Operations", "incidents", "Incidents", "notifications", "incidents", Role.VIEWER),
    ("Operations", "markets", "Markets", "storefront", "markets", Role.VIEWER),
    ("Operations", "freshness", "Data freshness", "schedule", "freshness", Role.VIEWER),
    ("Operations", "jobs", "Jobs", "event_repeat", "jobs", Role.VIEWER),
    ("Data", "kol_data", "KOL data", "leaderboard", "kols", Role.VIEWER),
    ("Data", "scrapes", "Scrapes", "travel_explore", "scrapes", Role.VIEWER),
    ("Money & audit", "ledger", "Ledger & integrity", "balance", "ledger", Role.VIEWER),
    ("Money & audit", "audit", "Audit log", "history", "audit", Role.VIEWER),
    ("Admin", "accounts", "Accounts", "manage_accounts", "accounts", Role.ADMIN),
]

# What the login form says after a failed attempt (from a fixed list: nothing from the URL is
# shown).
_LOGIN_ERRORS = {
    ErrorCode.NOT_AUTHENTICATED.value: BAD_CREDENTIALS,
    ErrorCode.LOGIN_THROTTLED.value: "Too many failed logins: wait a while, then try again.",
    ErrorCode.PERMISSION_DENIED.value: PASSWORD_LOGIN_OFF,
}


def visitor() -> Principal | SsoRefused | None:
    """Who this run is for: the local session the cookie names; else, with single sign-on
    configured, the sign-in Streamlit's identity cookie holds (`st.user`); else no one."""
    principal = auth.resolve(st.context.cookies.get(COOKIE))
    if principal is None and get_settings().sso_configured:
        # A mapping read (not st.user.is_logged_in, which raises when Streamlit was started
        # without the launcher's [auth] secrets): no identity cookie, no sign-in to check.
        claims = st.user.to_dict()
        if claims.get("is_logged_in") is True:
            return auth.sign_in_sso(claims, st.context.ip_address)
    return principal


def _sso_button() -> None:
    """A link to the SSO route (which remembers the page it was pressed on), styled as the
    primary button; back at the root with `?sso=1`, the login page starts `st.login`."""
    settings = get_settings()
    if not settings.sso_configured:
        return
    if st.query_params.get(SSO_START):
        del st.query_params[SSO_START]  # back from the provider, the button, not a loop
        st.login()
    st.html(
        f"""
        <a href="{SSO_PATH}" target="_self" role="button" class="kolops-sso"
           style="display:inline-block;padding:.45rem 1rem;border-radius:.5rem;
                  background:#ff4b4b;color:white;text-decoration:none">
          Sign in with {html.escape(settings.oidc_provider_name)}</a>
        """
    )


@st.fragment(run_every=2)
def _redraw_soon() -> None:
    """Once, two seconds after a refreshing part's session ended: the whole login page again.
    The page's other refreshing parts may have asked to run just before the page changed, and
    Streamlit's answer to a part that no longer exists can blank the page (streamlit#9080)."""
    if st.session_state.pop("redraw_due", False):
        st.rerun(scope="app")
    st.session_state["redraw_due"] = True


def login_page() -> None:
    """Single sign-on's button when it is configured, and (unless LOCAL_LOGIN is off) a plain
    HTML form posting to the login route, so browsers and password managers treat it as a login
    (autocomplete username / current-password) and the route can set the cookie."""
    st.title("KOL Market Ops")
    if st.session_state.pop(ENDED_BY_REFRESH, False):
        _redraw_soon()
    error = _LOGIN_ERRORS.get(st.query_params.get(LOGIN_ERROR, ""))
    sso_ended = st.session_state.get("sso_refused")
    if sso_ended:
        st.warning(sso_ended)
    if error:
        st.error(error)
    _sso_button()
    if not get_settings().local_login:
        return
    if get_settings().sso_configured:
        st.caption("Or log in with a dashboard account:")
    st.html(
        f"""
        <form method="post" action="{LOGIN_PATH}" class="kolops-login" style="max-width: 24rem">
          <label style="display:block;margin-bottom:.75rem">Username<br>
            <input name="username" autocomplete="username" required
                   autocapitalize="none" spellcheck="false"
                   style="width:100%;padding:.4rem;border:1px solid #ccc;border-radius:.4rem">
          </label>
          <label style="display:block;margin-bottom:.75rem">Password<br>
            <input name="password" type="password" autocomplete="current-password" required
                   style="width:100%;padding:.4rem;border:1px solid #ccc;border-radius:.4rem">
          </label>
          <button type="submit"
                  style="padding:.4rem 1rem;border:1px solid #ccc;border-radius:.4rem;
                         background:#ff4b4b;color:white;cursor:pointer">Log in</button>
        </form>
        """
    )


def refused_page() -> None:
    """A single sign-on that opens no account: why, in the same words whatever the reason, and
    the way out (sign out of the provider's identity, to sign in as someone else)."""
    st.title("KOL Market Ops")
    st.error(st.session_state["sso_refused"], icon=":material/block:")
    if st.button("Log out", key="kolops_sso_logout"):
        st.logout()


def _logout_button(principal: Principal) -> None:
    if principal.via_sso:
        # Ends the dashboard session first (a copy of the identity cookie then opens nothing),
        # then has Streamlit drop the identity cookie.
        if st.button("Log out", key="kolops_sso_logout"):
            auth.log_out_sso(st.user.to_dict())
            st.logout()
        return
    st.html(
        f"""
        <form method="post" action="{LOGOUT_PATH}">
          <button type="submit" class="kolops-logout"
                  style="padding:.3rem .9rem;border:1px solid #ccc;border-radius:.4rem;
                         background:white;cursor:pointer">Log out</button>
        </form>
        """
    )


def show(found: Principal | SsoRefused | None) -> None:
    """Run the page the address names, as the principal `found` (None: the login form at every
    address; a refused single sign-on: the refusal, or the login form when its sign-in ended)."""
    st.set_page_config(page_title="KOL Market Ops", page_icon=":bar_chart:", layout="wide")
    principal = found if isinstance(found, Principal) else None
    # Pages read the caller from here (pages.ui.principal); it is set on every run, so a session
    # that ended since the last run is gone from this run on.
    st.session_state["principal"] = principal
    st.session_state["sso_refused"] = found.message if isinstance(found, SsoRefused) else None
    if principal is None:
        # The login form (or the refusal) answers at every page's address and at any other, so
        # a pasted deep link (/markets?market=42) is still the address once the user is in.
        page = refused_page if isinstance(found, SsoRefused) and not found.ended else login_page
        st.navigation(
            [st.Page(page, title="Log in", icon=":material/login:", default=True)]
            + [
                st.Page(page, title="Log in", url_path=path)
                for _, _, _, _, path, _ in PAGES
                if path
            ],
            position="hidden",
        ).run()
        return
    sections: dict[str, list[st.Page]] = {}
    for section, name, title, icon, path, role in PAGES:
        if principal.can(role):
            sections.setdefault(section, []).append(
                st.Page(
                    page_file(name),
                    title=title,
                    icon=f":material/{icon}:",
                    url_path=path or None,
                    default=not path,
                )
            )
    with st.sidebar:
        st.caption(f"Signed in as **{principal.username}** ({principal.role})")
        _logout_button(principal)
    navigation = st.navigation(sections)
    if principal.signed_in_now:
        _open_page_sso_started_from(sections)
    navigation.run()


def _open_page_sso_started_from(sections: dict[str, list[st.Page]]) -> None:
    """Right after a new single sign-on, the page its button was pressed on (a pasted deep
    link), if this role may open it; the cookie is re-checked as any outside input."""
    target = urlsplit(local_target(unquote(st.context.cookies.get(AFTER_SSO) or "")))
    path = target.path.strip("/")
    if not path:  # the root: the page opening anyway
        return
    page = next((p for pages in sections.values() for p in pages if p.url_path == path), None)
    if page is not None:
        st.switch_page(page, query_params=dict(parse_qsl(target.query)))
