"""Settlement, cancel+refund and re-settle on the real database: exact money on hand-followed
examples, bad input refused, atomicity under a failure or a killed connection at every step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from config import get_settings
from services.errors import ErrorCode, ServiceError
from services.money import settlement
from services.money.bets import place_bet
from services.money.settlement import SettlementResult
from services.vocabulary import Result
from tests.support import settling
from tests.support.books import (
    Book,
    assert_clean,
    busy_book,
    fund_house,
    new_book,
    new_market,
    one,
    q,
    snapshot,
)

D = Decimal


# -- reading the database -----------------------------------------------------------------------


def balance(user_id: int) -> Decimal:
    return one("SELECT balance FROM accounts WHERE user_id = :u", u=user_id)


def system(kind: str) -> Decimal:
    return one("SELECT balance FROM accounts WHERE kind = :k", k=kind)


def escrow(market_id: int) -> Decimal:
    return one("SELECT balance FROM accounts WHERE market_id = :m", m=market_id)


def stats(user_id: int) -> tuple[int, int, Decimal]:
    row = q("SELECT bets_count, wins, profit FROM users WHERE id = :u", u=user_id)[0]
    return (row[0], row[1], row[2])


# -- settle -------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["YES", "NO"])
def test_settle_pays_net_winning_shares_and_the_rest_to_the_house(db: str, outcome: str) -> None:
    book = busy_book()
    mid = book.market_id
    assert_clean()
    before = {n: balance(u) for n, u in book.users.items()}
    stats_before = {n: stats(u) for n, u in book.users.items()}
    house, fee, pot = system("HOUSE"), system("FEE"), escrow(mid)

    result = settling.settle(mid, outcome, actor="ops", reason="kolscan snapshot #1")

    assert result.status is Result.OK and result.applied
    assert_clean()
    expected = {n: book.payout(n, outcome) for n in book.users}
    # The rule, followed by hand: dave sold everything and alice half, so neither is paid again.
    alice_yes = book.receipts["alice"][0].shares - book.receipts["alice"][1].shares
    assert expected["dave"] == 0
    assert expected["alice"] == (alice_yes if outcome == "YES" else 0)
    assert expected["carol"] == book.receipts["carol"][0 if outcome == "YES" else 1].shares
    for name, uid in book.users.items():
        assert balance(uid) == before[name] + expected[name], name
        bets_count, wins, profit = stats(uid)
        assert bets_count == stats_before[name][0]
        assert wins == (1 if expected[name] > 0 else 0), name
        assert profit == expected[name] - book.net_cost(name), name
    total = sum(expected.values(), D(0))
    assert result.total_paid == total
    assert result.users_paid == sum(1 for v in expected.values() if v > 0)
    assert result.to_house == pot - total
    assert system("HOUSE") == house + pot - total
    assert system("FEE") == fee
    assert escrow(mid) == 0
    assert result.bets == 10

    market = q("SELECT status, outcome, resolved_at IS NOT NULL FROM markets WHERE id = :m", m=mid)
    assert market == [("RESOLVED", outcome, True)]
    assert q(
        "SELECT kind, outcome, active, actor, reason FROM settlements WHERE market_id = :m", m=mid
    ) == [("SETTLE", outcome, True, "ops", "kolscan snapshot #1")]
    assert q(
        "SELECT idempotency_key, kind FROM ledger_transactions"
        " WHERE market_id = :m AND kind NOT IN ('BET', 'SELL', 'LIQUIDITY')",
        m=mid,
    ) == [(f"settle:{mid}:1", "PAYOUT")]
    # Bets: status by side, SELL rows paid nothing, each position's payout split exactly.
    for side, action, status, paid in q(
        "SELECT side, action, status, payout FROM bets WHERE market_id = :m", m=mid
    ):
        assert status == ("WON" if side == outcome else "LOST")
        if action == "SELL" or side != outcome:
            assert paid == 0
    for name, uid in book.users.items():
        for side in ("YES", "NO"):
            rows = q(
                "SELECT p.payout, (SELECT sum(payout) FROM bets b WHERE b.market_id = p.market_id"
                " AND b.user_id = p.user_id AND b.side = p.side)"
                " FROM positions p WHERE market_id = :m AND user_id = :u AND side = :s",
                m=mid,
                u=uid,
                s=side,
            )
            if rows:
                want = book.payout(name, side) if side == outcome else D(0)
                assert rows == [(want, want)], (name, side)


def test_bet_payouts_split_a_position_exactly_by_shares_bought(db: str) -> None:
    book = new_book(["erin"])
    receipts = [book.trade("erin", "YES", "BUY", D(amount)) for amount in ("1", "1", "1", "2.5")]
    sold = book.trade("erin", "YES", "SELL", D("0.333333"))
    settling.settle(book.market_id, "YES", actor="ops", reason="r")
    rows = q(
        "SELECT id, action, payout FROM bets WHERE market_id = :m ORDER BY id", m=book.market_id
    )
    held = sum((r.shares for r in receipts), D(0)) - sold.shares
    buy_payouts = [p for _, action, p in rows if action == "BUY"]
    assert sum(buy_payouts, D(0)) == held
    bought = sum((r.shares for r in receipts), D(0))
    for r, p in zip(receipts, buy_payouts, strict=True):
        # Rounded down cumulatively: within one micro-unit of the exact share.
        exact = held * r.shares / bought
        assert abs(p - exact) < D("0.000001"), (p, exact)
    assert rows[-1][2] == 0  # the SELL row
    assert_clean()


def test_settle_a_market_without_bets_returns_the_liquidity(db: str) -> None:
    fund_house(D(5000))
    mid = new_market(D(1000))
    assert system("HOUSE") == D(4000)
    result = settling.settle(mid, "NO", actor="ops", reason="r")
    assert (result.bets, result.users_paid, result.total_paid, result.to_house) == (
        0,
        0,
        D(0),
        D(1000),
    )
    assert system("HOUSE") == D(5000)
    assert escrow(mid) == 0
    assert_clean()


@pytest.mark.parametrize("outcome", ["YES", "NO"])
def test_settle_bets_on_one_side_only(db: str, outcome: str) -> None:
    book = new_book(["alice", "bob"])
    book.trade("alice", "YES", "BUY", D(60))
    book.trade("bob", "YES", "BUY", D(25))
    pot = escrow(book.market_id)
    result = settling.settle(book.market_id, outcome, actor="ops", reason="r")
    for name, uid in book.users.items():
        assert balance(uid) == D(1000) - book.paid[name] + book.payout(name, outcome)
    assert result.total_paid == (book.held["alice", "YES"] + book.held["bob", "YES"]) * (
        outcome == "YES"
    )
    assert result.to_house == pot - result.total_paid
    assert_clean()


# -- cancel and refund --------------------------------------------------------------------------


def test_refund_gives_back_paid_in_minus_received_and_the_house_covers_fees(db: str) -> None:
    book = busy_book()
    mid = book.market_id
    before = {n: balance(u) for n, u in book.users.items()}
    house, fee, pot = system("HOUSE"), system("FEE"), escrow(mid)

    result = settling.cancel_and_refund(
        mid, ErrorCode.SCRAPE_FAILED, "kolscan down for 30 min", actor="resolver"
    )

    assert result.applied and result.market_status == "CANCELLED"
    assert_clean()
    refunds = {n: book.refund(n) for n in book.users}
    # By hand: alice paid 100 and got her half-sale's money back already.
    assert refunds["alice"] == D(100) - book.receipts["alice"][1].money
    assert refunds["carol"] == D(50)
    for name, uid in book.users.items():
        assert balance(uid) == before[name] + refunds[name], name
        _, wins, profit = stats(uid)
        assert wins == 0
        assert profit == refunds[name] - book.net_cost(name)
    total = sum(refunds.values(), D(0))
    assert result.total_paid == total
    assert result.to_house == pot - total
    assert system("HOUSE") == house + pot - total
    assert system("FEE") == fee  # fees stay earned; the house refunds them
    assert q(
        "SELECT status, outcome, cancel_reason, cancel_detail, cancelled_at IS NOT NULL"
        " FROM markets WHERE id = :m",
        m=mid,
    ) == [("CANCELLED", None, "SCRAPE_FAILED", "kolscan down for 30 min", True)]
    assert {s for (s,) in q("SELECT status FROM bets WHERE market_id = :m", m=mid)} == {"REFUNDED"}
    # Each user's bets carry exactly their refund.
    for name, uid in book.users.items():
        got = one(
            "SELECT coalesce(sum(payout), 0) FROM bets WHERE market_id = :m AND user_id = :u",
            m=mid,
            u=uid,
        )
        assert got == refunds[name], name
    assert q("SELECT kind, outcome, reason FROM settlements WHERE market_id = :m", m=mid) == [
        ("REFUND", None, "SCRAPE_FAILED: kolscan down for 30 min")
    ]
    assert q(
        "SELECT idempotency_key FROM ledger_transactions WHERE market_id = :m AND kind = 'REFUND'",
        m=mid,
    ) == [(f"refund:{mid}:1",)]


def test_refund_is_floored_at_zero_for_a_user_who_sold_at_a_profit(db: str) -> None:
    book = new_book(["frank", "gina"], deposit=D(5000))
    f = book.trade("frank", "YES", "BUY", D(50))
    for _ in range(4):
        book.trade("gina", "YES", "BUY", D(150))
    book.trade("frank", "YES", "SELL", f.shares)
    assert book.received["frank"] > book.paid["frank"]  # the premise: a profitable sale
    frank_before = balance(book.users["frank"])
    pot = escrow(book.market_id)
    result = settling.cancel_and_refund(
        book.market_id, ErrorCode.OPERATOR_CANCELLED, "bad question", actor="ops"
    )
    assert balance(book.users["frank"]) == frank_before
    assert stats(book.users["frank"])[2] == book.received["frank"] - book.paid["frank"]
    assert result.total_paid == D(600)
    assert result.to_house == pot - D(600)
    assert_clean()


def test_refund_of_a_market_without_bets(db: str) -> None:
    fund_house(D(1000))
    mid = new_market(D(1000))
    result = settling.cancel_and_refund(mid, "MISSING_METADATA", "no baseline", actor="ops")
    assert (result.total_paid, result.to_house) == (D(0), D(1000))
    assert system("HOUSE") == D(1000)
    assert_clean()


# -- re-settle and cancel of a resolved market --------------------------------------------------


def money_state(book: Book) -> dict[str, Any]:
    return {
        "users": {n: (balance(u), stats(u)) for n, u in book.users.items()},
        "house": system("HOUSE"),
        "fee": system("FEE"),
        "escrow": escrow(book.market_id),
        "bets": q(
            "SELECT id, status, payout FROM bets WHERE market_id = :m ORDER BY id",
            m=book.market_id,
        ),
        "positions": q(
            "SELECT user_id, side, payout FROM positions WHERE market_id = :m ORDER BY 1, 2",
            m=book.market_id,
        ),
    }


def test_resettle_yes_no_yes_returns_exactly_to_the_first_settlement(db: str) -> None:
    book = busy_book()
    mid = book.market_id
    before = {n: balance(u) for n, u in book.users.items()}
    settling.settle(mid, "YES", actor="ops", reason="first")
    first = money_state(book)
    assert_clean()

    to_no = settling.resettle(
        mid, "NO", actor="ops", reason="wrong snapshot", expected_status="RESOLVED"
    )
    assert to_no.applied and to_no.reversal_transaction_id is not None
    assert_clean()
    for name, uid in book.users.items():
        assert balance(uid) == before[name] + book.payout(name, "NO"), name
        assert stats(uid)[1] == (1 if book.payout(name, "NO") > 0 else 0)
    assert q("SELECT outcome FROM markets WHERE id = :m", m=mid) == [("NO",)]

    settling.resettle(mid, "YES", actor="ops", reason="right after all", expected_status="RESOLVED")
    assert_clean()
    assert money_state(book) == first

    rows = q(
        "SELECT kind, outcome, active, reversal_transaction_id IS NOT NULL FROM settlements"
        " WHERE market_id = :m ORDER BY id",
        m=mid,
    )
    assert rows == [
        ("SETTLE", "YES", False, True),
        ("SETTLE", "NO", False, True),
        ("SETTLE", "YES", True, False),
    ]
    keys = [
        k
        for (k,) in q(
            "SELECT idempotency_key FROM ledger_transactions WHERE market_id = :m"
            " AND kind IN ('PAYOUT', 'REVERSAL') ORDER BY id",
            m=mid,
        )
    ]
    assert keys[0] == f"settle:{mid}:1" and keys[2] == f"settle:{mid}:2"
    assert keys[4] == f"settle:{mid}:3" and keys[1].startswith("reverse:settlement:")
    # Every reversal entry negates exactly one original entry, which is left as it was.
    bad = q(
        "SELECT r.id FROM ledger_entries r JOIN ledger_transactions t ON t.id = r.transaction_id"
        " LEFT JOIN ledger_entries o ON o.id = r.reverses_entry_id"
        " WHERE t.market_id = :m AND t.kind = 'REVERSAL'"
        "   AND (o.id IS NULL OR o.amount <> -r.amount OR o.account_id <> r.account_id"
        "        OR o.transaction_id <> t.reverses_transaction_id)",
        m=mid,
    )
    assert bad == []


def test_resettle_to_the_same_outcome_is_already_done(db: str) -> None:
    book = busy_book()
    settling.settle(book.market_id, "YES", actor="ops", reason="r")
    state = snapshot()
    again = settling.resettle(
        book.market_id, "YES", actor="ops", reason="r", expected_status="RESOLVED"
    )
    assert again.status is Result.ALREADY_DONE
    assert snapshot() == state


def test_cancel_a_resolved_market_reverses_then_refunds(db: str) -> None:
    book = busy_book()
    mid = book.market_id
    before = {n: balance(u) for n, u in book.users.items()}
    house = system("HOUSE")
    pot = escrow(mid)
    settling.settle(mid, "NO", actor="ops", reason="r")
    result = settling.cancel_and_refund(
        mid, ErrorCode.OPERATOR_CANCELLED, "disputed", actor="ops", expected_status="RESOLVED"
    )
    assert result.applied and result.reversal_transaction_id is not None
    assert_clean()
    total = D(0)
    for name, uid in book.users.items():
        assert balance(uid) == before[name] + book.refund(name), name
        assert stats(uid)[1:] == (0, book.refund(name) - book.net_cost(name))
        total += book.refund(name)
    assert system("HOUSE") == house + pot - total
    assert q("SELECT status, outcome FROM markets WHERE id = :m", m=mid) == [("CANCELLED", None)]


def test_resettle_a_cancelled_market(db: str) -> None:
    book = busy_book()
    mid = book.market_id
    before = {n: balance(u) for n, u in book.users.items()}
    settling.cancel_and_refund(mid, ErrorCode.X_API_UNAVAILABLE, "api down", actor="resolver")
    result = settling.resettle(
        mid, "YES", actor="ops", reason="data came back", expected_status="CANCELLED"
    )
    assert result.applied
    assert_clean()
    for name, uid in book.users.items():
        assert balance(uid) == before[name] + book.payout(name, "YES"), name
        assert stats(uid)[2] == book.payout(name, "YES") - book.net_cost(name)
    assert q(
        "SELECT status, outcome, cancel_reason, cancelled_at FROM markets WHERE id = :m", m=mid
    ) == [("RESOLVED", "YES", None, None)]


def test_resettle_refuses_when_a_winner_spent_the_payout_and_changes_nothing(db: str) -> None:
    book = busy_book()
    mid = book.market_id
    settling.settle(mid, "YES", actor="ops", reason="r")
    alice, carol = book.users["alice"], book.users["carol"]
    # alice bets most of her money on another market; carol keeps hers.
    other = new_market(D(100_000))
    spent = (balance(alice) - D(5)).quantize(D("0.01"))
    place_bet(user_id=alice, market_id=other, side="NO", action="BUY", amount=spent)
    state = snapshot()

    with pytest.raises(ServiceError) as err:
        settling.resettle(mid, "NO", actor="ops", reason="r", expected_status="RESOLVED")
    assert err.value.code == ErrorCode.NEGATIVE_BALANCE
    shortfalls = err.value.details["shortfalls"]
    assert shortfalls == {alice: book.payout("alice", "YES") - balance(alice)}
    assert carol not in shortfalls and book.payout("carol", "YES") > 0
    assert str(alice) in err.value.message
    assert snapshot() == state

    # The same refusal for a cancel of the resolved market, and the preview warns of it.
    with pytest.raises(ServiceError) as err:
        settling.cancel_and_refund(
            mid, ErrorCode.OPERATOR_CANCELLED, "x", actor="ops", expected_status="RESOLVED"
        )
    assert err.value.details["shortfalls"] == shortfalls
    assert settlement.preview_refund(mid).shortfalls == shortfalls
    assert snapshot() == state
    assert_clean()


# -- previews -----------------------------------------------------------------------------------


def test_previews_match_what_the_operation_then_does(db: str) -> None:
    book = busy_book()
    mid = book.market_id
    state = snapshot()
    yes = settlement.preview_settle(mid, "YES")
    refund = settlement.preview_refund(mid)
    assert snapshot() == state
    assert (yes.bets, yes.users, yes.reverses_settlement_id) == (10, 5, None)
    done = settling.settle(mid, "YES", actor="ops", reason="r")
    assert (yes.users_paid, yes.total_paid, yes.to_house) == (
        done.users_paid,
        done.total_paid,
        done.to_house,
    )
    # From RESOLVED the preview accounts for the reversal of the active settlement.
    no = settlement.preview_settle(mid, "NO")
    refund_after = settlement.preview_refund(mid)
    assert no.reverses_settlement_id == done.settlement_id and no.shortfalls == {}
    assert (refund_after.total_paid, refund_after.to_house) == (
        refund.total_paid,
        refund.to_house,
    )
    redone = settling.resettle(mid, "NO", actor="ops", reason="r", expected_status="RESOLVED")
    assert (no.total_paid, no.to_house) == (redone.total_paid, redone.to_house)
    assert refund.total_paid == sum((book.refund(n) for n in book.users), D(0))


# -- bad input ----------------------------------------------------------------------------------


BAD_CALLS: list[tuple[str, Callable[[int], object], ErrorCode]] = [
    ("unknown market", lambda m: settling.settle(m + 999, "YES", actor="a", reason="r"),
     ErrorCode.UNKNOWN_MARKET),
    ("bad outcome", lambda m: settling.settle(m, "MAYBE", actor="a", reason="r"),
     ErrorCode.INVALID_INPUT),
    ("lower-case outcome", lambda m: settling.settle(m, "yes", actor="a", reason="r"),
     ErrorCode.INVALID_INPUT),
    ("empty reason", lambda m: settling.settle(m, "YES", actor="a", reason="  "),
     ErrorCode.REASON_REQUIRED),
    ("empty actor", lambda m: settling.settle(m, "YES", actor="", reason="r"),
     ErrorCode.INVALID_INPUT),
    ("resettle expecting an unknown status", lambda m: settling.resettle(
        m, "NO", actor="a", reason="r", expected_status="SETTLED"), ErrorCode.INVALID_INPUT),
    ("resettle an open market", lambda m: settling.resettle(
        m, "YES", actor="a", reason="r", expected_status="OPEN"), ErrorCode.INVALID_INPUT),
    ("resettle without reason", lambda m: settling.resettle(
        m, "NO", actor="a", reason="", expected_status="RESOLVED"), ErrorCode.REASON_REQUIRED),
    ("unknown reason code", lambda m: settling.cancel_and_refund(
        m, "BECAUSE", "d", actor="a"), ErrorCode.INVALID_INPUT),
    ("empty detail", lambda m: settling.cancel_and_refund(
        m, ErrorCode.SCRAPE_FAILED, "", actor="a"), ErrorCode.REASON_REQUIRED),
    ("cancel expecting cancelled", lambda m: settling.cancel_and_refund(
        m, ErrorCode.SCRAPE_FAILED, "d", actor="a", expected_status="CANCELLED"),
     ErrorCode.INVALID_INPUT),
    ("preview unknown market", lambda m: settlement.preview_refund(m + 999),
     ErrorCode.UNKNOWN_MARKET),
    ("preview bad outcome", lambda m: settlement.preview_settle(m, None),
     ErrorCode.INVALID_INPUT),
]  # fmt: skip


@pytest.mark.parametrize(
    "call,code", [(c, e) for _, c, e in BAD_CALLS], ids=[n for n, *_ in BAD_CALLS]
)
def test_bad_input_is_refused_and_changes_nothing(
    db: str, call: Callable[[int], object], code: ErrorCode
) -> None:
    book = busy_book()
    state = snapshot()
    with pytest.raises(ServiceError) as err:
        call(book.market_id)
    assert err.value.code == code
    assert snapshot() == state
    assert_clean()


# -- atomicity ----------------------------------------------------------------------------------


class InjectedFailure(Exception):
    pass


@dataclass
class FailAt:
    """A fault hook that raises at one step and records every step it saw."""

    step: str
    seen: list[str] = field(default_factory=list)

    def __call__(self, step: str) -> None:
        self.seen.append(step)
        if step == self.step:
            raise InjectedFailure(step)


@dataclass
class KillAt:
    """A fault hook that, at one step, has a second connection terminate this transaction's
    backend (the only one of the service's connections idle inside a transaction)."""

    step: str
    url: str
    killed: int = 0

    def __call__(self, step: str) -> None:
        if step != self.step:
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.killed = len(
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'kolops'"
                    " AND state = 'idle in transaction'"
                ).fetchall()
            )


def _prepare(operation: str) -> tuple[Book, Callable[[], SettlementResult], tuple[str, ...]]:
    """A market in the state the operation starts from, the operation, and its steps."""
    book = busy_book()
    mid = book.market_id
    if operation in ("resettle", "cancel_resolved"):
        settling.settle(mid, "YES", actor="ops", reason="r")
    calls: dict[str, tuple[Callable[[], SettlementResult], tuple[str, ...]]] = {
        "settle": (
            lambda: settling.settle(mid, "NO", actor="a", reason="r"),
            settlement.SETTLE_STEPS,
        ),
        "refund": (
            lambda: settling.cancel_and_refund(mid, ErrorCode.SCRAPE_FAILED, "d", actor="a"),
            settlement.REFUND_STEPS,
        ),
        "resettle": (
            lambda: settling.resettle(mid, "NO", actor="a", reason="r", expected_status="RESOLVED"),
            settlement.RESETTLE_STEPS,
        ),
        "cancel_resolved": (
            lambda: settling.cancel_and_refund(
                mid, ErrorCode.OPERATOR_CANCELLED, "d", actor="a", expected_status="RESOLVED"
            ),
            settlement.REFUND_RESOLVED_STEPS,
        ),
    }
    call, steps = calls[operation]
    return book, call, steps


OPERATIONS = ["settle", "refund", "resettle", "cancel_resolved"]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_failure_at_any_step_leaves_the_database_exactly_as_before(
    db: str, operation: str
) -> None:
    _, call, steps = _prepare(operation)
    state = snapshot()
    for step in steps:
        hook = FailAt(step)
        with settling.checkpoint(hook), pytest.raises(InjectedFailure):
            call()
        assert hook.seen[-1] == step
        assert snapshot() == state, step
    # Every step was reached, in order, and the same call then succeeds.
    assert hook.seen == list(steps)
    assert call().applied
    assert_clean()
    assert snapshot() != state


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_connection_killed_at_any_step_leaves_nothing_half_done(db: str, operation: str) -> None:
    _, call, steps = _prepare(operation)
    state = snapshot()
    for step in steps:
        hook = KillAt(step, db)
        with settling.checkpoint(hook), pytest.raises(OperationalError):
            call()
        assert hook.killed == 1, step
        assert snapshot() == state, step
    assert call().applied
    assert_clean()


def test_resettle_is_refused_past_the_resettle_window_and_changes_nothing(db: str) -> None:
    """Retention may remove the evidence of a market final for longer than RESETTLE_WINDOW_DAYS
    (services/ops/retention.py), so such a market can no longer be re-settled."""
    book = busy_book()
    mid = book.market_id
    settling.settle(mid, "YES", actor="ops", reason="r")
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET resolved_at = now() - make_interval(days => %s, mins => 1)"
            " WHERE id = %s",
            (get_settings().resettle_window_days, mid),
        )
    state = snapshot()
    with pytest.raises(ServiceError) as err:
        settling.resettle(mid, "NO", actor="ops", reason="r", expected_status="RESOLVED")
    assert err.value.code == ErrorCode.INVALID_INPUT
    assert "re-settle window" in err.value.message
    assert snapshot() == state
    # Inside the window it still can.
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET resolved_at = now() - interval '1 day' WHERE id = %s", (mid,)
        )
    assert settling.resettle(mid, "NO", actor="ops", reason="r", expected_status="RESOLVED").applied
    assert_clean()
