"""Bulk actions on many selected markets: cancel and refund, or retry resolution (PRODUCT.md
section 5: "Bulk cancel & refund or retry of many selected markets, with a preview of every
market and the totals before anything happens").

`preview` lists every selected market with what the action would do to it now (or why it does
not apply) and the totals. `apply` carries out exactly the markets the preview allowed, each
one through the single-market operator action (its own transaction under the market's row
lock, its own audit row, the status the preview saw as the expected one: a market that moved
since says STATE_CHANGED or ALREADY_DONE and is not touched), reporting progress and each
market's result, and one audit row for the step. Above the configured number of markets or
amount the operator must type the count; above the approval thresholds a bulk cancel becomes a
proposal (retry moves no money by the operator's hand: the resolver decides by its rules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from config import get_settings
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.ops import audit, auth, operator, proposals
from services.ops.auth import Principal
from services.vocabulary import MarketAction, ProposalKind, Result, Role

MAX_MARKETS = 5000
MAX_REASON = 2000
ACTIONS = (MarketAction.CANCEL, MarketAction.RETRY)


@dataclass(frozen=True)
class BulkItem:
    market_id: int
    status: str
    allowed: bool
    note: str
    bets: int = 0
    users_paid: int = 0
    total_paid: Decimal = Decimal(0)


@dataclass(frozen=True)
class BulkPreview:
    action: MarketAction
    items: list[BulkItem]

    @property
    def targets(self) -> list[BulkItem]:
        """The markets the action will be carried out on: those it applied to when previewed."""
        return [i for i in self.items if i.allowed]

    @property
    def total_paid(self) -> Decimal:
        return sum((i.total_paid for i in self.targets), Decimal(0))

    @property
    def needs_typed_count(self) -> bool:
        """Big enough that the operator confirms by typing the number of markets."""
        s = get_settings()
        return len(self.targets) > s.bulk_confirm_markets or self.total_paid > s.bulk_confirm_amount

    @property
    def needs_approval(self) -> bool:
        return self.action is MarketAction.CANCEL and proposals.needs_approval(
            len(self.targets), self.total_paid
        )


@dataclass(frozen=True)
class MarketOutcome:
    market_id: int
    result: Result
    message: str
    total_paid: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        return {
            "market_id": self.market_id,
            "result": self.result.value,
            "message": self.message,
            "total_paid": str(self.total_paid),
        }


@dataclass(frozen=True)
class BulkResult:
    action: MarketAction
    results: list[MarketOutcome]
    # Set when the step was above the approval thresholds: nothing was done yet.
    proposal: proposals.Proposed | None = None

    def count(self, result: Result) -> int:
        return sum(1 for r in self.results if r.result is result)

    @property
    def total_paid(self) -> Decimal:
        return sum((r.total_paid for r in self.results), Decimal(0))


def _action(action: object) -> MarketAction:
    if action not in tuple(ACTIONS):
        raise ServiceError(ErrorCode.INVALID_INPUT, f"a bulk action is one of {', '.join(ACTIONS)}")
    return MarketAction(str(action))


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def preview(action: str, market_ids: list[int]) -> BulkPreview:
    """What `action` would do to each selected market now, and the totals. Read-only."""
    what = _action(action)
    ids = list(dict.fromkeys(market_ids))
    if not all(_is_id(i) for i in ids):
        raise ServiceError(ErrorCode.INVALID_INPUT, "market ids are positive whole numbers")
    if not ids:
        raise ServiceError(ErrorCode.INVALID_INPUT, "select at least one market")
    if len(ids) > MAX_MARKETS:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"select at most {MAX_MARKETS} markets")
    items = []
    for market_id in ids:
        try:
            p = operator.preview(market_id, what)
        except ServiceError as exc:  # a market that does not exist
            items.append(BulkItem(market_id, "", False, exc.message))
            continue
        items.append(
            BulkItem(
                market_id, p.market_status, p.allowed, p.note, p.bets, p.users_paid, p.total_paid
            )
        )
    return BulkPreview(what, items)


def apply(
    principal: Principal | None,
    previewed: BulkPreview,
    reason: str,
    *,
    typed_count: int | None = None,
    on_progress: Callable[[int, int, MarketOutcome], None] | None = None,
) -> BulkResult:
    """Carry out a reviewed bulk preview (see the module's doc). Refused, changing nothing,
    without an operator, a reason, a market to act on, or the typed count when it is needed."""
    name = f"bulk_{previewed.action}"
    who = auth.check(principal, Role.OPERATOR, name)

    def refuse(code: ErrorCode, message: str, why: str | None = None) -> ServiceError:
        audit.record(
            who,
            action=name,
            target_type="markets",
            reason=why,
            result=Result.REFUSED,
            detail=message,
        )
        return ServiceError(code, message)

    try:
        why = free_text(
            reason, what="reason", max_len=MAX_REASON, missing=ErrorCode.REASON_REQUIRED
        )
    except ServiceError as exc:
        raise refuse(exc.code, exc.message) from None
    targets = previewed.targets
    if not targets:
        raise refuse(
            ErrorCode.INVALID_INPUT, f"none of the selected markets allows {previewed.action}", why
        )
    if previewed.needs_typed_count and typed_count != len(targets):
        raise refuse(
            ErrorCode.INVALID_INPUT,
            f"type the number of markets ({len(targets)}) to confirm this bulk action",
            why,
        )
    items = [{"market_id": i.market_id, "expected_status": i.status} for i in targets]
    if previewed.needs_approval:
        proposed = proposals.propose(
            who, ProposalKind.BULK_CANCEL, items, why, amount=previewed.total_paid
        )
        return BulkResult(previewed.action, [], proposed)
    return carry_out(who, previewed.action, items, why, on_progress)


def carry_out(
    who: Principal,
    action: MarketAction,
    items: list[dict[str, Any]],
    why: str,
    on_progress: Callable[[int, int, MarketOutcome], None] | None = None,
) -> BulkResult:
    """Act on each market in its own transaction (allowed already: below the thresholds, or
    approved), then audit the step."""
    results = []
    for n, item in enumerate(items, 1):
        outcome = _one(who, action, item, why)
        results.append(outcome)
        if on_progress is not None:
            on_progress(n, len(items), outcome)
    done = BulkResult(action, results)
    audit.record(
        who,
        action=f"bulk_{action}",
        target_type="markets",
        target_id=f"{len(items)} markets",
        reason=why,
        result=Result.OK,
        detail=", ".join(f"{r}: {done.count(r)}" for r in Result if done.count(r))
        + f"; {done.total_paid} paid out",
    )
    return done


def _one(who: Principal, action: MarketAction, item: dict[str, Any], why: str) -> MarketOutcome:
    market_id = int(item["market_id"])
    try:
        if action is MarketAction.CANCEL:
            r = operator.carry_out_cancel(
                who, market_id, why, expected_status=item["expected_status"]
            )
        else:
            r = operator.retry_resolution(who, market_id, why)
    except ServiceError as exc:  # refused (and audited) by the single-market action
        return MarketOutcome(market_id, Result.REFUSED, exc.message)
    except Exception as exc:  # rolled back and audited by the single-market action
        return MarketOutcome(market_id, Result.FAILED, f"{type(exc).__name__}: {exc}")
    return MarketOutcome(market_id, r.outcome, r.message, r.total_paid)
