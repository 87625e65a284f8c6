"""KOL data: the latest snapshot, changes since the previous run, anomalies, a KOL's history.

Names and handles come from a scraped page and may hold HTML or markdown: they are only ever
shown in tables, charts and plain text.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from pages.ui import page_offset, pager
from services.views import kols as kol_views
from services.vocabulary import Timeframe

TTL_S = 10
PAGE = 50

latest_snapshot = st.cache_data(ttl=TTL_S, show_spinner=False)(kol_views.latest_snapshot)
changes = st.cache_data(ttl=TTL_S, show_spinner=False)(kol_views.changes)
anomalies = st.cache_data(ttl=TTL_S, show_spinner=False)(kol_views.anomalies)
find_kols = st.cache_data(ttl=TTL_S, show_spinner=False)(kol_views.find_kols)
kol_history = st.cache_data(ttl=TTL_S, show_spinner=False)(kol_views.kol_history)
follower_history = st.cache_data(ttl=TTL_S, show_spinner=False)(kol_views.follower_history)

st.title("KOL data")
timeframe = st.radio("Timeframe", [tf.value for tf in Timeframe], horizontal=True, key="kol_tf")

snapshot_tab, changes_tab, anomalies_tab, history_tab = st.tabs(
    ["Latest snapshot", "Changes", "Anomalies", "KOL history"]
)

with snapshot_tab:
    search = st.text_input("Search name, wallet or handle", key="kol_search")
    snap = latest_snapshot(
        timeframe, search=search, limit=PAGE, offset=page_offset("kol_snapshot_page", PAGE)
    )
    if snap.run is None:
        st.info(f"No usable {timeframe} snapshot yet.")
    else:
        st.caption(
            f"Run {snap.run.id} ({snap.run.status}), taken {snap.run.snapshot_at:%Y-%m-%d %H:%M}"
            f" UTC: {snap.run.rows_stored} rows, {snap.run.rows_rejected} rejected. Changes are"
            f" against run {snap.previous.id if snap.previous else '(none)'}."
        )
        st.dataframe(snap.page.rows, hide_index=True, width="stretch")
        pager("kol_snapshot_page", snap.page.total, PAGE)

with changes_tab:
    ch = changes(timeframe)
    if ch.run is None or ch.previous is None:
        st.info("Changes need two usable runs of this timeframe.")
    else:
        st.caption(f"Run {ch.run.id} against run {ch.previous.id}.")
        cols = st.columns(3)
        cols[0].metric("Rank changed", ch.moved)
        cols[1].metric("Entered (shown)", len(ch.entered))
        cols[2].metric("Left (shown)", len(ch.left))
        st.subheader("Biggest moves")
        st.dataframe(ch.movers, hide_index=True, width="stretch")
        left, right = st.columns(2)
        left.subheader("Entered")
        left.dataframe(ch.entered, hide_index=True, width="stretch")
        right.subheader("Left the board")
        right.dataframe(ch.left, hide_index=True, width="stretch")

with anomalies_tab:
    min_jump = st.number_input(
        "Rank jump of at least", min_value=1, value=kol_views.DEFAULT_MIN_JUMP, key="kol_jump"
    )
    an = anomalies(timeframe, min_jump=int(min_jump))
    if an.run is None:
        st.info(f"No usable {timeframe} snapshot yet.")
    else:
        st.caption(f"In run {an.run.id}; each list shows up to 100 rows.")
        for label, found in (
            ("Rank jumps", an.rank_jumps),
            ("Duplicate ranks", an.duplicate_ranks),
            ("Missing X handles", an.missing_handles),
            ("Rejected rows", an.rejects),
        ):
            st.subheader(f"{label}: {found.total}")
            if found.rows:
                st.dataframe(found.rows, hide_index=True, width="stretch")


def _history_charts(wallet: str, handle: str | None) -> None:
    rows = kol_history(wallet)
    if not rows:
        st.info("No scraped rows for this KOL.")
        return
    df = pd.DataFrame(rows)
    for column in ("sol_gain", "usd_gain"):
        df[column] = df[column].astype(float)  # chart scale only; figures stay exact elsewhere
    base = alt.Chart(df).encode(
        x=alt.X("scraped_at:T", title="scraped"), color=alt.Color("timeframe:N")
    )
    st.altair_chart(
        base.mark_line(point=True).encode(
            y=alt.Y("rank:Q", scale=alt.Scale(reverse=True), title="rank (1 = top)"),
            tooltip=["scraped_at:T", "timeframe:N", "rank:Q", "run_id:Q", "quarantined:N"],
        ),
        width="stretch",
    )
    st.altair_chart(
        base.mark_line(point=True).encode(
            y=alt.Y("usd_gain:Q", title="USD gain"),
            tooltip=["scraped_at:T", "timeframe:N", "usd_gain:Q", "sol_gain:Q"],
        ),
        width="stretch",
    )
    if handle:
        counts = follower_history(handle)
        if counts:
            st.altair_chart(
                alt.Chart(pd.DataFrame(counts))
                .mark_line(point=True)
                .encode(
                    x=alt.X("fetched_at:T", title="fetched"),
                    y=alt.Y("followers:Q", scale=alt.Scale(zero=False)),
                    tooltip=["fetched_at:T", "followers:Q"],
                ),
                width="stretch",
            )
        else:
            st.caption("No follower counts recorded for this handle.")


with history_tab:
    query = st.text_input("Find a KOL (name, wallet or handle)", key="kol_find")
    kols = find_kols(query)
    if not kols:
        st.info("No KOL matches.")
    else:
        picked = st.selectbox(
            "KOL",
            kols,
            format_func=lambda k: f"{k['display_name']} ({k['wallet']})",
            key="kol_pick",
        )
        if picked is not None:
            st.text(f"X handle: {picked['x_handle'] or 'none'}")
            _history_charts(picked["wallet"], picked["x_handle"])
