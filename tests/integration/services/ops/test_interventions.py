"""A hold on a market, a second pair of eyes on big money, and bulk actions: on the real
database, with the refusals that must change nothing."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import read_session
from services.errors import ErrorCode, ServiceError
from services.money.bets import BetError, place_bet
from services.money.integrity import check_integrity
from services.ops import alerting, approvals, audit, bulk, operator, proposals
from services.ops.auth import Principal
from services.resolution import resolver
from services.views import markets as market_views
from services.views import proposals as proposal_views
from services.vocabulary import ProposalStatus, Result, TradeAction
from tests.support import accounts
from tests.support.alerts import alerts
from tests.support.factories import close_market
from tests.support.pages import (
    balances,
    bet_on,
    market_row,
    open_market_now,
    overdue_market_with_bets,
    settlement_count,
)

OLGA = Principal("olga", "operator")
OTTO = Principal("otto", "operator")


@pytest.fixture(autouse=True)
def _accounts(db: str) -> None:
    """The services check every caller against its account: these principals' accounts exist."""
    accounts.ensure(OLGA, OTTO)


D = Decimal


@pytest.fixture()
def thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Approval above 100 paid out or 3 markets; typed count above 2 markets."""
    for name, value in {
        "APPROVAL_MIN_AMOUNT": "100",
        "APPROVAL_MIN_MARKETS": "3",
        "BULK_CONFIRM_MARKETS": "2",
        "BULK_CONFIRM_AMOUNT": "100000",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _held(market_id: int) -> tuple[bool, dt.timedelta]:
    with read_session() as s:
        row = s.execute(
            text("SELECT held_at IS NOT NULL, held_for FROM markets WHERE id = :m"),
            {"m": market_id},
        ).one()
    return bool(row[0]), row[1]


# -- hold ------------------------------------------------------------------------------------------


def test_a_held_market_takes_no_bets_and_the_resolver_leaves_it_alone(db: str) -> None:
    open_id = open_market_now()
    users = bet_on(open_id, [("ann", "YES", D(10))])
    result = operator.hold(OLGA, open_id, "KOL account looks compromised")
    assert result.ok and _held(open_id)[0]
    with pytest.raises(BetError) as err:
        place_bet(
            user_id=users["ann"], market_id=open_id, side="NO", action=TradeAction.BUY, amount=D(5)
        )
    assert err.value.code is ErrorCode.MARKET_ON_HOLD

    # Past its close and its grace period: still not claimed, listed as needing attention.
    close_market(db, open_id, 120)
    report = resolver.sweep()
    assert report.claimed == 0 and market_row(open_id)["status"] == "OPEN"
    page = market_views.list_markets(attention_only=True)
    [row] = [r for r in page.rows if r["id"] == open_id]
    assert row["held"] and not row["due"] and not row["overdue"]
    assert market_views.market_detail(open_id).held
    # Retry is refused while held.
    with pytest.raises(ServiceError) as err:
        operator.retry_resolution(OLGA, open_id, "try")
    assert "on hold" in err.value.message


def test_grace_does_not_run_out_while_held_and_release_restores_resolution(db: str) -> None:
    market_id = open_market_now()
    # Closed 40 minutes ago (grace 30): overdue. Then held for the last 35 minutes.
    close_market(db, market_id, 40)
    assert market_views.market_detail(market_id).overdue
    operator.hold(OLGA, market_id, "investigating")
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET held_at = now() - interval '35 minutes' WHERE id = %s",
            (market_id,),
        )
    operator.release_hold(OLGA, market_id, "all clear")
    held, held_for = _held(market_id)
    assert not held
    # Held after the close: 35 minutes, so the grace now ends 25 minutes from now.
    assert dt.timedelta(minutes=34) < held_for < dt.timedelta(minutes=36)
    detail = market_views.market_detail(market_id)
    assert detail.due and not detail.overdue
    # The resolver takes it again and, its grace not over, defers it rather than cancelling.
    report = resolver.sweep()
    assert report.claimed == 1 and report.deferred == 1
    assert market_row(market_id)["status"] == "OPEN"


def test_hold_refusals_change_nothing_and_a_held_market_can_be_cancelled(db: str) -> None:
    s = overdue_market_with_bets(db)
    operator.hold(OLGA, s.market_id, "investigating")
    with pytest.raises(ServiceError) as err:
        operator.hold(OTTO, s.market_id, "again")
    assert err.value.code is ErrorCode.STATE_CHANGED and "Already on hold" in err.value.message

    done = operator.cancel_and_refund(OLGA, s.market_id, "refund", expected_status="OPEN")
    assert done.ok and market_row(s.market_id)["status"] == "CANCELLED"
    assert check_integrity().ok

    with pytest.raises(ServiceError) as err:
        operator.release_hold(OLGA, s.market_id, "release")
    assert err.value.code is ErrorCode.STATE_CHANGED and "not on hold" in err.value.message
    assert market_row(s.market_id)["status"] == "CANCELLED"
    with pytest.raises(ServiceError):
        operator.hold(OLGA, s.market_id, "too late")


def test_a_held_market_released_twice_is_refused_the_second_time(db: str) -> None:
    market_id = open_market_now()
    operator.hold(OLGA, market_id, "check")
    operator.release_hold(OLGA, market_id, "fine")
    released = audit.recent(action="release_hold")[0]
    assert (released["before"]["held"], released["after"]["held"]) == (True, False)
    state = _held(market_id)
    with pytest.raises(ServiceError) as err:
        operator.release_hold(OTTO, market_id, "double click")
    assert err.value.code is ErrorCode.STATE_CHANGED
    assert _held(market_id) == state
    refused = audit.recent(action="release_hold")[0]
    assert (refused["username"], refused["result"]) == ("otto", "REFUSED")


def test_resolver_that_claimed_before_the_hold_does_not_settle_it(db: str) -> None:
    market_id = open_market_now()
    close_market(db, market_id, 120)
    [due] = resolver._claim(10, "slow-pass", dt.timedelta(minutes=30))
    operator.hold(OLGA, market_id, "hold lands mid-pass")
    report = resolver.SweepReport()
    resolver._handle([due], resolver._new_pass("test"), report)
    assert report.held == 1 and report.cancelled == 0
    assert market_row(market_id)["status"] == "OPEN" and _held(market_id)[0]


# -- approvals -------------------------------------------------------------------------------------


def test_big_money_waits_for_a_second_operator(db: str, thresholds: None) -> None:
    s = overdue_market_with_bets(db)  # 225.50 to refund: above 100
    before = balances(s.users), market_row(s.market_id)
    proposed = operator.cancel_and_refund(OLGA, s.market_id, "bad market", expected_status="OPEN")
    assert proposed.outcome is Result.PROPOSED and "proposal #" in proposed.message
    assert (balances(s.users), market_row(s.market_id)) == before
    [waiting] = proposal_views.waiting()
    assert (waiting["kind"], waiting["markets"], waiting["proposed_by"]) == (
        "cancel_and_refund",
        1,
        "olga",
    )

    # The proposer cannot approve their own; a viewer cannot either.
    with pytest.raises(ServiceError) as err:
        approvals.approve(OLGA, waiting["id"])
    assert err.value.code is ErrorCode.PERMISSION_DENIED
    with pytest.raises(ServiceError) as err:
        approvals.approve(accounts.principal("vic", "viewer"), waiting["id"])
    assert err.value.code is ErrorCode.PERMISSION_DENIED
    assert (balances(s.users), market_row(s.market_id)) == before

    decision = approvals.approve(OTTO, waiting["id"], "checked the KOL")
    assert [r["result"] for r in decision.results] == ["OK"]
    assert market_row(s.market_id)["status"] == "CANCELLED"
    assert settlement_count(s.market_id) == {"REFUND": 1}
    assert check_integrity().ok
    # Deciding it again changes nothing.
    with pytest.raises(ServiceError) as err:
        approvals.approve(accounts.principal("oz", "operator"), waiting["id"])
    assert err.value.code is ErrorCode.STATE_CHANGED
    assert settlement_count(s.market_id) == {"REFUND": 1}
    assert proposal_views.waiting() == []
    [done] = proposal_views.recent()
    assert (done["status"], done["decided_by"]) == ("APPROVED", "otto")


def test_an_expired_or_rejected_proposal_is_never_carried_out(db: str, thresholds: None) -> None:
    s = overdue_market_with_bets(db)
    operator.cancel_and_refund(OLGA, s.market_id, "first", expected_status="OPEN")
    operator.cancel_and_refund(OLGA, s.market_id, "second", expected_status="OPEN")
    first, second = (p["id"] for p in proposal_views.waiting())
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE proposals SET proposed_at = now() - interval '2 hours',"
            " expires_at = now() - interval '1 hour' WHERE id = %s",
            (first,),
        )
    with pytest.raises(ServiceError) as err:
        approvals.approve(OTTO, first)
    assert err.value.code is ErrorCode.STATE_CHANGED and "expired" in err.value.message
    for bad, code in (("1", ErrorCode.INVALID_INPUT), (2**63, ErrorCode.NOT_FOUND)):
        with pytest.raises(ServiceError) as err:
            approvals.approve(OTTO, bad)  # type: ignore[arg-type]
        assert err.value.code is code
    approvals.reject(OTTO, second, "not convinced")
    with pytest.raises(ServiceError):
        approvals.approve(accounts.principal("oz", "operator"), second)
    assert market_row(s.market_id)["status"] == "OPEN"
    assert {p["id"]: p["status"] for p in proposal_views.recent()} == {
        first: ProposalStatus.EXPIRED,
        second: ProposalStatus.REJECTED,
    }
    # The database itself refuses a decision by the proposer.
    with pytest.raises(psycopg.errors.CheckViolation), psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE proposals SET status = 'APPROVED', decided_by = proposed_by WHERE id = %s",
            (second,),
        )


def test_below_the_thresholds_nothing_changes_for_the_operator(db: str, thresholds: None) -> None:
    market_id = open_market_now()
    bet_on(market_id, [("ann", "YES", D(50))])  # 50 to refund: below 100
    done = operator.cancel_and_refund(OLGA, market_id, "small", expected_status="OPEN")
    assert done.ok and proposal_views.waiting() == []


# -- bulk ------------------------------------------------------------------------------------------


def test_bulk_preview_and_refusals(db: str, thresholds: None) -> None:
    with pytest.raises(ServiceError) as err:
        bulk.preview("cancel", [])
    assert err.value.code is ErrorCode.INVALID_INPUT and "at least one" in err.value.message
    with pytest.raises(ServiceError) as err:
        bulk.preview("delete", [1])
    assert err.value.code is ErrorCode.INVALID_INPUT
    for bad in (["1"], [0], [True], [2**63], [1.5]):
        with pytest.raises(ServiceError) as err:
            bulk.preview("cancel", bad)  # type: ignore[arg-type]
        assert err.value.code is ErrorCode.INVALID_INPUT

    ids = [open_market_now() for _ in range(3)]
    for market_id in ids:
        bet_on(market_id, [("ann", "YES", D(10))])
    previewed = bulk.preview("cancel", [*ids, ids[0], 10**9])
    assert [i.market_id for i in previewed.items] == [*ids, 10**9]
    assert [i.allowed for i in previewed.items] == [True, True, True, False]
    assert previewed.total_paid == D(30) and previewed.needs_typed_count
    assert not previewed.needs_approval  # 3 markets and 30: not above 3 or 100
    before = [market_row(m) for m in ids]
    with pytest.raises(ServiceError) as err:
        bulk.apply(OLGA, previewed, "cleanup", typed_count=2)
    assert "type the number of markets (3)" in err.value.message
    with pytest.raises(ServiceError) as err:
        bulk.apply(OLGA, previewed, "", typed_count=3)
    assert err.value.code is ErrorCode.REASON_REQUIRED
    assert [market_row(m) for m in ids] == before

    # One market moves between the preview and the apply: it is not touched.
    operator.cancel_and_refund(OTTO, ids[1], "someone else", expected_status="OPEN")
    seen: list[int] = []
    done = bulk.apply(
        OLGA, previewed, "cleanup", typed_count=3, on_progress=lambda n, _t, _r: seen.append(n)
    )
    assert seen == [1, 2, 3]
    assert [r.result for r in done.results] == [Result.OK, Result.ALREADY_DONE, Result.OK]
    assert all(settlement_count(m) == {"REFUND": 1} for m in ids)
    assert audit.recent(action="bulk_cancel")[0]["result"] == "OK"
    assert check_integrity().ok


def test_bulk_cancel_above_the_thresholds_is_a_proposal(db: str, thresholds: None) -> None:
    ids = [open_market_now() for _ in range(4)]
    previewed = bulk.preview("cancel", ids)
    assert previewed.needs_approval
    done = bulk.apply(OLGA, previewed, "cleanup", typed_count=4)
    assert done.proposal is not None and done.results == []
    assert {market_row(m)["status"] for m in ids} == {"OPEN"}
    decision = approvals.approve(OTTO, done.proposal.id)
    assert [r["result"] for r in decision.results] == ["OK"] * 4
    assert {market_row(m)["status"] for m in ids} == {"CANCELLED"}


def test_bulk_cancel_under_a_racing_resolver_refunds_each_market_once(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPROVAL_MIN_MARKETS", "1000")
    monkeypatch.setenv("APPROVAL_MIN_AMOUNT", "1000000")
    get_settings.cache_clear()
    # Closed two hours ago with no snapshot: the resolver cancels them too (stale data).
    ids = [overdue_market_with_bets(db).market_id for _ in range(30)]
    previewed = bulk.preview("cancel", ids)
    assert len(previewed.targets) == 30 and not previewed.needs_approval
    swept: list[resolver.SweepReport] = []
    sweeper = threading.Thread(target=lambda: swept.append(resolver.sweep(batch_size=3)))
    sweeper.start()
    done = bulk.apply(OLGA, previewed, "bulk under a sweep", typed_count=30)
    sweeper.join()
    get_settings.cache_clear()
    assert done.proposal is None and len(done.results) == 30
    # The resolver's cancels are "already cancelled" for the bulk step.
    assert {r.result for r in done.results} <= {Result.OK, Result.ALREADY_DONE}
    # Every market was cancelled by exactly one of the two.
    assert done.count(Result.OK) + swept[0].cancelled == 30
    for market_id in ids:
        assert settlement_count(market_id) == {"REFUND": 1}
    with read_session() as s:
        refunds = s.execute(
            text(
                "SELECT market_id, count(*) FROM ledger_transactions WHERE kind = 'REFUND'"
                " AND market_id = ANY(:ids) GROUP BY market_id"
            ),
            {"ids": ids},
        ).all()
    assert sorted(n for _, n in refunds) == [1] * 30
    assert check_integrity().ok


def test_proposal_needs_approval_is_strictly_above(thresholds: None) -> None:
    assert not proposals.needs_approval(3, D(100))
    assert proposals.needs_approval(4, D(0))
    assert proposals.needs_approval(1, D("100.000001"))


def test_a_stale_or_bad_big_action_is_refused_not_proposed(db: str, thresholds: None) -> None:
    s = overdue_market_with_bets(db)
    with pytest.raises(ServiceError) as err:
        operator.cancel_and_refund(OLGA, s.market_id, "bad", expected_status="BOGUS")
    assert err.value.code is ErrorCode.INVALID_INPUT
    stale = operator.cancel_and_refund(OLGA, s.market_id, "stale", expected_status="RESOLVED")
    assert stale.outcome is Result.STATE_CHANGED
    with pytest.raises(ServiceError) as err:
        operator.resettle(OLGA, s.market_id, "MAYBE", "bad", expected_status="OPEN")
    assert err.value.code is ErrorCode.INVALID_INPUT
    assert proposal_views.waiting() == [] and market_row(s.market_id)["status"] == "OPEN"


def test_a_waiting_proposal_raises_an_alert_until_it_is_decided(db: str, thresholds: None) -> None:
    s = overdue_market_with_bets(db)
    operator.cancel_and_refund(OLGA, s.market_id, "big", expected_status="OPEN")
    [waiting] = proposal_views.waiting()
    assert "approvals_waiting" in alerting.evaluate().conditions
    [alert] = [a for a in alerts(db) if a[0] == "approvals_waiting"]
    assert alert[2] == "FIRING"
    approvals.approve(OTTO, waiting["id"])
    assert "approvals_waiting" not in alerting.evaluate().conditions
    assert [a[2] for a in alerts(db) if a[0] == "approvals_waiting"] == ["RESOLVED"]
