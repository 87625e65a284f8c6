"""What every dashboard run does once the visitor is known: the login form for no one, else the
navigation over the pages the account's role may use (every action is re-checked by the
services, which also write the audit log)."""

from __future__ import annotations

import streamlit as st

from dashboard.routes import LOGIN_ERROR, LOGIN_PATH, LOGOUT_PATH
from pages.ui import page_file
from services.errors import ErrorCode
from services.ops.auth import BAD_CREDENTIALS, Principal
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
}


def login_page() -> None:
    """A plain HTML form posting to the login route, so browsers and password managers treat it
    as a login (autocomplete username / current-password) and the route can set the cookie."""
    st.title("KOL Market Ops")
    error = _LOGIN_ERRORS.get(st.query_params.get(LOGIN_ERROR, ""))
    if error:
        st.error(error)
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


def _logout_button() -> None:
    st.html(
        f"""
        <form method="post" action="{LOGOUT_PATH}">
          <button type="submit" class="kolops-logout"
                  style="padding:.3rem .9rem;border:1px solid #ccc;border-radius:.4rem;
                         background:white;cursor:pointer">Log out</button>
        </form>
        """
    )


def show(principal: Principal | None) -> None:
    """Run the page the address names, as `principal` (None: the login form at every address)."""
    st.set_page_config(page_title="KOL Market Ops", page_icon=":bar_chart:", layout="wide")
    # Pages read the caller from here (pages.ui.principal); it is set on every run, so a session
    # that ended since the last run is gone from this run on.
    st.session_state["principal"] = principal
    if principal is None:
        # The login form answers at every page's address (and at any other), so a pasted deep
        # link (/markets?market=42) is still the address once the user has logged in.
        st.navigation(
            [st.Page(login_page, title="Log in", icon=":material/login:", default=True)]
            + [
                st.Page(login_page, title="Log in", url_path=path)
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
        _logout_button()
    st.navigation(sections).run()
