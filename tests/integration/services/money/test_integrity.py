"""The integrity check, on the real database: it finds each violation planted behind the
services' back."""

from __future__ import annotations

import psycopg

from db.engine import transaction
from services.money.integrity import Check, check_integrity
from services.vocabulary import MarketStatus
from tests.support.factories import new_market
from tests.support.money import plant_final, register


def _plant(db: str, sql: str) -> None:
    """Write behind the services' back, as a bug or a hand edit would."""
    with psycopg.connect(db) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql)


def _market(status: MarketStatus = MarketStatus.OPEN) -> int:
    """A market nobody bet on, with 100 of liquidity while open and an empty escrow once final."""
    with transaction() as s:
        market_id = new_market(s)
        if status is not MarketStatus.OPEN:
            plant_final(s, market_id, status)
    return market_id


def _only(check: Check) -> list[str]:
    report = check_integrity()
    assert {v.check for v in report.violations} == {check}, report.violations
    return [v.subject for v in report.violations]


def test_integrity_finds_balance_differing_from_ledger(db: str) -> None:
    uid = register("hank", "10")
    _plant(db, f"UPDATE accounts SET balance = 11 WHERE user_id = {uid}")
    report = check_integrity()
    checks = {v.check for v in report.violations}
    assert Check.BALANCE_MATCHES_LEDGER in checks
    assert f"USER:{uid}" in [v.subject for v in report.violations]


def test_integrity_finds_unbalanced_transaction(db: str) -> None:
    register("ivy", "10")
    _plant(db, "UPDATE ledger_entries SET amount = 20 WHERE amount = 10")
    _plant(db, "UPDATE accounts SET balance = 20 WHERE kind = 'USER'")
    report = check_integrity()
    assert Check.TRANSACTION_BALANCED in {v.check for v in report.violations}


def test_integrity_finds_full_escrow_in_final_market(db: str) -> None:
    mid = _market(MarketStatus.CANCELLED)
    _plant(db, f"UPDATE accounts SET balance = 5 WHERE market_id = {mid}")
    _plant(db, "UPDATE accounts SET balance = -5 WHERE kind = 'HOUSE'")
    report = check_integrity()
    assert f"market:{mid}" in [
        v.subject for v in report.violations if v.check == Check.FINAL_ESCROW_EMPTY
    ]


def test_integrity_finds_open_bet_in_final_market(db: str) -> None:
    mid = _market(MarketStatus.RESOLVED)
    uid = register("jack", "0")
    _plant(
        db,
        "INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares, price_before,"
        f" price_after) VALUES ({mid}, {uid}, 'YES', 'BUY', 1, 0, 1, 0.5, 0.5)",
    )
    assert _only(Check.NO_OPEN_BET_IN_FINAL_MARKET) == [f"market:{mid}"]


def test_integrity_finds_broken_cpmm_invariant(db: str) -> None:
    mid = _market(MarketStatus.OPEN)
    # Pools, escrow and ledger agree, so only the CPMM check may fire once a pool is changed.
    assert check_integrity().ok
    _plant(db, f"UPDATE markets SET pool_yes = 90 WHERE id = {mid}")
    assert _only(Check.CPMM_ESCROW_COVERS_SHARES) == [f"market:{mid}"]


def test_integrity_finds_ledger_total_not_zero(db: str) -> None:
    _plant(db, "UPDATE accounts SET balance = 1 WHERE kind = 'FEE'")
    checks = {v.check for v in check_integrity().violations}
    assert Check.LEDGER_TOTAL_ZERO in checks
