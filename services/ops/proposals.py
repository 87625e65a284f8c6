"""Proposals: a money action above the approval thresholds, recorded for a second operator
(PRODUCT.md section 5: "money actions above configured thresholds need a second operator's
approval").

A proposal keeps exactly what the action will do (`items`: each market with the state it was
previewed in), its reason, and how much money and how many markets it moves. Deciding one takes
its row lock, so two operators racing decide it once; the database refuses a decision by the
proposer (`ck_proposals_other_decider`). Carrying out an approved proposal is
`services/ops/approvals.py`'s.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from config import get_settings
from db import rules
from db.engine import retrying
from db.models import Proposal
from services.errors import ErrorCode, ServiceError
from services.ops import audit, auth
from services.ops.auth import Principal
from services.vocabulary import ProposalKind, ProposalStatus, Result, Role

_WAITING = rules.proposal_waiting(Proposal)


def needs_approval(markets: int, amount: Decimal) -> bool:
    """Does a money action touching `markets` markets and paying out `amount` need a second
    operator? Strictly above either configured threshold; at or below, nothing changes."""
    s = get_settings()
    return markets > s.approval_min_markets or amount > s.approval_min_amount


@dataclass(frozen=True)
class Proposed:
    """A proposal just recorded, for the operator's message."""

    id: int
    kind: ProposalKind
    markets: int
    amount: Decimal
    expires_at: dt.datetime

    @property
    def message(self) -> str:
        markets = f"{self.markets} market" + ("" if self.markets == 1 else "s")
        return (
            f"Above the approval thresholds ({markets}, {self.amount.normalize():,f} to pay out):"
            f" recorded as proposal #{self.id}; a second operator must approve it before"
            f" {self.expires_at:%Y-%m-%d %H:%M} UTC. Nothing has changed yet."
        )


def propose(
    who: Principal,
    kind: ProposalKind,
    items: list[dict[str, Any]],
    reason: str,
    *,
    amount: Decimal,
) -> Proposed:
    """Record a proposal and its audit row in one transaction."""
    ttl = get_settings().approval_ttl_minutes

    def unit(session: Session) -> Proposed:
        auth.require(session, who, Role.OPERATOR, f"propose_{kind}")
        row = Proposal(
            kind=kind,
            reason=reason,
            items=items,
            markets=len(items),
            amount=amount,
            proposed_by=who.username,
            expires_at=session.execute(
                text("SELECT now() + make_interval(mins => :ttl)"), {"ttl": ttl}
            ).scalar_one(),
        )
        session.add(row)
        session.flush()
        audit.record(
            who,
            action=f"propose_{kind}",
            target_type="proposal",
            target_id=str(row.id),
            reason=reason,
            result=Result.PROPOSED,
            detail=f"{len(items)} markets, {amount} to pay out",
            session=session,
        )
        return Proposed(row.id, kind, len(items), amount, row.expires_at)

    return retrying(unit, what=f"propose {kind}")


@dataclass(frozen=True)
class Decided:
    id: int
    kind: ProposalKind
    status: ProposalStatus
    reason: str
    proposed_by: str
    items: list[dict[str, Any]]


def decide(who: Principal, proposal_id: int, status: ProposalStatus, note: str | None) -> Decided:
    """Approve or reject a waiting proposal under its row lock; the decision and its audit row
    commit together. Refused (audited, nothing changed) when the proposal is unknown, already
    decided, expired (then marked EXPIRED) or the decider proposed it."""
    action = "approve_proposal" if status is ProposalStatus.APPROVED else "reject_proposal"

    def unit(session: Session) -> Decided | tuple[ErrorCode, str]:
        auth.require(session, who, Role.OPERATOR, action)
        if not (isinstance(proposal_id, int) and not isinstance(proposal_id, bool)):
            return ErrorCode.INVALID_INPUT, f"a proposal id is a whole number, not {proposal_id!r}"
        if not 0 < proposal_id < 2**63:
            return ErrorCode.NOT_FOUND, f"no proposal {proposal_id}"
        row = session.execute(
            select(Proposal, _WAITING).where(Proposal.id == proposal_id).with_for_update()
        ).one_or_none()
        if row is None:
            return ErrorCode.NOT_FOUND, f"no proposal {proposal_id}"
        proposal, waiting = row
        if proposal.status != ProposalStatus.PENDING:
            return (
                ErrorCode.STATE_CHANGED,
                f"proposal {proposal_id} is already {proposal.status}: nothing was done",
            )
        if not waiting:
            proposal.status = ProposalStatus.EXPIRED
            return (
                ErrorCode.STATE_CHANGED,
                f"proposal {proposal_id} expired at {proposal.expires_at:%Y-%m-%d %H:%M} UTC:"
                " nothing was done; propose it again if it is still wanted",
            )
        if proposal.proposed_by == who.username:
            return (
                ErrorCode.PERMISSION_DENIED,
                f"proposal {proposal_id} was proposed by you: another operator must decide it",
            )
        proposal.status = status
        proposal.decided_by = who.username
        proposal.decided_at = session.execute(text("SELECT now()")).scalar_one()
        proposal.decision_note = note
        audit.record(
            who,
            action=action,
            target_type="proposal",
            target_id=str(proposal_id),
            reason=note,
            result=Result.OK,
            detail=f"{proposal.kind} proposed by {proposal.proposed_by}",
            before={"status": ProposalStatus.PENDING},
            after={"status": status},
            session=session,
        )
        return Decided(
            proposal.id,
            ProposalKind(proposal.kind),
            status,
            proposal.reason,
            proposal.proposed_by,
            list(proposal.items),
        )

    outcome = retrying(unit, what=f"{action} {proposal_id}")
    if isinstance(outcome, Decided):
        return outcome
    code, message = outcome
    # The refusal is kept (an expiry found here is committed with it).
    audit.record(
        who,
        action=action,
        target_type="proposal",
        target_id=str(proposal_id),
        reason=note,
        result=Result.REFUSED,
        detail=message,
    )
    raise ServiceError(code, message, proposal_id=proposal_id)


def record_results(proposal_id: int, results: list[dict[str, Any]]) -> None:
    """Keep the per-market results of a carried-out proposal (JSON-ready dicts)."""

    def unit(session: Session) -> None:
        session.execute(update(Proposal).where(Proposal.id == proposal_id).values(results=results))

    retrying(unit, what=f"record results of proposal {proposal_id}")
