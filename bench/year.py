"""A year of operation at the default cadence, then every page, the integrity checks, a sweep, a
scrape's store and retention timed on it (issue 19).

At `--scale 1` the build is one year of: 300 KOLs on each of the 3 leaderboards every 15 minutes
(~31.5M scraped rows in ~105,000 runs, one in 50 failed with saved HTML and screenshot), follower
counts of 300 handles every 5 minutes (~31.5M readings), ~1M job runs, 200,000 markets of all
twelve types (1, 7 or 30 days long; those closed RESOLVED or CANCELLED with their attempt,
settlement and ledger transaction), 10M bets with three ledger entries each, audit rows, alerts,
deliveries and incidents. `--scale S` multiplies every count (the span stays a year).

The money is built set-based but balanced, as the services leave it: deposits, the house's capital,
each market's liquidity, each bet (user, escrow, fee), each payout or refund, balances applied
from the entries, pools that keep the CPMM invariant of the open markets; the full integrity audit
passes on it. The last five minutes of ledger transactions are pending for the periodic check,
the rest verified, as they would be in production.

Then, timed cold (read caches cleared): every dashboard page (a full AppTest render, as
`bench/page_times.py` does), the periodic integrity check, the full audit, a resolution sweep over
1,000 due markets (built by `bench/resolve.py`, with both stand-ins) against the same on an empty
database (`sweep_ratio`), a 1,000-row scrape's store against the same on an empty database
(`store_ratio`; each ratio the median of interleaved year/empty pairs' ratios), and retention:
the database and artifacts on disk before it and after it (after VACUUM FULL of the pruned
tables: the size the policy holds the database to; in production autovacuum reuses the freed
space so the files stop growing there).

    .venv/bin/python bench/year.py --scale 0.1     # ~minutes: the quick form
    .venv/bin/python bench/year.py --scale 1       # the year; see README for the figures
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import argparse
import atexit
import datetime as dt
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import page_times
import psycopg
import resolve

from services.money.integrity import check_integrity, check_recent
from services.ops import retention
from services.resolution import resolver
from services.sources.scraper import scrape_leaderboard
from services.vocabulary import ScrapeStatus, ScrapeTrigger, Timeframe
from standins.kolscan_standin import KolscanStandin

logging.getLogger("streamlit").setLevel(logging.ERROR)

PAGES = (
    "overview",
    "markets",
    "kol_data",
    "freshness",
    "scrapes",
    "jobs",
    "ledger",
    "audit",
    "incidents",
    "accounts",
)
PAGE_GOAL_S = 1.5
PERIODIC_GOAL_S = 2.0
RATIO_GOAL = 1.3
SWEEP_MARKETS = 1000
STORES_PER_ROUND = 3
STORE_ROWS = 1000


def sizes(scale: float) -> dict[str, int]:
    """Every count of the year at `scale`."""
    return {
        "kols": 600,
        "handles": 300,
        "rows_per_run": 300,
        "runs_per_timeframe": max(10, round(35_040 * scale)),  # every 15 minutes at scale 1
        "readings_per_handle": max(10, round(105_120 * scale)),  # every 5 minutes
        "markets": max(120, round(200_000 * scale)),
        "bets": max(1000, round(10_000_000 * scale)),
        "users": max(500, round(50_000 * scale)),
        "job_runs": max(100, round(1_000_000 * scale)),
        "audit": max(100, round(50_000 * scale)),
        "alerts": max(20, round(2_000 * scale)),
    }


def build_sql(n: dict[str, int], artifacts: Path) -> list[tuple[str, str]]:
    """The statements, in order. `:start` is a year ago; every row's time is derived from it."""
    runs, markets, bets = n["runs_per_timeframe"], n["markets"], n["bets"]
    return [
        ("partitions", "SELECT follower_history_add_partitions(13, 2)"),
        (
            "kols",
            f"""INSERT INTO kols (id, display_name, wallet, x_handle)
            SELECT i, 'KOL ' || i, 'W' || lpad(i::text, 8, '0'),
                   CASE WHEN i <= {n["handles"]} THEN 'kol' || i END
            FROM generate_series(1, {n["kols"]}) i""",
        ),
        (
            "users",
            f"""WITH u AS (INSERT INTO users (username)
                           SELECT 'y' || i FROM generate_series(1, {n["users"]}) i RETURNING id)
            INSERT INTO accounts (kind, user_id) SELECT 'USER', id FROM u""",
        ),
        (
            "scrape runs",
            # Run id 1 + slot*3 + tf: the run of a timeframe after any instant is computable.
            f"""INSERT INTO scrape_runs (id, timeframe, trigger, source_url, started_at,
                   finished_at, snapshot_at, status, rows_found, rows_stored, error_code,
                   error_message, html_path, screenshot_path)
            SELECT 1 + s * 3 + tf, (ARRAY['daily', 'weekly', 'monthly'])[1 + tf], 'SCHEDULE',
                   'https://kolscan.io/leaderboard', at, at + interval '20 s',
                   CASE WHEN s % 50 <> 0 THEN at + interval '19 s' END,
                   CASE WHEN s % 50 = 0 THEN 'FAILED' ELSE 'SUCCESS' END,
                   CASE WHEN s % 50 = 0 THEN 0 ELSE {n["rows_per_run"]} END,
                   CASE WHEN s % 50 = 0 THEN 0 ELSE {n["rows_per_run"]} END,
                   CASE WHEN s % 50 = 0 THEN 'SCRAPE_TIMEOUT' END,
                   CASE WHEN s % 50 = 0 THEN 'no rows after 30s' END,
                   CASE WHEN s % 50 = 0 THEN '{artifacts}/run-' || (1 + s * 3 + tf) || '.html' END,
                   CASE WHEN s % 50 = 0 THEN '{artifacts}/run-' || (1 + s * 3 + tf) || '.png' END
            FROM generate_series(0, {runs - 1}) s CROSS JOIN generate_series(0, 2) tf
            CROSS JOIN LATERAL (SELECT :start + (s * :run_every) AS at) t""",
        ),
        (
            "scraped rows",
            # Run r shows KOLs offset..offset+299 of the 600: ranks move between runs.
            f"""INSERT INTO scraped_kols (run_id, kol_id, rank, username, wallet, x_handle, wins,
                   losses, sol_gain, usd_gain, timeframe, scraped_at)
            SELECT r.id, k.id, g.rank, k.display_name, k.wallet, k.x_handle,
                   (g.rank * 7 + r.id) % 90, (g.rank * 3 + r.id) % 40,
                   round(((r.id * g.rank) % 2000 - 500) / 7.0, 6),
                   round(((r.id * g.rank) % 2000 - 500) * 21.3, 2), r.timeframe, r.snapshot_at
            FROM scrape_runs r CROSS JOIN generate_series(1, {n["rows_per_run"]}) g(rank)
            JOIN kols k ON k.id = 1 + ((r.id / 3) % {n["kols"]} + g.rank) % {n["kols"]}
            WHERE r.status <> 'FAILED'""",
        ),
        (
            "follower cache",
            f"""INSERT INTO follower_cache (handle, x_user_id, followers, fetched_at)
            SELECT 'kol' || i, 'u' || i, 1000 + i, now() - interval '2 minutes'
            FROM generate_series(1, {n["handles"]}) i""",
        ),
        (
            "follower history",
            f"""INSERT INTO follower_history (handle, followers, fetched_at)
            SELECT 'kol' || i, 1000 + i + j / 100, :start + j * :reading_every
            FROM generate_series(1, {n["handles"]}) i
            CROSS JOIN generate_series(0, {n["readings_per_handle"] - 1}) j""",
        ),
        (
            "markets",
            # Market i opens at an even step over the year and closes 1, 7 or 30 days later;
            # those closed are final (7 in 10 RESOLVED), the rest OPEN and not yet due.
            f"""INSERT INTO markets (id, type, title, question_key, kol_a_id, kol_b_id,
                   timeframe, threshold, target_rank, baseline, opens_at, closes_at, status,
                   outcome, cancel_reason, cancel_detail, resolved_at, cancelled_at, pool_yes,
                   pool_no, liquidity)
            SELECT i, t.type, t.type || ' #' || i, t.type || ':' || i, a, b,
                   tf.name, CASE WHEN t.type IN ('follower_growth', 'sol_gain_threshold',
                                                 'wl_ratio_maintain') THEN 100 END,
                   CASE WHEN t.type IN ('top_rank_maintain', 'rank_improvement') THEN 10 END,
                   jsonb_build_object(
                       'a', jsonb_build_object('rank', 5, 'wins', 3, 'losses', 1,
                                               'followers', 1000, 'x_user_id', 'u' || a,
                                               'x_handle', 'kol' || a),
                       'source', jsonb_build_object('run_id', 1 + greatest(0, floor(
                           extract(epoch FROM c.closes_at - tf.days - :start)
                           / extract(epoch FROM :run_every)))::bigint * 3 + tf.ix)),
                   c.closes_at - tf.days, c.closes_at, s.status,
                   CASE WHEN s.status = 'RESOLVED' THEN (ARRAY['YES', 'NO'])[1 + i % 2] END,
                   CASE WHEN s.status = 'CANCELLED' THEN 'STALE_SCRAPE_DATA' END,
                   CASE WHEN s.status = 'CANCELLED' THEN 'bench' END,
                   CASE WHEN s.status = 'RESOLVED' THEN c.closes_at + interval '2 minutes' END,
                   CASE WHEN s.status = 'CANCELLED' THEN c.closes_at + interval '31 minutes' END,
                   1000, 1000, 1000
            FROM generate_series(1, {markets}) i
            CROSS JOIN LATERAL (SELECT (ARRAY['rank_flippening', 'profit_streak',
                   'follower_growth', 'sol_gain_flippening', 'usd_gain_flippening',
                   'win_rate_flippening', 'wl_ratio_flippening', 'top_rank_maintain',
                   'streak_continuation', 'rank_improvement', 'sol_gain_threshold',
                   'wl_ratio_maintain'])[1 + i % 12] AS type, 1 + i % {n["handles"]} AS a) t
            CROSS JOIN LATERAL (SELECT CASE WHEN t.type LIKE '%flippening'
                   THEN 1 + (i + 1) % {n["handles"]} END AS b) kb
            CROSS JOIN LATERAL (SELECT i % 3 AS ix,
                   CASE WHEN t.type = 'follower_growth' THEN NULL
                        ELSE (ARRAY['daily', 'weekly', 'monthly'])[1 + i % 3] END AS name,
                   (ARRAY[interval '1 day', interval '7 days', interval '30 days'])[1 + i % 3]
                   AS days) tf
            CROSS JOIN LATERAL (SELECT :start + (i::float8 / {markets}) * interval '365 days'
                   + tf.days AS closes_at) c
            CROSS JOIN LATERAL (SELECT CASE WHEN c.closes_at > now() THEN 'OPEN'
                   WHEN i % 10 < 7 THEN 'RESOLVED' ELSE 'CANCELLED' END AS status) s""",
        ),
        (
            "escrow accounts",
            "INSERT INTO accounts (kind, market_id) SELECT 'ESCROW', id FROM markets",
        ),
        (
            "bets",
            # A bet buys one share per unit paid net of the fee: with pools set from the escrow
            # below, the CPMM invariant of the open markets holds exactly.
            f"""INSERT INTO bets (market_id, user_id, side, action, amount, fee, shares,
                   price_before, price_after, status, payout, created_at)
            SELECT m.id, 1 + (i * 7919) % {n["users"]} + u.first - 1, b.side, 'BUY', p.paid,
                   p.fee, p.paid - p.fee, 0.5, 0.5,
                   CASE WHEN m.status = 'OPEN' THEN 'OPEN' WHEN m.status = 'CANCELLED'
                        THEN 'REFUNDED' WHEN m.outcome = b.side THEN 'WON' ELSE 'LOST' END,
                   CASE WHEN m.status = 'RESOLVED' THEN
                        CASE WHEN m.outcome = b.side THEN p.paid - p.fee ELSE 0 END END,
                   m.opens_at + (i % 997) / 997.0 * (least(now(), m.closes_at) - m.opens_at)
            FROM generate_series(1::bigint, {bets}) i
            CROSS JOIN (SELECT min(id) AS first FROM users) u
            CROSS JOIN LATERAL (SELECT CASE WHEN (i / 7) % 2 = 0 THEN 'YES' ELSE 'NO' END
                   AS side, CAST(1 + i % 50 AS numeric) AS paid) b
            CROSS JOIN LATERAL (SELECT b.paid, round(b.paid * 0.02, 6) AS fee) p
            JOIN markets m ON m.id = 1 + (i * 104729) % {markets}""",
        ),
        (
            "positions",
            """INSERT INTO positions (user_id, market_id, side, shares, paid_in, received, payout)
            SELECT user_id, market_id, side, sum(shares), sum(amount), 0, sum(payout)
            FROM bets GROUP BY user_id, market_id, side""",
        ),
        (
            "bet transactions",
            """INSERT INTO ledger_transactions (id, idempotency_key, kind, market_id, bet_id,
                   actor, created_at)
            SELECT id, 'bet:' || id, 'BET', market_id, id, 'user', created_at FROM bets""",
        ),
        (
            "bet entries",
            """INSERT INTO ledger_entries (transaction_id, account_id, amount)
            SELECT b.id, x.account_id, x.amount FROM bets b
            JOIN accounts ua ON ua.user_id = b.user_id
            JOIN accounts ea ON ea.market_id = b.market_id
            CROSS JOIN LATERAL (VALUES (ua.id, -b.amount), (ea.id, b.amount - b.fee),
                                       (:fee, b.fee)) x(account_id, amount)""",
        ),
        (
            "ledger sequence",
            "SELECT setval(pg_get_serial_sequence('ledger_transactions', 'id'),"
            " (SELECT max(id) FROM ledger_transactions))",
        ),
        (
            "deposits and capital",
            # One deposit per user of what they spend plus 100; the house's capital.
            f"""WITH t AS (INSERT INTO ledger_transactions (idempotency_key, kind, actor,
                              created_at)
                           VALUES ('year-deposits', 'DEPOSIT', 'bench', :start),
                                  ('year-capital', 'DEPOSIT', 'bench', :start)
                           RETURNING id, idempotency_key AS key),
            spent AS (SELECT user_id, sum(amount) AS total FROM bets GROUP BY user_id)
            INSERT INTO ledger_entries (transaction_id, account_id, amount)
            SELECT t.id, a.id, coalesce(s.total, 0) + 100 FROM t
            JOIN accounts a ON a.kind = 'USER' LEFT JOIN spent s ON s.user_id = a.user_id
            WHERE t.key = 'year-deposits'
            UNION ALL
            SELECT t.id, :external, -(SELECT sum(total) FROM spent) - 100 * {n["users"]}
            FROM t WHERE t.key = 'year-deposits'
            UNION ALL
            SELECT t.id, x.account_id, x.amount FROM t
            CROSS JOIN LATERAL (VALUES (:external, -1000 * {markets}),
                                       (:house, 1000 * {markets})) x(account_id, amount)
            WHERE t.key = 'year-capital'""",
        ),
        (
            "liquidity transactions",
            """INSERT INTO ledger_transactions (idempotency_key, kind, market_id, actor,
                   created_at)
            SELECT 'liquidity:' || id, 'LIQUIDITY', id, 'generator', opens_at FROM markets""",
        ),
        (
            "liquidity entries",
            """INSERT INTO ledger_entries (transaction_id, account_id, amount)
            SELECT t.id, x.account_id, x.amount FROM ledger_transactions t
            JOIN accounts e ON e.market_id = t.market_id
            CROSS JOIN LATERAL (VALUES (e.id, 1000), (:house, -1000)) x(account_id, amount)
            WHERE t.kind = 'LIQUIDITY'""",
        ),
        (
            "settlement transactions",
            """INSERT INTO ledger_transactions (idempotency_key, kind, market_id, actor,
                   created_at)
            SELECT 'settle:' || id, CASE status WHEN 'RESOLVED' THEN 'PAYOUT' ELSE 'REFUND' END,
                   id, 'resolver', coalesce(resolved_at, cancelled_at)
            FROM markets WHERE status <> 'OPEN'""",
        ),
        (
            "settlement entries",
            # RESOLVED: winners get a unit per share, the house what is left. CANCELLED: every
            # position gets back what it paid, the fee account returns its fees, the house its
            # liquidity. Either way the escrow ends empty.
            """WITH t AS (SELECT t.id, t.market_id, m.status, m.outcome, e.id AS escrow
                          FROM ledger_transactions t JOIN markets m ON m.id = t.market_id
                          JOIN accounts e ON e.market_id = m.id
                          WHERE t.kind IN ('PAYOUT', 'REFUND')),
            pos AS (SELECT p.market_id, p.user_id, p.side, p.shares, p.paid_in
                    FROM positions p JOIN markets m ON m.id = p.market_id
                    WHERE m.status <> 'OPEN'),
            sums AS (SELECT market_id, sum(paid_in) AS paid, sum(shares) AS net
                     FROM pos GROUP BY market_id)
            INSERT INTO ledger_entries (transaction_id, account_id, amount)
            SELECT t.id, t.escrow, -(1000 + coalesce(s.net, 0)) FROM t
            LEFT JOIN sums s ON s.market_id = t.market_id
            UNION ALL
            SELECT t.id, ua.id, CASE WHEN t.status = 'RESOLVED' THEN p.shares ELSE p.paid_in END
            FROM t JOIN pos p ON p.market_id = t.market_id
            JOIN accounts ua ON ua.user_id = p.user_id
            WHERE t.status = 'CANCELLED' OR p.side = t.outcome
            UNION ALL
            SELECT t.id, :house, 1000 + coalesce(s.net, 0) - coalesce(w.won, 0) FROM t
            LEFT JOIN sums s ON s.market_id = t.market_id
            LEFT JOIN (SELECT p.market_id, sum(p.shares) AS won FROM pos p
                       JOIN markets m ON m.id = p.market_id AND p.side = m.outcome
                       GROUP BY p.market_id) w ON w.market_id = t.market_id
            WHERE t.status = 'RESOLVED'
            UNION ALL
            SELECT t.id, :house, 1000 FROM t WHERE t.status = 'CANCELLED'
            UNION ALL
            SELECT t.id, :fee, -(s.paid - s.net) FROM t JOIN sums s ON s.market_id = t.market_id
            WHERE t.status = 'CANCELLED'""",
        ),
        (
            "settlements",
            """INSERT INTO settlements (market_id, kind, outcome, transaction_id, actor, reason,
                   created_at)
            SELECT t.market_id, CASE m.status WHEN 'RESOLVED' THEN 'SETTLE' ELSE 'REFUND' END,
                   m.outcome, t.id, 'resolver', 'bench', t.created_at
            FROM ledger_transactions t JOIN markets m ON m.id = t.market_id
            WHERE t.kind IN ('PAYOUT', 'REFUND')""",
        ),
        (
            "balances",
            """UPDATE accounts a SET balance = e.total
            FROM (SELECT account_id, sum(amount) AS total FROM ledger_entries
                  GROUP BY account_id) e
            WHERE a.id = e.account_id""",
        ),
        (
            "pools",
            """UPDATE markets m SET pool_yes = e.balance - coalesce(p.yes, 0),
                                    pool_no = e.balance - coalesce(p.no, 0)
            FROM accounts e LEFT JOIN (
              SELECT market_id, sum(shares) FILTER (WHERE side = 'YES') AS yes,
                     sum(shares) FILTER (WHERE side = 'NO') AS no
              FROM positions GROUP BY market_id) p ON p.market_id = e.market_id
            WHERE e.market_id = m.id AND m.status = 'OPEN'""",
        ),
        (
            "integrity checkpoint",
            # Verified up to five minutes ago; what came since is pending.
            """WITH recent AS (INSERT INTO integrity_pending (transaction_id)
                               SELECT id FROM ledger_transactions
                               WHERE created_at > now() - interval '5 minutes' RETURNING *)
            INSERT INTO integrity_account_marks (account_id, balance)
            SELECT a.id, a.balance - coalesce(n.total, 0) FROM accounts a
            LEFT JOIN (SELECT e.account_id, sum(e.amount) AS total FROM ledger_entries e
                       WHERE e.transaction_id IN (SELECT transaction_id FROM recent)
                       GROUP BY e.account_id) n ON n.account_id = a.id""",
        ),
        (
            "resolution attempts",
            """INSERT INTO resolution_attempts (market_id, trigger, started_at, finished_at,
                   result, error_code, error_detail, evidence)
            SELECT id, 'schedule', closes_at + interval '1 minute', closes_at + interval '61 s',
                   CASE status WHEN 'RESOLVED' THEN 'RESOLVED_' || outcome ELSE 'CANCELLED' END,
                   cancel_reason, cancel_detail,
                   CASE WHEN timeframe IS NULL
                        THEN jsonb_build_object('source', 'x_api', 'followers', 1200)
                        ELSE jsonb_build_object('source', 'scrape_run', 'run_id',
                             1 + ceil(extract(epoch FROM closes_at - :start)
                                      / extract(epoch FROM :run_every))::bigint * 3
                             + array_position(ARRAY['daily', 'weekly', 'monthly'],
                                              timeframe::text) - 1) END
            FROM markets WHERE status <> 'OPEN'""",
        ),
        (
            "users' bets",
            """UPDATE users u SET bets_count = c.n
            FROM (SELECT user_id, count(*) AS n FROM bets GROUP BY user_id) c
            WHERE u.id = c.user_id""",
        ),
        (
            "job runs",
            # Each job in proportion to its cadence (resolve and alerts every minute, ...).
            f"""INSERT INTO job_runs (job, host, pid, started_at, finished_at, status, counts,
                   error)
            SELECT j.name, 'bench', 1, at, at + interval '2 seconds',
                   CASE WHEN g % 97 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, '{{}}',
                   CASE WHEN g % 97 = 0 THEN 'bench failure' END
            FROM generate_series(0, {n["job_runs"] - 1}) g
            CROSS JOIN LATERAL (SELECT (ARRAY['resolve', 'resolve', 'resolve', 'resolve',
                   'alerts', 'alerts', 'alerts', 'alerts', 'followers', 'integrity',
                   'scrape_daily', 'scrape_weekly', 'scrape_monthly'])[1 + g % 13] AS name) j
            CROSS JOIN LATERAL (SELECT :start + (g::float8 / {n["job_runs"]})
                   * interval '365 days' AS at) t""",
        ),
        (
            "scheduler",
            """INSERT INTO scheduler_instances (id, host, pid, is_leader)
            VALUES ('bench-1-a', 'bench', 1, true)""",
        ),
        (
            "audit log",
            f"""INSERT INTO audit_log (at, username, role, action, target_type, target_id,
                   reason, result)
            SELECT :start + (g::float8 / {n["audit"]}) * interval '365 days', 'ops', 'operator',
                   'cancel_market', 'market', (1 + g % {markets})::text, 'bench', 'OK'
            FROM generate_series(1, {n["audit"]}) g""",
        ),
        (
            "alerts and incidents",
            f"""WITH a AS (
              INSERT INTO alerts (rule, key, severity, state, summary, started_at, last_seen_at,
                                  resolved_at)
              SELECT 'job_failing', 'job' || g, 'warning', 'RESOLVED', 'bench',
                     at, at + interval '10 minutes', at + interval '10 minutes'
              FROM generate_series(1, {n["alerts"]}) g
              CROSS JOIN LATERAL (SELECT :start + (g::float8 / {n["alerts"]})
                                  * interval '365 days' AS at) t
              RETURNING id, started_at, resolved_at),
            i AS (INSERT INTO incidents (alert_id, state, opened_at, closed_at)
                  SELECT id, 'CLOSED', started_at, resolved_at FROM a RETURNING alert_id),
            e AS (INSERT INTO alert_events (alert_id, kind, at, title, body)
                  SELECT id, 'FIRING', started_at, 'bench', 'bench' FROM a
                  RETURNING id, at)
            INSERT INTO alert_deliveries (event_id, channel, status, attempts, next_attempt_at,
                                          created_at, finished_at)
            SELECT id, 'json://127.0.0.1/hook', 'SENT', 1, at, at, at + interval '1 s'
            FROM e""",
        ),
    ]


# The big tables' secondary indexes are dropped for the load and built again after it, from
# their own definitions (a bulk index build is far faster than maintaining one row by row).
# Primary keys stay: foreign keys depend on them, and ids arrive in order.
BIG_TABLES = (
    "scraped_kols",
    "follower_history",
    "bets",
    "positions",
    "ledger_transactions",
    "ledger_entries",
    "resolution_attempts",
    "job_runs",
)
_SECONDARY = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname,
       pg_get_constraintdef(c.oid)
FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype = 'u'
WHERE i.indrelid = %s::regclass AND NOT i.indisprimary
"""


def drop_secondary_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop the big tables' secondary indexes; returns the statements that rebuild them."""
    rebuild = []
    for table in BIG_TABLES:
        for index, index_def, constraint, constraint_def in conn.execute(
            _SECONDARY, (table,)
        ).fetchall():
            if constraint:
                conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
                rebuild.append(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {constraint_def}")
            else:
                conn.execute(f"DROP INDEX {index}")
                rebuild.append(index_def)
    return rebuild


def build(url: str, n: dict[str, int], artifacts: Path) -> list[tuple[str, str]]:
    """Load the year as the owner, triggers and foreign-key checks off (as tests' reset does):
    every row is consistent by construction, and the full audit checks the money afterwards."""
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        rebuild = drop_secondary_indexes(conn)
        ids = dict(conn.execute("SELECT kind, id FROM accounts").fetchall())
        params = {
            "start": conn.execute("SELECT now() - interval '365 days'").fetchone()[0],  # type: ignore[index]
            "run_every": dt.timedelta(days=365) / n["runs_per_timeframe"],
            "reading_every": dt.timedelta(days=365) / n["readings_per_handle"],
            "house": ids["HOUSE"],
            "fee": ids["FEE"],
            "external": ids["EXTERNAL"],
        }
        for name, sql in build_sql(n, artifacts):
            started = time.perf_counter()
            used = {k: v for k, v in params.items() if f":{k}" in sql}
            count = conn.execute(_psycopg(sql), used).rowcount
            rows.append(
                (f"build {name}", f"{count:>11} rows {time.perf_counter() - started:7.1f}s")
            )
            progress(*rows[-1])
        started = time.perf_counter()
        for statement in rebuild:
            conn.execute(statement)
        rows.append(
            (
                "build indexes again",
                f"{len(rebuild):>11} idx  {time.perf_counter() - started:7.1f}s",
            )
        )
        progress(*rows[-1])
        for table in ("kols", "scrape_runs", "markets", "bets"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT max(id) FROM {table}))"
            )
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        rows.append(("build vacuum analyze", f"{time.perf_counter() - started:7.1f}s"))
    return rows


def progress(*what: object) -> None:
    """A line on stderr as each step ends: a long build can be followed."""
    print(time.strftime("%H:%M:%S"), *what, file=sys.stderr, flush=True)


def _psycopg(sql: str) -> str:
    """`:name` placeholders as psycopg's `%(name)s` (and a literal % doubled)."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql.replace("%", "%%"))


def make_artifacts(url: str, root: Path) -> int:
    """The failed runs' saved pages, dated as their runs: 60 kB of HTML and 30 kB of PNG each."""
    html, png = b"<html>" + b"x" * 60_000, b"\x89PNG" + b"y" * 30_000
    with psycopg.connect(url) as conn:
        runs = conn.execute(
            "SELECT html_path, screenshot_path, extract(epoch FROM started_at) FROM scrape_runs"
            " WHERE html_path IS NOT NULL"
        ).fetchall()
    for html_path, png_path, at in runs:
        for path, body in ((html_path, html), (png_path, png)):
            Path(path).write_bytes(body)
            os.utime(path, (float(at), float(at)))
    return retention.artifact_bytes(root)


def sweep_once(url: str, tag: str) -> float:
    """Seconds for a sweep over SWEEP_MARKETS due markets built on the database `url`."""
    _common.use_database(url)
    with resolve.standins():
        resolve.build(SWEEP_MARKETS, tag)
        # The build's writes (and its VACUUM ANALYZE, far longer on the year) are flushed
        # before the clock starts: the sweep is timed, not the flush of what came before it.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        started = time.perf_counter()
        report = resolver.sweep(trigger="bench")
        took = time.perf_counter() - started
    # The year's own markets may come due meanwhile, as they would: at least the bench's.
    if report.counts().get("claimed", 0) < SWEEP_MARKETS:
        raise SystemExit(f"the sweep did not take the {SWEEP_MARKETS} markets: {report.counts()}")
    return took


def store_once(site: KolscanStandin) -> float:
    """The store (one transaction) of a STORE_ROWS-row scrape into the current database."""
    result = scrape_leaderboard(
        Timeframe.DAILY, base_url=site.base_url, trigger=ScrapeTrigger.MANUAL
    )
    if result.status is not ScrapeStatus.SUCCESS or result.rows_stored != STORE_ROWS:
        raise SystemExit(f"the scrape did not store {STORE_ROWS} rows: {result}")
    return result.store_s


def against_empty(
    empty: str, year: str, rounds: int
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Sweeps and stores interleaved between the empty database and the year's, each pair back
    to back (which goes first alternates), so both of a pair see the same machine (others share
    it). The ratios are the medians of the pairs' ratios: a pair that a burst of load elsewhere
    slowed counts once, not in both medians. Also the medians of the times, and every sample."""
    samples: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {"sweep": [], "store": []}

    def pair(what: str, once: Any, turn: int) -> None:
        order = (("empty", empty), ("year", year))
        took = {name: once(db) for name, db in (order if turn % 2 == 0 else order[::-1])}
        for name, seconds in took.items():
            samples.setdefault(f"{what}_{name}_s", []).append(seconds)
        ratios[what].append(took["year"] / took["empty"])

    def store(db: str) -> float:
        _common.use_database(db)
        return store_once(site)

    with KolscanStandin(variant="big", big_rows=STORE_ROWS, bucket=1) as site:
        for db in (empty, year):  # the first store of a run creates the KOLs: not timed
            store(db)
        for round_ in range(rounds):
            pair("sweep", lambda db, r=round_: sweep_once(db, f"round{r}"), round_)
            for i in range(STORES_PER_ROUND):  # a store is short: several per round
                pair("store", store, round_ * STORES_PER_ROUND + i)
            progress(f"round {round_}", {k: round(v[-1], 3) for k, v in samples.items()})
    figures = {key: statistics.median(values) for key, values in samples.items()}
    figures |= {f"{what}_ratio": statistics.median(r) for what, r in ratios.items()}
    rows = [
        (f"{key} samples", " ".join(f"{v:.3f}" for v in values))
        for key, values in [*samples.items(), *((f"{w}_ratio", r) for w, r in ratios.items())]
    ]
    return figures, rows


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument(
        "--rounds", type=int, default=5, help="year/empty sweep pairs (each with 3 store pairs)"
    )
    args = parser.parse_args()
    scale = args.scale
    n = sizes(scale)
    artifacts = Path(tempfile.mkdtemp(prefix="kolops-year-artifacts-"))
    atexit.register(shutil.rmtree, artifacts, ignore_errors=True)  # a year's files: ~200 MB
    os.environ["ARTIFACTS_DIR"] = str(artifacts)
    rows: list[tuple[str, str]] = [
        ("scale", f"{scale:g}: " + ", ".join(f"{k}={v:,}" for k, v in n.items()))
    ]
    figures: dict[str, float] = {}

    # An empty database: the sweep and store figures the year's are held to.
    empty = _common.start_database("year_empty")
    url = _common.start_database("year")
    started = time.perf_counter()
    rows += build(url, n, artifacts)
    artifacts_before = make_artifacts(url, artifacts)
    build_s = time.perf_counter() - started
    rows.append(("build total", f"{build_s:.1f}s"))

    for (page, cache), seconds in page_times.render_times(list(PAGES)).items():
        if cache == "cold":
            figures[f"page_{page}_s"] = seconds
    progress("pages", {k: round(v, 3) for k, v in figures.items()})
    figures["integrity_periodic_s"] = timed(check_recent)
    started = time.perf_counter()
    full = check_integrity()
    figures["integrity_full_s"] = time.perf_counter() - started
    if not full.ok:
        raise SystemExit(f"the year's ledger is not clean: {full.violations[:5]}")

    progress("integrity", figures["integrity_periodic_s"], figures["integrity_full_s"])
    with psycopg.connect(url, autocommit=True) as conn:
        # What the checks and pages left to autovacuum is done before the comparison starts.
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    compared, samples = against_empty(empty, url, args.rounds)
    figures.update(compared)
    rows += samples
    _common.use_database(url)
    figures["db_bytes_before_retention"] = retention.database_bytes()
    figures["artifact_bytes_before_retention"] = artifacts_before
    started = time.perf_counter()
    report = retention.run()
    figures["retention_s"] = time.perf_counter() - started
    progress("retention", f"{figures['retention_s']:.1f}s", report.removed)
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(
            "VACUUM FULL scrape_runs, scraped_kols, scrape_rejects, follower_history, job_runs,"
            " alert_deliveries"
        )
        rows.append(("vacuum full of the pruned tables", f"{time.perf_counter() - started:.1f}s"))
    figures["db_bytes_after_retention"] = retention.database_bytes()
    figures["artifact_bytes_after_retention"] = report.artifact_bytes_after
    after = check_integrity()
    if not after.ok:
        raise SystemExit(f"integrity after retention: {after.violations[:5]}")
    rows.append(("retention removed", ", ".join(f"{k}={v:,}" for k, v in report.removed.items())))

    for key, value in figures.items():
        if key.startswith("page_"):
            verdict = "ok" if value < PAGE_GOAL_S else "SLOW"
        elif key == "integrity_periodic_s":
            verdict = "ok" if value < PERIODIC_GOAL_S else "SLOW"
        elif key.endswith("_ratio"):
            verdict = "ok" if value <= RATIO_GOAL else "SLOW"
        else:
            verdict = ""
        shown = f"{value:,.0f}" if "bytes" in key else f"{value:8.3f}"
        rows.append((key, f"{shown} {verdict}"))
    _common.report(
        f"A year at scale {scale:g} (goals: pages < {PAGE_GOAL_S}s, periodic integrity"
        f" < {PERIODIC_GOAL_S}s, sweep and store within {RATIO_GOAL}x of empty)",
        rows,
        figures,
    )


if __name__ == "__main__":
    main()
