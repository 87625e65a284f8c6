"""The periodic integrity check verifies what changed since its checkpoint; the full audit still
finds a violation behind it (issue 19). On the real database, corrupting rows as the owner."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from db.engine import read_session, transaction
from services.money.integrity import Check, check_integrity, check_recent
from services.vocabulary import MarketStatus
from tests.support.factories import new_market
from tests.support.money import plant_final, register


def _plant(db: str, sql: str) -> None:
    """Write behind the services' back, triggers off, as a bug or a hand edit would."""
    with psycopg.connect(db) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql)


def _pending() -> int:
    with read_session() as s:
        return int(s.scalar(text("SELECT count(*) FROM integrity_pending")) or 0)


def _checks(report: object) -> set[Check]:
    return {v.check for v in report.violations}  # type: ignore[attr-defined]


def _final_market(status: MarketStatus) -> int:
    with transaction() as s:
        market_id = new_market(s)
        plant_final(s, market_id, status)
    return market_id


def test_periodic_check_verifies_new_transactions_once_and_advances(db: str) -> None:
    register("ann", "10")
    register("bob", "20")
    assert _pending() == 2
    first = check_recent()
    assert first.ok, first.violations
    assert first.transactions_verified == 2
    assert _pending() == 0
    again = check_recent()
    assert again.ok and again.transactions_verified == 0
    register("cid", "5")
    assert check_recent().transactions_verified == 1


def test_full_audit_finds_old_corruption_the_periodic_check_does_not_look_at(db: str) -> None:
    uid = register("dan", "10")
    market_id = _final_market(MarketStatus.RESOLVED)
    assert check_recent().ok
    # Behind the checkpoint: an old transaction made unbalanced (both sides of the deposit
    # edited, balances untouched), and an OPEN bet planted in an old final market.
    _plant(db, "UPDATE ledger_entries SET amount = amount * 2 WHERE amount = 10")
    _plant(
        db,
        "INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares, price_before,"
        f" price_after) VALUES ({market_id}, {uid}, 'YES', 'BUY', 1, 0, 1, 0.5, 0.5)",
    )
    periodic = check_recent()
    assert periodic.ok, periodic.violations  # it only reads what changed since its checkpoint
    full = check_integrity()
    assert {
        Check.TRANSACTION_BALANCED,
        Check.BALANCE_MATCHES_LEDGER,
        Check.NO_OPEN_BET_IN_FINAL_MARKET,
    } <= _checks(full)
    assert f"market:{market_id}" in [v.subject for v in full.violations]


def test_periodic_check_finds_a_balance_moved_without_an_entry_and_keeps_finding_it(
    db: str,
) -> None:
    uid = register("eve", "10")
    assert check_recent().ok
    _plant(db, f"UPDATE accounts SET balance = 11 WHERE user_id = {uid}")
    for _ in range(2):  # the checkpoint does not move past a violation
        report = check_recent()
        assert _checks(report) >= {Check.BALANCE_MOVED_BY_ENTRIES}
        assert f"USER:{uid}" in [v.subject for v in report.violations]
    # Repaired by hand: clean again, and the checkpoint moves on.
    _plant(db, f"UPDATE accounts SET balance = 10 WHERE user_id = {uid}")
    assert check_recent().ok


def test_periodic_check_finds_a_new_unbalanced_transaction(db: str) -> None:
    uid = register("fay", "10")
    assert check_recent().ok
    # As the owner, with only the balance trigger (migration 0009) off for this one transaction,
    # as a bug past it would: the transaction is still noted as pending.
    with psycopg.connect(db) as conn:
        conn.execute("ALTER TABLE ledger_transactions DISABLE TRIGGER ledger_transactions_balanced")
        conn.execute(
            "WITH t AS (INSERT INTO ledger_transactions (idempotency_key, kind, actor)"
            " VALUES ('bad-1', 'DEPOSIT', 'test') RETURNING id)"
            " INSERT INTO ledger_entries (transaction_id, account_id, amount)"
            f" SELECT t.id, a.id, 3 FROM t, accounts a WHERE a.user_id = {uid}"
        )
        conn.execute(f"UPDATE accounts SET balance = balance + 3 WHERE user_id = {uid}")
        conn.execute("ALTER TABLE ledger_transactions ENABLE TRIGGER ledger_transactions_balanced")
    report = check_recent()
    assert Check.TRANSACTION_BALANCED in _checks(report)
    assert "tx:bad-1" in [v.subject for v in report.violations]


def test_periodic_check_finds_a_market_that_became_final_with_escrow(db: str) -> None:
    market_id = _final_market(MarketStatus.CANCELLED)
    assert check_recent().ok
    # A new, balanced transaction moves money into the escrow of the final market.
    with psycopg.connect(db) as conn:
        conn.execute(
            "WITH t AS (INSERT INTO ledger_transactions (idempotency_key, kind, actor, market_id)"
            f" VALUES ('late-escrow', 'LIQUIDITY', 'test', {market_id}) RETURNING id)"
            " INSERT INTO ledger_entries (transaction_id, account_id, amount)"
            f" SELECT t.id, a.id, CASE WHEN a.kind = 'HOUSE' THEN -7 ELSE 7 END FROM t, accounts a"
            f" WHERE a.market_id = {market_id} OR a.kind = 'HOUSE'"
        )
        conn.execute(
            "UPDATE accounts SET balance = balance + CASE WHEN kind = 'HOUSE' THEN -7 ELSE 7 END"
            f" WHERE market_id = {market_id} OR kind = 'HOUSE'"
        )
    report = check_recent()
    assert _checks(report) == {Check.FINAL_ESCROW_EMPTY}, report.violations
    assert [v.subject for v in report.violations] == [f"market:{market_id}"]


def test_a_transaction_committed_after_a_check_began_is_still_verified(db: str) -> None:
    """A ledger transaction whose id is lower than ones already verified, committed later (a
    slow writer): a high-water mark would skip it forever; the pending set does not."""
    uid = register("gus", "10")
    with psycopg.connect(db) as slow:
        # Balanced (the database insists), but the user's balance is never moved by it.
        slow.execute(
            "WITH t AS (INSERT INTO ledger_transactions (idempotency_key, kind, actor)"
            " VALUES ('slow-1', 'DEPOSIT', 'test') RETURNING id)"
            " INSERT INTO ledger_entries (transaction_id, account_id, amount)"
            f" SELECT t.id, a.id, CASE WHEN a.user_id = {uid} THEN 4 ELSE -4 END"
            f" FROM t, accounts a WHERE a.user_id = {uid} OR a.kind = 'HOUSE'"
        )
        register("hal", "1")  # a later id, committed first
        assert check_recent().ok
        slow.commit()
    report = check_recent()
    assert Check.BALANCE_MOVED_BY_ENTRIES in _checks(report), report.violations
    assert f"USER:{uid}" in [v.subject for v in report.violations]
