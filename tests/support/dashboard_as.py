"""The dashboard's shell under AppTest, as the principal in session state (AppTest cannot send the
session cookie the real script resolves): `tests.support.pages.dashboard_app`."""

import streamlit as st

from dashboard.shell import show

show(st.session_state.get("principal"))
