"""The Ledger & integrity read models: balances by account kind, transactions and entries, the
last scheduled integrity check."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from services.errors import ErrorCode, ServiceError
from services.money import users
from services.views import ledger as ledger_views
from tests.support.scrape_data import fund_house


def test_transactions_refuse_an_unknown_kind(db: str) -> None:
    with pytest.raises(ServiceError) as err:
        ledger_views.transactions(kind="GIFT")
    assert err.value.code == ErrorCode.INVALID_INPUT


def test_ledger_balances_transactions_and_last_integrity_run(db: str) -> None:
    fund_house("5000")
    alice = users.register("alice", Decimal("250.50"), actor="test")
    users.register("bob", Decimal("100"), actor="test")
    by_kind = {b.kind: b for b in ledger_views.balances()}
    assert by_kind["USER"].accounts == 2 and by_kind["USER"].balance == Decimal("350.50")
    assert by_kind["HOUSE"].balance == Decimal("5000")
    assert by_kind["ESCROW"].accounts == 0
    assert sum(b.balance for b in by_kind.values()) == 0

    txs = ledger_views.transactions(limit=2)
    assert txs.total == 3 and len(txs.rows) == 2
    newest = txs.rows[0]
    assert newest["kind"] == "DEPOSIT" and newest["moved"] == Decimal("100")
    assert ledger_views.transactions(kind="DEPOSIT").total == 3
    legs = ledger_views.entries(ledger_views.transactions(offset=1, limit=1).rows[0]["id"])
    assert {(e["account_kind"], e["user_id"], e["amount"]) for e in legs} == {
        ("USER", alice, Decimal("250.50")),
        ("EXTERNAL", None, Decimal("-250.50")),
    }

    assert ledger_views.last_integrity_run() is None
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, status, finished_at, counts, error)"
            " VALUES ('integrity', 'h', 1, 'FAILED', now(), '{\"violations\": 2}', 'bad')"
        )
    last = ledger_views.last_integrity_run()
    assert last is not None and (last.status, last.violations) == ("FAILED", 2)
