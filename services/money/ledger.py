"""The double-entry ledger: balanced, immutable, idempotent transfers between accounts.

Every money movement is one ledger transaction whose entries sum to zero. Entries are
append-only (the database refuses updates and deletes); account balances are the materialised
sum of their entries, updated in the same database transaction as the entries are written.

This module is the closed API every writer of money goes through (`__all__`):
- `post(session, posting(...))` (or `transfer`) for a handful of known postings: one statement,
  `POST`; bet placement queues the same statement in its pipeline, its own writes leading it
  (`post_sql`);
- `begin` + set-based `INSERT ... SELECT` + `finish` for transactions with many entries
  (settlement);
- `reverse` to undo a posted transaction entry by entry.
Either way the sum is verified before the balances change, and the database refuses unknown
accounts, reused keys and balances going negative; `refusal` turns those refusals into
LedgerErrors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from psycopg import errors as pg_errors
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import MONEY_SCALE, Account, LedgerTransaction
from services.errors import ErrorCode, ServiceError
from services.vocabulary import SYSTEM_ACCOUNTS, AccountKind, LedgerKind

__all__ = [
    "MAX_AMOUNT",
    "POST",
    "DuplicateTransaction",
    "LedgerError",
    "Posting",
    "begin",
    "finish",
    "money",
    "open_account",
    "post",
    "post_sql",
    "posting",
    "refusal",
    "reverse",
    "system_account_id",
    "transfer",
    "user_account_id",
]

MAX_AMOUNT = Decimal("1e15")
_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
# The database's refusals of a posting, by constraint name.
_IDEMPOTENCY_CONSTRAINT = "uq_ledger_transactions_idempotency_key"
_ACCOUNT_CONSTRAINT = "fk_ledger_entries_account_id_accounts"
_BALANCE_CONSTRAINT = "ck_accounts_balance_nonneg"


class LedgerError(ServiceError):
    """A transaction the ledger refuses; nothing of it is written."""


class DuplicateTransaction(LedgerError):
    """The idempotency key was already used: this is a replay, recognised and not applied."""

    def __init__(self, key: str) -> None:
        super().__init__(
            ErrorCode.ALREADY_FINAL, f"ledger transaction {key!r} was already posted", key=key
        )


@dataclass(frozen=True)
class Posting:
    account_id: int
    amount: Decimal


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
    if amount != amount.quantize(_QUANTUM):
        raise LedgerError(
            ErrorCode.INVALID_AMOUNT, f"{what} has more than {MONEY_SCALE} decimals: {amount}"
        )
    if abs(amount) >= MAX_AMOUNT:
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"{what} is absurdly large: {amount}")
    return amount


# -- accounts -----------------------------------------------------------------------------------


def system_account_id(session: Session, kind: AccountKind) -> int:
    """The id of the EXTERNAL, HOUSE or FEE account."""
    if kind not in SYSTEM_ACCOUNTS:  # a USER or ESCROW kind would match any of many rows
        raise LedgerError(ErrorCode.INTERNAL_ERROR, f"{kind} is not a system account")
    account_id = session.scalar(select(Account.id).where(Account.kind == kind))
    if account_id is None:
        raise LedgerError(ErrorCode.INTERNAL_ERROR, f"system account {kind} is missing")
    return account_id


def user_account_id(session: Session, user_id: int) -> int:
    account_id = session.scalar(select(Account.id).where(Account.user_id == user_id))
    if account_id is None:
        raise LedgerError(ErrorCode.UNKNOWN_USER, f"user {user_id} does not exist", user_id=user_id)
    return account_id


def open_account(
    session: Session,
    *,
    kind: AccountKind,
    user_id: int | None = None,
    market_id: int | None = None,
) -> int:
    """Open a USER account (with `user_id`) or a market's ESCROW (with `market_id`)."""
    account_id = session.scalar(
        insert(Account)
        .values(kind=kind, user_id=user_id, market_id=market_id)
        .returning(Account.id)
    )
    assert account_id is not None
    return account_id


# -- transactions -------------------------------------------------------------------------------


def _header(
    key: str,
    kind: LedgerKind,
    actor: str,
    market_id: int | None,
    bet_id: int | None,
    memo: str | None,
) -> dict[str, object]:
    """The parameters of a ledger_transactions row, as both ways of writing one name them."""
    if not key:
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "an idempotency key is required")
    return {
        "key": key,
        "kind": kind,
        "market_id": market_id,
        "bet_id": bet_id,
        "actor": actor,
        "memo": memo,
    }


def begin(
    session: Session,
    *,
    key: str,
    kind: LedgerKind,
    actor: str,
    market_id: int | None = None,
    bet_id: int | None = None,
    memo: str | None = None,
    reverses_transaction_id: int | None = None,
) -> int:
    """Write a transaction header, for entries the caller then inserts (set-based SQL) and
    `finish` checks and applies. Raises DuplicateTransaction when `key` was already used."""
    header = _header(key, kind, actor, market_id, bet_id, memo)
    try:
        return session.execute(
            text(
                "INSERT INTO ledger_transactions"
                " (idempotency_key, kind, market_id, bet_id, actor, memo, reverses_transaction_id)"
                " VALUES (:key, :kind, :market_id, :bet_id, :actor, :memo, :rev) RETURNING id"
            ),
            header | {"rev": reverses_transaction_id},
        ).scalar_one()
    except IntegrityError as exc:
        if (refused := refusal(exc.orig, key=key)) is None:
            raise
        raise refused from None


_APPLY_FROM_ENTRIES = """
    UPDATE accounts a SET balance = a.balance + e.delta
    FROM (SELECT account_id, sum(amount) AS delta FROM ledger_entries
          WHERE transaction_id = :id GROUP BY account_id) e
    WHERE a.id = e.account_id"""


def refusal(error: BaseException | None, *, key: str = "") -> LedgerError | None:
    """The LedgerError a database refusal of a posting means, or None for any other error.

    Takes the driver's exception, so callers on a session (IntegrityError.orig) and on a raw
    connection (`db.engine.pipelined`) report refusals alike.
    """
    if isinstance(error, pg_errors.UniqueViolation) and (
        error.diag.constraint_name == _IDEMPOTENCY_CONSTRAINT
    ):
        return DuplicateTransaction(key)
    if isinstance(error, pg_errors.CheckViolation) and (
        error.diag.constraint_name == _BALANCE_CONSTRAINT
    ):
        return LedgerError(
            ErrorCode.INSUFFICIENT_BALANCE,
            "this transaction would make a user balance or a market escrow negative",
        )
    if isinstance(error, pg_errors.ForeignKeyViolation) and (
        error.diag.constraint_name == _ACCOUNT_CONSTRAINT
    ):
        return LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "a posting names an unknown account")
    return None


def finish(session: Session, transaction_id: int) -> None:
    """Verify a transaction written with `begin` and set-based SQL has 2+ entries summing to
    zero, and apply it to the account balances.

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
        if (refused := refusal(exc.orig)) is None:
            raise
        raise refused from None


def post_sql(writes: str = "") -> str:
    """The statement posting one transaction checked by `posting`: header, entries and balances,
    returning the transaction's id. One constant text per caller (the postings travel as arrays),
    so each connection prepares it once; posting-list order is entry-id order.

    `writes`: the caller's own data-modifying CTEs (`name AS (...),` each), run in the same
    statement, so that a hot path (bet placement) writes its rows and posts their money in one
    statement instead of two.
    """
    return f"""
    WITH {writes}
    t AS (
        INSERT INTO ledger_transactions (idempotency_key, kind, market_id, bet_id, actor, memo)
        VALUES (%(key)s, %(kind)s, %(market_id)s, %(bet_id)s, %(actor)s, %(memo)s)
        RETURNING id),
    e AS (
        INSERT INTO ledger_entries (transaction_id, account_id, amount)
        SELECT t.id, p.account_id, p.amount
        FROM t CROSS JOIN unnest(%(accounts)s::bigint[], %(amounts)s::numeric[]) WITH ORDINALITY
                           AS p (account_id, amount, n)
        ORDER BY p.n
        RETURNING account_id, amount),
    b AS (
        UPDATE accounts a SET balance = a.balance + d.delta
        FROM (SELECT account_id, sum(amount) AS delta FROM e GROUP BY account_id) d
        WHERE a.id = d.account_id)
    SELECT id FROM t"""


POST = post_sql()


def posting(
    *,
    key: str,
    kind: LedgerKind,
    postings: Sequence[Posting],
    actor: str,
    market_id: int | None = None,
    bet_id: int | None = None,
    memo: str | None = None,
) -> dict[str, object]:
    """Check one transaction is balanced and well formed; returns the parameters of `POST`.

    Raises LedgerError. What only the database can check (unknown accounts, a used key, a balance
    going negative) makes `POST` fail; `refusal` names it.
    """
    amounts = [money(p.amount) for p in postings]
    if len(amounts) < 2 or sum(amounts, Decimal(0)) != 0:
        raise LedgerError(
            ErrorCode.UNBALANCED_TRANSACTION,
            f"entries must be 2 or more and sum to zero, got {[str(a) for a in amounts]}",
        )
    if any(a == 0 for a in amounts):
        raise LedgerError(ErrorCode.INVALID_LEDGER_ENTRY, "a ledger entry cannot be zero")
    return _header(key, kind, actor, market_id, bet_id, memo) | {
        "accounts": [p.account_id for p in postings],
        "amounts": amounts,
    }


def post(session: Session, params: dict[str, object]) -> int:
    """Post one transaction checked by `posting`; returns its id. Refuses (writes nothing) what
    the database refuses."""
    try:
        return int(session.connection().exec_driver_sql(POST, params).scalar_one())
    except IntegrityError as exc:
        if (refused := refusal(exc.orig, key=str(params["key"]))) is None:
            raise
        raise refused from None


def transfer(
    session: Session,
    *,
    key: str,
    kind: LedgerKind,
    from_account: int,
    to_account: int,
    amount: Decimal,
    actor: str,
    market_id: int | None = None,
) -> int:
    """Move a positive `amount` from one account to another."""
    amount = money(amount)
    if amount <= 0:
        raise LedgerError(ErrorCode.INVALID_AMOUNT, f"a transfer must be positive, got {amount}")
    return post(
        session,
        posting(
            key=key,
            kind=kind,
            postings=[Posting(from_account, -amount), Posting(to_account, amount)],
            actor=actor,
            market_id=market_id,
        ),
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
        kind=LedgerKind.REVERSAL,
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
