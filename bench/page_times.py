"""Dashboard pages on a big database: 100,000 markets, 1,000,000 bets, 500,000 scraped rows.

The data is built set-based (generate_series) and is consistent enough for every page: markets
have KOLs, escrow accounts, pools and statuses that obey the schema; bets have users and markets;
each bet has a ledger transaction with two entries; scrape runs have rows, rejects and failures;
follower markets have cache rows (some stale); due markets exist with and without evidence.
Balances are not made to match the ledger (the integrity check is not timed here).

Then, for each page: the service calls the page makes (uncached), and a full Streamlit render of
the page through AppTest with its read cache cleared first (the slow case a person sees after the
cache's few seconds). The other engineer's pages (overview, markets, audit) are rendered too.

    .venv/bin/python bench/page_times.py
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from services.ops import jobs
from services.ops.auth import Principal
from services.views import freshness
from services.views import kols as kol_views
from services.views import ledger as ledger_views
from services.views import scrapes as scrape_views
from services.vocabulary import Role, Timeframe

# Pages rendered outside a server make Streamlit warn on every call; the table is what counts.
logging.getLogger("streamlit").setLevel(logging.ERROR)

KOLS = 2_000
USERS = 10_000
MARKETS = 100_000
BETS = 1_000_000
RUNS = 5_000  # one in 25 FAILED (no rows); the others 105 rows each: ~504,000 rows
ROWS_PER_RUN = 105
GOAL_S = 1.5

BUILD: list[tuple[str, str]] = [
    (
        "kols",
        f"""INSERT INTO kols (display_name, wallet, x_handle)
        SELECT 'KOL ' || i || CASE WHEN i % 97 = 0 THEN ' <b>x</b>' ELSE '' END,
               'W' || lpad(i::text, 8, '0'),
               CASE WHEN i % 10 = 0 THEN NULL ELSE 'kol' || i END
        FROM generate_series(1, {KOLS}) i""",
    ),
    (
        "users",
        f"""INSERT INTO users (username, bets_count)
        SELECT 'user' || i, 0 FROM generate_series(1, {USERS}) i""",
    ),
    (
        "user accounts",
        """INSERT INTO accounts (kind, user_id, balance)
        SELECT 'USER', id, 1000 FROM users""",
    ),
    (
        "scrape runs",
        f"""INSERT INTO scrape_runs (timeframe, trigger, source_url, started_at, finished_at,
               snapshot_at, status, rows_found, rows_stored, rows_rejected, error_code,
               error_message, quarantined, quarantine_reason, quarantined_by)
        SELECT (ARRAY['daily', 'weekly', 'monthly'])[1 + i % 3], 'SCHEDULE',
               'https://kolscan.io/leaderboard',
               now() - make_interval(mins => 15 * ((i / 3) + 1)),
               now() - make_interval(mins => 15 * ((i / 3) + 1)) + interval '20 seconds',
               CASE WHEN i % 25 = 0 THEN NULL
                    ELSE now() - make_interval(mins => 15 * ((i / 3) + 1)) + interval '19 s' END,
               CASE WHEN i % 25 = 0 THEN 'FAILED' WHEN i % 20 = 1 THEN 'PARTIAL'
                    ELSE 'SUCCESS' END,
               CASE WHEN i % 25 = 0 THEN 0 ELSE {ROWS_PER_RUN} END,
               CASE WHEN i % 25 = 0 THEN 0 ELSE {ROWS_PER_RUN} END,
               CASE WHEN i % 20 = 1 THEN 2 ELSE 0 END,
               CASE WHEN i % 25 = 0 THEN 'SCRAPE_TIMEOUT' END,
               CASE WHEN i % 25 = 0 THEN 'no rows after 30s' END,
               i % 101 = 7, CASE WHEN i % 101 = 7 THEN 'bench' END,
               CASE WHEN i % 101 = 7 THEN 'bench' END
        FROM generate_series(0, {RUNS - 1}) i""",
    ),
    (
        "scraped rows",
        # Each run shows KOLs offset..offset+104 of the 2,000, so ranks move between runs.
        f"""INSERT INTO scraped_kols (run_id, kol_id, rank, username, wallet, x_handle, wins,
               losses, sol_gain, usd_gain, timeframe, scraped_at)
        SELECT r.id, k.id, g.rank, k.display_name, k.wallet, k.x_handle,
               (g.rank * 7 + r.id) % 90, (g.rank * 3 + r.id) % 40,
               round(((r.id * g.rank) % 2000 - 500) / 7.0, 6),
               round(((r.id * g.rank) % 2000 - 500) * 21.3, 2), r.timeframe, r.snapshot_at
        FROM scrape_runs r CROSS JOIN generate_series(1, {ROWS_PER_RUN}) g(rank)
        JOIN kols k ON k.id = 1 + ((r.id / 3) % 40 * 37 + g.rank * (1 + (r.id / 3) % 2)) % {KOLS}
        WHERE r.status <> 'FAILED'""",
    ),
    (
        "rejects",
        """INSERT INTO scrape_rejects (run_id, position, raw, field, reason_code, reason)
        SELECT r.id, 105 + g, jsonb_build_object('name', 'row ' || g, 'sol', '12..5 Sol'),
               'sol_gain', 'PARSE_BAD_NUMBER', 'not a number: 12..5'
        FROM scrape_runs r CROSS JOIN generate_series(1, 2) g WHERE r.status = 'PARTIAL'
        UNION ALL
        SELECT r.id, 1, '{"name": "?"}', NULL, 'PARSE_MISSING_FIELD', 'no name'
        FROM scrape_runs r WHERE r.status = 'FAILED'""",
    ),
    (
        "markets",
        # Market i closes i*50s before a point 7 days ahead: ~12,000 still open, a few hundred
        # due (some past grace), the rest resolved or cancelled.
        f"""INSERT INTO markets (type, title, question_key, kol_a_id, kol_b_id, timeframe,
               threshold, target_rank, baseline, opens_at, closes_at, status, outcome,
               cancel_reason, cancel_detail, resolved_at, cancelled_at, pool_yes, pool_no,
               liquidity)
        SELECT t.type, t.type || ' #' || i, t.type || ':' || i, 1 + i % {KOLS},
               CASE WHEN t.type LIKE '%flippening' THEN 1 + (i + 1) % {KOLS} END,
               CASE WHEN t.type = 'follower_growth' THEN NULL
                    ELSE (ARRAY['daily', 'weekly', 'monthly'])[1 + i % 3] END,
               CASE WHEN t.type IN ('follower_growth', 'sol_gain_threshold',
                                    'wl_ratio_maintain') THEN 100 END,
               CASE WHEN t.type IN ('top_rank_maintain', 'rank_improvement') THEN 10 END,
               jsonb_build_object('a', jsonb_build_object('rank', 5, 'wins', 3, 'losses', 1,
                                                          'followers', 1000)),
               c.closes_at - interval '1 day', c.closes_at, s.status,
               CASE WHEN s.status = 'RESOLVED' THEN (ARRAY['YES', 'NO'])[1 + i % 2] END,
               CASE WHEN s.status = 'CANCELLED'
                    THEN (ARRAY['STALE_SCRAPE_DATA', 'X_API_UNAVAILABLE', 'SCRAPE_FAILED',
                                'OPERATOR_CANCELLED'])[1 + i % 4] END,
               CASE WHEN s.status = 'CANCELLED' THEN 'bench' END,
               CASE WHEN s.status = 'RESOLVED' THEN c.closes_at + interval '2 minutes' END,
               CASE WHEN s.status = 'CANCELLED' THEN c.closes_at + interval '31 minutes' END,
               1000, 1000, 1000
        FROM generate_series(1, {MARKETS}) i
        CROSS JOIN LATERAL (SELECT (ARRAY['rank_flippening', 'profit_streak',
               'follower_growth', 'sol_gain_flippening', 'usd_gain_flippening',
               'win_rate_flippening', 'wl_ratio_flippening', 'top_rank_maintain',
               'streak_continuation', 'rank_improvement', 'sol_gain_threshold',
               'wl_ratio_maintain'])[1 + i % 12] AS type) t
        CROSS JOIN LATERAL (SELECT now() + interval '7 days'
               - make_interval(secs => i * 50) AS closes_at) c
        CROSS JOIN LATERAL (SELECT CASE WHEN c.closes_at > now() - interval '3 hours'
               THEN 'OPEN' WHEN i % 10 < 7 THEN 'RESOLVED' ELSE 'CANCELLED' END AS status) s""",
    ),
    (
        "escrow accounts",
        """INSERT INTO accounts (kind, market_id, balance)
        SELECT 'ESCROW', id, CASE WHEN status = 'OPEN' THEN liquidity ELSE 0 END FROM markets""",
    ),
    (
        "bets",
        f"""INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares,
               price_before, price_after, status, payout, created_at)
        SELECT m.id, 1 + (i / {MARKETS} * 37 + i * 7919) % {USERS}, b.side, 'BUY', 10 + i % 40,
               round((10 + i % 40) * 0.02, 6), (10 + i % 40) * 1.5, 0.5, 0.51,
               CASE WHEN m.status = 'OPEN' THEN 'OPEN' WHEN m.status = 'CANCELLED'
                    THEN 'REFUNDED' WHEN m.outcome = b.side THEN 'WON' ELSE 'LOST' END,
               CASE WHEN m.status = 'RESOLVED' AND m.outcome = b.side
                    THEN (10 + i % 40) * 1.5 END,
               m.opens_at + make_interval(secs => i % 80000)
        FROM generate_series(1::bigint, {BETS}) i
        CROSS JOIN LATERAL (SELECT CASE WHEN (i / {MARKETS} + i) % 2 = 0 THEN 'YES' ELSE 'NO'
               END AS side) b
        JOIN markets m ON m.id = 1 + (i * 104729) % {MARKETS}""",
    ),
    (
        "positions",
        """INSERT INTO positions (user_id, market_id, side, shares, paid_in, received, payout)
        SELECT user_id, market_id, side, sum(shares), sum(amount), 0, sum(payout)
        FROM bets GROUP BY user_id, market_id, side""",
    ),
    (
        "ledger transactions",
        """INSERT INTO ledger_transactions (id, idempotency_key, kind, market_id, bet_id, actor,
               created_at)
        SELECT id, 'bet:' || id, 'BET', market_id, id, 'user', created_at FROM bets""",
    ),
    (
        "ledger entries",
        """INSERT INTO ledger_entries (transaction_id, account_id, amount)
        SELECT b.id, a.id, -b.amount FROM bets b JOIN accounts a ON a.user_id = b.user_id
        UNION ALL
        SELECT b.id, a.id, b.amount FROM bets b JOIN accounts a ON a.market_id = b.market_id""",
    ),
    (
        "ledger sequence",
        "SELECT setval(pg_get_serial_sequence('ledger_transactions', 'id'),"
        " (SELECT max(id) FROM ledger_transactions))",
    ),
    (
        "resolution attempts",
        """INSERT INTO resolution_attempts (market_id, trigger, started_at, finished_at, result,
               error_code, error_detail, evidence)
        SELECT id, 'schedule', closes_at + interval '1 minute', closes_at + interval '61 s',
               CASE status WHEN 'RESOLVED' THEN 'RESOLVED_' || outcome ELSE 'CANCELLED' END,
               cancel_reason, cancel_detail,
               jsonb_build_object('source', 'scrape_run', 'run_id', 1 + id % 5000)
        FROM markets WHERE status <> 'OPEN'
        UNION ALL
        SELECT id, 'schedule', now() - interval '1 minute', now(), 'DEFERRED',
               'STALE_SCRAPE_DATA', 'no usable snapshot', '{}'
        FROM markets WHERE status = 'OPEN' AND closes_at <= now()""",
    ),
    (
        "follower cache",
        # Every third handle's count is hours old: its open follower markets are stale.
        f"""INSERT INTO follower_cache (handle, followers, fetched_at)
        SELECT 'kol' || i, 1000 + i,
               now() - CASE WHEN i % 3 = 0 THEN interval '5 hours' ELSE interval '2 minutes' END
        FROM generate_series(1, {KOLS}) i WHERE i % 10 <> 0""",
    ),
    (
        "follower history",
        f"""INSERT INTO follower_history (handle, followers, fetched_at)
        SELECT 'kol' || i, 1000 + i + h * 3, now() - make_interval(mins => 5 * h)
        FROM generate_series(1, {KOLS}) i CROSS JOIN generate_series(0, 59) h
        WHERE i % 10 <> 0""",
    ),
    (
        "job runs",
        """INSERT INTO job_runs (job, host, pid, started_at, finished_at, status, counts, error)
        SELECT j, 'bench', 1, now() - make_interval(mins => g), now() - make_interval(mins => g)
               + interval '2 seconds', CASE WHEN g % 50 = 0 THEN 'FAILED' ELSE 'SUCCESS' END,
               '{}', CASE WHEN g % 50 = 0 THEN 'bench failure' END
        FROM unnest(ARRAY['resolve', 'scrape_daily', 'scrape_weekly', 'scrape_monthly',
                          'followers', 'generate', 'integrity']) j
        CROSS JOIN generate_series(1, 3000) g""",
    ),
    (
        "scheduler",
        """INSERT INTO scheduler_instances (id, host, pid, is_leader)
        VALUES ('bench:1:a', 'bench', 1, true), ('bench:2:b', 'bench', 2, false)""",
    ),
    (
        "audit log",
        """INSERT INTO audit_log (at, username, role, action, target_type, target_id, reason,
               result)
        SELECT now() - make_interval(mins => g), 'ops', 'operator', 'cancel_market', 'market',
               g::text, 'bench', 'OK'
        FROM generate_series(1, 20000) g""",
    ),
]


def build(url: str) -> list[tuple[str, str]]:
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        for name, sql in BUILD:
            started = time.perf_counter()
            count = conn.execute(sql).rowcount
            rows.append((f"build {name}", f"{count:>9} rows {time.perf_counter() - started:6.1f}s"))
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        rows.append(("build vacuum analyze", f"{time.perf_counter() - started:6.1f}s"))
    return rows


def _wallet_with_history() -> tuple[str, str]:
    top = kol_views.latest_snapshot(Timeframe.DAILY, limit=1).page.rows[0]
    return top["wallet"], top["x_handle"] or "kol1"


def service_calls() -> dict[str, Callable[[], object]]:
    """Each of my pages' service calls, in the order the page makes them."""
    wallet, handle = _wallet_with_history()

    def kol_data() -> None:
        for tf in (Timeframe.DAILY,):
            kol_views.latest_snapshot(tf, limit=50)
            kol_views.changes(tf)
            kol_views.anomalies(tf)
        kol_views.find_kols("")
        kol_views.kol_history(wallet)
        kol_views.follower_history(handle)

    def fresh() -> None:
        freshness.follower_freshness(limit=50)
        freshness.scrape_ages()
        freshness.would_be_cancelled(limit=50)

    def scrapes() -> None:
        scrape_views.success_over_time(days=14)
        scrape_views.runs(status="FAILED", limit=10)
        first = scrape_views.runs(limit=50)
        scrape_views.rejects(run_id=first.rows[0]["id"], limit=50)
        scrape_views.rejects(limit=50)

    def jobs_page() -> None:
        freshness.job_schedule()
        jobs.scheduler_state()
        jobs.recent_runs(limit=100)

    def ledger() -> None:
        ledger_views.last_integrity_run()
        ledger_views.balances()
        page = ledger_views.transactions(limit=50)
        ledger_views.entries(page.rows[0]["id"])

    return {
        "kol_data": kol_data,
        "freshness": fresh,
        "scrapes": scrapes,
        "jobs": jobs_page,
        "ledger": ledger,
    }


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """The median of `repeat` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def render_times(pages: list[str]) -> dict[tuple[str, str], float]:
    """A full AppTest render of each page: with its read caches cleared ("cold") and within their
    time to live ("cached")."""
    import streamlit as st

    from pages.ui import page_file
    from tests.support.pages import dashboard_app

    out = {}
    for page in pages:
        at = dashboard_app(Principal("bench", Role.ADMIN))
        at.default_timeout = 120
        at.run()
        at.switch_page(page_file(page))
        at.run()  # warm-up: imports and the first connections
        assert not at.exception, (page, at.exception)
        for cache, clear in (("cold", True), ("cached", False)):
            samples = []
            for _ in range(3):
                if clear:
                    st.cache_data.clear()
                started = time.perf_counter()
                at.run()
                samples.append(time.perf_counter() - started)
            out[(page, cache)] = statistics.median(samples)
    return out


def main() -> None:
    url = _common.start_database("dashboard")
    rows = build(url)
    figures: dict[str, float] = {}
    for page, fn in service_calls().items():
        figures[f"services_{page}_s"] = timed(fn)
    root = Path(__file__).resolve().parent.parent / "pages"
    mine = ["kol_data", "freshness", "scrapes", "jobs", "ledger", "accounts"]
    others = [p for p in ("overview", "markets", "audit") if (root / f"{p}.py").exists()]
    for (page, cache), seconds in render_times(mine + others).items():
        figures[f"page_{page}_s" if cache == "cold" else f"cached_{page}_s"] = seconds
    for key, value in figures.items():
        verdict = "" if not key.startswith("page_") else ("ok" if value < GOAL_S else "SLOW")
        rows.append((key, f"{value:7.3f}s {verdict}"))
    _common.report(
        f"Dashboard on {MARKETS:,} markets, {BETS:,} bets, ~{RUNS * ROWS_PER_RUN:,} scraped rows"
        f" (goal: every page under {GOAL_S}s)",
        rows,
        figures,
    )


if __name__ == "__main__":
    main()
