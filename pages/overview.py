"""Overview: market health at a glance, refreshed on a timer."""

from __future__ import annotations

import datetime as dt

import altair as alt
import pandas as pd
import streamlit as st

from config import get_settings
from pages.ui import age, market_badge, page_file, refreshing
from services.ops.jobs import scheduler_state
from services.views import markets as market_views
from services.views.health import market_health
from services.views.incidents import open_count as open_incidents
from services.vocabulary import JobStatus, MarketStatus, Side

REFRESH = dt.timedelta(seconds=get_settings().dashboard_refresh_s)
ATTENTION_ROWS = 10
WINDOWS = {"24 hours": 1, "7 days": 7, "30 days": 30}

st.title("Market health")


@refreshing(REFRESH)
def health_panel() -> None:
    h = market_health()
    sched = scheduler_state()
    cols = st.columns(6)
    cols[0].metric("Open", h.by_status[MarketStatus.OPEN])
    cols[1].metric("Due", h.due)
    cols[2].metric("Overdue (past grace)", h.overdue)
    cols[3].metric("Needs attention", h.needs_attention)
    cols[4].metric("Resolved", h.by_status[MarketStatus.RESOLVED])
    cols[5].metric("Cancelled", h.by_status[MarketStatus.CANCELLED])

    left, right = st.columns(2)
    with left:
        st.subheader("System")
        incidents_open = open_incidents()
        (st.error if incidents_open else st.success)(f"Open incidents: {incidents_open}")
        st.page_link(page_file("incidents"), label="Incident inbox", icon=":material/inbox:")
        if sched.leader_age_s is None:
            st.error("Scheduler: no leader is running")
        elif sched.leader_age_s > 30:
            st.warning(f"Scheduler heartbeat is {int(sched.leader_age_s)}s old")
        else:
            st.success(f"Scheduler alive: heartbeat {int(sched.leader_age_s)}s ago")
        integrity = h.last_integrity
        if integrity is None:
            st.info("Integrity: not checked yet")
        elif integrity["status"] == JobStatus.SUCCESS:
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


@refreshing(REFRESH)
def attention_panel() -> None:
    page = market_views.list_markets(attention_only=True, limit=ATTENTION_ROWS)
    st.subheader(f"Needs attention or overdue ({page.total:,})")
    if not page.rows:
        st.success("Nothing is overdue or flagged.")
        return
    for r in page.rows:
        link, title, state = st.columns([1, 6, 2], vertical_alignment="center")
        link.page_link(
            page_file("markets"),
            label=f"Market #{r['id']}",
            icon=":material/open_in_new:",
            query_params={"market": str(r["id"])},
        )
        title.text(r["title"])
        state.markdown(f"{market_badge(r)} closed {r['closes_at']:%m-%d %H:%M}")
    if page.total > len(page.rows):
        st.caption(
            f"{page.total - len(page.rows):,} more: Markets page, filter 'Overdue / attention'."
        )


def _per_hour_chart(data: pd.DataFrame, title: str, colors: alt.Scale) -> alt.Chart:
    return (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            x=alt.X("hour:T", title=None),
            y=alt.Y("sum(markets):Q", title="markets per hour"),
            color=alt.Color("reason:N", title=None, scale=colors, legend=alt.Legend(orient="top")),
            tooltip=[
                alt.Tooltip("hour:T", format="%Y-%m-%d %H:00"),
                "reason:N",
                alt.Tooltip("sum(markets):Q", title="markets"),
            ],
        )
        .properties(height=240)
    )


@refreshing(REFRESH)
def activity_panel(days: int) -> None:
    rows = market_views.outcomes_per_hour(days)
    resolved = pd.DataFrame([r for r in rows if r["event"] == "resolved"])
    cancelled = pd.DataFrame([r for r in rows if r["event"] == "cancelled"])
    left, right = st.columns(2)
    with left:
        if resolved.empty:
            st.caption("No market resolved in this window.")
        else:
            colors = alt.Scale(domain=[Side.YES.value, Side.NO.value], range=["#2e7d32", "#1565c0"])
            chart = _per_hour_chart(resolved, "Resolved, by outcome", colors)
            st.altair_chart(chart, width="stretch")
    with right:
        if cancelled.empty:
            st.caption("No market cancelled in this window.")
        else:
            chart = _per_hour_chart(cancelled, "Cancelled, by reason", alt.Scale(scheme="reds"))
            st.altair_chart(chart, width="stretch")


health_panel()
attention_panel()
st.subheader("Resolutions and cancellations per hour (UTC)")
window = st.segmented_control("Window", list(WINDOWS), default="24 hours", key="overview.window")
activity_panel(WINDOWS[window or "24 hours"])
