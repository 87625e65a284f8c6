"""The double-entry ledger: balanced, immutable, idempotent transfers between accounts.

Every money movement is one ledger transaction whose entries sum to zero. Entries are
append-only (the database refuses updates and deletes); account balances are the materialised
sum of their entries, updated in the same database transaction as the entries are written.

Two ways to write a transaction, one mechanism: `post` for a handful of known postings, and
`begin` + set-based `INSERT ... SELECT` + `finish` for transactions with many entries
(settlement). `finish` is what verifies the sum and applies balances in both cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from psycopg import errors as pg_errors
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import MONEY_SCALE, Account, LedgerEntry, LedgerTransaction
from services.errors import ErrorCode, ServiceError

QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
MAX_AMOUNT = Decimal("1e15")


class LedgerError(ServiceError):
    """A transaction the ledger refuses; nothing of it is written."""


class DuplicateTransaction(LedgerError):
    """The idempotency key was already used: this is a replay, recognised and not applied."""

    def __init__(self, key: str, transaction_id: int) -> None:
        super().__init__(
            ErrorCode.ALREADY_FINAL,
            f"ledger transaction {key!r} was already posted",
            key=key,
            transaction_id=transaction_id,
        )
        self.transaction_id = transaction_id


@dataclass(frozen=True)
class Posting:
    account_id: int
    amount: Decimal
    reverses_entry_id: int | None = None


def money(value: object, *, what: str = "amount") -> Decimal:
    """Validate a money amount: a finite Decimal with at most MONEY_SCALE decimals."""
    if isinstance(value, float | bool):
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"{what} must be a Decimal, not {type(value)}")
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"{what} is not a number: {value!r}") from None
    if not amount.is_finite():
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"{what} must be finite, got {amount}")
    if amount != amount.quantize(QUANTUM):
        raise LedgerError(
            ErrorCode.INVALID_AMOUNT, f"{what} has more than {MONEY_SCALE} decimals: {amount}"
        )
    if abs(amount) >= MAX_AMOUNT:
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"{what} is absurdly large: {amount}")
    return amount


# -- accounts -----------------------------------------------------------------------------------


def system_account_id(session: Session, kind: str) -> int:
    """The id of the EXTERNAL, HOUSE or FEE account."""
    account_id = session.scalar(select(Account.id).where(Account.kind == kind))
    if account_id is None:
        raise LedgerError(ErrorCode.INTERNAL_ERROR, f"system account {kind} is missing")
    return account_id


def user_account_id(session: Session, user_id: int) -> int:
    account_id = session.scalar(select(Account.id).where(Account.user_id == user_id))
    if account_id is None:
        raise LedgerError(ErrorCode.UNKNOWN_USER, f"user {user_id} does not exist", user_id=user_id)
    return account_id


def escrow_account_id(session: Session, market_id: int) -> int:
    account_id = session.scalar(select(Account.id).where(Account.market_id == market_id))
    if account_id is None:
        raise LedgerError(
            ErrorCode.UNKNOWN_MARKET, f"market {market_id} has no escrow", market_id=market_id
        )
    return account_id


def open_account(
    session: Session, *, kind: str, user_id: int | None = None, market_id: int | None = None
) -> int:
    account_id = session.scalar(
        insert(Account)
        .values(kind=kind, user_id=user_id, market_id=market_id)
        .returning(Account.id)
    )
    assert account_id is not None
    return account_id


def ledger_balance(session: Session, account_id: int) -> Decimal:
    """The account's balance recomputed from its entries (what `accounts.balance` must equal)."""
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id
        )
    )
    return Decimal(total)


# -- transactions -------------------------------------------------------------------------------


def begin(
    session: Session,
    *,
    key: str,
    kind: str,
    actor: str,
    market_id: int | None = None,
    bet_id: int | None = None,
    memo: str | None = None,
    reverses_transaction_id: int | None = None,
) -> int:
    """Write a transaction header. Raises DuplicateTransaction when `key` was already used."""
    if not key:
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "an idempotency key is required")
    tx_id = session.execute(
        text(
            "INSERT INTO ledger_transactions"
            " (idempotency_key, kind, market_id, bet_id, actor, memo, reverses_transaction_id)"
            " VALUES (:key, :kind, :market_id, :bet_id, :actor, :memo, :rev)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        ),
        {
            "key": key,
            "kind": kind,
            "market_id": market_id,
            "bet_id": bet_id,
            "actor": actor,
            "memo": memo,
            "rev": reverses_transaction_id,
        },
    ).scalar()
    if tx_id is None:
        existing = session.scalar(
            select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == key)
        )
        raise DuplicateTransaction(key, existing or 0)
    return tx_id


def add_entries(session: Session, transaction_id: int, postings: Iterable[Posting]) -> None:
    rows = [
        {
            "transaction_id": transaction_id,
            "account_id": p.account_id,
            "amount": money(p.amount),
            "reverses_entry_id": p.reverses_entry_id,
        }
        for p in postings
    ]
    if any(r["amount"] == 0 for r in rows):
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "a ledger entry cannot be zero")
    if rows:
        session.execute(insert(LedgerEntry), rows)


_APPLY_FROM_ENTRIES = """
    UPDATE accounts a SET balance = a.balance + e.delta
    FROM (SELECT account_id, sum(amount) AS delta FROM ledger_entries
          WHERE transaction_id = :id GROUP BY account_id) e
    WHERE a.id = e.account_id"""


def _as_ledger_error(exc: IntegrityError) -> LedgerError:
    if isinstance(exc.orig, pg_errors.CheckViolation):
        return LedgerError(
            ErrorCode.INSUFFICIENT_BALANCE,
            "this transaction would make a user balance or a market escrow negative",
        )
    raise exc


def finish(session: Session, transaction_id: int) -> None:
    """Verify a transaction written with `begin`/`add_entries` (or set-based SQL) sums to zero,
    and apply it to the account balances.

    Raises LedgerError; the caller's database transaction must then roll back (nothing is kept).
    """
    count, total = session.execute(
        text(
            "SELECT count(*), coalesce(sum(amount), 0) FROM ledger_entries"
            " WHERE transaction_id = :id"
        ),
        {"id": transaction_id},
    ).one()
    if count < 2 or total != 0:
        raise LedgerError(
            ErrorCode.UNBALANCED_TRANSACTION,
            f"ledger transaction must have 2+ entries summing to zero (got {count}, sum {total})",
            entries=count,
            total=str(total),
        )
    try:
        session.execute(text(_APPLY_FROM_ENTRIES), {"id": transaction_id})
    except IntegrityError as exc:
        raise _as_ledger_error(exc) from None


def post(
    session: Session,
    *,
    key: str,
    kind: str,
    postings: Sequence[Posting],
    actor: str,
    market_id: int | None = None,
    bet_id: int | None = None,
    memo: str | None = None,
    reverses_transaction_id: int | None = None,
) -> int:
    """Post one balanced transaction; returns its id. Refuses (writes nothing) otherwise.

    The balance is checked here, so header, entries and balances go in one statement: one round
    trip on the hot path of every bet.
    """
    amounts = [money(p.amount) for p in postings]
    if len(amounts) < 2 or sum(amounts, Decimal(0)) != 0:
        raise LedgerError(
            ErrorCode.UNBALANCED_TRANSACTION,
            f"entries must be 2 or more and sum to zero, got {[str(a) for a in amounts]}",
        )
    if any(a == 0 for a in amounts):
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "a ledger entry cannot be zero")
    if not key:
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "an idempotency key is required")
    params: dict[str, object] = {
        "key": key,
        "kind": kind,
        "market_id": market_id,
        "bet_id": bet_id,
        "actor": actor,
        "memo": memo,
        "rev": reverses_transaction_id,
    }
    values = []
    for i, (p, amount) in enumerate(zip(postings, amounts, strict=True)):
        values.append(f"(CAST(:a{i} AS bigint), CAST(:m{i} AS numeric), CAST(:r{i} AS bigint))")
        params.update({f"a{i}": p.account_id, f"m{i}": amount, f"r{i}": p.reverses_entry_id})
    statement = f"""
        WITH t AS (
            INSERT INTO ledger_transactions
                (idempotency_key, kind, market_id, bet_id, actor, memo, reverses_transaction_id)
            VALUES (:key, :kind, :market_id, :bet_id, :actor, :memo, :rev)
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING id),
        v (account_id, amount, reverses_entry_id) AS (VALUES {", ".join(values)}),
        e AS (
            INSERT INTO ledger_entries (transaction_id, account_id, amount, reverses_entry_id)
            SELECT t.id, v.account_id, v.amount, v.reverses_entry_id FROM t CROSS JOIN v
            RETURNING account_id, amount),
        u AS (
            UPDATE accounts a SET balance = a.balance + d.delta
            FROM (SELECT account_id, sum(amount) AS delta FROM e GROUP BY account_id) d
            WHERE a.id = d.account_id RETURNING a.id)
        SELECT t.id, (SELECT count(*) FROM u) FROM t"""
    try:
        row = session.execute(text(statement), params).first()
    except IntegrityError as exc:
        raise _as_ledger_error(exc) from None
    if row is None:
        existing = session.scalar(
            select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == key)
        )
        raise DuplicateTransaction(key, existing or 0)
    if row[1] != len({p.account_id for p in postings}):
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "a posting names an unknown account")
    return int(row[0])


def transfer(
    session: Session,
    *,
    key: str,
    kind: str,
    from_account: int,
    to_account: int,
    amount: Decimal,
    actor: str,
    market_id: int | None = None,
    bet_id: int | None = None,
    memo: str | None = None,
) -> int:
    amount = money(amount)
    if amount <= 0:
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"a transfer must be positive, got {amount}")
    return post(
        session,
        key=key,
        kind=kind,
        postings=[Posting(from_account, -amount), Posting(to_account, amount)],
        actor=actor,
        market_id=market_id,
        bet_id=bet_id,
        memo=memo,
    )


def reverse(
    session: Session, *, transaction_id: int, key: str, actor: str, memo: str | None = None
) -> int:
    """Post a REVERSAL whose entries each negate and point at one entry of `transaction_id`."""
    original = session.get(LedgerTransaction, transaction_id)
    if original is None:
        raise LedgerError(ErrorCode.NOT_FOUND, f"ledger transaction {transaction_id} not found")
    tx_id = begin(
        session,
        key=key,
        kind="REVERSAL",
        actor=actor,
        market_id=original.market_id,
        bet_id=original.bet_id,
        memo=memo,
        reverses_transaction_id=transaction_id,
    )
    session.execute(
        text(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, reverses_entry_id)"
            " SELECT :new, account_id, -amount, id FROM ledger_entries"
            " WHERE transaction_id = :old ORDER BY id"
        ),
        {"new": tx_id, "old": transaction_id},
    )
    finish(session, tx_id)
    return tx_id
