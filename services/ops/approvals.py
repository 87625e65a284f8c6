"""A second operator approves or rejects a proposal (`services/ops/proposals.py`); an approved
one is carried out at once by the approver, re-checking every market's state at that time (each
market its own transaction, with the state the proposal previewed as the expected one), and its
per-market results are kept with the proposal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.ops import auth, bulk, operator, proposals, reevaluation
from services.ops.auth import Principal
from services.vocabulary import MarketAction, ProposalKind, ProposalStatus, Role


@dataclass(frozen=True)
class Decision:
    proposal_id: int
    status: ProposalStatus
    # Per market: market_id, result, message, total_paid (JSON-ready, as kept).
    results: list[dict[str, Any]]


def approve(principal: Principal | None, proposal_id: int, note: str | None = None) -> Decision:
    """Approve a waiting proposal of another operator and carry it out now."""
    who = auth.check(principal, Role.OPERATOR, "approve_proposal")
    decided = proposals.decide(who, proposal_id, ProposalStatus.APPROVED, note)
    why = (
        f"{decided.reason} (proposal #{decided.id} by {decided.proposed_by},"
        f" approved by {who.username})"
    )
    items = decided.items
    results: list[dict[str, Any]]
    match decided.kind:
        case ProposalKind.CANCEL | ProposalKind.BULK_CANCEL:
            done = bulk.carry_out(who, MarketAction.CANCEL, items, why)
            results = [r.as_json() for r in done.results]
        case ProposalKind.RESETTLE:
            [item] = items
            r = operator.carry_out_resettle(
                who,
                item["market_id"],
                item["outcome"],
                why,
                expected_status=item["expected_status"],
            )
            results = [
                {
                    "market_id": r.market_id,
                    "result": r.outcome.value,
                    "message": r.message,
                    "total_paid": str(r.total_paid),
                }
            ]
        case ProposalKind.REEVALUATION:
            applied = reevaluation.carry_out(who, items, int(items[0]["run_id"]), why)
            results = [r.as_json() for r in applied.results]
    proposals.record_results(proposal_id, results)
    return Decision(proposal_id, ProposalStatus.APPROVED, results)


def reject(principal: Principal | None, proposal_id: int, note: str | None = None) -> Decision:
    """Reject a waiting proposal of another operator: nothing is carried out."""
    who = auth.check(principal, Role.OPERATOR, "reject_proposal")
    proposals.decide(who, proposal_id, ProposalStatus.REJECTED, note)
    return Decision(proposal_id, ProposalStatus.REJECTED, [])
