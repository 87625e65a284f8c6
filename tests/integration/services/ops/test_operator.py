"""Operator actions on the real database: role and reason checks, previews that match what then
happens, one effect under double clicks and racing operators, and the audit trail of each."""

from __future__ import annotations

import itertools
import threading
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from db.engine import read_session, retrying
from services.errors import ErrorCode, ServiceError
from services.money import settlement
from services.money.bets import place_bet
from services.money.integrity import check_integrity
from services.ops import audit, operator
from services.ops.auth import Principal
from services.vocabulary import MarketType, Result
from standins.xapi_standin import user_id
from tests.conftest import Standins
from tests.support import accounts
from tests.support.factories import close_market
from tests.support.pages import (
    TRADES,
    balances,
    bet_on,
    bet_statuses,
    market_audit,
    market_row,
    open_market_now,
    overdue_market_with_bets,
    settlement_count,
)

D = Decimal
DEPOSIT = D(500)
OPERATOR = Principal("olga", "operator")
ADMIN = Principal("ada", "admin")
VIEWER = Principal("vic", "viewer")
ANALYST = Principal("ana", "analyst")


@pytest.fixture(autouse=True)
def _accounts(db: str) -> None:
    """The services check every caller against its account: these principals' accounts exist."""
    accounts.ensure(OPERATOR, ADMIN, VIEWER, ANALYST)


_seq = itertools.count(1)


# -- refusals -------------------------------------------------------------------------------------

ACTIONS = {
    "cancel_and_refund": lambda who, m: operator.cancel_and_refund(
        who, m, "bad data", expected_status="OPEN"
    ),
    "resettle": lambda who, m: operator.resettle(
        who, m, "NO", "wrong outcome", expected_status="RESOLVED"
    ),
    "retry_resolution": lambda who, m: operator.retry_resolution(who, m, "try again"),
}


@pytest.mark.parametrize("who", [VIEWER, ANALYST, None], ids=["viewer", "analyst", "anonymous"])
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_only_operators_may_act_and_refusals_are_audited(
    db: str, who: Principal | None, action: str
) -> None:
    s = overdue_market_with_bets(db)
    before = balances(s.users)
    with pytest.raises(ServiceError) as err:
        ACTIONS[action](who, s.market_id)
    assert err.value.code == (
        ErrorCode.NOT_AUTHENTICATED if who is None else ErrorCode.PERMISSION_DENIED
    )
    assert market_row(s.market_id)["status"] == "OPEN"
    assert bet_statuses(s.market_id) == ["OPEN"] * s.bets
    assert balances(s.users) == before and settlement_count(s.market_id) == {}
    [row] = audit.recent(action=action)
    assert row["result"] == "REFUSED"
    assert row["username"] == (who.username if who else None)


@pytest.mark.parametrize("reason", ["", "   \n", None])
def test_a_reason_is_required_and_its_absence_is_audited(db: str, reason: Any) -> None:
    s = overdue_market_with_bets(db)
    with pytest.raises(ServiceError) as err:
        operator.cancel_and_refund(OPERATOR, s.market_id, reason, expected_status="OPEN")
    assert err.value.code == ErrorCode.REASON_REQUIRED
    assert market_row(s.market_id)["status"] == "OPEN"
    assert settlement_count(s.market_id) == {}
    [row] = market_audit(s.market_id)
    assert row["result"] == "REFUSED" and row["detail"] == "no reason given"


def test_bad_input_is_refused_and_changes_nothing(db: str) -> None:
    s = overdue_market_with_bets(db)
    with pytest.raises(ServiceError) as err:
        operator.cancel_and_refund(OPERATOR, 10**9, "gone", expected_status="OPEN")
    assert err.value.code == ErrorCode.UNKNOWN_MARKET
    with pytest.raises(ServiceError) as err:
        operator.cancel_and_refund(OPERATOR, s.market_id, "x" * 2001, expected_status="OPEN")
    assert err.value.code == ErrorCode.INVALID_INPUT
    with pytest.raises(ServiceError) as err:
        operator.cancel_and_refund(OPERATOR, s.market_id, "why", expected_status="CANCELLED")
    assert err.value.code == ErrorCode.INVALID_INPUT
    with pytest.raises(ServiceError) as err:
        operator.preview(s.market_id, "delete")
    assert err.value.code == ErrorCode.INVALID_INPUT
    with pytest.raises(ServiceError) as err:
        operator.preview(s.market_id, "resettle", "MAYBE")
    assert err.value.code == ErrorCode.INVALID_INPUT
    assert market_row(s.market_id)["status"] == "OPEN"
    assert settlement_count(s.market_id) == {}
    assert [r["result"] for r in market_audit(s.market_id)] == ["REFUSED", "REFUSED"]


# -- cancel & refund ------------------------------------------------------------------------------


def test_cancel_refunds_every_bet_as_previewed_and_audits_before_and_after(db: str) -> None:
    s = overdue_market_with_bets(db)
    p = operator.preview(s.market_id, "cancel")
    assert p.allowed and p.market_status == "OPEN"
    assert (p.bets, p.users, p.users_paid) == (4, 3, 3)
    paid_in = D(100) + D("60.50") + D(25) + D(40)
    assert p.total_paid == paid_in

    result = operator.cancel_and_refund(
        OPERATOR, s.market_id, "KOL data is wrong", expected_status="OPEN"
    )
    assert result.outcome is Result.OK
    assert (result.bets, result.users_paid, result.total_paid) == (p.bets, p.users_paid, paid_in)
    assert result.message == "Cancelled and refunded 4 bets: 3 users got 225.50 back."
    assert market_row(s.market_id) == {
        "status": "CANCELLED",
        "outcome": None,
        "cancel_reason": "OPERATOR_CANCELLED",
        "cancel_detail": "KOL data is wrong",
    }
    assert bet_statuses(s.market_id) == ["REFUNDED"] * 4
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    assert check_integrity().ok
    [row] = market_audit(s.market_id)
    assert (row["username"], row["role"], row["action"], row["result"]) == (
        "olga",
        "operator",
        "cancel_and_refund",
        "OK",
    )
    assert row["reason"] == "KOL data is wrong"
    assert row["before"] == {"status": "OPEN", "outcome": None, "cancel_reason": None}
    assert row["after"] == {
        "status": "CANCELLED",
        "outcome": None,
        "cancel_reason": "OPERATOR_CANCELLED",
    }
    with read_session() as session:
        actor = session.scalar(
            text("SELECT actor FROM settlements WHERE market_id = :m"), {"m": s.market_id}
        )
        # The change and its audit row were written by one database transaction.
        same_tx = session.scalar(
            text(
                "SELECT (SELECT xmin FROM settlements WHERE market_id = :m)"
                " = (SELECT xmin FROM audit_log WHERE target_id = CAST(:m AS text))"
            ),
            {"m": s.market_id},
        )
    assert actor == "olga"
    assert same_tx is True


def test_a_double_click_cancels_once_and_says_already_done(db: str) -> None:
    s = overdue_market_with_bets(db)
    first = operator.cancel_and_refund(ADMIN, s.market_id, "double click", expected_status="OPEN")
    second = operator.cancel_and_refund(ADMIN, s.market_id, "double click", expected_status="OPEN")
    assert (first.outcome, second.outcome) == (Result.OK, Result.ALREADY_DONE)
    assert second.message == "Already cancelled (OPERATOR_CANCELLED) — nothing changed."
    assert second.bets == 0
    assert settlement_count(s.market_id) == {"REFUND": 1}
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    assert [r["result"] for r in market_audit(s.market_id)] == ["OK", "ALREADY_DONE"]
    assert not operator.preview(s.market_id, "cancel").allowed


def _wait_for_lock_waiters(db: str, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0] >= n:
                return
            time.sleep(0.01)
    raise AssertionError(f"never saw {n} sessions waiting on a lock")


def test_two_operators_racing_cancel_once(db: str) -> None:
    """Both calls are made to wait on the market's row lock together, then released at once."""
    s = overdue_market_with_bets(db)
    results: list[operator.ActionResult] = []
    errors: list[BaseException] = []

    def click(who: Principal) -> None:
        try:
            results.append(
                operator.cancel_and_refund(who, s.market_id, "race", expected_status="OPEN")
            )
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(db) as blocker:
        blocker.execute("SELECT 1 FROM markets WHERE id = %s FOR UPDATE", (s.market_id,))
        threads = [threading.Thread(target=click, args=(who,)) for who in (OPERATOR, ADMIN)]
        for t in threads:
            t.start()
        _wait_for_lock_waiters(db, 2)
        blocker.rollback()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(r.outcome for r in results) == [Result.ALREADY_DONE, Result.OK]
    assert settlement_count(s.market_id) == {"REFUND": 1}
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    assert sorted(r["result"] for r in market_audit(s.market_id)) == ["ALREADY_DONE", "OK"]
    assert check_integrity().ok


def test_an_operator_acting_on_a_stale_view_changes_nothing(db: str) -> None:
    s = overdue_market_with_bets(db)
    retrying(
        lambda ses: settlement.settle(ses, s.market_id, "YES", actor="resolver", reason="evidence")
    )
    paid = balances(s.users)
    result = operator.cancel_and_refund(
        OPERATOR, s.market_id, "saw it open", expected_status="OPEN"
    )
    assert result.outcome is Result.STATE_CHANGED
    assert "now resolved YES" in result.message
    assert market_row(s.market_id)["status"] == "RESOLVED"
    assert balances(s.users) == paid
    [row] = market_audit(s.market_id)
    assert row["result"] == "STATE_CHANGED"
    assert row["before"]["status"] == row["after"]["status"] == "RESOLVED"


def test_cancelling_a_resolved_market_reverses_its_settlement_first(db: str) -> None:
    s = overdue_market_with_bets(db)
    retrying(
        lambda ses: settlement.settle(ses, s.market_id, "NO", actor="resolver", reason="evidence")
    )
    p = operator.preview(s.market_id, "cancel")
    assert p.allowed and p.reverses_settlement_id is not None and p.market_status == "RESOLVED"
    result = operator.cancel_and_refund(
        OPERATOR, s.market_id, "resolved on bad data", expected_status="RESOLVED"
    )
    assert result.ok and result.total_paid == p.total_paid
    assert balances(s.users) == dict.fromkeys(s.users, DEPOSIT)
    assert bet_statuses(s.market_id) == ["REFUNDED"] * 4
    [row] = market_audit(s.market_id)
    assert row["before"] == {"status": "RESOLVED", "outcome": "NO", "cancel_reason": None}
    assert row["after"]["status"] == "CANCELLED"
    assert check_integrity().ok


# -- re-settle ------------------------------------------------------------------------------------


def test_resettle_pays_the_other_side_as_previewed_and_a_repeat_is_already_done(db: str) -> None:
    s = overdue_market_with_bets(db)
    retrying(
        lambda ses: settlement.settle(ses, s.market_id, "YES", actor="resolver", reason="evidence")
    )
    p = operator.preview(s.market_id, "resettle", "NO")
    assert p.allowed and not p.shortfalls and p.users_paid == 2  # bob and carol hold NO
    assert not operator.preview(s.market_id, "resettle", "YES").allowed

    result = operator.resettle(
        OPERATOR, s.market_id, "NO", "leaderboard was misread", expected_status="RESOLVED"
    )
    assert result.ok and (result.users_paid, result.total_paid) == (2, p.total_paid)
    assert market_row(s.market_id)["outcome"] == "NO"
    assert bet_statuses(s.market_id) == ["LOST", "WON", "LOST", "WON"]
    again = operator.resettle(
        OPERATOR, s.market_id, "NO", "leaderboard was misread", expected_status="RESOLVED"
    )
    assert again.outcome is Result.ALREADY_DONE
    assert again.message == "Already resolved NO — nothing changed."
    assert settlement_count(s.market_id) == {"SETTLE": 2}
    rows = market_audit(s.market_id)
    assert [r["result"] for r in rows] == ["OK", "ALREADY_DONE"]
    assert rows[0]["before"]["outcome"] == "YES" and rows[0]["after"]["outcome"] == "NO"
    assert check_integrity().ok


def test_resettle_that_would_overdraw_a_user_is_refused_with_the_shortfall(db: str) -> None:
    s = overdue_market_with_bets(db)
    retrying(
        lambda ses: settlement.settle(ses, s.market_id, "YES", actor="resolver", reason="evidence")
    )
    # alice spends her winnings elsewhere: taking them back would take her below zero.
    alice = s.users["alice"]
    while (left := balances({"a": alice})["a"]) >= 2:
        amount = min(D(200), (left - 1).quantize(D(1)))
        place_bet(
            user_id=alice, market_id=open_market_now(), side="YES", action="BUY", amount=amount
        )
    p = operator.preview(s.market_id, "resettle", "NO")
    assert not p.allowed and set(p.shortfalls) == {alice}
    before = balances(s.users)

    with pytest.raises(ServiceError) as err:
        operator.resettle(OPERATOR, s.market_id, "NO", "misread", expected_status="RESOLVED")
    assert err.value.code == ErrorCode.NEGATIVE_BALANCE
    assert err.value.details["shortfalls"] == p.shortfalls
    assert market_row(s.market_id)["outcome"] == "YES" and balances(s.users) == before
    [row] = market_audit(s.market_id)
    assert row["result"] == "REFUSED" and row["detail"].startswith("NEGATIVE_BALANCE")


def test_resettle_of_a_cancelled_market(db: str) -> None:
    s = overdue_market_with_bets(db)
    operator.cancel_and_refund(OPERATOR, s.market_id, "too early", expected_status="OPEN")
    result = operator.resettle(
        OPERATOR, s.market_id, "YES", "data came back", expected_status="CANCELLED"
    )
    assert result.ok and market_row(s.market_id)["status"] == "RESOLVED"
    assert settlement_count(s.market_id) == {"REFUND": 1, "SETTLE": 1}
    assert check_integrity().ok


# -- retry resolution -----------------------------------------------------------------------------


def test_retry_resolution_runs_the_resolver_now(db: str, standins: Standins) -> None:
    row = next(r for r in standins.kolscan.expected_rows("daily") if r.x_handle)
    assert row.x_handle
    market_id = open_market_now(
        type=MarketType.FOLLOWER_GROWTH,
        x_handle=row.x_handle,
        threshold=D(500),
        baseline={
            "a": {
                "followers": 1000,
                "x_user_id": user_id(row.x_handle),
                "x_handle": row.x_handle.lower(),
            }
        },
        timeframe=None,
    )
    ids = bet_on(market_id, TRADES)
    standins.x.set_followers(row.x_handle, 1600)

    p = operator.preview(market_id, "retry")
    assert not p.allowed and p.note == "The market has not closed yet."
    with pytest.raises(ServiceError) as err:
        operator.retry_resolution(OPERATOR, market_id, "too soon")
    assert err.value.code == ErrorCode.MARKET_NOT_OPEN

    close_market(db, market_id, 2)
    assert operator.preview(market_id, "retry").allowed
    result = operator.retry_resolution(OPERATOR, market_id, "operator asked")
    assert result.ok and result.message == "Resolution ran: the market is now resolved YES."
    assert bet_statuses(market_id) == ["WON", "LOST", "WON", "LOST"]
    assert balances(ids)["alice"] > DEPOSIT

    again = operator.retry_resolution(OPERATOR, market_id, "operator asked")
    assert again.outcome is Result.ALREADY_DONE
    assert [r["result"] for r in market_audit(market_id)] == ["REFUSED", "OK", "ALREADY_DONE"]
    assert check_integrity().ok
