"""The operations dashboard (Streamlit): `streamlit run app.py`, or `bin/run` for everything.

Login first; the navigation offers only the pages the account's role may use, and every action
is re-checked by the services, which also write the audit log.
"""

from __future__ import annotations

import streamlit as st

from services.auth import Principal, authenticate
from services.errors import ServiceError

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


principal: Principal | None = st.session_state.get("principal")
if principal is None:
    st.navigation([st.Page(login_page, title="Log in", icon=":material/login:")]).run()
else:
    pages = {
        "Operations": [
            st.Page(
                "pages/overview.py", title="Overview", icon=":material/monitor_heart:", default=True
            ),
            st.Page(
                "pages/markets.py",
                title="Markets",
                icon=":material/storefront:",
                url_path="markets",
            ),
            st.Page(
                "pages/freshness.py",
                title="Data freshness",
                icon=":material/schedule:",
                url_path="freshness",
            ),
            st.Page("pages/jobs.py", title="Jobs", icon=":material/event_repeat:", url_path="jobs"),
        ],
        "Data": [
            st.Page(
                "pages/kol_data.py",
                title="KOL data",
                icon=":material/leaderboard:",
                url_path="kols",
            ),
            st.Page(
                "pages/scrapes.py",
                title="Scrapes",
                icon=":material/travel_explore:",
                url_path="scrapes",
            ),
        ],
        "Money & audit": [
            st.Page(
                "pages/ledger.py",
                title="Ledger & integrity",
                icon=":material/balance:",
                url_path="ledger",
            ),
            st.Page(
                "pages/audit.py", title="Audit log", icon=":material/history:", url_path="audit"
            ),
        ],
    }
    if principal.can("admin"):
        pages["Admin"] = [
            st.Page(
                "pages/accounts.py",
                title="Accounts",
                icon=":material/manage_accounts:",
                url_path="accounts",
            )
        ]
    with st.sidebar:
        st.caption(f"Signed in as **{principal.username}** ({principal.role})")
        st.button("Log out", on_click=logout)
    st.navigation(pages).run()
