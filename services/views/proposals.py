"""Proposals waiting for a second operator, and recent ones with how they ended (read-only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select

from db import rules
from db.engine import read_session
from db.models import Proposal
from services.vocabulary import ProposalStatus

_WAITING = rules.proposal_waiting(Proposal)
# A pending proposal past its expiry is shown as expired (it is marked so when someone tries to
# decide it).
_SHOWN_STATUS = case(
    (
        (Proposal.status == ProposalStatus.PENDING.value) & ~_WAITING,
        ProposalStatus.EXPIRED.value,
    ),
    else_=Proposal.status,
)
_COLUMNS = (
    Proposal.id,
    Proposal.kind,
    _SHOWN_STATUS.label("status"),
    Proposal.markets,
    Proposal.amount,
    Proposal.reason,
    Proposal.proposed_by,
    Proposal.proposed_at,
    Proposal.expires_at,
    Proposal.decided_by,
    Proposal.decided_at,
    Proposal.decision_note,
)


def waiting() -> list[dict[str, Any]]:
    """Proposals a second operator may still decide, the oldest first."""
    with read_session() as s:
        rows = s.execute(select(*_COLUMNS).where(_WAITING).order_by(Proposal.id)).mappings()
        return [dict(r) for r in rows]


def recent(limit: int = 50) -> list[dict[str, Any]]:
    """The latest proposals, whatever their status, newest first, with their per-market
    results."""
    with read_session() as s:
        rows = s.execute(
            select(*_COLUMNS, Proposal.results).order_by(Proposal.id.desc()).limit(limit)
        ).mappings()
        return [dict(r) for r in rows]
