"""The resolver at scale and in several processes."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
from decimal import Decimal

import psycopg
import pytest

from db.engine import dispose_engine, transaction
from services.money import bets, users
from services.money.integrity import check_integrity
from services.sources import scraper
from services.vocabulary import MarketType
from tests.conftest import Standins
from tests.support.factories import new_market


def _sweep_in_process(url: str, env: dict[str, str], out: mp.Queue) -> None:  # type: ignore[type-arg]
    import os

    os.environ.update(env)
    os.environ["DATABASE_URL"] = url
    from config import get_settings
    from services.resolution import resolver

    get_settings.cache_clear()
    report = resolver.sweep(batch_size=100)
    out.put(report.counts())


def _due_markets(db: str, n: int) -> list[int]:
    """`n` markets that closed just before the (only) scrape's snapshot, some with bets."""
    run = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    assert run.status == "SUCCESS"
    with psycopg.connect(db) as conn:
        kol_ids = [k for (k,) in conn.execute("SELECT id FROM kols ORDER BY id LIMIT 20")]
    with transaction() as s:
        users.fund_house(s, Decimal("10000000"), key="house", actor="test")
    uids = [users.register(f"sc{i}", Decimal("10000"), actor="test") for i in range(8)]
    now = dt.datetime.now(dt.UTC)
    ids: list[int] = []
    with transaction() as s:
        for i in range(n):
            ids.append(
                new_market(
                    s,
                    type=MarketType.SOL_GAIN_THRESHOLD,
                    kol_a_id=kol_ids[i % len(kol_ids)],
                    threshold=Decimal(i % 9 - 4),
                    baseline={"a": {"rank": 1}},
                    opens_at=now - dt.timedelta(hours=1),
                    closes_at=now + dt.timedelta(hours=1),
                    liquidity=Decimal("50"),
                )
            )
    for i, market_id in enumerate(ids[::5]):
        bets.place_bet(
            user_id=uids[i % 8],
            market_id=market_id,
            side="YES" if i % 2 else "NO",
            action="BUY",
            amount=Decimal("4"),
        )
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE markets SET closes_at = %s - interval '1 second'", (run.snapshot_at,))
    return ids


@pytest.mark.slow
def test_three_processes_sweeping_2000_markets_settle_each_exactly_once(
    db: str, standins: Standins
) -> None:
    ids = _due_markets(db, 2000)
    dispose_engine()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_sweep_in_process, args=(db, standins.env, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    reports = [out.get(timeout=5) for _ in procs]
    handled = sum(
        r.get("resolved_yes", 0) + r.get("resolved_no", 0) + r.get("cancelled", 0) for r in reports
    )
    assert handled == len(ids), reports
    assert sum(1 for r in reports if r.get("claimed")) >= 2, "the work was not shared"
    with psycopg.connect(db) as conn:
        open_left = conn.execute("SELECT count(*) FROM markets WHERE status = 'OPEN'").fetchone()
        per_market = conn.execute(
            "SELECT market_id, count(*) FROM settlements GROUP BY market_id HAVING count(*) <> 1"
        ).fetchall()
        settled = conn.execute("SELECT count(DISTINCT market_id) FROM settlements").fetchone()
        scrapes = conn.execute("SELECT count(*) FROM scrape_runs").fetchone()
    assert open_left == (0,) and per_market == [] and settled == (len(ids),)
    assert scrapes == (1,), "no on-demand scrape was needed: the snapshot was usable"
    assert check_integrity().ok
