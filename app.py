"""The operations dashboard: `streamlit run app.py` (or `bin/run` for everything). With single
sign-on configured, start it with `launch.dashboard_args` (as bin/run does): they add the
Streamlit secrets file that holds `st.login`'s [auth] section, written from the OIDC settings.

This file is the web application: Streamlit's own server (st.App) with the login, logout and
single sign-on routes, serving the Streamlit script `dashboard/script.py`. That script lives in a
folder of its own so Streamlit's legacy `pages/` discovery never runs a page without a login (see
`dashboard/__init__.py`).
"""

from __future__ import annotations

import streamlit as st

from dashboard.routes import ROUTES

app = st.App("dashboard/script.py", routes=ROUTES)
