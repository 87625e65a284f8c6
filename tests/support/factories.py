"""The one place tests and benchmarks build what they need: KOLs and markets.

`market_spec(...)` is the one market builder: every field has a sensible default (a daily
profit-streak question on KOL A, open now, closing in an hour), and a test names only the fields
its behaviour depends on.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from services.money.markets import MarketSpec, open_market
from services.vocabulary import MarketType, Timeframe

_seq = itertools.count(1)

DEFAULT_LIQUIDITY = Decimal("100")


def new_kol(session: Session, *, wallet: str | None = None, x_handle: str | None = None) -> int:
    """A KOL row; unique wallet and name unless given."""
    n = next(_seq)
    return int(
        session.execute(
            text(
                "INSERT INTO kols (display_name, wallet, x_handle) VALUES (:name, :w, :h)"
                " RETURNING id"
            ),
            {"name": f"KOL {n}", "w": wallet or f"wallet{n}", "h": x_handle},
        ).scalar_one()
    )


def market_spec(
    *,
    kol_a_id: int,
    type: MarketType | str = MarketType.PROFIT_STREAK,
    kol_b_id: int | None = None,
    timeframe: Timeframe | str | None = Timeframe.DAILY,
    threshold: Decimal | None = None,
    target_rank: int | None = None,
    baseline: dict[str, Any] | None = None,
    opens_at: dt.datetime | None = None,
    closes_at: dt.datetime | None = None,
    liquidity: Decimal = DEFAULT_LIQUIDITY,
    title: str | None = None,
    question_key: str | None = None,
) -> MarketSpec:
    n = next(_seq)
    opens = opens_at or dt.datetime.now(dt.UTC)
    return MarketSpec(
        type=str(type),
        title=title or f"{type} market {n}",
        question_key=question_key or f"{type}:{kol_a_id}:{n}",
        kol_a_id=kol_a_id,
        kol_b_id=kol_b_id,
        timeframe=None if timeframe is None else str(timeframe),
        threshold=threshold,
        target_rank=target_rank,
        baseline=baseline if baseline is not None else {"a": {"rank": 1, "wins": 1, "losses": 1}},
        opens_at=opens,
        closes_at=closes_at or opens + dt.timedelta(hours=1),
        liquidity=liquidity,
    )


def new_market(session: Session, **fields: Any) -> int:
    """Open a market (on a new KOL unless `kol_a_id` is given); returns its id."""
    if "kol_a_id" not in fields:
        fields["kol_a_id"] = new_kol(session)
    return open_market(session, market_spec(**fields), actor="test")


def new_named_kol(
    session: Session, display_name: str, *, wallet: str | None = None, x_handle: str | None = None
) -> int:
    """A KOL row with the given name (for tests that search or display it)."""
    kol_id = new_kol(session, wallet=wallet, x_handle=x_handle)
    session.execute(
        text("UPDATE kols SET display_name = :name WHERE id = :id"),
        {"name": display_name, "id": kol_id},
    )
    return kol_id


def close_market(
    db: str, market_id: int, minutes_ago: float, *, open_for: dt.timedelta = dt.timedelta(days=1)
) -> None:
    """Move the market so that it closed `minutes_ago` minutes ago, after being open `open_for`
    (no money moves)."""
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET closes_at = now() - make_interval(secs => %s),"
            " opens_at = now() - make_interval(secs => %s) WHERE id = %s",
            (minutes_ago * 60, minutes_ago * 60 + open_for.total_seconds(), market_id),
        )
