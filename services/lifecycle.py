"""What each state of a market allows an operator to do (pure; PRODUCT.md section 5).

One rule, three users: the settlement service enforces it under the market's row lock, the
operator service previews it, the Markets page only displays it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.vocabulary import MarketAction, MarketStatus, Side


@dataclass(frozen=True)
class MarketState:
    status: MarketStatus
    outcome: Side | None = None
    # Past its close and not on hold (only an OPEN market's resolution can be retried, once due).
    due: bool = False
    # On an operator's hold (`db.rules.held`): no bets, no resolution, until released.
    held: bool = False
    # Final for longer than the re-settle window (`db.rules.resettle_closed`): retention may
    # have removed its evidence, so it can no longer be re-settled.
    resettle_closed: bool = False

    @classmethod
    def of(
        cls,
        status: str,
        outcome: str | None,
        due: bool = False,
        held: bool = False,
        resettle_closed: bool = False,
    ) -> MarketState:
        """A market's state from its stored columns (and the `db.rules` flags read with them)."""
        side = Side(outcome) if outcome else None
        return cls(MarketStatus(status), side, due, held, resettle_closed)


def refusal(action: MarketAction, state: MarketState, side: Side | None = None) -> str | None:
    """Why `action` (re-settle: to `side`) does not apply to a market in `state`; None if it
    does."""
    match action:
        case MarketAction.CANCEL:
            if state.status is MarketStatus.CANCELLED:
                return "Already cancelled."
            return None
        case MarketAction.RESETTLE:
            if side is None:
                return "Re-settle needs an outcome, YES or NO."
            if state.status is MarketStatus.OPEN:
                return "Open markets are settled by the resolver."
            if state.resettle_closed:
                return "Final for longer than the re-settle window: its evidence may be gone."
            if state.status is MarketStatus.RESOLVED and state.outcome is side:
                return f"Already resolved {side}."
            return None
        case MarketAction.RETRY:
            if state.status is not MarketStatus.OPEN:
                return "Only an open market's resolution can be retried."
            if state.held:
                return "The market is on hold: release the hold first."
            if not state.due:
                return "The market has not closed yet."
            return None
        case MarketAction.HOLD:
            if state.status is not MarketStatus.OPEN:
                return "Only an open market can be put on hold."
            if state.held:
                return "Already on hold."
            return None
        case MarketAction.RELEASE:
            if not state.held:
                return "The market is not on hold."
            return None
    raise AssertionError(f"unknown action {action!r}")


def allowed_actions(state: MarketState) -> frozenset[tuple[MarketAction, Side | None]]:
    """Every (action, side) that applies now; side is None except for re-settle."""
    candidates = [
        (MarketAction.CANCEL, None),
        (MarketAction.RETRY, None),
        (MarketAction.HOLD, None),
        (MarketAction.RELEASE, None),
    ] + [(MarketAction.RESETTLE, side) for side in Side]
    return frozenset((a, s) for a, s in candidates if refusal(a, state, s) is None)
