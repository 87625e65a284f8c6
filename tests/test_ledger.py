"""The schema's guarantees and the ledger service, on the real database."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from db.engine import transaction
from db.models import LedgerEntry, LedgerTransaction
from services.errors import ErrorCode
from services.money import ledger, users
from services.money.integrity import Check, check_integrity
from services.money.ledger import LedgerError, Posting


def _counts() -> tuple[int, int]:
    with transaction() as s:
        return (
            s.scalar(select(func.count()).select_from(LedgerTransaction)) or 0,
            s.scalar(select(func.count()).select_from(LedgerEntry)) or 0,
        )


def _new_user(name: str, amount: str = "100") -> int:
    return users.register(name, Decimal(amount), actor="test")


def test_deposit_moves_money_and_balances_match(db: str) -> None:
    uid = _new_user("alice", "250.50")
    with transaction() as s:
        assert users.user_balance(s, uid) == Decimal("250.50")
        acct = ledger.user_account_id(s, uid)
        assert ledger.ledger_balance(s, acct) == Decimal("250.50")
    assert check_integrity().ok


def test_replayed_idempotency_key_is_recognised_not_applied(db: str) -> None:
    uid = _new_user("bob", "0")
    with transaction() as s:
        users.deposit(s, uid, Decimal("10"), key="dep:1", actor="t")
    with pytest.raises(ledger.DuplicateTransaction), transaction() as s:
        users.deposit(s, uid, Decimal("10"), key="dep:1", actor="t")
    with transaction() as s:
        assert users.user_balance(s, uid) == Decimal("10")


@pytest.mark.parametrize(
    "amounts",
    [["-10", "9"], ["5"], [], ["1", "-1", "0.000001"]],
)
def test_unbalanced_transaction_is_refused_and_writes_nothing(db: str, amounts: list[str]) -> None:
    uid = _new_user("carol", "0")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        ext = ledger.system_account_id(s, "EXTERNAL")
        acct = ledger.user_account_id(s, uid)
        postings = [Posting(ext if i % 2 else acct, Decimal(a)) for i, a in enumerate(amounts)]
        ledger.post(s, ledger.posting(key="bad", kind="DEPOSIT", postings=postings, actor="t"))
    assert err.value.code == ErrorCode.UNBALANCED_TRANSACTION
    assert _counts() == before


def test_a_posting_to_an_unknown_account_is_refused_and_writes_nothing(db: str) -> None:
    uid = _new_user("nina", "10")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        acct = ledger.user_account_id(s, uid)
        postings = [Posting(acct, Decimal("-1")), Posting(987654321, Decimal("1"))]
        ledger.post(s, ledger.posting(key="nowhere", kind="DEPOSIT", postings=postings, actor="t"))
    assert err.value.code == ErrorCode.INVALID_LEDGER_ENTRY
    assert _counts() == before
    with transaction() as s:
        assert users.user_balance(s, uid) == Decimal("10")


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "0.0000001", "1e20"])
def test_bad_amounts_are_refused(db: str, amount: str) -> None:
    uid = _new_user("dave", "0")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        users.deposit(s, uid, Decimal(amount), key="dep", actor="t")
    assert err.value.code == ErrorCode.INVALID_AMOUNT
    assert _counts() == before


def test_float_amount_is_refused(db: str) -> None:
    with pytest.raises(LedgerError):
        ledger.money(0.1)


def test_negative_user_balance_is_refused_by_the_database(db: str) -> None:
    uid = _new_user("erin", "5")
    before = _counts()
    with pytest.raises(LedgerError) as err, transaction() as s:
        ledger.transfer(
            s,
            key="overdraw",
            kind="BET",
            from_account=ledger.user_account_id(s, uid),
            to_account=ledger.system_account_id(s, "HOUSE"),
            amount=Decimal("5.01"),
            actor="t",
        )
    assert err.value.code == ErrorCode.INSUFFICIENT_BALANCE
    assert _counts() == before
    # And directly, bypassing the service: the CHECK constraint itself refuses.
    with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE accounts SET balance = -1 WHERE user_id = %s", (uid,))


def test_ledger_rows_cannot_be_updated_or_deleted(db: str) -> None:
    _new_user("frank", "10")
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
    uid = _new_user("gina", "0")
    with transaction() as s:
        tx = users.deposit(s, uid, Decimal("42"), key="dep", actor="t")
        rev = ledger.reverse(s, transaction_id=tx, key="rev", actor="t")
        originals = s.scalars(select(LedgerEntry.id).where(LedgerEntry.transaction_id == tx)).all()
        reversed_ids = s.scalars(
            select(LedgerEntry.reverses_entry_id).where(LedgerEntry.transaction_id == rev)
        ).all()
        assert sorted(reversed_ids) == sorted(originals)
        assert users.user_balance(s, uid) == 0
    assert check_integrity().ok


def test_an_entry_cannot_be_reversed_twice(db: str) -> None:
    uid = _new_user("hank", "0")
    with transaction() as s:
        tx = users.deposit(s, uid, Decimal("42"), key="dep", actor="t")
        ledger.reverse(s, transaction_id=tx, key="rev:1", actor="t")
    before = _counts()
    refused = pytest.raises(IntegrityError, match="uq_ledger_entries_reverses_entry_id")
    with refused, transaction() as s:
        ledger.reverse(s, transaction_id=tx, key="rev:2", actor="t")
    assert _counts() == before
    assert check_integrity().ok


# -- the integrity check finds each planted violation ---------------------------------------------


def _plant(db: str, sql: str) -> None:
    """Write behind the services' back, as a bug or a hand edit would."""
    with psycopg.connect(db) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql)


def _market(db: str, status: str = "OPEN") -> int:
    with psycopg.connect(db) as conn:
        kol = conn.execute(
            "INSERT INTO kols (display_name, wallet) VALUES ('K', 'w1') RETURNING id"
        ).fetchone()
        assert kol
        outcome = "'YES'" if status == "RESOLVED" else "NULL"
        reason = "'OPERATOR_CANCELLED'" if status == "CANCELLED" else "NULL"
        mid = conn.execute(
            "INSERT INTO markets (type, title, question_key, kol_a_id, opens_at, closes_at,"
            " status, outcome, cancel_reason, pool_yes, pool_no, liquidity) VALUES"
            f" ('profit_streak', 't', 'q', %s, now(), now() + interval '1 day', %s, {outcome},"
            f" {reason}, 100, 100, 100) RETURNING id",
            (kol[0], status),
        ).fetchone()
        assert mid
        conn.execute("INSERT INTO accounts (kind, market_id) VALUES ('ESCROW', %s)", (mid[0],))
        return mid[0]


def _only(check: Check) -> list[str]:
    report = check_integrity()
    assert {v.check for v in report.violations} == {check}, report.violations
    return [v.subject for v in report.violations]


def test_integrity_finds_balance_differing_from_ledger(db: str) -> None:
    uid = _new_user("hank", "10")
    _plant(db, f"UPDATE accounts SET balance = 11 WHERE user_id = {uid}")
    report = check_integrity()
    checks = {v.check for v in report.violations}
    assert Check.BALANCE_MATCHES_LEDGER in checks
    assert f"USER:{uid}" in [v.subject for v in report.violations]


def test_integrity_finds_unbalanced_transaction(db: str) -> None:
    _new_user("ivy", "10")
    _plant(db, "UPDATE ledger_entries SET amount = 20 WHERE amount = 10")
    with transaction() as s:
        s.execute(text("SET LOCAL session_replication_role = replica"))
        s.execute(text("UPDATE accounts SET balance = 20 WHERE kind = 'USER'"))
    report = check_integrity()
    assert Check.TRANSACTION_BALANCED in {v.check for v in report.violations}


def test_integrity_finds_full_escrow_in_final_market(db: str) -> None:
    mid = _market(db, "CANCELLED")
    _plant(db, f"UPDATE accounts SET balance = 5 WHERE market_id = {mid}")
    _plant(db, "UPDATE accounts SET balance = -5 WHERE kind = 'HOUSE'")
    report = check_integrity()
    assert f"market:{mid}" in [
        v.subject for v in report.violations if v.check == Check.FINAL_ESCROW_EMPTY
    ]


def test_integrity_finds_open_bet_in_final_market(db: str) -> None:
    mid = _market(db, "RESOLVED")
    uid = _new_user("jack", "0")
    _plant(
        db,
        "INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares, price_before,"
        f" price_after) VALUES ({mid}, {uid}, 'YES', 'BUY', 1, 0, 1, 0.5, 0.5)",
    )
    assert _only(Check.NO_OPEN_BET_IN_FINAL_MARKET) == [f"market:{mid}"]


def test_integrity_finds_broken_cpmm_invariant(db: str) -> None:
    mid = _market(db, "OPEN")
    _plant(db, f"UPDATE accounts SET balance = 100 WHERE market_id = {mid}")
    _plant(db, "UPDATE accounts SET balance = -100 WHERE kind = 'EXTERNAL'")
    # Ledger agrees with balances, so only the CPMM check may fire (after we fix the ledger).
    with transaction() as s:
        escrow = ledger.escrow_account_id(s, mid)
        ext = ledger.system_account_id(s, "EXTERNAL")
        s.execute(text("SET LOCAL session_replication_role = replica"))
        ledger.begin(s, key="seed", kind="LIQUIDITY", actor="t", market_id=mid)
        tx = s.scalar(
            select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == "seed")
        )
        assert tx
        ledger.add_entries(s, tx, [Posting(ext, Decimal(-100)), Posting(escrow, Decimal(100))])
    assert check_integrity().ok
    _plant(db, f"UPDATE markets SET pool_yes = 90 WHERE id = {mid}")
    assert _only(Check.CPMM_ESCROW_COVERS_SHARES) == [f"market:{mid}"]


def test_integrity_finds_ledger_total_not_zero(db: str) -> None:
    _plant(db, "UPDATE accounts SET balance = 1 WHERE kind = 'FEE'")
    checks = {v.check for v in check_integrity().violations}
    assert Check.LEDGER_TOTAL_ZERO in checks
