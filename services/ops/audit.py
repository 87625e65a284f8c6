"""The audit log: every dashboard action that changes data (and every refusal), who and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from db.engine import read_session, transaction
from db.models import AuditLog
from services.vocabulary import Result

if TYPE_CHECKING:
    from services.ops.auth import Principal


def record(
    principal: Principal | None,
    *,
    action: str,
    result: Result,
    target_type: str | None = None,
    target_id: str | None = None,
    reason: str | None = None,
    detail: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    session: Session | None = None,
) -> None:
    """Write one audit row: inside `session` when given (the action's own transaction, so the
    change and its audit row commit together), else in a transaction of its own (a refusal is
    kept even though the work it refused never happened)."""
    row = insert(AuditLog).values(
        username=principal.username if principal else None,
        role=principal.role if principal else None,
        action=action,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        result=result,
        detail=detail,
        before=before,
        after=after,
    )
    if session is not None:
        session.execute(row)
        return
    with transaction() as own:
        own.execute(row)


def _filtered(stmt: Select[Any], action: str | None, username: str | None) -> Select[Any]:
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if username:
        stmt = stmt.where(AuditLog.username == username)
    return stmt


def recent(
    *, limit: int = 200, offset: int = 0, action: str | None = None, username: str | None = None
) -> list[dict[str, Any]]:
    """Audit rows, newest first, `limit` of them after skipping `offset`."""
    with read_session() as session:
        stmt = _filtered(select(AuditLog), action, username)
        rows = (
            session.execute(
                stmt.order_by(AuditLog.at.desc(), AuditLog.id.desc()).offset(offset).limit(limit)
            )
            .scalars()
            .all()
        )
    return [
        {
            "at": r.at,
            "username": r.username,
            "role": r.role,
            "action": r.action,
            "target": f"{r.target_type}:{r.target_id}" if r.target_type else "",
            "result": r.result,
            "reason": r.reason,
            "detail": r.detail,
            "before": r.before,
            "after": r.after,
        }
        for r in rows
    ]


def count(*, action: str | None = None, username: str | None = None) -> int:
    with read_session() as session:
        stmt = _filtered(select(func.count()).select_from(AuditLog), action, username)
        return session.execute(stmt).scalar_one()
