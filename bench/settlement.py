"""Settle and cancel+refund a market with 10k, 100k and 1M bets over 10k users, against a bare SQL
floor (one UPDATE of the market's bet rows plus one grouped UPDATE of user balances, in one
transaction, rolled back).

The data is built set-based but exactly as `place_bet` leaves it: bets (BUY and SELL rows),
positions, users.bets_count, one ledger transaction `bet:<id>` per bet (user, escrow and fee
entries) applied to the balances, and pools that keep escrow = pool_yes + YES held = pool_no +
NO held. The integrity check passes before each timed operation and after it.

    .venv/bin/python bench/settlement.py [sizes...]      # default: 10000 100000 1000000
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import datetime as dt
import sys
import time
from decimal import Decimal

from sqlalchemy import text

from db.engine import get_engine, transaction
from services.errors import ErrorCode
from services.money import ledger, settlement, users
from services.money.integrity import check_integrity
from services.money.markets import open_market
from services.vocabulary import AccountKind, LedgerKind
from tests.support import settling
from tests.support.factories import market_spec
from tests.support.money import escrow_account_id

USERS = 10_000
DEPOSIT = Decimal(10_000_000)
LIQUIDITY = Decimal(1000)

# Bet i: every 20th bet sells half the shares bought by bet i-1 (same user and side), so no
# position goes below zero; the others buy 1.00 to 50.00, fee 2%.
_BETS = """
WITH g AS (
  SELECT i, CASE WHEN i % 20 = 0 THEN i - 1 ELSE i END AS base FROM generate_series(1, :n) i
), b AS (
  SELECT i, base, :first_user + base % :users AS user_id,
         CASE WHEN (base / :users + base) % 2 = 0 THEN 'YES' ELSE 'NO' END AS side,
         CAST(1 + base % 50 AS numeric) AS paid
  FROM g
), priced AS (
  SELECT i, base, user_id, side, paid, round(paid * 0.02, 6) AS fee,
         trunc((paid - round(paid * 0.02, 6)) * 1.5, 6) AS bought
  FROM b
)
INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares, price_before,
                  price_after)
SELECT :m, user_id, side,
       CASE WHEN i = base THEN 'BUY' ELSE 'SELL' END,
       CASE WHEN i = base THEN paid ELSE trunc(trunc(bought / 2, 6) * 0.45, 6) END,
       CASE WHEN i = base THEN fee ELSE 0 END,
       CASE WHEN i = base THEN bought ELSE trunc(bought / 2, 6) END,
       0.5, 0.5
FROM priced ORDER BY i
"""

_POSITIONS = """
INSERT INTO positions (user_id, market_id, side, shares, paid_in, received)
SELECT user_id, :m, side,
       sum(CASE WHEN action = 'BUY' THEN shares ELSE -shares END),
       sum(amount) FILTER (WHERE action = 'BUY'),
       coalesce(sum(amount) FILTER (WHERE action = 'SELL'), 0)
FROM bets WHERE market_id = :m GROUP BY user_id, side
"""

_BET_TRANSACTIONS = """
INSERT INTO ledger_transactions (idempotency_key, kind, market_id, bet_id, actor)
SELECT 'bet:' || id, CASE WHEN action = 'BUY' THEN 'BET' ELSE 'SELL' END, :m, id, 'bench'
FROM bets WHERE market_id = :m ORDER BY id
"""

_BET_ENTRIES = """
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT t.id, x.account_id, x.amount
FROM ledger_transactions t
JOIN bets b ON b.id = t.bet_id
JOIN accounts ua ON ua.user_id = b.user_id
CROSS JOIN LATERAL (VALUES
  (ua.id, CASE WHEN b.action = 'BUY' THEN -b.amount ELSE b.amount END),
  (:escrow, CASE WHEN b.action = 'BUY' THEN b.amount - b.fee ELSE -b.amount END),
  (:fee, b.fee)) AS x(account_id, amount)
WHERE t.market_id = :m AND t.kind IN ('BET', 'SELL') AND x.amount <> 0
ORDER BY t.id
"""

_APPLY_BALANCES = """
UPDATE accounts a SET balance = a.balance + d.delta
FROM (SELECT e.account_id, sum(e.amount) AS delta FROM ledger_entries e
      JOIN ledger_transactions t ON t.id = e.transaction_id
      WHERE t.market_id = :m AND t.kind IN ('BET', 'SELL') GROUP BY e.account_id) d
WHERE a.id = d.account_id
"""

_POOLS = """
UPDATE markets m SET
  pool_yes = e.balance - coalesce((SELECT sum(shares) FROM positions
                                   WHERE market_id = :m AND side = 'YES'), 0),
  pool_no = e.balance - coalesce((SELECT sum(shares) FROM positions
                                  WHERE market_id = :m AND side = 'NO'), 0)
FROM accounts e WHERE e.market_id = m.id AND m.id = :m
"""

_BETS_COUNT = """
UPDATE users u SET bets_count = u.bets_count + c.n
FROM (SELECT user_id, count(*) AS n FROM bets WHERE market_id = :m GROUP BY user_id) c
WHERE u.id = c.user_id
"""

_FLOOR_BETS = """
UPDATE bets SET status = CASE WHEN side = 'YES' THEN 'WON' ELSE 'LOST' END,
                payout = CASE WHEN side = 'YES' AND action = 'BUY' THEN shares ELSE 0 END
WHERE market_id = :m
"""

_FLOOR_BALANCES = """
UPDATE accounts a SET balance = a.balance + x.paid
FROM (SELECT user_id, sum(shares) AS paid FROM bets
      WHERE market_id = :m AND side = 'YES' AND action = 'BUY' GROUP BY user_id) x
WHERE a.user_id = x.user_id
"""


def create_users() -> int:
    """USERS users, each with DEPOSIT, through one balanced DEPOSIT transaction."""
    with transaction() as s:
        first = s.execute(
            text(
                "INSERT INTO users (username) SELECT 'bench' || g FROM generate_series(1, :n) g"
                " RETURNING id"
            ),
            {"n": USERS},
        ).scalars()
        first_id = min(first)
        s.execute(
            text(
                "INSERT INTO accounts (kind, user_id) SELECT 'USER', id FROM users"
                " WHERE username LIKE 'bench%'"
            )
        )
        tx = ledger.begin(s, key="bench:deposits", kind=LedgerKind.DEPOSIT, actor="bench")
        s.execute(
            text(
                "INSERT INTO ledger_entries (transaction_id, account_id, amount)"
                " SELECT :tx, id, :amount FROM accounts WHERE kind = 'USER'"
                " UNION ALL SELECT :tx, :external, -:amount * :n"
            ),
            {
                "tx": tx,
                "amount": DEPOSIT,
                "n": USERS,
                "external": ledger.system_account_id(s, AccountKind.EXTERNAL),
            },
        )
        ledger.finish(s, tx)
        users.fund_house(s, LIQUIDITY * 100, key="bench:house", actor="bench")
        s.execute(text("INSERT INTO kols (display_name, wallet) VALUES ('Bench', 'bench')"))
        return first_id


def build_market(n: int, first_user: int, name: str) -> int:
    with transaction() as s:
        kol, now = s.execute(text("SELECT (SELECT id FROM kols), now()")).one()
        spec = market_spec(
            kol_a_id=kol,
            title=name,
            question_key=name,
            baseline={"bench": True},
            opens_at=now,
            closes_at=now + dt.timedelta(days=365),
            liquidity=LIQUIDITY,
        )
        m = open_market(s, spec, actor="bench")
        params = {
            "m": m,
            "n": n,
            "users": USERS,
            "first_user": first_user,
            "escrow": escrow_account_id(s, m),
            "fee": ledger.system_account_id(s, AccountKind.FEE),
        }
        for sql in (
            _BETS,
            _POSITIONS,
            _BET_TRANSACTIONS,
            _BET_ENTRIES,
            _APPLY_BALANCES,
            _POOLS,
            _BETS_COUNT,
        ):
            s.execute(text(sql), params)
        return m


def vacuum() -> None:
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def assert_clean(when: str) -> None:
    report = check_integrity()
    if not report.ok:
        raise SystemExit(f"integrity check failed {when}: {report.violations[:5]}")


def floor(market_id: int) -> float:
    with get_engine().connect() as conn:
        trans = conn.begin()
        start = time.perf_counter()
        conn.execute(text(_FLOOR_BETS), {"m": market_id})
        conn.execute(text(_FLOOR_BALANCES), {"m": market_id})
        elapsed = time.perf_counter() - start
        trans.rollback()
    return elapsed


def timed(fn: object) -> tuple[float, settlement.SettlementResult]:
    start = time.perf_counter()
    result = fn()  # type: ignore[operator]
    return time.perf_counter() - start, result


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    _common.start_database("settlement")
    first_user = create_users()
    rows: list[tuple[str, str]] = []
    figures: dict[str, float] = {}
    for n in sizes:
        start = time.perf_counter()
        to_settle = build_market(n, first_user, f"settle-{n}")
        to_refund = build_market(n, first_user, f"refund-{n}")
        build_s = time.perf_counter() - start
        vacuum()
        assert_clean(f"after building {n}")
        floor_s = floor(to_settle)
        vacuum()  # drop the floor's rolled-back row versions before the real run
        settle_s, settled = timed(
            lambda m=to_settle: settling.settle(m, "YES", actor="bench", reason="bench")
        )
        refund_s, refunded = timed(
            lambda m=to_refund: settling.cancel_and_refund(
                m, ErrorCode.OPERATOR_CANCELLED, "bench", actor="bench"
            )
        )
        assert settled.applied and refunded.applied and settled.bets == refunded.bets == n
        assert_clean(f"after settling {n}")
        figures |= {
            f"settle_{n}_s": settle_s,
            f"floor_{n}_s": floor_s,
            f"ratio_{n}": settle_s / floor_s,
            f"refund_{n}_s": refund_s,
        }
        rows += [
            (f"{n} bets: build (2 markets)", f"{build_s:.2f} s"),
            (f"{n} bets: bare SQL floor", f"{floor_s:.3f} s"),
            (
                f"{n} bets: settle",
                f"{settle_s:.3f} s  ({settle_s / floor_s:.2f}x floor,"
                f" {settled.users_paid} users paid {settled.total_paid})",
            ),
            (
                f"{n} bets: cancel+refund",
                f"{refund_s:.3f} s  ({refunded.users_paid} users refunded {refunded.total_paid})",
            ),
        ]
    _common.report("Settlement: one transaction per market, set-based", rows, figures)


if __name__ == "__main__":
    main()
