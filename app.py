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
        ],
    }
    with st.sidebar:
        st.caption(f"Signed in as **{principal.username}** ({principal.role})")
        st.button("Log out", on_click=logout)
    st.navigation(pages).run()
