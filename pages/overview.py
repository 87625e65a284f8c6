"""Overview: market health at a glance, refreshed on a timer."""

from __future__ import annotations

import datetime as dt

import altair as alt
import pandas as pd
import streamlit as st

from config import get_settings
from pages.ui import age, market_badge, page_file, principal, refreshing, show_refusal
from services.errors import ServiceError
from services.ops import approvals
from services.ops.jobs import scheduler_state
from services.views import markets as market_views
from services.views import proposals as proposal_views
from services.views.health import market_health
from services.views.incidents import open_count as open_incidents
from services.vocabulary import JobStatus, MarketStatus, Role, Side

REFRESH = dt.timedelta(seconds=get_settings().dashboard_refresh_s)
ATTENTION_ROWS = 10
PROPOSAL_FLASH = "overview.proposal_flash"
RECENT_PROPOSALS = 20
WINDOWS = {"24 hours": 1, "7 days": 7, "30 days": 30}

st.title("Market health")


@refreshing(REFRESH)
def health_panel() -> None:
    h = market_health()
    sched = scheduler_state()
    cols = st.columns(7)
    cols[0].metric("Open", h.by_status[MarketStatus.OPEN])
    cols[1].metric("Due", h.due)
    cols[2].metric("Overdue (past grace)", h.overdue)
    cols[3].metric("Needs attention", h.needs_attention)
    cols[4].metric("On hold", h.held)
    cols[5].metric("Resolved", h.by_status[MarketStatus.RESOLVED])
    cols[6].metric("Cancelled", h.by_status[MarketStatus.CANCELLED])

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
    st.subheader(f"Needs attention, on hold or overdue ({page.total:,})")
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


def proposals_panel() -> None:
    """Money actions waiting for a second operator; operators approve or reject them here."""
    waiting = proposal_views.waiting()
    st.subheader(f"Proposals waiting for approval ({len(waiting)})")
    flash = st.session_state.pop(PROPOSAL_FLASH, None)
    if flash:
        st.success(flash[0])
        if flash[1]:
            st.dataframe(flash[1], hide_index=True, width="stretch")
    with st.expander("Recent proposals and how they ended"):
        st.dataframe(
            [
                {
                    "proposal": p["id"],
                    "action": p["kind"],
                    "status": p["status"],
                    "markets": p["markets"],
                    "to pay out": float(p["amount"]),
                    "proposed by": p["proposed_by"],
                    "decided by": p["decided_by"],
                    "note": p["decision_note"],
                    "results": ", ".join(
                        f"#{r['market_id']} {r['result']}" for r in p["results"] or []
                    ),
                }
                for p in proposal_views.recent(limit=RECENT_PROPOSALS)
            ],
            hide_index=True,
            width="stretch",
        )
    if not waiting:
        st.caption("No money action is waiting for a second operator.")
        return
    st.dataframe(
        [
            {
                "proposal": p["id"],
                "action": p["kind"],
                "markets": p["markets"],
                "to pay out": float(p["amount"]),
                "proposed by": p["proposed_by"],
                "reason": p["reason"],
                "expires (UTC)": p["expires_at"],
            }
            for p in waiting
        ],
        hide_index=True,
        width="stretch",
        column_config={"expires (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
    )
    who = principal()
    if not who.can(Role.OPERATOR):
        st.caption("Approving needs the operator role.")
        return
    others = [p for p in waiting if p["proposed_by"] != who.username]
    if not others:
        st.caption("Every waiting proposal is yours: another operator must decide them.")
        return
    pick, note, approve, reject = st.columns([1.2, 3, 1, 1], vertical_alignment="bottom")
    chosen = pick.selectbox(
        "Proposal", [p["id"] for p in others], format_func=lambda i: f"#{i}", key="prop.id"
    )
    comment = note.text_input("Note (kept in the audit log)", key="prop.note")
    for col, decide, verb in (
        (approve, approvals.approve, "Approve"),
        (reject, approvals.reject, "Reject"),
    ):
        if col.button(
            verb, key=f"prop.{verb}", type="primary" if verb == "Approve" else "secondary"
        ):
            try:
                with st.spinner("Working…"):
                    decision = decide(who, int(chosen), comment or None)
            except ServiceError as exc:
                show_refusal(exc)
                return
            st.session_state[PROPOSAL_FLASH] = (
                f"Proposal #{chosen} {decision.status.lower()}"
                + (f": {len(decision.results)} markets carried out." if decision.results else "."),
                decision.results,
            )
            st.rerun()


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
proposals_panel()
attention_panel()
st.subheader("Resolutions and cancellations per hour (UTC)")
window = st.segmented_control("Window", list(WINDOWS), default="24 hours", key="overview.window")
activity_panel(WINDOWS[window or "24 hours"])
