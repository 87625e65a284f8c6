"""Audit log: every dashboard action and refusal, newest first, filtered by action and user."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from pages.ui import page_offset, pager, principal, state_css
from services.ops import audit
from services.vocabulary import Result

PAGE_SIZE = 100
PAGER = "audit.page"


def _reset_page() -> None:
    st.session_state[PAGER] = 1


principal()
st.title("Audit log")
cols = st.columns(2)
action = (
    cols[0]
    .text_input(
        "Action",
        key="audit.action",
        placeholder="e.g. cancel_and_refund, login",
        on_change=_reset_page,
    )
    .strip()
)
username = cols[1].text_input("User", key="audit.user", on_change=_reset_page).strip()
filters = {"action": action or None, "username": username or None}
offset = page_offset(PAGER, PAGE_SIZE)
total = audit.count(**filters)
shown = audit.recent(limit=PAGE_SIZE, offset=offset, **filters)
if not shown:
    st.info("No audit entries match.")
else:
    problems = sum(r["result"] != Result.OK for r in shown)
    if problems:
        st.warning(f"{problems} of these {len(shown)} entries are refusals, failures or races.")
    table = pd.DataFrame(
        [
            {
                "at (UTC)": r["at"],
                "user": r["username"] or "—",
                "role": r["role"],
                "action": r["action"],
                "target": r["target"],
                "result": r["result"],
                "reason": r["reason"],
                "detail": r["detail"],
                "before": json.dumps(r["before"], sort_keys=True) if r["before"] else "",
                "after": json.dumps(r["after"], sort_keys=True) if r["after"] else "",
            }
            for r in shown
        ]
    )
    st.dataframe(
        table.style.map(state_css, subset=["result"]),
        hide_index=True,
        width="stretch",
        column_config={"at (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
    )
    st.caption(f"Entries {offset + 1:,}–{offset + len(shown):,} of {total:,}, newest first.")
pager(PAGER, total, PAGE_SIZE)
