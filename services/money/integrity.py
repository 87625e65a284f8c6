"""The money invariants, checked against the database; the dashboard, scheduler and tests share it.

Each check is one aggregate query and returns every violation it finds, not just the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import read_session
from services.vocabulary import BetStatus, MarketStatus, Side


class Check(StrEnum):
    BALANCE_MATCHES_LEDGER = "balance_matches_ledger"
    TRANSACTION_BALANCED = "transaction_balanced"
    LEDGER_TOTAL_ZERO = "ledger_total_zero"
    FINAL_ESCROW_EMPTY = "final_escrow_empty"
    NO_OPEN_BET_IN_FINAL_MARKET = "no_open_bet_in_final_market"
    CPMM_ESCROW_COVERS_SHARES = "cpmm_escrow_covers_shares"


@dataclass(frozen=True)
class Violation:
    check: Check
    subject: str
    detail: str


@dataclass(frozen=True)
class IntegrityReport:
    violations: list[Violation] = field(default_factory=list)
    checks_run: tuple[Check, ...] = tuple(Check)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_check(self) -> dict[Check, list[Violation]]:
        grouped: dict[Check, list[Violation]] = {c: [] for c in self.checks_run}
        for v in self.violations:
            grouped[v.check].append(v)
        return grouped


# The vocabulary is interpolated once, at import, into constant texts.
_QUERIES: dict[Check, str] = {
    Check.BALANCE_MATCHES_LEDGER: """
        SELECT a.kind || ':' || coalesce(a.user_id::text, a.market_id::text, a.id::text),
               'balance ' || a.balance || ' but ledger sums to ' || coalesce(e.total, 0)
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries
                   GROUP BY account_id) e ON e.account_id = a.id
        WHERE a.balance <> coalesce(e.total, 0)
        ORDER BY a.id""",
    Check.TRANSACTION_BALANCED: """
        SELECT 'tx:' || t.idempotency_key,
               count(e.id) || ' entries summing to ' || coalesce(sum(e.amount), 0)
        FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
        GROUP BY t.id
        HAVING count(e.id) < 2 OR coalesce(sum(e.amount), 0) <> 0
        ORDER BY t.id""",
    Check.LEDGER_TOTAL_ZERO: """
        SELECT 'all accounts', 'balances sum to ' || sum(balance)
        FROM accounts HAVING sum(balance) <> 0""",
    Check.FINAL_ESCROW_EMPTY: f"""
        SELECT 'market:' || m.id, m.status || ' market holds ' || a.balance || ' in escrow'
        FROM markets m JOIN accounts a ON a.market_id = m.id
        WHERE m.status <> '{MarketStatus.OPEN}' AND a.balance <> 0
        ORDER BY m.id""",
    Check.NO_OPEN_BET_IN_FINAL_MARKET: f"""
        SELECT 'market:' || b.market_id, count(*) || ' bets still OPEN in a ' || m.status
               || ' market'
        FROM bets b JOIN markets m ON m.id = b.market_id
        WHERE m.status <> '{MarketStatus.OPEN}' AND b.status = '{BetStatus.OPEN}'
        GROUP BY b.market_id, m.status
        ORDER BY b.market_id""",
    # escrow = pool_yes + YES held = pool_no + NO held, exactly (PRODUCT.md section 4).
    Check.CPMM_ESCROW_COVERS_SHARES: f"""
        SELECT 'market:' || m.id,
               'escrow ' || a.balance || ', pool_yes+held ' || (m.pool_yes + coalesce(p.yes, 0))
               || ', pool_no+held ' || (m.pool_no + coalesce(p.no, 0))
        FROM markets m JOIN accounts a ON a.market_id = m.id
        LEFT JOIN (SELECT market_id,
                          sum(shares) FILTER (WHERE side = '{Side.YES}') AS yes,
                          sum(shares) FILTER (WHERE side = '{Side.NO}') AS no
                   FROM positions GROUP BY market_id) p ON p.market_id = m.id
        WHERE m.status = '{MarketStatus.OPEN}'
          AND (a.balance <> m.pool_yes + coalesce(p.yes, 0)
               OR a.balance <> m.pool_no + coalesce(p.no, 0))
        ORDER BY m.id""",
}


def check_integrity(session: Session | None = None) -> IntegrityReport:
    """Run every check; pass a session to check inside an open transaction (tests, settlement)."""
    if session is None:
        with read_session() as own:
            return check_integrity(own)
    violations = [
        Violation(check, subject, detail)
        for check, sql in _QUERIES.items()
        for subject, detail in session.execute(text(sql)).all()
    ]
    return IntegrityReport(violations=violations)
