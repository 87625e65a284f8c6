"""Small helpers shared by the dashboard pages (presentation only: no data access here)."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from services.auth import Principal
from services.errors import ServiceError


def principal() -> Principal:
    """The logged-in principal; app.py only runs pages after login."""
    who = st.session_state.get("principal")
    if not isinstance(who, Principal):
        st.error("Please log in.")
        st.stop()
    return who


def age(now: dt.datetime, then: dt.datetime | None) -> str:
    """'42s ago', '5m ago', '3h ago', '2d ago' or 'never'."""
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def show_refusal(exc: ServiceError) -> None:
    """A service's refusal, shown plainly with its code."""
    st.error(f"{exc.message}  \n`{exc.code.value}`")
