"""Dashboard sessions, kept in PostgreSQL: what a login cookie stands for.

The browser holds a random token; the database holds only its SHA-256, with the account, the
client address, when it was created and last seen, and when it expires. A session is live until
it is ended (logout, an admin, the account deactivated or its role changed), sits idle longer
than SESSION_IDLE_MINUTES, or reaches its absolute lifetime (SESSION_MAX_HOURS).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from config import get_settings
from db.models import DashboardAccount, DashboardSession
from services.vocabulary import SessionEnd

COOKIE = "kolops_session"
# Seen again within this long, a session's last_seen_at is not rewritten (one write per minute of
# use at most, not one per click).
TOUCH_EVERY = dt.timedelta(seconds=60)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def live() -> ColumnElement[bool]:
    """The one rule for a session that still opens the dashboard (evaluated at the database's
    clock): not ended, not past its absolute expiry, not idle too long, and its account active."""
    idle = dt.timedelta(minutes=get_settings().session_idle_minutes)
    return and_(
        DashboardSession.ended_at.is_(None),
        DashboardSession.expires_at > func.now(),
        DashboardSession.last_seen_at > func.now() - idle,
        DashboardAccount.active.is_(True),
    )


def open_session(session: Session, account_id: int, client_address: str | None) -> tuple[int, str]:
    """A new session for the account (in the caller's transaction): (its id, its token). The
    token itself is never stored."""
    token = secrets.token_urlsafe(32)
    session_id = open_once(session, account_id, token, client_address)
    assert session_id is not None  # 256 random bits name no session yet
    return session_id, token


def open_once(
    session: Session, account_id: int, token: str, client_address: str | None
) -> int | None:
    """A session named by `token`, unless one ever was (an ended one stays ended): its id, or
    None. Single sign-on names a session by its sign-in (services.ops.identity), so a replayed
    sign-in cannot open a second one."""
    lifetime = dt.timedelta(hours=get_settings().session_max_hours)
    return session.execute(
        pg_insert(DashboardSession)
        .values(
            account_id=account_id,
            token_sha256=token_hash(token),
            client_address=client_address[:64] if client_address else None,
            expires_at=func.now() + lifetime,
        )
        .on_conflict_do_nothing(index_elements=["token_sha256"])
        .returning(DashboardSession.id)
    ).scalar_one_or_none()


def ever_opened(session: Session, token: str) -> bool:
    """Whether `token` names a session, live or not."""
    return bool(
        session.scalar(
            select(DashboardSession.id).where(DashboardSession.token_sha256 == token_hash(token))
        )
    )


def find_live(session: Session, token: str) -> tuple[int, str, str] | None:
    """(session id, username, role) of the live session `token` names, its last_seen_at moved
    on; None for anything else (unknown, ended, expired, idle, account inactive)."""
    row = session.execute(
        select(DashboardSession.id, DashboardAccount.username, DashboardAccount.role)
        .join(DashboardAccount, DashboardAccount.id == DashboardSession.account_id)
        .where(DashboardSession.token_sha256 == token_hash(token), live())
    ).first()
    if row is None:
        return None
    session.execute(
        update(DashboardSession)
        .where(
            DashboardSession.id == row.id,
            DashboardSession.last_seen_at < func.now() - TOUCH_EVERY,
        )
        .values(last_seen_at=func.now())
    )
    return row.id, row.username, row.role


def is_live(session: Session, session_id: int, account_id: int) -> bool:
    """Whether session `session_id` of account `account_id` is still live."""
    return bool(
        session.scalar(
            select(DashboardSession.id)
            .join(DashboardAccount, DashboardAccount.id == DashboardSession.account_id)
            .where(
                DashboardSession.id == session_id,
                DashboardSession.account_id == account_id,
                live(),
            )
        )
    )


def end(session: Session, reason: SessionEnd, **where: Any) -> list[str]:
    """End the open sessions matching `where` (id=..., account_id=..., token_sha256=...);
    returns the usernames of the sessions ended."""
    clauses = [getattr(DashboardSession, k) == v for k, v in where.items()]
    ended = (
        update(DashboardSession)
        .where(DashboardSession.ended_at.is_(None), *clauses)
        .values(ended_at=func.now(), end_reason=reason)
        .returning(DashboardSession.account_id)
        .cte("ended")
    )
    return list(
        session.scalars(
            select(DashboardAccount.username).join(ended, ended.c.account_id == DashboardAccount.id)
        )
    )


def open_sessions(session: Session) -> list[dict[str, Any]]:
    """Every live session, newest first, with its account's name."""
    rows = session.execute(
        select(
            DashboardSession.id,
            DashboardAccount.username,
            DashboardSession.client_address,
            DashboardSession.created_at,
            DashboardSession.last_seen_at,
            DashboardSession.expires_at,
        )
        .join(DashboardAccount, DashboardAccount.id == DashboardSession.account_id)
        .where(live())
        .order_by(DashboardSession.created_at.desc())
    )
    return [dict(r._mapping) for r in rows]
