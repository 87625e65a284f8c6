"""A scrape run that decided markets of several types, planted for the re-evaluation tests (the
service test and the browser test share it): which markets should stay, flip or become
undecidable once the run is quarantined, and the markets that must NOT be listed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text

from db.engine import transaction
from services.money import settlement
from services.resolution import resolver
from services.vocabulary import MarketType, Verdict
from tests.support.factories import new_market
from tests.support.pages import bet_on
from tests.support.scrape_data import fund_house, kol, scrape_run

D = Decimal
# Every market gets these bets while open: both sides held, so every change moves money.
TRADES = [("ann", "YES", D(40)), ("ben", "NO", D(25)), ("cat", "YES", D(10))]


@dataclass
class Planted:
    run_id: int  # the run to quarantine
    other_run_id: int  # a later good run in some markets' windows
    expected: dict[int, Verdict]  # listed market -> what its re-evaluation must say
    not_listed: dict[str, int] = field(default_factory=dict)  # why -> market id
    users: dict[int, dict[str, int]] = field(default_factory=dict)  # market -> name -> id


def _market(db: str, type_: MarketType, closes_at: dt.datetime, **fields: Any) -> int:
    with transaction() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
        market_id = new_market(
            s,
            type=type_,
            opens_at=now - dt.timedelta(minutes=1),
            closes_at=now + dt.timedelta(days=1),
            liquidity=D(1000),
            **fields,
        )
    return market_id


def _close(db: str, market_id: int, closes_at: dt.datetime) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET opens_at = %s, closes_at = %s WHERE id = %s",
            (closes_at - dt.timedelta(days=1), closes_at, market_id),
        )


def plant(db: str) -> Planted:
    """Run Q (to be quarantined) at S, two hours ago, and run R thirty minutes later. With A
    ranked 1 and B 2 in Q but the other way round in R:

    - markets closing ten minutes before S see Q then R in their window (lag 60 min): the
      resolver decided them from Q (the earliest); without Q, R decides: rank_flippening(A, B)
      and sol_gain_threshold(A >= 98.5) flip YES -> NO, profit_streak(A) stays YES;
    - a rank_improvement(A, target 1) market closing fifty minutes before S sees only Q: without
      it, it can no longer be decided;
    - not listed: a market decided from Q and re-settled by hand since, one decided from Q and
      cancelled since, and one decided from R (closing after Q).
    """
    fund_house("1000000")
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(hours=2)
    a_id = kol("Alpha", "WALPHA", "alpha")
    b_id = kol("Beta", "WBETA", "beta")
    q = scrape_run(
        db, "daily", start, [(1, "alpha", "WALPHA", "alpha"), (2, "beta", "WBETA", "beta")]
    )
    r = scrape_run(
        db,
        "daily",
        start + dt.timedelta(minutes=30),
        [(1, "beta", "WBETA", "beta"), (2, "alpha", "WALPHA", "alpha")],
    )
    base = {"a": {"rank": 1, "wins": 10, "losses": 5}, "b": {"rank": 2, "wins": 10, "losses": 5}}
    early = start - dt.timedelta(minutes=10)
    only_q = start - dt.timedelta(minutes=50)
    after_q = start + dt.timedelta(minutes=5)
    specs: list[tuple[str, MarketType, dt.datetime, dict[str, Any], Verdict | None]] = [
        ("flip_rank", MarketType.RANK_FLIPPENING, early, {"kol_b_id": b_id}, Verdict.FLIPS),
        ("flip_sol", MarketType.SOL_GAIN_THRESHOLD, early, {"threshold": D("98.5")}, Verdict.FLIPS),
        ("stays", MarketType.PROFIT_STREAK, early, {}, Verdict.STAYS),
        (
            "undecidable",
            MarketType.RANK_IMPROVEMENT,
            only_q,
            {"target_rank": 1},
            Verdict.UNDECIDABLE,
        ),
        ("resettled_since", MarketType.PROFIT_STREAK, early, {}, None),
        ("cancelled_since", MarketType.PROFIT_STREAK, early, {}, None),
        ("decided_from_r", MarketType.RANK_FLIPPENING, after_q, {"kol_b_id": b_id}, None),
    ]
    planted = Planted(q, r, {})
    for name, type_, closes_at, fields, verdict in specs:
        market_id = _market(db, type_, closes_at, kol_a_id=a_id, baseline=base, **fields)
        planted.users[market_id] = bet_on(market_id, TRADES)
        _close(db, market_id, closes_at)
        if verdict is None:
            planted.not_listed[name] = market_id
        else:
            planted.expected[market_id] = verdict
    report = resolver.sweep()
    assert report.resolved_yes + report.resolved_no == len(specs), report
    with transaction() as s:
        settlement.resettle(
            s,
            planted.not_listed["resettled_since"],
            "NO",
            actor="olga",
            reason="looked wrong",
            expected_status="RESOLVED",
        )
        settlement.cancel_and_refund(
            s,
            planted.not_listed["cancelled_since"],
            "OPERATOR_CANCELLED",
            "looked wrong",
            actor="olga",
            expected_status="RESOLVED",
        )
    return planted
