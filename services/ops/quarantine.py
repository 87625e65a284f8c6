"""The analyst's action on a scrape run: quarantine it or release it (PRODUCT.md section 5), and
the preview the confirmation dialog shows first.

A quarantined run's data is never used by the resolver (it reads only usable runs,
`db.rules.usable_run`); markets it already decided keep their outcome until an operator applies
their re-evaluation (`services/ops/reevaluation.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update

from db.engine import read_session, transaction
from db.models import ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.ops import audit, reevaluation
from services.ops.auth import Principal, require
from services.vocabulary import Result, Role

MAX_REASON = 2000


@dataclass(frozen=True)
class QuarantinePreview:
    run_id: int
    quarantined: bool
    rows_stored: int
    # Markets whose active settlement rests on this run (`reevaluation.impacted`): quarantine
    # does not touch them; their re-evaluation is applied by an operator.
    resolved_markets: list[dict[str, Any]]


def quarantine_preview(run_id: int) -> QuarantinePreview:
    """What quarantining or releasing `run_id` affects, for the confirmation dialog."""
    with read_session() as s:
        row = s.execute(
            text("SELECT quarantined, rows_stored FROM scrape_runs WHERE id = :id"),
            {"id": run_id},
        ).first()
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no scrape run {run_id}")
    return QuarantinePreview(
        run_id, row.quarantined, row.rows_stored, reevaluation.impacted(run_id)
    )


@dataclass(frozen=True)
class QuarantineResult:
    run_id: int
    quarantined: bool
    applied: bool  # False: the run was already in that state, nothing changed


def set_quarantine(
    principal: Principal | None, run_id: int, quarantined: bool, reason: str
) -> QuarantineResult:
    """Quarantine (True) or release (False) a scrape run: analysts and above, reason required,
    one transaction under the run's row lock; audited with the state before and after. Asking
    for the state the run is already in changes nothing and says so."""
    action = "quarantine_scrape_run" if quarantined else "release_scrape_run"
    with transaction() as s:
        who = require(s, principal, Role.ANALYST, action)
        try:
            reason = free_text(
                reason, what="reason", max_len=MAX_REASON, missing=ErrorCode.REASON_REQUIRED
            )
        except ServiceError as exc:
            # Audited in a transaction of its own: this one rolls back.
            audit.record(
                who,
                action=action,
                target_type="scrape_run",
                target_id=str(run_id),
                result=Result.REFUSED,
                detail=exc.message,
            )
            raise
        current = s.execute(
            select(ScrapeRun).where(ScrapeRun.id == run_id).with_for_update()
        ).scalar_one_or_none()
        if current is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no scrape run {run_id}")
        before = _state(current)
        applied = current.quarantined != quarantined
        if applied:
            s.execute(
                update(ScrapeRun)
                .where(ScrapeRun.id == run_id)
                .values(
                    quarantined=quarantined,
                    quarantine_reason=reason,
                    quarantined_by=who.username,
                    quarantined_at=dt.datetime.now(dt.UTC),
                )
            )
            s.refresh(current)
        audit.record(
            who,
            action=action,
            target_type="scrape_run",
            target_id=str(run_id),
            reason=reason,
            result=Result.OK,
            detail=None if applied else f"already {'quarantined' if quarantined else 'released'}",
            before=before,
            after=_state(current),
            session=s,
        )
    return QuarantineResult(run_id, quarantined, applied)


def _state(r: ScrapeRun) -> dict[str, Any]:
    return {
        "quarantined": r.quarantined,
        "quarantine_reason": r.quarantine_reason,
        "quarantined_by": r.quarantined_by,
        "quarantined_at": r.quarantined_at.isoformat() if r.quarantined_at else None,
    }
