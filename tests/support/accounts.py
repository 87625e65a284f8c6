"""Dashboard accounts for tests: the services re-check every caller against its account row, so a
test's principals must exist (and be active) in the database."""

from __future__ import annotations

from sqlalchemy import select

from db.engine import transaction
from db.models import DashboardAccount
from services.ops import auth
from services.ops.auth import Principal

PASSWORD = "correct horse battery"


def ensure(*principals: Principal) -> None:
    """Create (active, with PASSWORD) each principal's account that does not exist yet."""
    for p in principals:
        with transaction() as s:
            exists = s.scalar(
                select(DashboardAccount.id).where(DashboardAccount.username == p.username)
            )
        if not exists:
            auth.create_account(p.username, PASSWORD, p.role)


def principal(username: str, role: str) -> Principal:
    """The principal of an account created for it."""
    who = Principal(username, auth.Role(role))
    ensure(who)
    return who
