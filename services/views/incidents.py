"""The incident inbox's read models: incidents, one incident's timeline, mutes and deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from db.engine import read_session
from services.views.paging import Page, check_page
from services.vocabulary import ACTIVE_INCIDENTS, DeliveryStatus, IncidentState, sql_in

# Which incidents a list shows.
SHOWS = {
    "active": sql_in("i.state", ACTIVE_INCIDENTS),
    "closed": f"i.state = '{IncidentState.CLOSED}'",
    "all": "true",
}

_COLUMNS = """
    i.id, i.state, a.rule, a.key, a.severity, a.summary, i.opened_at, i.closed_at, i.assignee,
    i.acknowledged_by, i.acknowledged_at, i.ack_comment, a.id AS alert_id, a.state AS alert_state,
    a.subjects, a.started_at, a.last_seen_at, a.resolved_at,
    extract(epoch FROM coalesce(i.closed_at, now()) - i.opened_at) AS age_s
"""


def open_count() -> int:
    """Incidents whose condition still holds (open or acknowledged)."""
    with read_session() as s:
        return int(
            s.execute(
                text(f"SELECT count(*) FROM incidents i WHERE {SHOWS['active']}")
            ).scalar_one()
        )


def list_incidents(*, shows: str = "active", limit: int = 50, offset: int = 0) -> Page:
    """Incidents, newest first."""
    check_page(limit, offset)
    where = SHOWS.get(shows, SHOWS["active"])
    with read_session() as s:
        total = s.execute(text(f"SELECT count(*) FROM incidents i WHERE {where}")).scalar_one()
        rows = [
            dict(r)
            for r in s.execute(
                text(
                    f"SELECT {_COLUMNS} FROM incidents i JOIN alerts a ON a.id = i.alert_id"
                    f" WHERE {where} ORDER BY i.opened_at DESC, i.id DESC"
                    " LIMIT :limit OFFSET :offset"
                ),
                {"limit": limit, "offset": offset},
            ).mappings()
        ]
    return Page(rows, int(total), offset)


def incident(incident_id: int) -> dict[str, Any] | None:
    """One incident with its alert, and its timeline (events, deliveries, people), oldest
    first."""
    with read_session() as s:
        row = (
            s.execute(
                text(
                    f"SELECT {_COLUMNS} FROM incidents i JOIN alerts a ON a.id = i.alert_id"
                    " WHERE i.id = :id"
                ),
                {"id": incident_id},
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        timeline = [
            dict(r)
            for r in s.execute(
                text(
                    """
                    SELECT e.at, lower(e.kind) AS what,
                           CASE WHEN e.muted THEN 'not sent (muted or never announced)'
                                ELSE e.title END AS detail, NULL AS who, 0 AS ord
                      FROM alert_events e WHERE e.alert_id = :alert
                    UNION ALL
                    SELECT coalesce(d.finished_at, d.created_at),
                           'delivery ' || lower(d.status),
                           e.kind || ' to ' || d.channel || ', ' || d.attempts || ' attempt(s)'
                             || coalesce(': ' || d.last_error, ''), NULL, 1
                      FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id
                     WHERE e.alert_id = :alert
                    UNION ALL
                    SELECT l.at, l.action || ' ' || lower(l.result),
                           coalesce(l.reason, l.detail, ''), l.username, 2
                      FROM audit_log l
                     WHERE l.target_type = 'incident' AND l.target_id = :incident
                    ORDER BY 1, 5, 2
                    """
                ),
                {"alert": row["alert_id"], "incident": str(incident_id)},
            ).mappings()
        ]
    return {**dict(row), "timeline": timeline}


def assignable_accounts() -> list[str]:
    """Active dashboard accounts, by name."""
    with read_session() as s:
        return list(
            s.scalars(
                text("SELECT username FROM dashboard_accounts WHERE active ORDER BY username")
            )
        )


def mutes(*, active_only: bool = True) -> list[dict[str, Any]]:
    """Mute windows (current and future ones, or all), latest first."""
    where = "WHERE ends_at > now()" if active_only else ""
    with read_session() as s:
        return [
            dict(r)
            for r in s.execute(
                text(
                    "SELECT id, rule, starts_at, ends_at, reason, created_by FROM alert_mutes"
                    f" {where} ORDER BY starts_at DESC LIMIT 200"
                )
            ).mappings()
        ]


def delivery_problems(*, limit: int = 20) -> list[dict[str, Any]]:
    """Deliveries that failed, or are waiting to retry after a failed attempt, newest first."""
    with read_session() as s:
        return [
            dict(r)
            for r in s.execute(
                text(
                    "SELECT d.id, d.created_at, d.channel, d.status, d.attempts, d.last_error,"
                    " d.next_attempt_at, e.kind, e.title FROM alert_deliveries d"
                    " JOIN alert_events e ON e.id = d.event_id"
                    f" WHERE d.status = '{DeliveryStatus.FAILED}'"
                    f" OR (d.status = '{DeliveryStatus.PENDING}' AND d.last_error IS NOT NULL)"
                    " ORDER BY d.id DESC LIMIT :limit"
                ),
                {"limit": limit},
            ).mappings()
        ]


def last_evaluation() -> dict[str, Any] | None:
    with read_session() as s:
        row = (
            s.execute(
                text(
                    "SELECT id, started_at, finished_at, evaluator, conditions, counts, error"
                    " FROM alert_evaluations ORDER BY id DESC LIMIT 1"
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None
