"""What a quarantine changes: the exact list of markets whose active settlement rests on the
run, their re-evaluation by the resolver's own rules (stays / flips / undecidable, with the
evidence), and applying it: exactly the previewed money, once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text

from db.engine import read_session
from services.errors import ErrorCode, ServiceError
from services.money.bets import place_bet
from services.money.integrity import check_integrity
from services.ops import audit, operator, quarantine, reevaluation
from services.ops.auth import Principal
from services.vocabulary import Result, TradeAction, Verdict
from tests.support import accounts
from tests.support.interventions import plant
from tests.support.pages import balances, market_row, open_market_now
from tests.support.scrape_data import NOW, board, scrape_run

ANALYST = Principal("ana", "analyst")
OPERATOR = Principal("olga", "operator")


@pytest.fixture(autouse=True)
def _accounts(db: str) -> None:
    """The services check every caller against its account: these principals' accounts exist."""
    accounts.ensure(ANALYST, OPERATOR)


def _paid_out_total() -> Decimal:
    """Everything users' accounts ever received from markets (payouts and refunds), net."""
    with read_session() as s:
        return Decimal(
            s.execute(
                text("SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'USER'")
            ).scalar_one()
        )


def test_a_quarantine_lists_exactly_the_markets_and_applying_moves_the_previewed_money(
    db: str,
) -> None:
    planted = plant(db)
    assert check_integrity().ok
    quarantine.set_quarantine(ANALYST, planted.run_id, True, "ranks swapped on the page")
    assert check_integrity().ok

    # The list is exact: these markets, not the ones re-settled or cancelled since, nor the one
    # decided from the other run; the quarantine dialog shows the same list.
    listed = quarantine.quarantine_preview(planted.run_id).resolved_markets
    assert sorted(m["market_id"] for m in listed) == sorted(planted.expected)

    before = reevaluation.preview(planted.run_id)
    assert before.quarantined
    assert {m.market_id: m.verdict for m in before.markets} == planted.expected
    for m in before.markets:
        # The evidence replaced is run Q's; the evidence used is run R's or none.
        assert m.evidence_replaced["run_id"] == planted.run_id
        if m.verdict is Verdict.UNDECIDABLE:
            assert m.new_outcome is None and m.reason_code == ErrorCode.STALE_SCRAPE_DATA
            assert "run_id" not in m.evidence_used
            assert m.total_paid > 0  # the refund
        else:
            assert m.evidence_used["run_id"] == planted.other_run_id
            assert m.evidence_used["kol_a"]["rank"] == 2  # A is second in R
            if m.verdict is Verdict.FLIPS:
                assert (m.outcome, m.new_outcome) == ("YES", "NO")
                assert m.total_paid > 0
            else:
                assert (m.outcome, m.new_outcome, m.total_paid) == ("YES", "YES", 0)
    assert before.count(Verdict.FLIPS) == 2 and before.count(Verdict.UNDECIDABLE) == 1

    wallets_before = _paid_out_total()
    progress: list[tuple[int, int]] = []
    applied = reevaluation.apply(
        OPERATOR,
        before,
        "run 1 quarantined: ranks swapped",
        on_progress=lambda n, total, _r: progress.append((n, total)),
    )
    assert applied.proposal is None
    assert progress == [(n, 4) for n in range(1, 5)]
    assert [r.result for r in applied.results] == [Result.OK] * 4
    # Exactly the previewed money moved, market by market.
    assert {r.market_id: r.total_paid for r in applied.results} == {
        m.market_id: m.total_paid for m in before.markets
    }
    assert check_integrity().ok
    for m in before.markets:
        row = market_row(m.market_id)
        if m.verdict is Verdict.UNDECIDABLE:
            assert (row["status"], row["cancel_reason"]) == ("CANCELLED", "STALE_SCRAPE_DATA")
        else:
            assert (row["status"], row["outcome"]) == ("RESOLVED", m.new_outcome)
    # Audited per market, in the transaction of its change.
    rows = [r for r in audit.recent(action="apply_reevaluation") if r["result"] == "OK"]
    assert sorted(int(r["target"].split(":")[1]) for r in rows) == sorted(planted.expected)

    # Nothing rests on the run any more: a second apply changes nothing.
    after_first = (_paid_out_total(), {m: balances(u) for m, u in planted.users.items()})
    again = reevaluation.apply(OPERATOR, before, "double click")
    assert [r.result for r in again.results] == [Result.ALREADY_DONE] * 4
    assert reevaluation.preview(planted.run_id).markets == []
    assert (_paid_out_total(), {m: balances(u) for m, u in planted.users.items()}) == after_first
    assert check_integrity().ok

    # Released by mistake and quarantined again: nothing listed, nothing paid twice.
    quarantine.set_quarantine(ANALYST, planted.run_id, False, "oops")
    quarantine.set_quarantine(ANALYST, planted.run_id, True, "no, it is bad")
    assert reevaluation.preview(planted.run_id).markets == []
    assert quarantine.quarantine_preview(planted.run_id).resolved_markets == []
    assert (_paid_out_total(), {m: balances(u) for m, u in planted.users.items()}) == after_first
    assert check_integrity().ok
    assert _paid_out_total() != wallets_before


def test_a_market_changed_since_the_preview_is_not_touched(db: str) -> None:
    planted = plant(db)
    quarantine.set_quarantine(ANALYST, planted.run_id, True, "bad run")
    previewed = reevaluation.preview(planted.run_id)
    flip = next(m for m in previewed.markets if m.verdict is Verdict.FLIPS)
    # Another operator cancels one of the flips in the meantime.
    operator.cancel_and_refund(
        accounts.principal("otto", "operator"),
        flip.market_id,
        "other op",
        expected_status="RESOLVED",
    )
    state = market_row(flip.market_id), balances(planted.users[flip.market_id])
    applied = reevaluation.apply(OPERATOR, previewed, "apply")
    by_market = {r.market_id: r for r in applied.results}
    assert by_market[flip.market_id].result is Result.STATE_CHANGED
    assert "changed since the preview" in by_market[flip.market_id].message
    assert (market_row(flip.market_id), balances(planted.users[flip.market_id])) == state
    assert [r.result for r in applied.results].count(Result.OK) == 3
    assert check_integrity().ok


def test_a_run_released_since_the_preview_changes_nothing(db: str) -> None:
    planted = plant(db)
    quarantine.set_quarantine(ANALYST, planted.run_id, True, "bad run")
    previewed = reevaluation.preview(planted.run_id)
    quarantine.set_quarantine(ANALYST, planted.run_id, False, "it was fine")
    states = {m: market_row(m) for m in planted.expected}
    applied = reevaluation.apply(OPERATOR, previewed, "apply")
    assert {r.result for r in applied.results} == {Result.STATE_CHANGED}
    assert {m: market_row(m) for m in planted.expected} == states


def test_bad_input_is_refused_and_changes_nothing(db: str) -> None:
    planted = plant(db)
    quarantine.set_quarantine(ANALYST, planted.run_id, True, "bad run")
    previewed = reevaluation.preview(planted.run_id)
    states = {m: market_row(m) for m in planted.expected}
    with pytest.raises(ServiceError) as err:
        reevaluation.apply(ANALYST, previewed, "analysts may not move money")
    assert err.value.code is ErrorCode.PERMISSION_DENIED
    with pytest.raises(ServiceError) as err:
        reevaluation.apply(OPERATOR, previewed, "   ")
    assert err.value.code is ErrorCode.REASON_REQUIRED
    unused = scrape_run(db, "weekly", NOW, board(3))  # decided nothing
    empty = reevaluation.preview(unused)
    assert empty.markets == []
    with pytest.raises(ServiceError) as err:
        reevaluation.apply(OPERATOR, empty, "nothing here")
    assert err.value.code is ErrorCode.INVALID_INPUT
    with pytest.raises(ServiceError) as err:
        reevaluation.preview(10**9)
    assert err.value.code is ErrorCode.NOT_FOUND
    assert {m: market_row(m) for m in planted.expected} == states


def test_users_who_would_go_negative_are_listed_and_that_flip_is_refused(db: str) -> None:
    planted = plant(db)
    flip = next(m for m, v in planted.expected.items() if v is Verdict.FLIPS)
    ann = planted.users[flip]["ann"]  # won YES on it, then spends nearly everything elsewhere
    elsewhere = open_market_now(liquidity=Decimal(100_000))
    spend = (balances({"ann": ann})["ann"] - Decimal(1)).quantize(Decimal("0.01"))
    place_bet(user_id=ann, market_id=elsewhere, side="YES", action=TradeAction.BUY, amount=spend)
    quarantine.set_quarantine(ANALYST, planted.run_id, True, "bad run")

    previewed = reevaluation.preview(planted.run_id)
    listed = {m.market_id: m for m in previewed.markets}
    assert set(listed[flip].shortfalls) == {ann}
    assert all(not m.shortfalls for k, m in listed.items() if k != flip)
    before = market_row(flip), balances(planted.users[flip])

    applied = reevaluation.apply(OPERATOR, previewed, "apply")
    by_market = {r.market_id: r for r in applied.results}
    assert by_market[flip].result is Result.REFUSED
    assert f"user {ann} short" in by_market[flip].message
    assert (market_row(flip), balances(planted.users[flip])) == before
    assert [r.result for r in applied.results].count(Result.OK) == 3
    assert check_integrity().ok
