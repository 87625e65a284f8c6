"""What tests and benchmarks read or plant in the money tables that no service needs to offer:
a balance, a market row, an escrow account, a registered user, a final state put by hand.

The services' API stays closed (`services.money.ledger`); these helpers only look, or plant
what another service (settlement) would have written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import Account, LedgerEntry, Market
from services.money import ledger, users
from services.vocabulary import AccountKind, LedgerKind, MarketStatus, Side


def register(name: str, amount: str = "100") -> int:
    """A market user with a first deposit of `amount`, in a transaction of its own."""
    return users.register(name, Decimal(amount), actor="test")


def user_balance(session: Session, user_id: int) -> Decimal:
    balance = session.scalar(select(Account.balance).where(Account.user_id == user_id))
    assert balance is not None, f"user {user_id} has no account"
    return balance


def ledger_balance(session: Session, account_id: int) -> Decimal:
    """The account's balance recomputed from its entries (what `accounts.balance` must equal)."""
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id
        )
    )
    return Decimal(total)


def escrow_account_id(session: Session, market_id: int) -> int:
    account_id = session.scalar(select(Account.id).where(Account.market_id == market_id))
    assert account_id is not None, f"market {market_id} has no escrow"
    return account_id


def get_market(session: Session, market_id: int) -> Market:
    market = session.get(Market, market_id)
    assert market is not None, f"market {market_id} does not exist"
    return market


def plant_final(session: Session, market_id: int, status: MarketStatus) -> None:
    """Put a market nobody bet on in a final state by hand (settling is another service's): the
    house takes its liquidity back, so the escrow is empty and the integrity check stays clean,
    then the market is RESOLVED YES or CANCELLED by an operator."""
    ledger.transfer(
        session,
        key=f"unwind:{market_id}",
        kind=LedgerKind.LIQUIDITY,
        from_account=escrow_account_id(session, market_id),
        to_account=ledger.system_account_id(session, AccountKind.HOUSE),
        amount=get_market(session, market_id).liquidity,
        actor="test",
        market_id=market_id,
    )
    resolved = status is MarketStatus.RESOLVED
    session.execute(
        text(
            "UPDATE markets SET status = :status, outcome = :outcome, cancel_reason = :reason"
            " WHERE id = :id"
        ),
        {
            "status": status,
            "outcome": Side.YES if resolved else None,
            "reason": None if resolved else "OPERATOR_CANCELLED",
            "id": market_id,
        },
    )


def kill_the_bet_once_it_waits(db: str, blocker: psycopg.Connection[Any]) -> None:
    """Wait until a bet's connection is queued on a row lock `blocker` holds, terminate that
    backend, then let `blocker` go."""
    with psycopg.connect(db, autocommit=True) as admin:
        for _ in range(500):
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'kolops' AND wait_event_type = 'Lock'"
            ).fetchone()
            if row:
                admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError("the bet never queued on the lock")
    blocker.rollback()


def bet_killed_while_committing(db: str, place: Callable[[], object]) -> list[BaseException]:
    """Run `place` (one bet) while the fee account's row is locked, so that its ledger post,
    queued with COMMIT, waits there; terminate its connection then. Returns what it raised."""
    raised: list[BaseException] = []

    def bet() -> None:
        try:
            place()
        except BaseException as exc:
            raised.append(exc)

    with psycopg.connect(db) as blocker:
        blocker.execute(f"SELECT 1 FROM accounts WHERE kind = '{AccountKind.FEE}' FOR UPDATE")
        bettor = threading.Thread(target=bet)
        bettor.start()
        kill_the_bet_once_it_waits(db, blocker)
        bettor.join(timeout=30)
    return raised
