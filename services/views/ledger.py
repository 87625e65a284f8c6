"""The ledger for the dashboard: balances by account kind, recent transactions and their entries,
and the integrity job's last scheduled result (read-only; the check itself is
`services.money.integrity.check_integrity`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from db.engine import read_session
from services.errors import ErrorCode, ServiceError
from services.views.paging import Page, check_page
from services.vocabulary import AccountKind, JobStatus, LedgerKind


@dataclass(frozen=True)
class KindBalance:
    kind: str
    accounts: int
    balance: Decimal


def balances() -> list[KindBalance]:
    """Every account kind's number of accounts and total balance (USER: what users hold, ESCROW:
    what open markets hold, FEE, HOUSE, EXTERNAL); the totals sum to zero."""
    with read_session() as s:
        rows = dict(
            (kind, (n, total))
            for kind, n, total in s.execute(
                text("SELECT kind, count(*), sum(balance) FROM accounts GROUP BY kind")
            )
        )
    return [KindBalance(kind.value, *rows.get(kind, (0, Decimal(0)))) for kind in AccountKind]


def transactions(
    *,
    kind: str | None = None,
    market_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Ledger transactions, newest first, each with its entry count and the money it moved."""
    check_page(limit, offset)
    if kind is not None and kind not in set(LedgerKind):
        raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown ledger kind {kind!r}")
    where, params = ["true"], {"limit": limit, "offset": offset}
    if kind:
        where.append("t.kind = :kind")
        params["kind"] = kind
    if market_id is not None:
        where.append("t.market_id = :market")
        params["market"] = market_id
    cond = " AND ".join(where)
    with read_session() as s:
        total = s.execute(
            text(f"SELECT count(*) FROM ledger_transactions t WHERE {cond}"), params
        ).scalar()
        rows = s.execute(
            text(
                "SELECT t.id, t.created_at, t.kind, t.idempotency_key, t.market_id, t.bet_id,"
                " t.actor, t.memo, t.reverses_transaction_id, e.entries, e.moved"
                f" FROM (SELECT * FROM ledger_transactions t WHERE {cond}"
                "   ORDER BY t.id DESC LIMIT :limit OFFSET :offset) t"
                " CROSS JOIN LATERAL (SELECT count(*) AS entries,"
                "   coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS moved"
                "   FROM ledger_entries WHERE transaction_id = t.id) e"
                " ORDER BY t.id DESC"
            ),
            params,
        )
        return Page([dict(r._mapping) for r in rows], total or 0, offset)


def entries(transaction_id: int) -> list[dict[str, Any]]:
    """A transaction's entries with the account each one moves."""
    with read_session() as s:
        rows = s.execute(
            text(
                "SELECT e.id, a.kind AS account_kind, a.user_id, a.market_id, e.amount,"
                " e.reverses_entry_id FROM ledger_entries e"
                " JOIN accounts a ON a.id = e.account_id"
                " WHERE e.transaction_id = :id ORDER BY e.id"
            ),
            {"id": transaction_id},
        )
        return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class IntegrityRun:
    """The scheduler's latest finished integrity job."""

    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    violations: int | None
    error: str | None


def last_integrity_run(job: str = "integrity") -> IntegrityRun | None:
    """The latest finished run of `job`: the periodic check ("integrity") or the nightly full
    audit ("integrity_full")."""
    with read_session() as s:
        row = s.execute(
            text(
                "SELECT status, started_at, finished_at, counts->>'violations' AS violations,"
                " error FROM job_runs"
                f" WHERE job = :job AND status <> '{JobStatus.RUNNING}'"
                " ORDER BY started_at DESC LIMIT 1"
            ),
            {"job": job},
        ).first()
    if row is None:
        return None
    return IntegrityRun(
        row.status,
        row.started_at,
        row.finished_at,
        int(row.violations) if row.violations is not None else None,
        row.error,
    )
