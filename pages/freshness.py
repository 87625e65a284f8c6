"""Data freshness: scrape age per timeframe, follower cache age against open follower markets,
and the due markets that will be cancelled if no usable data arrives."""

from __future__ import annotations

import streamlit as st

from pages.ui import age, page_offset, pager
from services.views import freshness
from services.vocabulary import FollowerState

TTL_S = 10
PAGE = 50

scrape_ages = st.cache_data(ttl=TTL_S, show_spinner=False)(freshness.scrape_ages)
follower_freshness = st.cache_data(ttl=TTL_S, show_spinner=False)(freshness.follower_freshness)
would_be_cancelled = st.cache_data(ttl=TTL_S, show_spinner=False)(freshness.would_be_cancelled)

st.title("Data freshness")

followers = follower_freshness(limit=PAGE, offset=page_offset("fresh_followers_page", PAGE))
now = followers.now

st.subheader("Leaderboard scrapes")
for col, a in zip(st.columns(3), scrape_ages(), strict=True):
    with col:
        col.metric(f"Last good {a.timeframe}", age(now, a.last_good_at))
        if a.stale:
            st.warning("Too old for a market closing now")
        if a.too_old_to_generate:
            st.warning(
                f"Too old to open markets from: the generator opens no {a.timeframe} markets"
            )
        st.caption(
            f"Last run {a.last_status or 'none'} {age(now, a.last_started_at)}"
            + (f" ({a.last_error_code})" if a.last_error_code else "")
            + f"; 24h: {a.runs_24h} runs, {a.failed_24h} failed"
        )

st.subheader("Follower cache for open follower markets")
counts = followers.counts
cols = st.columns(4)
cols[0].metric("Fresh", counts[FollowerState.FRESH])
cols[1].metric("Stale", counts[FollowerState.STALE])
cols[2].metric("Never fetched", counts[FollowerState.NEVER_FETCHED])
cols[3].metric("No X account pinned", counts[FollowerState.NO_HANDLE])
st.caption(
    f"A cached count is usable for at most {followers.max_age} before a market's close, only"
    " if fetched after it opened and no later than the max scrape lag after its close."
    " Oldest count in use: "
    f"{age(now, followers.oldest_fetch)}."
)
if followers.problems.total:
    st.warning(
        f"{followers.problems.total} open follower markets have no usable cached count: if the"
        " X API fails at their close they cannot be decided."
    )
    st.dataframe(followers.problems.rows, hide_index=True, width="stretch")
    pager("fresh_followers_page", followers.problems.total, PAGE)

st.subheader("Would be cancelled if nothing changes")
risk = would_be_cancelled(limit=PAGE, offset=page_offset("fresh_risk_page", PAGE))
if not risk.markets.total:
    st.success("Every due market has usable data.")
else:
    st.error(
        f"{risk.markets.total} due markets lack usable data; {risk.past_deadline} are past"
        " their deadline and the next resolver pass cancels them."
    )
    st.bar_chart(risk.by_code, horizontal=True)
    st.dataframe(risk.markets.rows, hide_index=True, width="stretch")
    pager("fresh_risk_page", risk.markets.total, PAGE)
