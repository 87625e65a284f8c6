"""What people do with an incident: acknowledge it with a comment, assign it to a dashboard
account. Analysts and operators act, viewers only read; each action is audited in the same
transaction as the change. Incidents open and close by themselves (`services/ops/alerting.py`).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.engine import transaction
from db.models import DashboardAccount, Incident
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.ops import audit
from services.ops.auth import Principal, require
from services.vocabulary import IncidentState, Result, Role

MAX_COMMENT = 2000


def _locked(session: Session, incident_id: int) -> Incident:
    row = session.get(Incident, incident_id, with_for_update=True)
    if row is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no incident #{incident_id}")
    return row


def _state(row: Incident) -> dict[str, object]:
    return {
        "state": row.state,
        "assignee": row.assignee,
        "acknowledged_by": row.acknowledged_by,
    }


def acknowledge(principal: Principal | None, incident_id: int, comment: object) -> Result:
    """Acknowledge an open incident with a comment (someone is on it)."""
    with transaction() as session:
        who = require(session, principal, Role.ANALYST, "acknowledge_incident")
        text = free_text(
            comment, what="comment", max_len=MAX_COMMENT, missing=ErrorCode.REASON_REQUIRED
        )
        row = _locked(session, incident_id)
        before = _state(row)
        if row.state == IncidentState.OPEN:
            result = Result.OK
            row.state = IncidentState.ACKNOWLEDGED.value
            row.acknowledged_by = who.username
            row.acknowledged_at = func.now()
            row.ack_comment = text
            if row.assignee is None:
                row.assignee = who.username
        elif row.state == IncidentState.ACKNOWLEDGED:
            result = Result.ALREADY_DONE
        else:
            result = Result.STATE_CHANGED
        session.flush()
        audit.record(
            who,
            action="acknowledge_incident",
            result=result,
            target_type="incident",
            target_id=str(incident_id),
            reason=text,
            before=before,
            after=_state(row),
            session=session,
        )
    return result


def assign(principal: Principal | None, incident_id: int, assignee: str) -> Result:
    """Assign an incident (open or acknowledged) to an active dashboard account."""
    with transaction() as session:
        who = require(session, principal, Role.ANALYST, "assign_incident")
        name = free_text(assignee, what="assignee", max_len=64)
        account = session.scalar(
            select(DashboardAccount.id).where(
                DashboardAccount.username == name, DashboardAccount.active
            )
        )
        if account is None:
            audit.record(
                who,
                action="assign_incident",
                result=Result.REFUSED,
                target_type="incident",
                target_id=str(incident_id),
                detail=f"no active dashboard account {name!r}",
            )
            raise ServiceError(ErrorCode.INVALID_INPUT, f"no active dashboard account {name!r}")
        row = _locked(session, incident_id)
        before = _state(row)
        if row.state == IncidentState.CLOSED:
            result = Result.STATE_CHANGED
        elif row.assignee == name:
            result = Result.ALREADY_DONE
        else:
            result = Result.OK
            row.assignee = name
        session.flush()
        audit.record(
            who,
            action="assign_incident",
            result=result,
            target_type="incident",
            target_id=str(incident_id),
            before=before,
            after=_state(row),
            session=session,
        )
    return result
