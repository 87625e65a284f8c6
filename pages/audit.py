"""Audit log: every dashboard action and refusal, newest first, filtered by action and user."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from pages.ui import principal, state_css
from services import audit

PAGE_SIZE = 100


def _reset_page() -> None:
    st.session_state["audit.page"] = 1


principal()
st.title("Audit log")
cols = st.columns([1.5, 1.5, 1])
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
page_no = cols[2].number_input("Page", min_value=1, step=1, key="audit.page")

# One row more than the page, to know whether a next page exists.
rows = audit.recent(limit=page_no * PAGE_SIZE + 1, action=action or None, username=username or None)
shown = rows[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
if not shown:
    st.info("No audit entries match." if page_no == 1 else "No entries on this page.")
else:
    problems = sum(r["result"] != "OK" for r in shown)
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
    first = (page_no - 1) * PAGE_SIZE + 1
    more = "; more on the next page" if len(rows) > page_no * PAGE_SIZE else ""
    st.caption(f"Entries {first:,}–{first + len(shown) - 1:,}, newest first{more}.")
