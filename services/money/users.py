"""Market users and their deposits; every cent arrives through the ledger."""

from __future__ import annotations

import re
from decimal import Decimal

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.engine import transaction
from db.models import User
from services.errors import ErrorCode, ServiceError
from services.money import ledger
from services.vocabulary import AccountKind, LedgerKind

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def create_user(session: Session, username: str) -> int:
    """Create a user with an empty USER account; returns the user id."""
    if not USERNAME_RE.match(username or ""):
        raise ServiceError(ErrorCode.INVALID_INPUT, f"invalid username {username!r}")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"username {username!r} is taken")
    user_id = session.scalar(insert(User).values(username=username).returning(User.id))
    assert user_id is not None
    ledger.open_account(session, kind=AccountKind.USER, user_id=user_id)
    return user_id


def deposit(session: Session, user_id: int, amount: Decimal, *, key: str, actor: str) -> int:
    """Move `amount` from outside the system into the user's account. Idempotent on `key`."""
    return ledger.transfer(
        session,
        key=key,
        kind=LedgerKind.DEPOSIT,
        from_account=ledger.system_account_id(session, AccountKind.EXTERNAL),
        to_account=ledger.user_account_id(session, user_id),
        amount=amount,
        actor=actor,
    )


def fund_house(session: Session, amount: Decimal, *, key: str, actor: str) -> int:
    """House capital from outside: what market liquidity is drawn from."""
    return ledger.transfer(
        session,
        key=key,
        kind=LedgerKind.DEPOSIT,
        from_account=ledger.system_account_id(session, AccountKind.EXTERNAL),
        to_account=ledger.system_account_id(session, AccountKind.HOUSE),
        amount=amount,
        actor=actor,
    )


def register(username: str, initial_deposit: Decimal, *, actor: str) -> int:
    """Create a user and make their first deposit in one transaction."""
    with transaction() as session:
        user_id = create_user(session, username)
        if initial_deposit > 0:
            deposit(
                session, user_id, initial_deposit, key=f"deposit:{username}:initial", actor=actor
            )
        return user_id
