"""Markets: find a market, see everything about it, and (operators) act on it.

`?market=<id>` in the URL opens a market's detail, so an operator can paste a deep link into a
chat. Text from the database is shown as data or escaped, never as Markdown or HTML.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from pages.ui import (
    market_state,
    md_text,
    page_offset,
    pager,
    principal,
    show_refusal,
    state_css,
)
from services import lifecycle
from services.errors import ServiceError
from services.lifecycle import MarketState
from services.ops import bulk, operator
from services.ops.auth import Principal
from services.resolution import resolver
from services.views import markets as market_views
from services.vocabulary import (
    AttemptResult,
    MarketAction,
    MarketStatus,
    MarketType,
    Result,
    Role,
    Side,
)

PAGE_SIZE = 50
PAGER = "markets.page"
PENDING = "markets.pending"  # the action whose confirmation dialog is open
FLASH = "markets.flash"  # the last action's result, shown once above the market

ACTION_TITLES = {
    MarketAction.CANCEL: "Cancel & refund",
    MarketAction.RESETTLE: "Re-settle",
    MarketAction.RETRY: "Retry resolution now",
    MarketAction.HOLD: "Put on hold",
    MarketAction.RELEASE: "Release hold",
}
# Actions that move no money: their dialog shows no money figures.
NO_MONEY = (MarketAction.RETRY, MarketAction.HOLD, MarketAction.RELEASE)
BULK = "markets.bulk"  # the bulk preview under review
BULK_DONE = "markets.bulk_done"  # the last bulk step's summary and per-market results
# The action buttons, left to right: (action, side). Which of them apply is lifecycle's to say.
BUTTONS: list[tuple[MarketAction, Side | None]] = [
    (MarketAction.CANCEL, None),
    (MarketAction.RESETTLE, Side.YES),
    (MarketAction.RESETTLE, Side.NO),
    (MarketAction.RETRY, None),
    (MarketAction.HOLD, None),
    (MarketAction.RELEASE, None),
]
# Attempt results worth a warning above the attempts table.
PROBLEMS = (AttemptResult.ERROR, AttemptResult.DEFERRED, AttemptResult.CANCELLED)


def _money(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _open_market(market_id: int) -> None:
    st.query_params["market"] = str(market_id)


def _goto() -> None:
    if st.session_state.get("goto") is not None:
        _open_market(int(st.session_state["goto"]))
        st.session_state["goto"] = None


def _back_to_list() -> None:
    st.query_params.pop("market", None)
    st.session_state.pop(PENDING, None)


# -- the list -----------------------------------------------------------------------------------


def _reset_page() -> None:
    st.session_state[PAGER] = 1


def _selection(who: Principal, selected: list[int], on_page: list[int]) -> None:
    """Open the one selected market, or (operators) act on the selected ones in bulk."""
    done = st.session_state.pop(BULK_DONE, None)
    if done:
        st.success(done[0])
        st.dataframe(done[1], hide_index=True, width="stretch")
    if len(selected) == 1 and not who.can(Role.OPERATOR):
        _open_market(selected[0])
        st.rerun()
    if not who.can(Role.OPERATOR):
        return
    cols = st.columns([1.2, 1.6, 1.6, 1.6])
    if len(selected) == 1 and cols[0].button(f"Open #{selected[0]}", key="bulk.open"):
        _open_market(selected[0])
        st.rerun()
    scope = cols[1].radio(
        "Act on",
        ["selected rows", "every market on this page"],
        key="bulk.scope",
        label_visibility="collapsed",
    )
    ids = selected if scope == "selected rows" else on_page
    for col, action in zip(cols[2:], (MarketAction.CANCEL, MarketAction.RETRY), strict=True):
        if col.button(
            f"{ACTION_TITLES[action]}: {len(ids)} markets…", key=f"bulk.{action}", width="stretch"
        ):
            try:
                st.session_state[BULK] = bulk.preview(action, ids)
            except ServiceError as exc:
                show_refusal(exc)
    previewed = st.session_state.get(BULK)
    if previewed is not None:
        _bulk_dialog(who, previewed)


def _close_bulk() -> None:
    st.session_state.pop(BULK, None)


def _bulk_body(who: Principal, p: bulk.BulkPreview) -> None:
    targets = p.targets
    cols = st.columns(3)
    cols[0].metric("Markets to act on", f"{len(targets):,} of {len(p.items):,}")
    cols[1].metric("Bets", f"{sum(i.bets for i in targets):,}")
    if p.action is MarketAction.CANCEL:
        cols[2].metric("Money to users", _money(p.total_paid))
    st.dataframe(
        [
            {
                "market": i.market_id,
                "status": i.status,
                "acted on": i.allowed,
                "what happens": i.note,
                "bets": i.bets,
                "users paid": i.users_paid,
                "money to users": float(i.total_paid),
            }
            for i in p.items
        ],
        hide_index=True,
        width="stretch",
    )
    if not targets:
        st.info("None of these markets allows this action.")
        return
    if p.needs_approval:
        st.warning(
            "Above the approval thresholds: this will be recorded as a proposal that a"
            " second operator must approve. Nothing changes until then."
        )
    reason = st.text_area("Reason (required, kept in the audit log)", key="bulk.reason")
    typed = None
    if p.needs_typed_count:
        typed = st.number_input(
            f"Type the number of markets ({len(targets)}) to confirm",
            min_value=0,
            step=1,
            value=None,
            key="bulk.typed",
        )
    if not st.button(
        f"Confirm {ACTION_TITLES[p.action].lower()} of {len(targets)} markets",
        type="primary",
        key="bulk.confirm",
    ):
        return
    bar = st.progress(0.0, text="Working…")
    try:
        done = bulk.apply(
            who,
            p,
            reason,
            typed_count=None if typed is None else int(typed),
            on_progress=lambda n, total, r: bar.progress(
                n / total, text=f"{n} of {total}: market {r.market_id} {r.result}"
            ),
        )
    except ServiceError as exc:
        show_refusal(exc)
        return
    if done.proposal is not None:
        summary = done.proposal.message
    else:
        counts = ", ".join(f"{r.value}: {done.count(r)}" for r in Result if done.count(r))
        summary = f"{ACTION_TITLES[p.action]} of {len(done.results)} markets done — {counts}."
    st.session_state[BULK_DONE] = (
        summary,
        [
            {"market": r.market_id, "result": r.result.value, "message": r.message}
            for r in done.results
        ],
    )
    _close_bulk()
    st.session_state.pop("bulk.reason", None)
    st.rerun()


def _bulk_dialog(who: Principal, p: bulk.BulkPreview) -> None:
    title = f"{ACTION_TITLES[p.action]}: {len(p.items)} selected markets"
    st.dialog(title, width="large", on_dismiss=_close_bulk)(_bulk_body)(who, p)


def list_view(who: Principal) -> None:
    st.title("Markets")
    filters = st.columns([1, 1.4, 2.2, 1, 1.2])
    status = filters[0].selectbox(
        "Status",
        ["All", *(s.value for s in MarketStatus)],
        key="markets.status",
        on_change=_reset_page,
    )
    type_ = filters[1].selectbox(
        "Type", ["All", *(t.value for t in MarketType)], key="markets.type", on_change=_reset_page
    )
    search = filters[2].text_input(
        "Search",
        key="markets.search",
        placeholder="title, KOL name, X handle or market id",
        on_change=_reset_page,
    )
    due_only = filters[3].checkbox("Due only", key="markets.due", on_change=_reset_page)
    attention_only = filters[4].checkbox(
        "Overdue / attention", key="markets.attention", on_change=_reset_page
    )
    try:
        result = market_views.list_markets(
            status=None if status == "All" else status,
            type=None if type_ == "All" else type_,
            search=search,
            due_only=due_only,
            attention_only=attention_only,
            limit=PAGE_SIZE,
            offset=page_offset(PAGER, PAGE_SIZE),
        )
    except ServiceError as exc:
        show_refusal(exc)
        return
    if not result.rows:
        st.info("No market matches these filters." if result.total == 0 else "No such page.")
    else:
        table = [
            {
                "id": r["id"],
                "state": market_state(r),
                "title": r["title"],
                "type": r["type"],
                "KOL A": r["kol_a"],
                "KOL B": r["kol_b"],
                "closes (UTC)": r["closes_at"],
                "P(YES)": float(r["price_yes"]),
                "bets": r["bets"],
                "volume": float(r["volume"]),
            }
            for r in result.rows
        ]
        event = st.dataframe(
            pd.DataFrame(table).style.map(state_css, subset=["state"]),
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="multi-row",
            key="markets.table",
            column_config={
                "id": st.column_config.NumberColumn(format="%d", width="small"),
                "closes (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                "P(YES)": st.column_config.ProgressColumn(min_value=0, max_value=1, format="%.2f"),
                "volume": st.column_config.NumberColumn(format="%.2f"),
            },
        )
        selected = [int(table[i]["id"]) for i in (event.selection.rows if event else [])]
        _selection(who, selected, [int(r["id"]) for r in table])
    st.caption(
        f"Showing {result.first:,}–{result.last:,} of {result.total:,} markets."
        " Select a row to open it; operators select several to act on them together."
    )
    left, _ = st.columns([1, 3])
    with left:
        pager(PAGER, result.total, PAGE_SIZE)
        st.number_input(
            "Open market by id", min_value=1, step=1, value=None, key="goto", on_change=_goto
        )


# -- the detail ---------------------------------------------------------------------------------


def _flash() -> None:
    flash = st.session_state.pop(FLASH, None)
    if flash is None:
        return
    kind, message = flash
    {"success": st.success, "info": st.info, "warning": st.warning}[kind](message)


def _banner(d: market_views.MarketDetail) -> None:
    m = d.market
    if m["needs_attention"]:
        st.error(f"**Needs attention:** {md_text(m['attention_reason'] or 'no reason recorded')}")
    if d.held:
        st.warning(
            f"**On hold** since {m['held_at']:%Y-%m-%d %H:%M} UTC by {md_text(m['held_by'])}:"
            f" {md_text(m['hold_reason'] or '')} — no bets, no automatic resolution, the grace"
            " period stopped."
        )
    if d.overdue:
        st.error("**Overdue:** past close and the grace period, still OPEN.")
    elif d.due:
        st.warning("**Due:** closed and waiting for the resolver.")
    elif m["status"] == MarketStatus.RESOLVED:
        st.success(f"Resolved **{m['outcome']}** at {m['resolved_at']:%Y-%m-%d %H:%M:%S} UTC")
    elif m["status"] == MarketStatus.CANCELLED:
        st.info(
            f"Cancelled **{m['cancel_reason']}** at {m['cancelled_at']:%Y-%m-%d %H:%M:%S} UTC"
            f" — {md_text(m['cancel_detail'] or '')}"
        )


def _actions(who: Principal, d: market_views.MarketDetail) -> None:
    m = d.market
    status = m["status"]
    if not who.can(Role.OPERATOR):
        st.caption("Cancel, re-settle, retry and hold need the operator role.")
        return
    state = MarketState.of(status, m["outcome"], d.due, d.held)
    allowed = lifecycle.allowed_actions(state)
    for col, (action, side) in zip(st.columns(len(BUTTONS)), BUTTONS, strict=True):
        enabled = (action, side) in allowed
        label = (
            ACTION_TITLES[action] if action is not MarketAction.RESETTLE else f"Re-settle {side}"
        )
        col.button(
            label,
            key=f"action.{action}.{side}",
            disabled=not enabled,
            help=lifecycle.refusal(action, state, side),
            type="primary" if action is MarketAction.CANCEL and enabled else "secondary",
            width="stretch",
            on_click=_ask,
            args=(
                {
                    "action": action.value,
                    "market": m["id"],
                    "outcome": side.value if side else None,
                    "expected": status,
                },
            ),
        )


def _ask(pending: dict[str, Any]) -> None:
    # The status shown now is the one the operator acts on: a change meanwhile is detected.
    st.session_state[PENDING] = pending
    st.session_state.pop("dialog.reason", None)


def _dismiss() -> None:
    st.session_state.pop(PENDING, None)


def _confirm_body(who: Principal, pending: dict[str, Any]) -> None:
    market_id, action, outcome = pending["market"], pending["action"], pending["outcome"]
    # The preview taken when the dialog opened is what the operator confirms; if the market
    # moves meanwhile, the service detects it and says so.
    p = pending.get("preview")
    if p is None:
        try:
            p = pending["preview"] = operator.preview(market_id, action, outcome)
        except ServiceError as exc:
            show_refusal(exc)
            return
    st.markdown(f"Market **#{market_id}** is **{p.market_status}**. {p.note}")
    if action not in NO_MONEY:
        cols = st.columns(3)
        cols[0].metric("Bets affected", f"{p.bets:,}")
        cols[1].metric("Users paid", f"{p.users_paid:,} of {p.users:,}")
        cols[2].metric("Money to users", _money(p.total_paid))
        flow = "to the house" if p.to_house >= 0 else "from the house"
        st.caption(f"{_money(abs(p.to_house))} {flow} (escrow remainder).")
    elif action == MarketAction.RETRY:
        st.caption(f"{p.bets:,} bets by {p.users:,} users are on this market.")
    if p.shortfalls:
        st.error("Reversing the current settlement would take these users below zero:")
        st.dataframe(
            [{"user id": u, "short by": float(s)} for u, s in p.shortfalls.items()],
            hide_index=True,
        )
    if not p.allowed:
        if st.button("Close", key="dialog.close"):
            _dismiss()
            st.rerun()
        return
    reason = st.text_area("Reason (required, kept in the audit log)", key="dialog.reason")
    go, back = st.columns(2)
    confirmed = go.button(
        f"Confirm {ACTION_TITLES[action].lower()}" + (f" {outcome}" if outcome else ""),
        type="primary",
        key="dialog.confirm",
        width="stretch",
    )
    if back.button("Back", key="dialog.back", width="stretch"):
        _dismiss()
        st.rerun()
    if not confirmed:
        return
    try:
        with st.spinner("Working…"):
            if action == MarketAction.CANCEL:
                result = operator.cancel_and_refund(
                    who, market_id, reason, expected_status=pending["expected"]
                )
            elif action == MarketAction.RESETTLE:
                result = operator.resettle(
                    who, market_id, outcome, reason, expected_status=pending["expected"]
                )
            elif action == MarketAction.HOLD:
                result = operator.hold(who, market_id, reason)
            elif action == MarketAction.RELEASE:
                result = operator.release_hold(who, market_id, reason)
            else:
                result = operator.retry_resolution(who, market_id, reason)
    except ServiceError as exc:
        show_refusal(exc)
        return
    kind = {Result.OK: "success", Result.ALREADY_DONE: "info"}.get(result.outcome, "warning")
    st.session_state[FLASH] = (kind, result.message)
    _dismiss()
    st.rerun()


def _confirm(who: Principal, pending: dict[str, Any]) -> None:
    title = ACTION_TITLES[pending["action"]]
    if pending["outcome"]:
        title += f" {pending['outcome']}"
    st.dialog(f"{title} — market #{pending['market']}", on_dismiss=_dismiss)(_confirm_body)(
        who, pending
    )


def _parameters(d: market_views.MarketDetail) -> None:
    m = d.market
    left, right = st.columns(2)
    with left:
        st.subheader("Parameters")
        params = [
            ("type", m["type"]),
            ("timeframe", m["timeframe"]),
            ("threshold", m["threshold"]),
            ("target rank", m["target_rank"]),
            ("KOL A", m["kol_a"]),
            ("KOL A wallet", m["kol_a_wallet"]),
            ("KOL A X handle", m["kol_a_handle"]),
            ("KOL B", m["kol_b"]),
            ("KOL B wallet", m["kol_b_wallet"]),
            ("opens (UTC)", m["opens_at"]),
            ("closes (UTC)", m["closes_at"]),
            ("resolved (UTC)", m["resolved_at"]),
            ("cancelled (UTC)", m["cancelled_at"]),
            ("cancel reason", m["cancel_reason"]),
            ("cancel detail", m["cancel_detail"]),
            ("liquidity", m["liquidity"]),
            ("pools YES / NO", f"{m['pool_yes']} / {m['pool_no']}"),
            ("lease", m["claimed_by"]),
        ]
        st.dataframe(
            [{"field": k, "value": "" if v is None else str(v)} for k, v in params],
            hide_index=True,
            width="stretch",
        )
    with right:
        st.subheader("Baseline")
        if m["baseline"]:
            st.json(m["baseline"])
        else:
            st.warning("No baseline: this market cannot be resolved.")
        if d.settlements:
            st.subheader("Settlements")
            st.dataframe(d.settlements, hide_index=True, width="stretch")


def _bets(d: market_views.MarketDetail) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Bets by side")
        if d.bets_by_side:
            st.dataframe(d.bets_by_side, hide_index=True, width="stretch")
        else:
            st.caption("No bets.")
        st.subheader("Positions by side")
        if d.positions_by_side:
            st.dataframe(d.positions_by_side, hide_index=True, width="stretch")
    with right:
        st.subheader(f"Top {market_views.TOP_POSITIONS} positions")
        if d.top_positions:
            st.dataframe(d.top_positions, hide_index=True, width="stretch")
        else:
            st.caption("No positions.")


def _attempts(market_id: int) -> None:
    rows = resolver.attempts(market_id)
    if not rows:
        st.caption("No resolution attempt yet.")
        return
    errors = [r for r in rows if r["result"] in PROBLEMS]
    if errors:
        last = errors[0]
        st.warning(
            f"Last problem ({last['result']}, {last['finished_at']:%Y-%m-%d %H:%M:%S} UTC):"
            f" `{last['error_code']}` {md_text(last['error_detail'] or '')}"
        )
    st.dataframe(
        [
            {
                "started (UTC)": r["started_at"],
                "trigger": r["trigger"],
                "result": r["result"],
                "error": r["error_code"],
                "detail": r["error_detail"],
                "evidence": json.dumps(r["evidence"], sort_keys=True, default=str),
            }
            for r in rows
        ],
        hide_index=True,
        width="stretch",
    )
    with st.expander("Evidence of the latest attempt"):
        st.json(rows[0]["evidence"])


def _ledger(market_id: int) -> None:
    rows = market_views.market_ledger(market_id)
    if not rows:
        st.caption("No ledger entries.")
        return
    st.dataframe(rows, hide_index=True, width="stretch")
    if len({r["tx"] for r in rows}) >= market_views.LEDGER_LIMIT:
        st.caption(f"The latest {market_views.LEDGER_LIMIT} transactions.")


def detail_view(who: Principal, raw_id: str) -> None:
    st.button("← All markets", on_click=_back_to_list)
    try:
        market_id = int(raw_id)
        d = market_views.market_detail(market_id)
    except ValueError:
        st.error(f"`{md_text(raw_id)}` is not a market id.")
        return
    except ServiceError as exc:
        show_refusal(exc)
        return
    m = d.market
    st.title(f"Market #{market_id}")
    st.text(m["title"])
    _flash()
    _banner(d)
    cols = st.columns(5)
    cols[0].metric(
        "Status",
        m["status"]
        + (f" {m['outcome']}" if m["outcome"] else "")
        + (" · ON HOLD" if d.held else ""),
    )
    cols[1].metric("P(YES)", f"{d.price_yes:.2f}")
    cols[2].metric("Escrow", _money(d.escrow_balance))
    cols[3].metric("Bets", f"{sum(r['bets'] for r in d.bets_by_side):,}")
    cols[4].metric("Closes (UTC)", f"{m['closes_at']:%m-%d %H:%M}")
    _actions(who, d)
    overview, bets, attempts, ledger = st.tabs(
        ["Parameters", "Bets & positions", "Resolution attempts", "Ledger"]
    )
    with overview:
        _parameters(d)
    with bets:
        _bets(d)
    with attempts:
        _attempts(market_id)
    with ledger:
        _ledger(market_id)
    pending = st.session_state.get(PENDING)
    if pending and pending["market"] == market_id and who.can(Role.OPERATOR):
        _confirm(who, pending)


who = principal()
selected_market = st.query_params.get("market")
if selected_market:
    detail_view(who, selected_market)
else:
    list_view(who)
