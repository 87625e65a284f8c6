"""The schema's guarantees and the ledger service, on the real database."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from db.engine import transaction
from db.models import LedgerEntry, LedgerTransaction
from services.errors import ErrorCode
from services.money import ledger, users
from services.money.integrity import check_integrity
from services.money.ledger import LedgerError, Posting
from services.vocabulary import AccountKind, LedgerKind
from tests.support.money import ledger_balance, register, user_balance


def _counts() -> tuple[int, int]:
    with transaction() as s:
        return (
            s.scalar(select(func.count()).select_from(LedgerTransaction)) or 0,
            s.scalar(select(func.count()).select_from(LedgerEntry)) or 0,
        )


def test_deposit_moves_money_and_balances_match(db: str) -> None:
    uid = register("alice", "250.50")
    with transaction() as s:
        assert user_balance(s, uid) == Decimal("250.50")
        acct = ledger.user_account_id(s, uid)
        assert ledger_balance(s, acct) == Decimal("250.50")
    assert check_integrity().ok


def test_replayed_idempotency_key_is_recognised_not_applied(db: str) -> None:
    uid = register("bob", "0")
    with transaction() as s:
        users.deposit(s, uid, Decimal("10"), key="dep:1", actor="t")
    with pytest.raises(ledger.DuplicateTransaction), transaction() as s:
        users.deposit(s, uid, Decimal("10"), key="dep:1", actor="t")
    with transaction() as s:
        assert user_balance(s, uid) == Decimal("10")


@pytest.mark.parametrize(
    "amounts",
    [["-10", "9"], ["5"], [], ["1", "-1", "0.000001"]],
)
def test_unbalanced_transaction_is_refused_and_writes_nothing(db: str, amounts: list[str]) -> None:
    uid = register("carol", "0")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        ext = ledger.system_account_id(s, AccountKind.EXTERNAL)
        acct = ledger.user_account_id(s, uid)
        postings = [Posting(ext if i % 2 else acct, Decimal(a)) for i, a in enumerate(amounts)]
        ledger.post(
            s, ledger.posting(key="bad", kind=LedgerKind.DEPOSIT, postings=postings, actor="t")
        )
    assert err.value.code == ErrorCode.UNBALANCED_TRANSACTION
    assert _counts() == before


def test_a_posting_to_an_unknown_account_is_refused_and_writes_nothing(db: str) -> None:
    uid = register("nina", "10")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        acct = ledger.user_account_id(s, uid)
        postings = [Posting(acct, Decimal("-1")), Posting(987654321, Decimal("1"))]
        ledger.post(
            s, ledger.posting(key="nowhere", kind=LedgerKind.DEPOSIT, postings=postings, actor="t")
        )
    assert err.value.code == ErrorCode.INVALID_LEDGER_ENTRY
    assert _counts() == before
    with transaction() as s:
        assert user_balance(s, uid) == Decimal("10")


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "0.0000001", "1e20"])
def test_bad_amounts_are_refused(db: str, amount: str) -> None:
    uid = register("dave", "0")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        users.deposit(s, uid, Decimal(amount), key="dep", actor="t")
    assert err.value.code == ErrorCode.INVALID_AMOUNT
    assert _counts() == before


def test_float_amount_is_refused(db: str) -> None:
    with pytest.raises(LedgerError):
        ledger.money(0.1)


def test_negative_user_balance_is_refused_by_the_database(db: str) -> None:
    uid = register("erin", "5")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        ledger.transfer(
            s,
            key="overdraw",
            kind=LedgerKind.BET,
            from_account=ledger.user_account_id(s, uid),
            to_account=ledger.system_account_id(s, AccountKind.HOUSE),
            amount=Decimal("5.01"),
            actor="t",
        )
    assert err.value.code == ErrorCode.INSUFFICIENT_BALANCE
    assert _counts() == before
    # And directly, bypassing the service: the CHECK constraint itself refuses.
    with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE accounts SET balance = -1 WHERE user_id = %s", (uid,))


def test_ledger_rows_cannot_be_updated_or_deleted(db: str) -> None:
    register("frank", "10")
    for sql in (
        "UPDATE ledger_entries SET amount = amount * 2",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_transactions SET actor = 'x'",
        "DELETE FROM ledger_transactions",
        "TRUNCATE ledger_entries CASCADE",
    ):
        with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute(sql)
    assert _counts() == (1, 2)


def test_reversal_points_at_each_original_entry(db: str) -> None:
    uid = register("gina", "0")
    with transaction() as s:
        tx = users.deposit(s, uid, Decimal("42"), key="dep", actor="t")
        rev = ledger.reverse(s, transaction_id=tx, key="rev", actor="t")
        originals = s.scalars(select(LedgerEntry.id).where(LedgerEntry.transaction_id == tx)).all()
        reversed_ids = s.scalars(
            select(LedgerEntry.reverses_entry_id).where(LedgerEntry.transaction_id == rev)
        ).all()
        assert sorted(reversed_ids) == sorted(originals)
        assert user_balance(s, uid) == 0
    assert check_integrity().ok


def test_an_entry_cannot_be_reversed_twice(db: str) -> None:
    uid = register("hank", "0")
    with transaction() as s:
        tx = users.deposit(s, uid, Decimal("42"), key="dep", actor="t")
        ledger.reverse(s, transaction_id=tx, key="rev:1", actor="t")
    before = _counts()
    refused = pytest.raises(IntegrityError, match="uq_ledger_entries_reverses_entry_id")
    with refused, transaction() as s:
        ledger.reverse(s, transaction_id=tx, key="rev:2", actor="t")
    assert _counts() == before
    assert check_integrity().ok
