"""The money invariants, checked against the database; the dashboard, scheduler and tests share it.

Each check is one aggregate query and returns every violation it finds, not just the first.

Two scopes of the same checks (PRODUCT.md section 6a):
- `check_integrity`, the full audit: every invariant over every row (nightly, and on demand).
- `check_recent`, the periodic check: only what changed since the last verified point, so it
  stays fast on a year of ledger. Its checkpoint lives in the database (migration 0011): the
  ledger transactions a trigger noted in `integrity_pending` and not yet verified, and each
  account's balance as last verified (`integrity_account_marks`). It verifies the pending
  transactions (balanced, at least two entries), every balance against its mark plus its pending
  entries (a balance moved without an entry is found, whichever account), the ledger total, and
  the markets those transactions touched (final: empty escrow, no open bet; open: the CPMM
  invariant). Only a clean check advances the checkpoint, so a violation keeps showing until it
  is repaired. Rows behind the checkpoint are the full audit's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import read_session, transaction
from services.vocabulary import BetStatus, MarketStatus, Side

# The scheduler's jobs that run them (the periodic check, the nightly full audit); a failure of
# either is an integrity alert.
INTEGRITY_JOBS = ("integrity", "integrity_full")


class Check(StrEnum):
    BALANCE_MATCHES_LEDGER = "balance_matches_ledger"
    # The periodic form of the one above: balance = last verified balance + new entries.
    BALANCE_MOVED_BY_ENTRIES = "balance_moved_by_entries"
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
    checks_run: tuple[Check, ...] = ()
    # The periodic check: the ledger transactions it verified (0 for the full audit).
    transactions_verified: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_check(self) -> dict[Check, list[Violation]]:
        grouped: dict[Check, list[Violation]] = {c: [] for c in self.checks_run}
        for v in self.violations:
            grouped[v.check].append(v)
        return grouped


# The scopes a query is restricted to: the whole table, or what the periodic check verifies,
# given as arrays of ids (`:pending` transactions, `:markets` they touched): with the exact
# count before it, the planner stays on the indexes however large the ledger.
# `{tx}` filters ledger transactions `t`, `{market}` filters markets `m`.
_ALL = {"tx": "true", "market": "true"}
_PENDING = {"tx": "t.id = ANY(:pending)", "market": "m.id = ANY(:markets)"}
_TOUCHED_MARKETS = """
    SELECT t.market_id FROM ledger_transactions t
    WHERE t.id = ANY(:pending) AND t.market_id IS NOT NULL
    UNION
    SELECT a.market_id FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
    WHERE e.transaction_id = ANY(:pending) AND a.market_id IS NOT NULL"""

# The vocabulary is interpolated once, at import, into constant texts; the scope per call.
_QUERIES: dict[Check, str] = {
    Check.BALANCE_MATCHES_LEDGER: """
        SELECT a.kind || ':' || coalesce(a.user_id::text, a.market_id::text, a.id::text),
               'balance ' || a.balance || ' but ledger sums to ' || coalesce(e.total, 0)
        FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries
                   GROUP BY account_id) e ON e.account_id = a.id
        WHERE a.balance <> coalesce(e.total, 0)
        ORDER BY a.id""",
    Check.BALANCE_MOVED_BY_ENTRIES: """
        SELECT a.kind || ':' || coalesce(a.user_id::text, a.market_id::text, a.id::text),
               'balance ' || a.balance || ' but last verified ' || coalesce(k.balance, 0)
               || ' plus new entries ' || coalesce(n.total, 0)
        FROM accounts a
        LEFT JOIN integrity_account_marks k ON k.account_id = a.id
        LEFT JOIN (SELECT e.account_id, sum(e.amount) AS total FROM ledger_entries e
                   WHERE e.transaction_id = ANY(:pending)
                   GROUP BY e.account_id) n ON n.account_id = a.id
        WHERE a.balance <> coalesce(k.balance, 0) + coalesce(n.total, 0)
        ORDER BY a.id""",
    Check.TRANSACTION_BALANCED: """
        SELECT 'tx:' || t.idempotency_key,
               count(e.id) || ' entries summing to ' || coalesce(sum(e.amount), 0)
        FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
        WHERE {tx}
        GROUP BY t.id
        HAVING count(e.id) < 2 OR coalesce(sum(e.amount), 0) <> 0
        ORDER BY t.id""",
    Check.LEDGER_TOTAL_ZERO: """
        SELECT 'all accounts', 'balances sum to ' || sum(balance)
        FROM accounts HAVING sum(balance) <> 0""",
    Check.FINAL_ESCROW_EMPTY: f"""
        SELECT 'market:' || m.id, m.status || ' market holds ' || a.balance || ' in escrow'
        FROM markets m JOIN accounts a ON a.market_id = m.id
        WHERE m.status <> '{MarketStatus.OPEN}' AND a.balance <> 0 AND {{market}}
        ORDER BY m.id""",
    Check.NO_OPEN_BET_IN_FINAL_MARKET: f"""
        SELECT 'market:' || b.market_id, count(*) || ' bets still OPEN in a ' || m.status
               || ' market'
        FROM bets b JOIN markets m ON m.id = b.market_id
        WHERE m.status <> '{MarketStatus.OPEN}' AND b.status = '{BetStatus.OPEN}' AND {{market}}
        GROUP BY b.market_id, m.status
        ORDER BY b.market_id""",
    # escrow = pool_yes + YES held = pool_no + NO held, exactly (PRODUCT.md section 4).
    Check.CPMM_ESCROW_COVERS_SHARES: f"""
        SELECT 'market:' || m.id,
               'escrow ' || a.balance || ', pool_yes+held ' || (m.pool_yes + coalesce(p.yes, 0))
               || ', pool_no+held ' || (m.pool_no + coalesce(p.no, 0))
        FROM markets m JOIN accounts a ON a.market_id = m.id
        LEFT JOIN LATERAL (SELECT sum(shares) FILTER (WHERE side = '{Side.YES}') AS yes,
                                  sum(shares) FILTER (WHERE side = '{Side.NO}') AS no
                           FROM positions WHERE market_id = m.id) p ON true
        WHERE m.status = '{MarketStatus.OPEN}' AND {{market}}
          AND (a.balance <> m.pool_yes + coalesce(p.yes, 0)
               OR a.balance <> m.pool_no + coalesce(p.no, 0))
        ORDER BY m.id""",
}

FULL_CHECKS = tuple(c for c in Check if c is not Check.BALANCE_MOVED_BY_ENTRIES)
PERIODIC_CHECKS = tuple(c for c in Check if c is not Check.BALANCE_MATCHES_LEDGER)


def _run(
    session: Session,
    checks: tuple[Check, ...],
    scope: dict[str, str],
    params: dict[str, list[int]] | None = None,
) -> list[Violation]:
    return [
        Violation(check, subject, detail)
        for check in checks
        for subject, detail in session.execute(
            text(_QUERIES[check].format(**scope)), params or {}
        ).all()
    ]


def check_integrity(session: Session | None = None) -> IntegrityReport:
    """The full audit: every check over every row. Pass a session to check inside an open
    transaction (tests, settlement)."""
    if session is None:
        with read_session() as own:
            return check_integrity(own)
    return IntegrityReport(violations=_run(session, FULL_CHECKS, _ALL), checks_run=FULL_CHECKS)


def check_recent() -> IntegrityReport:
    """The periodic check: what changed since the last verified point, in one REPEATABLE READ
    transaction (every query sees the same pending set and balances); when it is clean, the
    pending transactions it saw are verified and the touched accounts' marks move to the
    balances it saw. Transactions committed meanwhile stay pending for the next run."""
    with transaction() as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        pending = list(session.scalars(text("SELECT transaction_id FROM integrity_pending")))
        markets = list(session.scalars(text(_TOUCHED_MARKETS), {"pending": pending}))
        params = {"pending": pending, "markets": markets}
        violations = _run(session, PERIODIC_CHECKS, _PENDING, params)
        verified = 0
        if not violations:
            session.execute(
                text(
                    """INSERT INTO integrity_account_marks (account_id, balance)
                    SELECT a.id, a.balance FROM accounts a
                    WHERE a.id IN (SELECT account_id FROM ledger_entries
                                   WHERE transaction_id = ANY(:pending))
                    ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance"""
                ),
                params,
            )
            verified = session.execute(
                text("DELETE FROM integrity_pending WHERE transaction_id = ANY(:pending)"), params
            ).rowcount
    return IntegrityReport(
        violations=violations, checks_run=PERIODIC_CHECKS, transactions_verified=verified
    )
