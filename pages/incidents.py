"""Incidents: every firing alert as an inbox entry, with its timeline of firings and deliveries.

Viewers read; analysts and operators acknowledge with a comment, assign, and mute rules. An
incident closes by itself when its alert resolves.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import streamlit as st

from config import get_settings
from pages.ui import md_text, page_file, page_offset, pager, principal, refreshing, show_refusal
from services.errors import ServiceError
from services.ops import alerting, delivery
from services.ops import incidents as incident_ops
from services.ops.alert_rules import TITLES
from services.views import incidents as views
from services.vocabulary import AlertRule, IncidentState, Result, Role

REFRESH = dt.timedelta(seconds=get_settings().dashboard_refresh_s)
PAGE_SIZE = 25
SHOWS = {"Open": "active", "Closed": "closed", "All": "all"}
COLOURS = {IncidentState.OPEN: "red", IncidentState.ACKNOWLEDGED: "orange"}
MAX_LINKS = 12

who = principal()
can_act = who.can(Role.ANALYST)


def _age(seconds: float | None) -> str:
    s = int(seconds or 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _badge(state: str) -> str:
    return f":{COLOURS.get(IncidentState(state), 'gray')}-badge[{state}]"


def _title(row: dict[str, Any]) -> str:
    key = f" ({row['key']})" if row["key"] else ""
    return f"{TITLES[AlertRule(row['rule'])]}{key}"


def channels_panel() -> None:
    chans = delivery.channels()
    if not chans:
        st.warning(
            "No alert channel is configured (`ALERT_CHANNELS`): nothing is sent to anyone;"
            " incidents are only shown here."
        )
    else:
        for c in chans:
            if c.error:
                st.error(f"Channel {md_text(c.label)} cannot be used: {c.error}")
        usable = [md_text(c.label) for c in chans if not c.error]
        if usable:
            st.caption("Alerts are sent to: " + ", ".join(usable))
    problems = views.delivery_problems()
    if problems:
        st.error(f"{len(problems)} deliveries failed or are retrying after a failure")
        st.dataframe(problems, hide_index=True, width="stretch")


@refreshing(REFRESH)
def inbox() -> None:
    choice = st.segmented_control("Show", list(SHOWS), default="Open", key="incidents.shows")
    shows = SHOWS[choice or "Open"]
    page = views.list_incidents(
        shows=shows, limit=PAGE_SIZE, offset=page_offset("incidents.page", PAGE_SIZE)
    )
    st.subheader(f"{choice or 'Open'} incidents ({page.total})")
    if not page.rows:
        st.success("No incident." if shows != "closed" else "No closed incident yet.")
    for r in page.rows:
        link, what, state = st.columns([2, 6, 2], vertical_alignment="center")
        link.page_link(
            page_file("incidents"),
            label=f"Incident #{r['id']}",
            icon=":material/open_in_new:",
            query_params={"incident": str(r["id"])},
        )
        what.markdown(f"**{md_text(_title(r))}**: {md_text(r['summary'])}")
        assignee = f", {md_text(r['assignee'])}" if r["assignee"] else ""
        state.markdown(f"{_badge(r['state'])} {r['severity']}, {_age(r['age_s'])}{assignee}")
    pager("incidents.page", page.total, PAGE_SIZE)


@refreshing(REFRESH)
def incident_panel(incident_id: int) -> None:
    row = views.incident(incident_id)
    if row is None:
        st.error(f"No incident #{incident_id}.")
        return
    st.header(f"Incident #{incident_id}")
    st.markdown(f"{_badge(row['state'])} **{md_text(_title(row))}** ({row['severity']})")
    st.write(row["summary"])
    st.caption(
        f"Opened {row['opened_at']:%Y-%m-%d %H:%M:%S} UTC, age {_age(row['age_s'])}"
        + (f"; closed {row['closed_at']:%H:%M:%S} UTC" if row["closed_at"] else "")
        + (f"; assigned to {row['assignee']}" if row["assignee"] else "; unassigned")
    )
    if row["acknowledged_by"]:
        st.info(f"Acknowledged by {row['acknowledged_by']}: {md_text(row['ack_comment'] or '')}")
    subjects = row["subjects"] or {}
    markets = list(subjects.get("markets", []))
    if markets:
        st.write(f"Markets ({len(markets)}):")
        cols = st.columns(min(len(markets[:MAX_LINKS]), 6) or 1)
        for i, market_id in enumerate(markets[:MAX_LINKS]):
            cols[i % len(cols)].page_link(
                page_file("markets"),
                label=f"Market #{market_id}",
                query_params={"market": str(market_id)},
            )
    if subjects.get("runs"):
        runs = ", ".join(f"#{r}" for r in subjects["runs"])
        st.page_link(
            page_file("scrapes"), label=f"Scrape runs {runs}", icon=":material/travel_explore:"
        )
    if subjects.get("jobs"):
        st.page_link(
            page_file("jobs"),
            label="Jobs: " + ", ".join(subjects["jobs"]),
            icon=":material/event_repeat:",
        )
    if subjects.get("endpoints"):
        st.page_link(
            page_file("freshness"),
            label="X API: " + ", ".join(subjects["endpoints"]),
            icon=":material/schedule:",
        )
    st.subheader("Timeline")
    st.table(
        [
            {
                "at (UTC)": f"{t['at']:%Y-%m-%d %H:%M:%S}",
                "what": t["what"],
                "who": t["who"] or "",
                "detail": t["detail"],
            }
            for t in row["timeline"]
        ]
    )
    actions(incident_id, row)


def actions(incident_id: int, row: dict[str, Any]) -> None:
    if row["state"] == IncidentState.CLOSED:
        return
    if not can_act:
        st.caption("Viewers read; analysts and operators acknowledge and assign.")
        return
    left, right = st.columns(2)
    with left, st.form(f"ack-{incident_id}", clear_on_submit=True):
        comment = st.text_area("Comment (required, kept in the audit log)")
        if st.form_submit_button(
            "Acknowledge", disabled=row["state"] != IncidentState.OPEN, type="primary"
        ):
            try:
                result = incident_ops.acknowledge(who, incident_id, comment)
            except ServiceError as exc:
                show_refusal(exc)
            else:
                st.toast(f"Incident #{incident_id}: {result.value}")
                st.rerun()
    with right, st.form(f"assign-{incident_id}"):
        accounts = views.assignable_accounts()
        current = row["assignee"] if row["assignee"] in accounts else None
        name = st.selectbox(
            "Assign to", accounts, index=accounts.index(current) if current else None
        )
        if st.form_submit_button("Assign"):
            try:
                result = incident_ops.assign(who, incident_id, name or "")
            except ServiceError as exc:
                show_refusal(exc)
            else:
                st.toast(f"Incident #{incident_id}: {result.value}")
                st.rerun()


def mutes_panel() -> None:
    with st.expander("Mute windows", expanded=False):
        st.caption(
            "A muted rule still opens incidents; nothing is sent for it until the window ends."
        )
        current = views.mutes()
        if current:
            st.dataframe(current, hide_index=True, width="stretch")
        if not can_act:
            return
        for m in current:
            if st.button(f"End mute #{m['id']} ({m['rule']})", key=f"end-mute-{m['id']}"):
                try:
                    alerting.end_mute(who, m["id"])
                except ServiceError as exc:
                    show_refusal(exc)
                else:
                    st.rerun()
        with st.form("mute", clear_on_submit=True):
            rule = st.selectbox(
                "Rule", [r.value for r in AlertRule], format_func=lambda r: TITLES[AlertRule(r)]
            )
            minutes = st.number_input("Minutes", min_value=1, max_value=7 * 24 * 60, value=60)
            reason = st.text_input("Reason (required, kept in the audit log)")
            if st.form_submit_button("Mute"):
                try:
                    alerting.mute(who, rule, int(minutes), reason)
                except ServiceError as exc:
                    show_refusal(exc)
                else:
                    st.toast(f"{rule} muted for {int(minutes)} min: {Result.OK.value}")
                    st.rerun()


st.title("Incidents")
channels_panel()
selected = st.query_params.get("incident")
if selected and selected.isdigit():
    st.query_params["incident"] = selected  # keep the link to paste in the address bar
    if st.button("← All incidents"):
        st.query_params.clear()
        st.rerun()
    incident_panel(int(selected))
else:
    inbox()
    mutes_panel()
