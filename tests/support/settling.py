"""The settlement service for tests and benchmarks: each call in a unit of work of its own, as an
entry point would run it, and fault injection through the service's `_checkpoint` seam."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from db.engine import retrying
from services.errors import ErrorCode
from services.money import settlement
from services.money.settlement import SettlementResult
from services.vocabulary import MarketStatus

Checkpoint = Callable[[str], None]


def settle(market_id: int, outcome: str, *, actor: str, reason: str) -> SettlementResult:
    return retrying(
        lambda s: settlement.settle(s, market_id, outcome, actor=actor, reason=reason),
        what=f"settle market {market_id}",
    )


def resettle(
    market_id: int, outcome: str, *, actor: str, reason: str, expected_status: str
) -> SettlementResult:
    return retrying(
        lambda s: settlement.resettle(
            s, market_id, outcome, actor=actor, reason=reason, expected_status=expected_status
        ),
        what=f"resettle market {market_id}",
    )


def cancel_and_refund(
    market_id: int,
    reason_code: ErrorCode | str,
    detail: str,
    *,
    actor: str,
    expected_status: str = MarketStatus.OPEN,
) -> SettlementResult:
    return retrying(
        lambda s: settlement.cancel_and_refund(
            s, market_id, reason_code, detail, actor=actor, expected_status=expected_status
        ),
        what=f"cancel market {market_id}",
    )


@contextmanager
def checkpoint(hook: Checkpoint) -> Iterator[None]:
    """Call `hook` at each of the service's steps (every thread's) while the block runs."""
    previous = settlement._checkpoint
    settlement._checkpoint = hook
    try:
        yield
    finally:
        settlement._checkpoint = previous
