"""Ledger & integrity: the money invariants (last scheduled result, or run now), balances by
account kind, recent transactions and their entries."""

from __future__ import annotations

import streamlit as st

from pages.ui import page_offset, pager
from services.money.integrity import check_integrity
from services.views import ledger as ledger_views
from services.vocabulary import JobStatus, LedgerKind

TTL_S = 10
PAGE = 50

balances = st.cache_data(ttl=TTL_S, show_spinner=False)(ledger_views.balances)
transactions = st.cache_data(ttl=TTL_S, show_spinner=False)(ledger_views.transactions)
entries = st.cache_data(ttl=TTL_S, show_spinner=False)(ledger_views.entries)
last_integrity_run = st.cache_data(ttl=TTL_S, show_spinner=False)(ledger_views.last_integrity_run)

st.title("Ledger & integrity")

st.subheader("Integrity")
for job, label in (
    ("integrity", "Last periodic check (what changed since the last verified point)"),
    ("integrity_full", "Last full audit (every invariant over every row, nightly)"),
):
    last = last_integrity_run(job)
    if last is None:
        st.info(f"{label}: not run yet.")
    elif last.status == JobStatus.SUCCESS:
        st.success(f"{label}: {last.started_at:%Y-%m-%d %H:%M:%S} UTC, clean.")
    else:
        st.error(
            f"{label}: {last.started_at:%Y-%m-%d %H:%M:%S} UTC, {last.status},"
            f" {last.violations if last.violations is not None else 'unknown'} violations."
        )
        if last.error:
            st.code(last.error, language=None)

if st.button("Run the full audit now", key="ledger_check"):
    with st.spinner("Checking every invariant against the whole ledger..."):
        st.session_state["ledger_report"] = check_integrity()
report = st.session_state.get("ledger_report")
if report is not None:
    if report.ok:
        st.success(f"Integrity clean: {len(report.checks_run)} checks, no violations.")
    else:
        st.error(f"{len(report.violations)} violations.")
    for check, found in report.by_check().items():
        label = f"{check.value}: {'OK' if not found else f'{len(found)} violations'}"
        with st.expander(label, expanded=bool(found)):
            if found:
                st.dataframe(
                    [{"subject": v.subject, "detail": v.detail} for v in found],
                    hide_index=True,
                    width="stretch",
                )
            else:
                st.caption("No violations.")

st.subheader("Balances by account kind")
kinds = balances()
for col, kb in zip(st.columns(len(kinds)), kinds, strict=True):
    col.metric(f"{kb.kind} ({kb.accounts})", f"{kb.balance:,.2f}")
st.caption("USER: what users hold; ESCROW: what markets hold; the five totals sum to zero.")

st.subheader("Transactions")
kind = st.selectbox("Kind", ["(all)", *(k.value for k in LedgerKind)], key="ledger_kind")
market = st.text_input("Market id", key="ledger_market").strip()
if market and not market.isdigit():
    st.error("A market id is a whole number.")
    market = ""
page = transactions(
    kind=None if kind == "(all)" else kind,
    market_id=int(market) if market else None,
    limit=PAGE,
    offset=page_offset("ledger_page", PAGE),
)
st.dataframe(page.rows, hide_index=True, width="stretch")
pager("ledger_page", page.total, PAGE)

if page.rows:
    by_id = {t["id"]: t for t in page.rows}
    tx = st.selectbox(
        "Entries of transaction",
        list(by_id),
        format_func=lambda i: f"#{i} {by_id[i]['kind']} {by_id[i]['idempotency_key']}",
        key="ledger_tx",
    )
    st.dataframe(entries(tx), hide_index=True, width="stretch")
