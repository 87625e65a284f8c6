"""Bulk cancel & refund of N markets (default 1,000) through the service (`services/ops/bulk`:
preview, then one transaction per market through the operator action, audited), while a
resolver sweep in another process races it on the same markets; against a floor measured in
the same run: the bare settlement service cancelling another N markets, one transaction each,
with no preview, role check, audit or race.

Every market is overdue with no usable snapshot, so the racing resolver cancels them too
(STALE_SCRAPE_DATA): each market must end with exactly one refund, whichever side won it, and
the integrity check must pass.

    .venv/bin/python bench/bulk_cancel.py [markets]      # default 1000
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import multiprocessing as mp
import os
import sys
import time
from decimal import Decimal

from sqlalchemy import text

from config import get_settings
from db.engine import dispose_engine, read_session, transaction
from services.errors import ErrorCode
from services.money import settlement, users
from services.money.bets import place_bet
from services.money.integrity import check_integrity
from services.ops import bulk
from services.ops.auth import Principal
from services.resolution import resolver
from services.vocabulary import Result, TradeAction
from tests.support.factories import new_market

OPERATOR = Principal("bench-operator", "operator")
LIQUIDITY = Decimal(100)
BATCH = 100


def build(n: int, bettors: list[int]) -> list[int]:
    """N markets, each with a YES and a NO bet (real `place_bet`), then closed two hours ago."""
    ids: list[int] = []
    with transaction() as s:
        kol = s.execute(
            text("INSERT INTO kols (display_name, wallet) VALUES ('B', :w) RETURNING id"),
            {"w": f"bench{len(bettors)}{n}{time.time_ns()}"},
        ).scalar_one()
    for start in range(0, n, BATCH):
        with transaction() as s:
            ids += [
                new_market(s, kol_a_id=kol, liquidity=LIQUIDITY, baseline={"a": {"usd_gain": 1}})
                for _ in range(min(BATCH, n - start))
            ]
    for i, market_id in enumerate(ids):
        for side, amount in (("YES", Decimal(3)), ("NO", Decimal(2))):
            place_bet(
                user_id=bettors[(i + (side == "NO")) % len(bettors)],
                market_id=market_id,
                side=side,
                action=TradeAction.BUY,
                amount=amount,
            )
    with transaction() as s:
        s.execute(
            text(
                "UPDATE markets SET opens_at = now() - interval '1 day 2 hours',"
                " closes_at = now() - interval '2 hours' WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
    return ids


def race(stop: mp.Event, out: mp.Queue) -> None:
    """The racing resolver: sweeps until told to stop; reports what it cancelled."""
    dispose_engine()
    cancelled = sweeps = 0
    while not stop.is_set():
        report = resolver.sweep(trigger="bench-race", batch_size=25)
        cancelled += report.cancelled
        sweeps += 1
        if report.claimed == 0:
            time.sleep(0.01)
    out.put((cancelled, sweeps))


def refunds(ids: list[int]) -> list[int]:
    with read_session() as s:
        counts = dict(
            s.execute(
                text(
                    "SELECT market_id, count(*) FROM settlements WHERE kind = 'REFUND'"
                    " AND market_id = ANY(:ids) GROUP BY market_id"
                ),
                {"ids": ids},
            ).all()
        )
    return [int(counts.get(m, 0)) for m in ids]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    _common.start_database("bulk_cancel")
    with transaction() as s:
        users.fund_house(s, LIQUIDITY * n * 3, key="bench:house", actor="bench")
    bettors = [users.register(f"bettor{i}", Decimal(100_000), actor="bench") for i in range(50)]
    t0 = time.perf_counter()
    raced = build(n, bettors)
    floor_ids = build(n, bettors)
    built_s = time.perf_counter() - t0
    assert check_integrity().ok

    # Floor: the settlement service alone, one transaction per market.
    t0 = time.perf_counter()
    for market_id in floor_ids:
        with transaction() as s:
            settlement.cancel_and_refund(
                s, market_id, ErrorCode.OPERATOR_CANCELLED, "floor", actor="bench"
            )
    floor_s = time.perf_counter() - t0

    # The bulk step through the service, raced by a resolver process; one reviewed step, not a
    # proposal (the approval flow has its own tests).
    os.environ["APPROVAL_MIN_MARKETS"] = str(n * 10)
    os.environ["APPROVAL_MIN_AMOUNT"] = "1000000000"
    get_settings.cache_clear()
    t0 = time.perf_counter()
    previewed = bulk.preview("cancel", raced)
    preview_s = time.perf_counter() - t0
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    racer = ctx.Process(target=race, args=(stop, out))
    racer.start()
    t0 = time.perf_counter()
    done = bulk.apply(OPERATOR, previewed, "bench: bulk cancel under a racing sweep", typed_count=n)
    apply_s = time.perf_counter() - t0
    stop.set()
    resolver_cancelled, sweeps = out.get(timeout=120)
    racer.join(timeout=60)

    per_market = refunds(raced)
    exactly_once = all(c == 1 for c in per_market)
    ok = done.count(Result.OK)
    integrity = check_integrity().ok
    _common.report(
        f"Bulk cancel & refund of {n:,} markets under a racing resolver sweep",
        [
            ("markets built (2 x N, 2 real bets each)", f"{built_s:.1f} s"),
            ("floor: settlement.cancel_and_refund x N", f"{floor_s:.2f} s"),
            ("bulk preview (every market)", f"{preview_s:.2f} s"),
            ("bulk apply (one transaction + audit each)", f"{apply_s:.2f} s"),
            ("apply per market", f"{apply_s / n * 1000:.1f} ms"),
            ("apply / floor", f"{apply_s / floor_s:.2f} x"),
            ("cancelled by the bulk step", f"{ok:,}"),
            ("cancelled by the racing resolver", f"{resolver_cancelled:,} in {sweeps} sweeps"),
            ("other results", str({r.value: done.count(r) for r in Result if done.count(r)})),
            ("every market refunded exactly once", str(exactly_once)),
            ("integrity check clean", str(integrity)),
        ],
        {
            "markets": n,
            "floor_s": floor_s,
            "preview_s": preview_s,
            "apply_s": apply_s,
            "apply_ms_per_market": apply_s / n * 1000,
            "apply_over_floor": apply_s / floor_s,
            "bulk_cancelled": ok,
            "resolver_cancelled": resolver_cancelled,
            "refunded_exactly_once": float(exactly_once),
            "integrity_ok": float(integrity),
        },
    )
    if not (exactly_once and integrity and ok + resolver_cancelled == n):
        sys.exit(1)


if __name__ == "__main__":
    main()
