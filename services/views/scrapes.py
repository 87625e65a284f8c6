"""Scrape runs for the dashboard: runs, failures with their error and saved page, rejects, success
over time (read-only; quarantining a run is `services.ops.quarantine`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from config import get_settings
from db.engine import read_session
from services.errors import ErrorCode, ServiceError
from services.views.paging import Page, check_page
from services.vocabulary import ScrapeStatus

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
) -> Page:
    """Scrape runs, newest first, optionally filtered."""
    check_page(limit, offset)
    if status is not None and status not in set(ScrapeStatus):
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
        return Page([dict(r._mapping) for r in rows], total or 0, offset)


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


def rejects(*, run_id: int | None = None, limit: int = 50, offset: int = 0) -> Page:
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
        return Page([dict(r._mapping) for r in rows], total or 0, offset)


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
