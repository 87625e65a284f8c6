"""One resolution sweep over 10,000 due markets (a mix of all twelve types, 20 bets each), with
both stand-ins: real Chromium scrapes of the kolscan stand-in and real HTTP to the X API one.

The markets, bets, positions and ledger are built set-based exactly as `open_market` and
`place_bet` leave them (the integrity check passes before the sweep and after it). Leaderboard
markets closed just before the stand-in's snapshot, so it is usable evidence; follower markets
closed a minute ago and are decided from a fresh batched X API lookup.

A floor is measured in the same run, on the same markets: settling them all by bare set-based SQL
(markets, bets, winners' balances, escrows; one transaction, rolled back). The sweep does far more
(evidence, an attempt and a ledger transaction per market, its own transaction per market), so the
ratio is no goal in itself; it is the figure that stays comparable from one machine to the next.

    .venv/bin/python bench/resolve.py [markets]      # default 10000
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, text

from config import get_settings
from db.engine import get_engine, transaction
from db.models import Market
from services.money import ledger
from services.money.integrity import check_integrity
from services.resolution import generator, outcomes, resolver
from services.sources import followers, scraper
from services.vocabulary import AccountKind, LedgerKind, Timeframe
from standins.kolscan_standin import KolscanStandin
from standins.xapi_standin import XApiStandin

USERS = 2000
BETS_PER_MARKET = 20
LIQUIDITY = Decimal(1000)

_USERS = """
WITH u AS (INSERT INTO users (username) SELECT :tag || '-' || g FROM generate_series(1, :n) g
           RETURNING id)
INSERT INTO accounts (kind, user_id) SELECT 'USER', id FROM u RETURNING user_id
"""
_LIQUIDITY_TX = """
INSERT INTO ledger_transactions (idempotency_key, kind, market_id, actor)
SELECT 'liquidity:' || id, 'LIQUIDITY', id, 'bench' FROM markets WHERE id > :after
"""
_LIQUIDITY_ENTRIES = """
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT t.id, x.account_id, x.amount FROM ledger_transactions t
JOIN accounts e ON e.market_id = t.market_id
JOIN markets m ON m.id = t.market_id
CROSS JOIN LATERAL (VALUES (e.id, m.liquidity), (:house, -m.liquidity)) x(account_id, amount)
WHERE t.kind = 'LIQUIDITY' AND t.market_id > :after
"""
# Bet j of market m: user (m*20+j) mod USERS, sides alternate, 1.00-50.00 paid, fee 2%,
# 1.5 shares per net unit (shares are rounded down, as place_bet does).
_BETS = """
INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares, price_before,
                  price_after)
SELECT m.id, u.first + (m.id * :per + j) % :users,
       CASE WHEN j % 2 = 0 THEN 'YES' ELSE 'NO' END, 'BUY', p.paid, p.fee,
       trunc((p.paid - p.fee) * 1.5, 6), 0.5, 0.5
FROM markets m CROSS JOIN generate_series(1, :per) j
CROSS JOIN (SELECT CAST(:first_user AS bigint) AS first) u
CROSS JOIN LATERAL (SELECT CAST(1 + (m.id + j * 7) % 50 AS numeric) AS paid) q
CROSS JOIN LATERAL (SELECT q.paid, round(q.paid * 0.02, 6) AS fee) p
WHERE m.id > :after
ORDER BY m.id, j
"""
_POSITIONS = """
INSERT INTO positions (user_id, market_id, side, shares, paid_in, received)
SELECT user_id, market_id, side, sum(shares), sum(amount), 0 FROM bets WHERE market_id > :after
GROUP BY user_id, market_id, side
"""
_BET_TX = """
INSERT INTO ledger_transactions (idempotency_key, kind, market_id, bet_id, actor)
SELECT 'bet:' || id, 'BET', market_id, id, 'bench' FROM bets WHERE market_id > :after ORDER BY id
"""
_BET_ENTRIES = """
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT t.id, x.account_id, x.amount FROM ledger_transactions t
JOIN bets b ON b.id = t.bet_id
JOIN accounts ua ON ua.user_id = b.user_id
JOIN accounts ea ON ea.market_id = b.market_id
CROSS JOIN LATERAL (VALUES (ua.id, -b.amount), (ea.id, b.amount - b.fee), (:fee, b.fee))
  AS x(account_id, amount)
WHERE t.kind = 'BET' AND t.market_id > :after
"""
_DEPOSITS = """
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT :tx, a.id, coalesce(s.spent, 0) + 100 FROM accounts a
JOIN users u ON u.id = a.user_id AND u.id >= :first_user
LEFT JOIN (SELECT user_id, sum(amount) AS spent FROM bets WHERE market_id > :after
           GROUP BY user_id) s ON s.user_id = a.user_id
UNION ALL
SELECT :tx, :external, -(SELECT sum(amount) FROM bets WHERE market_id > :after) - 100 * :users
"""
_APPLY = """
UPDATE accounts a SET balance = a.balance + d.total
FROM (SELECT e.account_id, sum(e.amount) AS total FROM ledger_entries e
      WHERE e.transaction_id >= :first_tx GROUP BY e.account_id) d
WHERE a.id = d.account_id
"""
_POOLS = """
UPDATE markets m SET
  pool_yes = e.balance - coalesce(p.yes, 0), pool_no = e.balance - coalesce(p.no, 0)
FROM accounts e LEFT JOIN (
  SELECT market_id, sum(shares) FILTER (WHERE side = 'YES') AS yes,
         sum(shares) FILTER (WHERE side = 'NO') AS no FROM positions
  WHERE market_id > :after GROUP BY market_id
) p ON p.market_id = e.market_id
WHERE e.market_id = m.id AND m.id > :after
"""
_BETS_COUNT = """
UPDATE users u SET bets_count = c.n
FROM (SELECT user_id, count(*) AS n FROM bets WHERE market_id > :after GROUP BY user_id) c
WHERE u.id = c.user_id
"""


def _definitions(n: int, now: dt.datetime, tag: str) -> list[dict[str, Any]]:
    """`n` valid market rows cycling through the twelve types over the scraped KOLs."""
    rows: list[dict[str, Any]] = []
    snapshots = {}
    for tf in (Timeframe.DAILY, Timeframe.WEEKLY):
        latest = generator._latest_run(tf)
        assert latest is not None, f"no {tf} scrape"
        snapshots[tf] = latest
    with transaction() as s:
        cache = {
            r.handle: r
            for r in s.execute(text("SELECT handle, followers, x_user_id FROM follower_cache"))
        }
    types = sorted(outcomes.ALL_TYPES)
    for i in range(n):
        type_ = types[i % len(types)]
        tf = "weekly" if i % 3 == 0 else "daily"
        _run_id, snapshot_at, kols = snapshots[tf]
        a, b = kols[i % len(kols)], kols[(i + 1) % len(kols)]
        baseline: dict[str, Any] = {"a": a.baseline(), "b": b.baseline()}
        threshold: Decimal | None = None
        target: int | None = None
        closes_at = snapshot_at - dt.timedelta(seconds=1)
        if type_ == "follower_growth":
            a = next(k for k in kols[i % len(kols) :] + kols if k.x_handle)
            cached = cache[(a.x_handle or "").lower()]
            # Pinned to the account counted, as the generator pins it.
            baseline = {
                "a": {
                    "followers": cached.followers - 50,
                    "x_user_id": cached.x_user_id,
                    "x_handle": cached.handle,
                }
            }
            threshold, tf, closes_at = Decimal(10 + i % 90), None, now - dt.timedelta(minutes=1)
        elif type_ in ("top_rank_maintain", "rank_improvement"):
            target = 1 + i % 20
        elif type_ == "sol_gain_threshold":
            threshold = Decimal(i % 200 - 100)
        elif type_ == "wl_ratio_maintain":
            threshold = Decimal("0.5") + Decimal(i % 20) / 10
        elif type_ == "streak_continuation":
            baseline["a"] |= {"wins": 5 + i % 10, "losses": 5}
        two = type_ in outcomes.TWO_KOL_TYPES
        if not two:
            baseline.pop("b", None)
        rows.append(
            {
                "type": type_,
                "title": f"bench {type_} {i}",
                "question_key": f"{tag}:{i}",
                "kol_a_id": a.kol_id,
                "kol_b_id": b.kol_id if two else None,
                "timeframe": tf,
                "threshold": threshold,
                "target_rank": target,
                "baseline": baseline,
                "opens_at": now - dt.timedelta(hours=2),
                "closes_at": closes_at,
                "pool_yes": LIQUIDITY,
                "pool_no": LIQUIDITY,
                "liquidity": LIQUIDITY,
            }
        )
    return rows


def build(n: int, tag: str = "bench") -> range:
    """`n` due markets with their bets, on top of whatever the database holds (`tag` names its
    users and keys, different for each build into one database); their ids."""
    now = dt.datetime.now(dt.UTC)
    rows = _definitions(n, now, tag)
    with transaction() as s:
        after = s.execute(text("SELECT coalesce(max(id), 0) FROM markets")).scalar_one()
        first_user = min(s.scalars(text(_USERS), {"n": USERS, "tag": tag}))
        scope = {"after": after, "first_user": first_user}
        s.execute(insert(Market), rows)
        s.execute(
            text(
                "INSERT INTO accounts (kind, market_id) SELECT 'ESCROW', id FROM markets"
                " WHERE id > :after"
            ),
            scope,
        )
        house = ledger.system_account_id(s, AccountKind.HOUSE)
        external = ledger.system_account_id(s, AccountKind.EXTERNAL)
        fee = ledger.system_account_id(s, AccountKind.FEE)
        capital = [
            ledger.Posting(external, -LIQUIDITY * (n + 10)),
            ledger.Posting(house, LIQUIDITY * (n + 10)),
        ]
        capital_tx = ledger.post(
            s,
            ledger.posting(
                key=f"{tag}:house", kind=LedgerKind.DEPOSIT, postings=capital, actor="bench"
            ),
        )
        s.execute(text(_LIQUIDITY_TX), scope)
        s.execute(text(_LIQUIDITY_ENTRIES), {"house": house, **scope})
        s.execute(text(_BETS), {"per": BETS_PER_MARKET, "users": USERS, **scope})
        deposits = ledger.begin(s, key=f"{tag}:deposits", kind=LedgerKind.DEPOSIT, actor="bench")
        s.execute(text(_DEPOSITS), {"tx": deposits, "external": external, "users": USERS, **scope})
        for sql in (_POSITIONS, _BET_TX):
            s.execute(text(sql), scope)
        s.execute(text(_BET_ENTRIES), {"fee": fee, **scope})
        # Every transaction after the capital's (which `post` applied itself).
        s.execute(text(_APPLY), {"first_tx": capital_tx + 1})
        for sql in (_POOLS, _BETS_COUNT):
            s.execute(text(sql), scope)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return range(after + 1, after + n + 1)


# The floor: the same markets settled by bare set-based SQL, YES for all, in one transaction
# that is rolled back: markets, bets, winners' balances, escrows emptied to the house.
_FLOOR = (
    """UPDATE markets SET status = 'RESOLVED', outcome = 'YES', resolved_at = now()
    WHERE id BETWEEN :lo AND :hi""",
    """UPDATE bets SET status = CASE WHEN side = 'YES' THEN 'WON' ELSE 'LOST' END,
                    payout = CASE WHEN side = 'YES' THEN shares ELSE 0 END
    WHERE market_id BETWEEN :lo AND :hi""",
    """UPDATE accounts a SET balance = a.balance + x.paid
    FROM (SELECT user_id, sum(shares) AS paid FROM positions
          WHERE market_id BETWEEN :lo AND :hi AND side = 'YES' GROUP BY user_id) x
    WHERE a.user_id = x.user_id""",
    """UPDATE accounts SET balance = 0 WHERE market_id BETWEEN :lo AND :hi""",
)


def floor(markets: range) -> float:
    """Seconds for the floor over `markets`, rolled back."""
    bounds = {"lo": markets.start, "hi": markets.stop - 1}
    with get_engine().connect() as conn:
        trans = conn.begin()
        started = time.perf_counter()
        for sql in _FLOOR:
            conn.execute(text(sql), bounds)
        elapsed = time.perf_counter() - started
        trans.rollback()
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE markets, bets, accounts"))
    return elapsed


def standins() -> contextlib.AbstractContextManager[tuple[KolscanStandin, XApiStandin]]:
    """Both stand-ins, the settings pointed at them, today's leaderboards scraped and every
    handle's follower count fetched: what `build`'s markets are decided from."""

    @contextlib.contextmanager
    def running() -> Iterator[tuple[KolscanStandin, XApiStandin]]:
        with (
            KolscanStandin(bucket=7, first_ms=30, batch_ms=10) as site,
            XApiStandin(token="bench-token", rate_limit=100_000) as x,
        ):
            os.environ.update(
                {
                    "KOLSCAN_BASE_URL": site.base_url,
                    "X_API_BASE_URL": x.base_url,
                    "X_API_BEARER_TOKEN": x.token,
                }
            )
            get_settings.cache_clear()
            for tf in ("daily", "weekly"):
                assert scraper.scrape_leaderboard(tf, trigger="MANUAL").status == "SUCCESS"
            with transaction() as s:
                handles = [
                    h
                    for (h,) in s.execute(
                        text("SELECT x_handle FROM kols WHERE x_handle IS NOT NULL")
                    )
                ]
            followers.fetch_followers(handles)
            yield site, x

    return running()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    _common.start_database("resolve")
    with standins():
        started = time.perf_counter()
        markets = build(n)
        build_s = time.perf_counter() - started
        before = check_integrity()
        if not before.ok:
            raise SystemExit(f"integrity before the sweep: {before.violations[:5]}")
        floor_s = floor(markets)

        started = time.perf_counter()
        report = resolver.sweep(trigger="bench")
        total_s = time.perf_counter() - started

    after = check_integrity()
    with transaction() as s:
        left = s.execute(text("SELECT count(*) FROM markets WHERE status = 'OPEN'")).scalar_one()
    if not after.ok or left:
        raise SystemExit(f"after the sweep: {left} open, violations {after.violations[:5]}")
    counts = report.counts()
    _common.report(
        f"Resolution sweep: {n} due markets x {BETS_PER_MARKET} bets",
        [
            ("build (set-based)", f"{build_s:.1f} s"),
            ("sweep", f"{total_s:.1f} s"),
            ("floor (bare set-based SQL settle, rolled back)", f"{floor_s:.3f} s"),
            ("ratio sweep / floor", f"{total_s / floor_s:.1f}x"),
            ("markets per second", f"{n / total_s:.0f}"),
            ("outcome", ", ".join(f"{k}={v}" for k, v in counts.items() if k != "scrapes")),
            ("on-demand scrapes", str(len(report.scrapes))),
            ("integrity after", "clean"),
        ],
        {
            "total_s": total_s,
            "markets_per_s": n / total_s,
            "floor_s": floor_s,
            "ratio": total_s / floor_s,
        },
    )


if __name__ == "__main__":
    main()
