"""What each market state allows (services.lifecycle), against the table of PRODUCT.md section 5
written out by hand: every state, every action."""

from __future__ import annotations

import pytest

from services.lifecycle import MarketState, allowed_actions, refusal
from services.vocabulary import MarketAction, MarketStatus, Side

CANCEL = (MarketAction.CANCEL, None)
RETRY = (MarketAction.RETRY, None)
TO_YES = (MarketAction.RESETTLE, Side.YES)
TO_NO = (MarketAction.RESETTLE, Side.NO)
HOLD = (MarketAction.HOLD, None)
RELEASE = (MarketAction.RELEASE, None)

# (status, outcome, due, held) -> what an operator may do.
TABLE = [
    (MarketStatus.OPEN, None, False, False, {CANCEL, HOLD}),
    (MarketStatus.OPEN, None, True, False, {CANCEL, RETRY, HOLD}),
    # On hold: still cancellable, never retried, released once.
    (MarketStatus.OPEN, None, False, True, {CANCEL, RELEASE}),
    (MarketStatus.RESOLVED, Side.YES, True, False, {CANCEL, TO_NO}),
    (MarketStatus.RESOLVED, Side.NO, True, False, {CANCEL, TO_YES}),
    (MarketStatus.CANCELLED, None, True, False, {TO_YES, TO_NO}),
    # A final market's "due" says nothing more: the same actions as above.
    (MarketStatus.RESOLVED, Side.YES, False, False, {CANCEL, TO_NO}),
    (MarketStatus.CANCELLED, None, False, False, {TO_YES, TO_NO}),
]
COLUMNS = ("status", "outcome", "due", "held", "expected")


@pytest.mark.parametrize(COLUMNS, TABLE)
def test_allowed_actions_match_the_table(
    status: MarketStatus,
    outcome: Side | None,
    due: bool,
    held: bool,
    expected: set[tuple[object, object]],
) -> None:
    assert allowed_actions(MarketState(status, outcome, due, held)) == expected


@pytest.mark.parametrize(COLUMNS, TABLE)
def test_every_refusal_says_why(
    status: MarketStatus,
    outcome: Side | None,
    due: bool,
    held: bool,
    expected: set[tuple[object, object]],
) -> None:
    state = MarketState(status, outcome, due, held)
    for action, side in (CANCEL, RETRY, TO_YES, TO_NO, HOLD, RELEASE):
        why = refusal(action, state, side)
        if (action, side) in expected:
            assert why is None
        else:
            assert isinstance(why, str) and why.endswith(".")


def test_resettle_without_an_outcome_is_refused() -> None:
    assert refusal(MarketAction.RESETTLE, MarketState(MarketStatus.CANCELLED)) == (
        "Re-settle needs an outcome, YES or NO."
    )


def test_a_state_is_read_from_the_stored_columns() -> None:
    assert MarketState.of("RESOLVED", "NO") == MarketState(MarketStatus.RESOLVED, Side.NO)
    assert MarketState.of("OPEN", None, True) == MarketState(MarketStatus.OPEN, None, True)


def test_past_the_resettle_window_a_final_market_is_no_longer_resettled() -> None:
    resolved = MarketState(MarketStatus.RESOLVED, Side.YES, resettle_closed=True)
    cancelled = MarketState(MarketStatus.CANCELLED, None, resettle_closed=True)
    assert allowed_actions(resolved) == {CANCEL}  # a refund needs no evidence
    assert allowed_actions(cancelled) == set()
    assert refusal(MarketAction.RESETTLE, cancelled, Side.YES) == (
        "Final for longer than the re-settle window: its evidence may be gone."
    )
    assert MarketState.of("CANCELLED", None, resettle_closed=True) == cancelled
