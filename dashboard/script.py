"""The dashboard's Streamlit script (`app.py` serves it): whoever the session cookie or the single
sign-on names, or the login form."""

from __future__ import annotations

from dashboard.shell import show, visitor

show(visitor())
