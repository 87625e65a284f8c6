"""Exactly once: concurrent and repeated settle / cancel / re-settle calls on one market have one
effect, and every other caller gets a plain ALREADY_DONE or STATE_CHANGED result.

Thread races are made deterministic: the first call, holding the market lock, starts the second
and waits until PostgreSQL shows it blocked on a lock before it carries on and commits, so the
second call always re-checks the status under the lock after the first one's commit."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from services.errors import ErrorCode, ServiceError
from services.money import settlement
from services.money.bets import place_bet
from services.vocabulary import Result
from tests.support import settling
from tests.support.books import assert_clean, busy_book, q, snapshot

Call = Callable[[], Any]


def _wait_for_lock_waiter(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0] > 0:
                return
            time.sleep(0.01)
    raise AssertionError("the second call never waited on the market lock")


def overlapping(url: str, first: Call, second: Call) -> tuple[Any, Any]:
    """Run `first`; while it holds the market lock, start `second` in a thread and let `first`
    commit only once `second` is blocked on that lock. Returns both outcomes (result or error)."""
    outcomes: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    first_thread = threading.get_ident()

    def run(name: str, call: Call) -> None:
        try:
            outcomes[name] = call()
        except ServiceError as exc:
            outcomes[name] = exc

    def hold(step: str) -> None:
        # Only the first call holds: the second one runs the same checkpoint in its thread.
        if step == "after_bets" and threading.get_ident() == first_thread:
            thread = threading.Thread(target=run, args=("second", second))
            thread.start()
            threads.append(thread)
            _wait_for_lock_waiter(url)

    with settling.checkpoint(hold):
        run("first", first)
        assert threads, "the first call never took the lock"
        threads[0].join(timeout=60)
    return outcomes["first"], outcomes["second"]


def _settle(mid: int, outcome: str = "YES") -> Call:
    return lambda: settling.settle(mid, outcome, actor="ops", reason="r")


def _cancel(mid: int, expected: str = "OPEN") -> Call:
    return lambda: settling.cancel_and_refund(
        mid, ErrorCode.SCRAPE_FAILED, "d", actor="sweep", expected_status=expected
    )


def _resettle(mid: int, outcome: str) -> Call:
    return lambda: settling.resettle(
        mid, outcome, actor="ops", reason="r", expected_status="RESOLVED"
    )


def effects(mid: int) -> tuple[int, int, int]:
    """(settlement rows, PAYOUT and REFUND ledger transactions, REVERSAL ledger transactions)."""
    row = q(
        "SELECT (SELECT count(*) FROM settlements WHERE market_id = :m),"
        " (SELECT count(*) FROM ledger_transactions WHERE market_id = :m"
        "  AND kind IN ('PAYOUT', 'REFUND')),"
        " (SELECT count(*) FROM ledger_transactions WHERE market_id = :m AND kind = 'REVERSAL')",
        m=mid,
    )[0]
    return (row[0], row[1], row[2])


def test_two_threads_settling_at_once_pay_once(db: str) -> None:
    mid = busy_book().market_id
    first, second = overlapping(db, _settle(mid), _settle(mid))
    assert first.status is Result.OK
    assert second.status is Result.ALREADY_DONE and not second.applied
    assert "already RESOLVED YES" in second.message
    assert effects(mid) == (1, 1, 0)
    assert_clean()


def test_a_late_second_call_after_commit_does_nothing(db: str) -> None:
    mid = busy_book().market_id
    assert settling.settle(mid, "YES", actor="ops", reason="r").applied
    state = snapshot()
    again = settling.settle(mid, "YES", actor="ops", reason="r")
    other = settling.settle(mid, "NO", actor="ops", reason="r")
    cancel = settling.cancel_and_refund(mid, ErrorCode.SCRAPE_FAILED, "d", actor="sweep")
    assert again.status is Result.ALREADY_DONE
    assert other.status is Result.STATE_CHANGED and "now RESOLVED YES" in other.message
    assert cancel.status is Result.STATE_CHANGED
    assert snapshot() == state
    assert effects(mid) == (1, 1, 0)


@pytest.mark.parametrize("sweep_first", [True, False], ids=["sweep-first", "operator-first"])
def test_a_sweep_settle_racing_an_operator_cancel_has_one_effect(
    db: str, sweep_first: bool
) -> None:
    mid = busy_book().market_id
    sweep, operator = _settle(mid), _cancel(mid)
    first, second = overlapping(db, *((sweep, operator) if sweep_first else (operator, sweep)))
    assert first.status is Result.OK
    assert second.status is Result.STATE_CHANGED
    status = q("SELECT status FROM markets WHERE id = :m", m=mid)[0][0]
    assert status == ("RESOLVED" if sweep_first else "CANCELLED")
    assert effects(mid) == (1, 1, 0)
    assert_clean()


def test_double_click_on_cancel_refunds_once(db: str) -> None:
    mid = busy_book().market_id
    first, second = overlapping(db, _cancel(mid), _cancel(mid))
    assert (first.status, second.status) == (Result.OK, Result.ALREADY_DONE)
    assert effects(mid) == (1, 1, 0)
    assert_clean()


def test_double_click_on_resettle_reverses_once(db: str) -> None:
    mid = busy_book().market_id
    settling.settle(mid, "YES", actor="ops", reason="r")
    first, second = overlapping(db, _resettle(mid, "NO"), _resettle(mid, "NO"))
    assert (first.status, second.status) == (Result.OK, Result.ALREADY_DONE)
    assert effects(mid) == (2, 2, 1)
    assert_clean()


def test_double_click_on_cancel_of_a_resolved_market_reverses_once(db: str) -> None:
    mid = busy_book().market_id
    settling.settle(mid, "NO", actor="ops", reason="r")
    first, second = overlapping(db, _cancel(mid, "RESOLVED"), _cancel(mid, "RESOLVED"))
    assert (first.status, second.status) == (Result.OK, Result.ALREADY_DONE)
    assert effects(mid) == (2, 2, 1)
    assert_clean()


def test_a_bet_waiting_on_a_settling_market_is_refused(db: str) -> None:
    book = busy_book()
    mid, bob = book.market_id, book.users["bob"]
    bet: Call = lambda: place_bet(  # noqa: E731
        user_id=bob, market_id=mid, side="NO", action="BUY", amount=Decimal(5)
    )
    first, second = overlapping(db, _settle(mid), bet)
    assert first.applied
    assert isinstance(second, ServiceError) and second.code == ErrorCode.MARKET_NOT_OPEN
    assert_clean()


# -- two processes ------------------------------------------------------------------------------


_seen: list[str] = []  # the steps this process's settlement went through


def _linger(step: str) -> None:
    _seen.append(step)
    # Hold the market lock long enough for the other process to queue on it.
    if step == "after_bets":
        time.sleep(0.5)


def _settle_in_process(market_id: int, start: Any, results: Any) -> None:
    settlement._checkpoint = _linger  # the seam of this child process's own copy of the service
    start.wait(60)  # both processes are up and imported: start together
    result = settling.settle(market_id, "YES", actor="proc", reason="r")
    results.put((result.status.value, tuple(_seen)))


def test_two_processes_settling_at_once_pay_once(db: str) -> None:
    mid = busy_book().market_id
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_settle_in_process, args=(mid, start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    statuses = [status for status, _ in outcomes]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert statuses == ["ALREADY_DONE", "OK"]
    # The one that applied lingered inside its transaction; the other never got that far.
    assert [steps for _, steps in outcomes] == [(), settlement.SETTLE_STEPS]
    assert effects(mid) == (1, 1, 0)
    assert_clean()
