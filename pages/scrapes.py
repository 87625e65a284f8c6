"""Scrapes: runs and their success over time, failures with their error and saved page, rejects,
and (analysts and above) quarantine or release of a run through a confirmation dialog.

A saved page is shown as text and offered as a download, never rendered: it is a foreign page.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
from PIL import UnidentifiedImageError

from pages.ui import page_offset, pager, principal, show_refusal
from services.errors import ServiceError
from services.ops import quarantine as quarantine_ops
from services.ops import reevaluation
from services.views import scrapes as scrape_views
from services.vocabulary import Result, Role, ScrapeStatus, Timeframe, Verdict

TTL_S = 10
PAGE = 50
HTML_SHOWN = 200_000  # characters of a saved page shown inline; the download has all of it
DIALOG = "scrape_quarantine"  # (run_id, quarantine) while the confirmation dialog is open
REEVAL = "scrape_reevaluation"  # the re-evaluation preview the operator is reviewing
REEVAL_DONE = "scrape_reevaluation_done"  # the last apply's per-market results
RUN_COLUMNS = (
    "id",
    "timeframe",
    "trigger",
    "status",
    "started_at",
    "snapshot_at",
    "rows_found",
    "rows_stored",
    "rows_rejected",
    "error_code",
    "quarantined",
)
STATUS_COLOURS = {
    ScrapeStatus.SUCCESS: "#2e7d32",
    ScrapeStatus.PARTIAL: "#f9a825",
    ScrapeStatus.FAILED: "#c62828",
    ScrapeStatus.RUNNING: "#90a4ae",
}

runs = st.cache_data(ttl=TTL_S, show_spinner=False)(scrape_views.runs)
success_over_time = st.cache_data(ttl=TTL_S, show_spinner=False)(scrape_views.success_over_time)
rejects = st.cache_data(ttl=TTL_S, show_spinner=False)(scrape_views.rejects)

who = principal()
st.title("Scrapes")
flash = st.session_state.pop("scrape_flash", None)
if flash:
    st.success(flash)

history = success_over_time(days=14)
if history:
    df = pd.DataFrame(history)
    st.altair_chart(
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):T", title="day"),
            y=alt.Y("sum(runs):Q", title="runs"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(
                    domain=[s.value for s in STATUS_COLOURS], range=list(STATUS_COLOURS.values())
                ),
            ),
            column=alt.Column("timeframe:N", title=None),
            tooltip=["day:T", "timeframe:N", "status:N", "runs:Q"],
        )
        .properties(width=220, height=160),
    )
else:
    st.caption("No scrape runs in the last 14 days.")

st.subheader("Recent failures")
failures = runs(status=ScrapeStatus.FAILED.value, limit=10)
if failures.rows:
    st.dataframe(
        failures.rows,
        hide_index=True,
        width="stretch",
        column_order=("id", "timeframe", "started_at", "error_code", "error_message"),
    )
else:
    st.caption("No failed runs.")

st.subheader("Runs")
f1, f2, f3 = st.columns(3)
timeframe = f1.selectbox("Timeframe", ["(all)", *(tf.value for tf in Timeframe)], key="scr_tf")
status = f2.selectbox("Status", ["(all)", *(s.value for s in ScrapeStatus)], key="scr_status")
only_quarantined = f3.toggle("Quarantined only", key="scr_quarantined")
listed = runs(
    timeframe=None if timeframe == "(all)" else timeframe,
    status=None if status == "(all)" else status,
    quarantined=True if only_quarantined else None,
    limit=PAGE,
    offset=page_offset("scr_page", PAGE),
)
st.dataframe(listed.rows, hide_index=True, width="stretch", column_order=RUN_COLUMNS)
pager("scr_page", listed.total, PAGE)


def _close_dialog() -> None:
    st.session_state.pop(DIALOG, None)


@st.dialog("Quarantine or release a scrape run", on_dismiss=_close_dialog)
def confirm_quarantine(run_id: int, quarantine: bool) -> None:
    try:
        preview = quarantine_ops.quarantine_preview(run_id)
    except ServiceError as exc:
        show_refusal(exc)
        return
    if quarantine:
        st.write(
            f"Quarantine run {run_id}: the resolver will no longer use its"
            f" {preview.rows_stored} rows. {len(preview.resolved_markets)} markets whose"
            " settlement rests on it keep their outcome until an operator applies their"
            " re-evaluation (below the run's detail, once quarantined)."
        )
        if preview.resolved_markets:
            st.dataframe(
                [
                    {"market": m["market_id"], "type": m["type"], "outcome": m["outcome"]}
                    for m in preview.resolved_markets
                ],
                hide_index=True,
            )
    else:
        st.write(
            f"Release run {run_id}: the resolver may use its {preview.rows_stored} rows again."
        )
    reason = st.text_area("Reason (required, kept in the audit log)", key="scr_reason")
    ok, cancel = st.columns(2)
    if ok.button(
        "Quarantine run" if quarantine else "Release run", type="primary", key="scr_confirm"
    ):
        try:
            result = quarantine_ops.set_quarantine(who, run_id, quarantine, reason)
        except ServiceError as exc:
            show_refusal(exc)
            return
        done = "quarantined" if quarantine else "released"
        st.session_state["scrape_flash"] = (
            f"Run {run_id} {done}." if result.applied else f"Run {run_id} was already {done}."
        )
        _close_dialog()
        st.session_state.pop("scr_reason", None)
        for cached in (runs, rejects):
            cached.clear()
        st.rerun()
    if cancel.button("Cancel", key="scr_cancel"):
        _close_dialog()
        st.rerun()


def _evidence(e: dict[str, Any]) -> str:
    """A snapshot's numbers for KOL A (and B) in one line: what decided the market."""
    if e.get("source") != "scrape_run":
        return "none usable"
    kols = [
        f"{k[-1].upper()} #{v['rank']} SOL {Decimal(v['sol_gain']).normalize():f}"
        f" USD {Decimal(v['usd_gain']).normalize():f}"
        for k, v in (("kol_a", e.get("kol_a")), ("kol_b", e.get("kol_b")))
        if v
    ]
    return f"run {e['run_id']}: " + " · ".join(kols)


def reevaluation_section(run_id: int) -> None:
    """What quarantining this run changes, and (operators) applying it in one reviewed step."""
    st.subheader("What this quarantine changes")
    done = st.session_state.get(REEVAL_DONE)
    if done and done[0] == run_id:
        st.success(done[1])
        st.dataframe(done[2], hide_index=True, width="stretch")
    previewed = st.session_state.get(REEVAL)
    if (
        previewed is None
        or previewed.run_id != run_id
        or st.button("Re-evaluate again", key="reeval_refresh")
    ):
        try:
            previewed = st.session_state[REEVAL] = reevaluation.preview(run_id)
        except ServiceError as exc:
            show_refusal(exc)
            return
    if not previewed.markets:
        st.caption("No market's active settlement rests on this run: nothing to re-evaluate.")
        return
    cols = st.columns(4)
    cols[0].metric("Markets", len(previewed.markets))
    cols[1].metric("Stay", previewed.count(Verdict.STAYS))
    cols[2].metric("Flip", previewed.count(Verdict.FLIPS))
    cols[3].metric("Undecidable (refund)", previewed.count(Verdict.UNDECIDABLE))
    st.dataframe(
        [
            {
                "market": m.market_id,
                "type": m.type,
                "now": m.outcome,
                "verdict": m.verdict.value,
                "becomes": m.new_outcome or f"CANCELLED ({m.reason_code})",
                "money moved": float(m.total_paid),
                "users paid": m.users_paid,
                "users short": ", ".join(f"{u} ({v})" for u, v in m.shortfalls.items()),
                "evidence used": _evidence(m.evidence_used) if m.new_outcome else m.detail,
                "evidence replaced": _evidence(m.evidence_replaced),
            }
            for m in previewed.markets
        ],
        hide_index=True,
        width="stretch",
    )
    st.caption(
        f"Applying re-settles {previewed.count(Verdict.FLIPS)} markets and refunds"
        f" {previewed.count(Verdict.UNDECIDABLE)}: {previewed.total_paid:,} paid out in all."
        " Each market is its own transaction; a market that changed since this preview is"
        " left alone and reported."
    )
    if not who.can(Role.OPERATOR):
        st.caption("Applying it needs the operator role.")
        return
    reason = st.text_area(
        "Reason for applying (required, kept in the audit log)", key="reeval_reason"
    )
    if not st.button("Apply re-evaluation", type="primary", key="reeval_apply"):
        return
    bar = st.progress(0.0, text="Applying…")
    try:
        applied = reevaluation.apply(
            who,
            previewed,
            reason,
            on_progress=lambda n, total, r: bar.progress(
                n / total, text=f"{n} of {total}: market {r.market_id} {r.result}"
            ),
        )
    except ServiceError as exc:
        show_refusal(exc)
        return
    if applied.proposal is not None:
        st.warning(applied.proposal.message)
        return
    ok = sum(1 for r in applied.results if r.result is Result.OK)
    st.session_state[REEVAL_DONE] = (
        run_id,
        f"Applied: {ok} of {len(applied.results)} markets changed or confirmed;"
        f" {applied.total_paid:,} paid out.",
        [
            {
                "market": r.market_id,
                "verdict": r.verdict,
                "result": r.result.value,
                "message": r.message,
                "paid": float(r.total_paid),
            }
            for r in applied.results
        ],
    )
    st.session_state.pop(REEVAL, None)
    st.rerun()


st.subheader("Run detail")
if not listed.rows:
    st.caption("No runs match.")
else:
    by_id = {r["id"]: r for r in listed.rows}
    run_id = st.selectbox(
        "Run",
        list(by_id),
        format_func=lambda i: (
            f"#{i} {by_id[i]['timeframe']} {by_id[i]['status']}"
            f" {by_id[i]['started_at']:%Y-%m-%d %H:%M}"
            + (" (quarantined)" if by_id[i]["quarantined"] else "")
        ),
        key="scr_run",
    )
    run = by_id[run_id]
    cols = st.columns(4)
    cols[0].metric("Status", run["status"])
    cols[1].metric("Rows stored", run["rows_stored"])
    cols[2].metric("Rejected", run["rows_rejected"])
    cols[3].metric("Quarantined", "yes" if run["quarantined"] else "no")
    st.text(f"Source: {run['source_url']}")
    if run["error_code"]:
        st.error("This run failed:")
        st.code(f"{run['error_code']}: {run['error_message'] or ''}", language=None)
    if run["quarantined"]:
        st.warning("Quarantined: the resolver does not use this run.")
        st.text(
            f"By {run['quarantined_by']} at {run['quarantined_at']}: {run['quarantine_reason']}"
        )
    if who.can(Role.ANALYST):
        label = "Release this run" if run["quarantined"] else "Quarantine this run"
        if st.button(label, key="scr_open"):
            st.session_state[DIALOG] = (run["id"], not run["quarantined"])
    if run["quarantined"]:
        reevaluation_section(run["id"])
    try:
        png = scrape_views.artifact(run["screenshot_path"])
        html = scrape_views.artifact(run["html_path"])
    except ServiceError as exc:
        show_refusal(exc)
        png = html = None
    if png:
        try:
            st.image(png, caption=f"Screenshot of the failed page (run {run['id']})")
        except UnidentifiedImageError:
            st.warning(f"The saved screenshot {run['screenshot_path']} is not a readable image.")
    if html:
        text = html.decode("utf-8", errors="replace")
        with st.expander(f"Saved HTML ({len(text)} characters)"):
            st.code(text[:HTML_SHOWN], language="html")
        st.download_button(
            "Download the saved HTML",
            html,
            file_name=f"scrape-run-{run['id']}.html.txt",
            mime="text/plain",
            key="scr_html_download",
        )
    run_rejects = rejects(run_id=run["id"], limit=PAGE)
    if run_rejects.total:
        st.caption(f"{run_rejects.total} rejected rows (first {PAGE})")
        st.dataframe(run_rejects.rows, hide_index=True, width="stretch")

if DIALOG in st.session_state:
    confirm_quarantine(*st.session_state[DIALOG])

st.subheader("Rejected rows, all runs")
all_rejects = rejects(limit=PAGE, offset=page_offset("scr_rej_page", PAGE))
st.dataframe(all_rejects.rows, hide_index=True, width="stretch")
pager("scr_rej_page", all_rejects.total, PAGE)
