"""Overview: market health at a glance, refreshed on a timer."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from config import get_settings
from pages.ui import age
from services.health import market_health
from services.jobs import scheduler_state

st.title("Market health")


@st.fragment(run_every=dt.timedelta(seconds=get_settings().dashboard_refresh_s))
def health_panel() -> None:
    h = market_health()
    sched = scheduler_state()
    cols = st.columns(6)
    cols[0].metric("Open", h.by_status["OPEN"])
    cols[1].metric("Due", h.due)
    cols[2].metric("Overdue (past grace)", h.overdue)
    cols[3].metric("Needs attention", h.needs_attention)
    cols[4].metric("Resolved", h.by_status["RESOLVED"])
    cols[5].metric("Cancelled", h.by_status["CANCELLED"])

    left, right = st.columns(2)
    with left:
        st.subheader("System")
        if sched.leader_age_s is None:
            st.error("Scheduler: no leader is running")
        elif sched.leader_age_s > 30:
            st.warning(f"Scheduler heartbeat is {int(sched.leader_age_s)}s old")
        else:
            st.success(f"Scheduler alive: heartbeat {int(sched.leader_age_s)}s ago")
        integrity = h.last_integrity
        if integrity is None:
            st.info("Integrity: not checked yet")
        elif integrity["status"] == "SUCCESS":
            st.success(f"Integrity clean ({age(h.now, integrity['started_at'])})")
        else:
            st.error(f"Integrity: {integrity['error']}")
        for tf, at in h.last_good_scrape.items():
            st.write(f"Last good {tf} scrape: **{age(h.now, at)}**")
        for api in h.x_api:
            st.write(
                f"X API `{api['endpoint']}`: {api['last_status']}, budget "
                f"{api['remaining']}/{api['limit']}"
            )
    with right:
        st.subheader("Last 24 hours")
        st.write(f"Resolved: **{h.resolved_24h}**, failed attempts: **{h.failed_attempts_24h}**")
        if h.median_resolution_lag_s is not None:
            st.write(f"Median resolution lag: **{h.median_resolution_lag_s:.0f}s** after close")
        st.subheader("Cancellations by reason")
        if h.cancellations_by_reason:
            st.bar_chart(h.cancellations_by_reason, horizontal=True)
        else:
            st.caption("No cancellations.")
    st.caption(f"Updated {h.now:%Y-%m-%d %H:%M:%S} UTC")


health_panel()
