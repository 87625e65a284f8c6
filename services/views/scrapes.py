"""Scrape runs for the dashboard: runs, failures with their error and saved page, rejects, success
over time; and the analyst's action, quarantining or releasing a run (PRODUCT.md section 5).

A quarantined run's data is never used by the resolver (it reads only usable runs); markets it
already decided keep their outcome: an operator re-settles them if needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

from config import get_settings
from db.engine import read_session, transaction
from db.models import ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.ops import audit
from services.ops.auth import Principal, require
from services.views.kols import Paged, check_page

STATUSES = ("RUNNING", "SUCCESS", "PARTIAL", "FAILED")
_RUN_COLUMNS = (
    "id, timeframe, trigger, status, started_at, finished_at, snapshot_at, rows_found,"
    " rows_stored, rows_rejected, error_code, error_message, html_path, screenshot_path,"
    " quarantined, quarantine_reason, quarantined_by, quarantined_at, source_url"
)


def runs(
    *,
    timeframe: str | None = None,
    status: str | None = None,
    quarantined: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Paged:
    """Scrape runs, newest first, optionally filtered."""
    check_page(limit, offset)
    if status is not None and status not in STATUSES:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown status {status!r}")
    where, params = ["true"], {"limit": limit, "offset": offset}
    if timeframe:
        where.append("timeframe = :tf")
        params["tf"] = timeframe
    if status:
        where.append("status = :status")
        params["status"] = status
    if quarantined is not None:
        where.append("quarantined = :q")
        params["q"] = quarantined
    cond = " AND ".join(where)
    with read_session() as s:
        total = s.execute(text(f"SELECT count(*) FROM scrape_runs WHERE {cond}"), params).scalar()
        rows = s.execute(
            text(
                f"SELECT {_RUN_COLUMNS} FROM scrape_runs WHERE {cond}"
                " ORDER BY started_at DESC, id DESC LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        return Paged([dict(r._mapping) for r in rows], total or 0)


def run(run_id: int) -> dict[str, Any]:
    with read_session() as s:
        row = s.execute(
            text(f"SELECT {_RUN_COLUMNS} FROM scrape_runs WHERE id = :id"), {"id": run_id}
        ).first()
    if row is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no scrape run {run_id}")
    return dict(row._mapping)


def success_over_time(*, days: int = 14) -> list[dict[str, Any]]:
    """Runs per day, timeframe and status over the last `days` days (for a chart)."""
    if not 1 <= days <= 366:
        raise ServiceError(ErrorCode.INVALID_INPUT, "days must be 1..366")
    with read_session() as s:
        rows = s.execute(
            text(
                "SELECT date_trunc('day', started_at) AS day, timeframe, status, count(*) AS runs"
                " FROM scrape_runs WHERE started_at > now() - make_interval(days => :days)"
                " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            {"days": days},
        )
        return [dict(r._mapping) for r in rows]


def rejects(*, run_id: int | None = None, limit: int = 50, offset: int = 0) -> Paged:
    """Rejected rows (raw text as JSON and the reason), newest run first."""
    check_page(limit, offset)
    cond = "j.run_id = :run" if run_id is not None else "true"
    params = {"run": run_id, "limit": limit, "offset": offset}
    with read_session() as s:
        total = s.execute(
            text(f"SELECT count(*) FROM scrape_rejects j WHERE {cond}"), params
        ).scalar()
        rows = s.execute(
            text(
                "SELECT j.run_id, r.timeframe, r.started_at, j.position, j.field, j.reason_code,"
                " j.reason, j.raw::text AS raw FROM scrape_rejects j"
                f" JOIN scrape_runs r ON r.id = j.run_id WHERE {cond}"
                " ORDER BY j.run_id DESC, j.position LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        return Paged([dict(r._mapping) for r in rows], total or 0)


def artifact(path: str | None) -> bytes | None:
    """A saved failure artifact (HTML or PNG), read only from the artifacts folder; None when the
    run has none or the file is gone."""
    if not path:
        return None
    root = Path(get_settings().artifacts_dir).resolve()
    target = Path(path).resolve()
    if not target.is_relative_to(root):
        raise ServiceError(ErrorCode.INVALID_INPUT, "artifact path is outside the artifacts folder")
    try:
        return target.read_bytes()
    except FileNotFoundError:
        return None


# -- quarantine -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinePreview:
    run_id: int
    quarantined: bool
    rows_stored: int
    # Markets already resolved from this run's snapshot: quarantine does not touch them.
    resolved_markets: int


def quarantine_preview(run_id: int) -> QuarantinePreview:
    """What quarantining or releasing `run_id` affects, for the confirmation dialog."""
    with read_session() as s:
        row = s.execute(
            text("SELECT quarantined, rows_stored FROM scrape_runs WHERE id = :id"),
            {"id": run_id},
        ).first()
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no scrape run {run_id}")
        resolved = s.execute(
            text(
                "SELECT count(DISTINCT market_id) FROM resolution_attempts"
                " WHERE result IN ('RESOLVED_YES', 'RESOLVED_NO')"
                " AND evidence->>'source' = 'scrape_run' AND evidence->>'run_id' = :id"
            ),
            {"id": str(run_id)},
        ).scalar()
    return QuarantinePreview(run_id, row.quarantined, row.rows_stored, resolved or 0)


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
    require(principal, "analyst", action)
    assert principal is not None
    reason = reason.strip()
    if not reason:
        audit.record(
            principal,
            action=action,
            target_type="scrape_run",
            target_id=str(run_id),
            result="REFUSED",
            detail="no reason given",
        )
        raise ServiceError(ErrorCode.REASON_REQUIRED, "give a reason")
    with transaction() as s:
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
                    quarantined_by=principal.username,
                    quarantined_at=dt.datetime.now(dt.UTC),
                )
            )
            s.refresh(current)
        after = _state(current)
    audit.record(
        principal,
        action=action,
        target_type="scrape_run",
        target_id=str(run_id),
        reason=reason,
        result="OK",
        detail=None if applied else f"already {'quarantined' if quarantined else 'released'}",
        before=before,
        after=after,
    )
    return QuarantineResult(run_id, quarantined, applied)


def _state(r: ScrapeRun) -> dict[str, Any]:
    return {
        "quarantined": r.quarantined,
        "quarantine_reason": r.quarantine_reason,
        "quarantined_by": r.quarantined_by,
        "quarantined_at": r.quarantined_at.isoformat() if r.quarantined_at else None,
    }
