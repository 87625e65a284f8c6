"""The Markets, Overview and Audit log pages through Streamlit's AppTest, logged in through the
login form as each role, on the real database: what each role sees, and every step of an
operator action (dialog, preview, reason, result, audit)."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow
import pytest
from streamlit.testing.v1 import AppTest

from pages.ui import page_file
from services.money.bets import place_bet
from services.ops import audit, auth, operator
from tests.support.accounts import principal
from tests.support.pages import (
    DEPOSIT,
    balances,
    bet_statuses,
    dashboard_app,
    market_audit,
    market_row,
    open_market_now,
    overdue_market_with_bets,
    settlement_count,
)
from tests.support.settling import settle

PASSWORD = "correct horse battery"
HOSTILE = '<img src=x onerror="alert(1)"> **bold** ![t](http://198.51.100.1/t.png) :red[x]'


def login(role: str) -> AppTest:
    username = f"{role}1"
    auth.create_account(username, PASSWORD, role)
    who, _ = auth.log_in(username, PASSWORD, "127.0.0.1")
    at = dashboard_app(who)
    at.run()
    assert at.session_state["principal"] == who
    return at


def open_market(at: AppTest, market_id: int) -> AppTest:
    at.switch_page(page_file("markets"))
    at.query_params["market"] = str(market_id)
    at.run()
    assert not at.exception, at.exception
    return at


def action_buttons(at: AppTest) -> dict[str, bool]:
    """Action button label -> enabled."""
    return {b.label: not b.disabled for b in at.button if b.key and b.key.startswith("action.")}


# -- what each role sees --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_viewers_and_analysts_see_markets_but_no_action(db: str, role: str) -> None:
    s = overdue_market_with_bets(db)
    at = login(role)
    at.switch_page(page_file("markets")).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Markets"]
    assert at.dataframe[0].value["id"].tolist() == [s.market_id]

    open_market(at, s.market_id)
    assert [t.value for t in at.title] == [f"Market #{s.market_id}"]
    assert action_buttons(at) == {}
    assert not [b for b in at.button if b.key and b.key.startswith("dialog.")]
    captions = [c.value for c in at.caption]
    assert "Cancel, re-settle, retry and hold need the operator role." in captions
    # A forged pending action (as if a button had been clicked) opens no dialog either.
    at.session_state["markets.pending"] = {
        "action": "cancel",
        "market": s.market_id,
        "outcome": None,
        "expected": "OPEN",
    }
    at.run()
    assert not [b for b in at.button if b.key == "dialog.confirm"]
    assert market_row(s.market_id)["status"] == "OPEN"


def test_the_list_filters_searches_and_opens_a_market(db: str) -> None:
    plain = open_market_now(title="Will Alice out-rank Bob today?", kol_name="Alice")
    odd = open_market_now(title="100% sure_thing", kol_name="Carol")
    due = overdue_market_with_bets(db, kol_name="Dave").market_id
    at = login("viewer")
    at.switch_page(page_file("markets")).run()
    assert sorted(at.dataframe[0].value["id"].tolist()) == sorted([plain, odd, due])

    at.text_input(key="markets.search").input("alice").run()
    assert at.dataframe[0].value["id"].tolist() == [plain]
    at.text_input(key="markets.search").input("%").run()  # a literal percent sign, not a wildcard
    assert at.dataframe[0].value["id"].tolist() == [odd]
    at.text_input(key="markets.search").input("").run()
    at.checkbox(key="markets.attention").check().run()
    table = at.dataframe[0].value
    assert table["id"].tolist() == [due] and table["state"].tolist() == ["OVERDUE"]

    at.number_input(key="goto").set_value(due).run()
    assert at.query_params["market"] == str(due)
    assert [t.value for t in at.title] == [f"Market #{due}"]
    at.button[0].click().run()  # back to the list
    assert "market" not in at.query_params and [t.value for t in at.title] == ["Markets"]


def test_detail_shows_parameters_bets_attempts_and_ledger(db: str) -> None:
    s = overdue_market_with_bets(db, kol_name=HOSTILE, title=HOSTILE)
    at = open_market(login("viewer"), s.market_id)
    # Database text is shown as text (never Markdown or HTML), or escaped where Markdown is used.
    assert HOSTILE in [t.value for t in at.text]
    assert not [m.value for m in at.markdown if "img" in m.value or "](" in m.value]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "OPEN" and metrics["Bets"] == "4"
    assert any("Overdue" in e.value for e in at.error)
    tables = [d.value for d in at.dataframe]
    params = next(t for t in tables if "field" in t.columns)
    assert dict(zip(params["field"], params["value"], strict=True))["KOL A"] == HOSTILE
    by_side = next(t for t in tables if "action" in t.columns and "fees" in t.columns)
    assert sorted(zip(by_side["side"], by_side["bets"], strict=True)) == [("NO", 2), ("YES", 2)]
    ledger = next(t for t in tables if "key" in t.columns)
    assert {"LIQUIDITY", "BET"} <= set(ledger["kind"])
    assert "No resolution attempt yet." in [c.value for c in at.caption]


def test_an_unknown_or_malformed_market_id_is_explained(db: str) -> None:
    at = open_market(login("viewer"), 999)
    assert any("market 999 does not exist" in e.value for e in at.error)
    at.query_params["market"] = "42; DROP TABLE markets"
    at.run()
    assert any("is not a market id" in e.value for e in at.error)


# -- operator actions through the dialog ----------------------------------------------------------


def test_operator_cancels_and_refunds_through_the_dialog(db: str) -> None:
    s = overdue_market_with_bets(db)
    at = open_market(login("operator"), s.market_id)
    assert action_buttons(at) == {
        "Cancel & refund": True,
        "Re-settle YES": False,
        "Re-settle NO": False,
        "Retry resolution now": True,
        "Put on hold": True,
        "Release hold": False,
    }
    at.button(key="action.cancel.None").click().run()
    preview = {m.label: m.value for m in at.metric}
    assert preview["Bets affected"] == "4"
    assert preview["Users paid"] == "3 of 3"
    assert preview["Money to users"] == "225.50"

    at.button(key="dialog.confirm").click().run()  # no reason
    assert any("REASON_REQUIRED" in e.value for e in at.error)
    assert market_row(s.market_id)["status"] == "OPEN"
    assert [r["result"] for r in market_audit(s.market_id)] == ["REFUSED"]

    at.text_area(key="dialog.reason").input("KOL wallet was mislabelled")
    at.button(key="dialog.confirm").click().run()
    assert not at.exception
    assert [x.value for x in at.success] == [
        "Cancelled and refunded 4 bets: 3 users got 225.50 back."
    ]
    assert not [b for b in at.button if b.key == "dialog.confirm"]  # the dialog closed
    assert market_row(s.market_id)["status"] == "CANCELLED"
    assert bet_statuses(s.market_id) == ["REFUNDED"] * 4
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    ok = market_audit(s.market_id)[-1]
    assert (ok["username"], ok["action"], ok["result"]) == ("operator1", "cancel_and_refund", "OK")
    assert ok["reason"] == "KOL wallet was mislabelled"
    assert ok["before"]["status"] == "OPEN" and ok["after"]["status"] == "CANCELLED"
    assert action_buttons(at)["Cancel & refund"] is False
    assert action_buttons(at)["Re-settle YES"] is True


def test_a_second_operator_confirming_late_is_told_it_is_already_done(db: str) -> None:
    s = overdue_market_with_bets(db)
    at = open_market(login("operator"), s.market_id)
    at.button(key="action.cancel.None").click().run()
    at.text_area(key="dialog.reason").input("bad data")
    # Meanwhile another operator cancels the market.
    operator.cancel_and_refund(
        principal("otto", "operator"), s.market_id, "bad data", expected_status="OPEN"
    )
    at.button(key="dialog.confirm").click().run()
    assert not at.exception
    already = "Already cancelled (OPERATOR_CANCELLED) — nothing changed."
    assert next(i.value for i in at.info) == already
    assert settlement_count(s.market_id) == {"REFUND": 1}
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    assert [r["result"] for r in market_audit(s.market_id)] == ["OK", "ALREADY_DONE"]


def test_resettle_through_the_dialog_and_a_refused_shortfall(db: str) -> None:
    s = overdue_market_with_bets(db)
    settle(s.market_id, "YES", actor="resolver", reason="evidence")
    at = open_market(login("admin"), s.market_id)
    assert action_buttons(at)["Re-settle YES"] is False
    at.button(key="action.resettle.NO").click().run()
    assert {m.label: m.value for m in at.metric}["Users paid"] == "2 of 3"
    at.text_area(key="dialog.reason").input("leaderboard misread")
    at.button(key="dialog.confirm").click().run()
    assert next(x.value for x in at.success).startswith("Re-settled NO: 4 bets rewritten")
    assert market_row(s.market_id)["outcome"] == "NO"

    # Back to YES would take carol's and bob's NO winnings back: spend bob's first.
    other = open_market_now()
    bob = s.users["bob"]
    while (left := balances({"b": bob})["b"]) >= 2:
        amount = min(Decimal(200), (left - 1).quantize(Decimal(1)))
        place_bet(user_id=bob, market_id=other, side="NO", action="BUY", amount=amount)
        other = open_market_now()
    at.run()
    at.button(key="action.resettle.YES").click().run()
    assert any("below zero" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "dialog.confirm"]
    shortfalls = next(d.value for d in at.dataframe if "short by" in d.value.columns)
    assert shortfalls["user id"].tolist() == [bob]
    at.button(key="dialog.close").click().run()
    assert market_row(s.market_id)["outcome"] == "NO"


def test_retry_is_only_offered_for_a_due_market(db: str) -> None:
    market_id = open_market_now()
    at = open_market(login("operator"), market_id)
    assert action_buttons(at)["Retry resolution now"] is False
    assert action_buttons(at)["Cancel & refund"] is True


# -- overview and audit log -----------------------------------------------------------------------


def test_overview_links_overdue_markets_and_charts_outcomes(db: str) -> None:
    overdue = overdue_market_with_bets(db)
    resolved = overdue_market_with_bets(db)
    cancelled = overdue_market_with_bets(db)
    settle(resolved.market_id, "YES", actor="resolver", reason="evidence")
    operator.cancel_and_refund(
        principal("otto", "operator"), cancelled.market_id, "bad", expected_status="OPEN"
    )
    at = login("viewer")
    assert not at.exception
    assert "Market health" in [t.value for t in at.title]
    assert "Needs attention, on hold or overdue (1)" in [h.value for h in at.subheader]
    [link] = [p for p in at.page_link if p.value.startswith("Market #")]
    assert link.value == f"Market #{overdue.market_id}"
    assert link.proto.query_string == f"market={overdue.market_id}"
    charts = at.get("vega_lite_chart")
    plotted = {
        json.loads(c.proto.spec).get("title"): [
            (r["reason"], r["markets"])
            for d in c.proto.datasets
            for r in pyarrow.ipc.open_stream(d.data.data).read_all().to_pylist()
        ]
        for c in charts
        if "title" in json.loads(c.proto.spec)
    }
    assert sorted(plotted) == ["Cancelled, by reason", "Resolved, by outcome"]
    assert plotted["Resolved, by outcome"] == [("YES", 1)]
    assert plotted["Cancelled, by reason"] == [("OPERATOR_CANCELLED", 1)]


def test_audit_log_lists_actions_newest_first_and_filters(db: str) -> None:
    s = overdue_market_with_bets(db)
    otto = principal("otto", "operator")
    operator.cancel_and_refund(otto, s.market_id, "bad data", expected_status="OPEN")
    with pytest.raises(Exception):  # noqa: B017 - the refusal itself is what is logged
        operator.cancel_and_refund(
            principal("vic", "viewer"), s.market_id, "x", expected_status="OPEN"
        )
    at = login("viewer")
    at.switch_page(page_file("audit")).run()
    assert not at.exception
    table = at.dataframe[0].value
    actions = [a for a in table["action"].tolist() if a != "create_account"]
    assert actions == ["login", *["cancel_and_refund"] * 2]
    assert table[table["action"] == "cancel_and_refund"]["result"].tolist() == ["REFUSED", "OK"]
    at.text_input(key="audit.action").input("login").run()
    assert at.dataframe[0].value["user"].tolist() == ["viewer1"]
    at.text_input(key="audit.action").input("").run()
    at.text_input(key="audit.user").input("otto").run()
    table = at.dataframe[0].value
    assert table["user"].tolist() == ["otto"]
    assert '"status": "CANCELLED"' in table["after"][0]
    assert audit.recent(username="otto")[0]["reason"] == "bad data"


def test_an_operator_holds_a_market_through_the_dialog_and_every_view_shows_it(db: str) -> None:
    s = overdue_market_with_bets(db)
    at = login("operator")
    open_market(at, s.market_id)
    at.button(key="action.hold.None").click().run()
    at.text_area(key="dialog.reason").input("KOL account looks compromised").run()
    at.button(key="dialog.confirm").click().run()
    assert not at.exception, at.exception
    assert any("On hold: no bets, no automatic resolution" in x.value for x in at.success)
    assert any("On hold" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Status"] == "OPEN · ON HOLD"
    buttons = action_buttons(at)
    assert (buttons["Put on hold"], buttons["Release hold"]) == (False, True)
    assert buttons["Retry resolution now"] is False and buttons["Cancel & refund"] is True

    at.switch_page(page_file("markets"))
    at.query_params.clear()
    at.run()
    assert at.dataframe[0].value["state"].tolist() == ["ON HOLD"]
    at.switch_page(page_file("overview")).run()
    assert {m.label: m.value for m in at.metric}["On hold"] == "1"
    assert "Needs attention, on hold or overdue (1)" in [h.value for h in at.subheader]
    assert [(r["action"], r["result"]) for r in market_audit(s.market_id)] == [
        ("hold_market", "OK")
    ]
