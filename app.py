"""The operations dashboard (Streamlit): `streamlit run app.py`, or `bin/run` for everything.

Login first; the navigation offers only the pages the account's role may use, and every action
is re-checked by the services, which also write the audit log.
"""

from __future__ import annotations

import streamlit as st

from services.errors import ServiceError
from services.ops.auth import Principal, authenticate
from services.vocabulary import Role

st.set_page_config(page_title="KOL Market Ops", page_icon=":bar_chart:", layout="wide")


def login_page() -> None:
    st.title("KOL Market Ops")
    with st.form("login"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        try:
            st.session_state["principal"] = authenticate(username.strip(), password)
        except ServiceError as exc:
            st.error(exc.message)
        else:
            st.rerun()


def logout() -> None:
    st.session_state.pop("principal", None)
    st.rerun()


# (section, file, title, icon, url path, least role); the first page is the default.
PAGES = [
    ("Operations", "pages/overview.py", "Overview", "monitor_heart", "", Role.VIEWER),
    ("Operations", "pages/incidents.py", "Incidents", "notifications", "incidents", Role.VIEWER),
    ("Operations", "pages/markets.py", "Markets", "storefront", "markets", Role.VIEWER),
    ("Operations", "pages/freshness.py", "Data freshness", "schedule", "freshness", Role.VIEWER),
    ("Operations", "pages/jobs.py", "Jobs", "event_repeat", "jobs", Role.VIEWER),
    ("Data", "pages/kol_data.py", "KOL data", "leaderboard", "kols", Role.VIEWER),
    ("Data", "pages/scrapes.py", "Scrapes", "travel_explore", "scrapes", Role.VIEWER),
    ("Money & audit", "pages/ledger.py", "Ledger & integrity", "balance", "ledger", Role.VIEWER),
    ("Money & audit", "pages/audit.py", "Audit log", "history", "audit", Role.VIEWER),
    ("Admin", "pages/accounts.py", "Accounts", "manage_accounts", "accounts", Role.ADMIN),
]

principal: Principal | None = st.session_state.get("principal")
if principal is None:
    # The login form answers at every page's address, so a pasted deep link
    # (/markets?market=42) is still the address once the user has logged in.
    st.navigation(
        [st.Page(login_page, title="Log in", icon=":material/login:", default=True)]
        + [
            st.Page(login_page, title="Log in", url_path=path)
            for _, _, _, _, path, _ in PAGES
            if path
        ],
        position="hidden",
    ).run()
else:
    sections: dict[str, list[st.Page]] = {}
    for section, file, title, icon, path, role in PAGES:
        if principal.can(role):
            sections.setdefault(section, []).append(
                st.Page(
                    file,
                    title=title,
                    icon=f":material/{icon}:",
                    url_path=path or None,
                    default=not path,
                )
            )
    with st.sidebar:
        st.caption(f"Signed in as **{principal.username}** ({principal.role})")
        st.button("Log out", on_click=logout)
    page = st.navigation(sections)
    if not page.url_path and "market" in st.query_params:
        # A market link that reached the front page (see pages/ui.py principal) opens the market.
        st.switch_page("pages/markets.py", query_params=st.query_params.to_dict())
    page.run()
