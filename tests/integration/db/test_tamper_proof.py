"""The audit log and the ledger keep their history in the database itself: rows cannot be edited
or removed, a ledger transaction is closed once committed, and its entries sum to zero. Every
change an admin or analyst makes commits with its audit row or not at all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from services.errors import ErrorCode, ServiceError
from services.ops import audit, auth
from services.ops import quarantine as quarantine_ops
from tests.support.accounts import principal
from tests.support.scrape_data import NOW, board, scrape_run


@pytest.fixture()
def conn(db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db, autocommit=True) as c:
        yield c


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET result = 'OK'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
def test_the_audit_log_refuses_edits_and_deletes(
    conn: psycopg.Connection[Any], statement: str
) -> None:
    audit.record(None, action="login", result="REFUSED", detail="bad credentials")
    with pytest.raises(psycopg.errors.RestrictViolation, match="audit_log rows are immutable"):
        conn.execute(statement)
    assert conn.execute("SELECT count(*), min(result) FROM audit_log").fetchone() == (1, "REFUSED")


def _accounts(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    rows = conn.execute(
        "SELECT id FROM accounts WHERE kind IN ('HOUSE', 'EXTERNAL') ORDER BY kind"
    ).fetchall()
    external, house = (r[0] for r in rows)
    return external, house


def _ledger_tx(conn: psycopg.Connection[Any], key: str) -> int:
    row = conn.execute(
        "INSERT INTO ledger_transactions (idempotency_key, kind, actor)"
        " VALUES (%s, 'DEPOSIT', 'test') RETURNING id",
        (key,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _entry(conn: psycopg.Connection[Any], tx: int, account: int, amount: str) -> None:
    conn.execute(
        "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES (%s, %s, %s)",
        (tx, account, Decimal(amount)),
    )


def test_a_balanced_ledger_transaction_commits(conn: psycopg.Connection[Any]) -> None:
    external, house = _accounts(conn)
    with conn.transaction():
        tx = _ledger_tx(conn, "ok")
        _entry(conn, tx, house, "10")
        _entry(conn, tx, external, "-10")
    assert conn.execute("SELECT sum(amount) FROM ledger_entries").fetchone() == (Decimal(0),)


def test_an_unbalanced_ledger_transaction_is_refused_at_commit(
    conn: psycopg.Connection[Any],
) -> None:
    external, house = _accounts(conn)
    with (
        pytest.raises(psycopg.errors.CheckViolation, match="does not balance"),
        conn.transaction(),
    ):
        tx = _ledger_tx(conn, "unbalanced")
        _entry(conn, tx, house, "10")
        _entry(conn, tx, external, "-9.99")
    assert conn.execute("SELECT count(*) FROM ledger_transactions").fetchone() == (0,)


def test_a_committed_ledger_transaction_takes_no_more_entries(
    conn: psycopg.Connection[Any],
) -> None:
    """Even entries that balance among themselves: the transaction is closed."""
    external, house = _accounts(conn)
    with conn.transaction():
        tx = _ledger_tx(conn, "closed")
        _entry(conn, tx, house, "10")
        _entry(conn, tx, external, "-10")
    with pytest.raises(psycopg.errors.RestrictViolation, match="is closed"), conn.transaction():
        _entry(conn, tx, house, "5")
        _entry(conn, tx, external, "-5")
    assert conn.execute("SELECT count(*) FROM ledger_entries").fetchone() == (2,)


_WHOLE_READS = (
    "SELECT relname, seq_tup_read FROM pg_stat_xact_user_tables"
    " WHERE relname IN ('ledger_transactions', 'ledger_entries')"
)


def _post(conn: psycopg.Connection[Any], key: str, external: int, house: int) -> dict[str, int]:
    """Post one transaction and run its commit-time check now; returns the rows of each ledger
    table that posting read by scanning the table whole (triggers' and key checks' reads
    included). The counters may carry a recent transaction's reads, hence the difference."""
    with conn.transaction():
        before = dict(conn.execute(_WHOLE_READS).fetchall())
        tx = _ledger_tx(conn, key)
        _entry(conn, tx, house, "1")
        _entry(conn, tx, external, "-1")
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred balance check, here
        after = dict(conn.execute(_WHOLE_READS).fetchall())
    return {table: after[table] - before.get(table, 0) for table in after}


def test_the_ledger_checks_read_by_key_however_small_the_ledger_was_when_planned(
    conn: psycopg.Connection[Any], db: str
) -> None:
    """A session keeps its triggers' query plans. Planned on a young ledger (one page, where
    reading it whole is cheapest), a look-up by key would read the whole ledger on every post
    for as long as the session lives, however large the ledger grows: bet placement slowed
    from 0.8 to 1.7 ms of server time in a minute of betting."""
    external, house = _accounts(conn)
    _post(conn, "young", external, house)
    conn.execute("ANALYZE ledger_transactions, ledger_entries")  # as autovacuum soon does
    _post(conn, "young again", external, house)  # planned on a one-page ledger
    with psycopg.connect(db, autocommit=True) as other:  # the ledger grows meanwhile
        other.execute(
            "WITH t AS (INSERT INTO ledger_transactions (idempotency_key, kind, actor)"
            "           SELECT 'grown-' || g, 'DEPOSIT', 'test' FROM generate_series(1, 5000) g"
            "           RETURNING id)"
            " INSERT INTO ledger_entries (transaction_id, account_id, amount)"
            " SELECT t.id, v.account, v.amount FROM t,"
            " (VALUES (%s::bigint, 1::numeric), (%s::bigint, -1::numeric)) v (account, amount)",
            (house, external),
        )
    grown = _post(conn, "grown", external, house)  # 5,000+ rows in each table now
    assert all(rows < 100 for rows in grown.values()), grown


def _fail_audit_in_the_actions_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit row written inside the action's transaction fails (a full disk, a bug)."""
    real = audit.record

    def failing(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("session") is not None:
            raise RuntimeError("audit write failed")
        real(*args, **kwargs)

    monkeypatch.setattr(audit, "record", failing)


def test_a_quarantine_whose_audit_row_fails_changes_nothing(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: the audit row was written in a transaction of its own after the change."""
    run = scrape_run(db, "daily", NOW - dt.timedelta(hours=1), board(3))
    ana = principal("ana", "analyst")
    _fail_audit_in_the_actions_transaction(monkeypatch)
    with pytest.raises(RuntimeError):
        quarantine_ops.set_quarantine(ana, run, True, "ranks shifted")
    assert quarantine_ops.quarantine_preview(run).quarantined is False


def test_account_changes_whose_audit_row_fails_change_nothing(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = principal("ada", "admin")
    principal("bob", "viewer")
    _fail_audit_in_the_actions_transaction(monkeypatch)
    with pytest.raises(RuntimeError):
        auth.create_account("carl", "a long password", "viewer", actor=admin)
    with pytest.raises(RuntimeError):
        auth.set_active("bob", False, actor=admin)
    monkeypatch.undo()
    names = {a["username"]: a["active"] for a in auth.list_accounts(actor=admin)}
    assert names == {"ada": True, "bob": True}


def test_a_nul_in_a_quarantine_reason_is_a_clear_refusal(db: str) -> None:
    """Defect: a NUL character reached PostgreSQL and came back as a raw database error."""
    run = scrape_run(db, "daily", NOW - dt.timedelta(hours=1), board(3))
    with pytest.raises(ServiceError) as err:
        quarantine_ops.set_quarantine(principal("ana", "analyst"), run, True, "bad\x00reason")
    assert err.value.code == ErrorCode.INVALID_INPUT and "NUL" in err.value.message
    assert quarantine_ops.quarantine_preview(run).quarantined is False
    [refusal] = audit.recent(action="quarantine_scrape_run")
    assert refusal["result"] == "REFUSED" and "NUL" in refusal["detail"]
