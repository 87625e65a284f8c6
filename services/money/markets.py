"""Opening a market: the row, its escrow account and the house liquidity, in the caller's
transaction. Type-specific parameters and baselines are the generator's and resolver's business;
this module checks only what every market needs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from db.models import Kol
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.money import ledger
from services.vocabulary import AccountKind, LedgerKind, MarketStatus, MarketType, Timeframe

LIQUIDITY_DECIMALS = 2
# Titles are shown, never parsed: the bound only stops absurd input.
MAX_TEXT_LENGTH = 20_000


class MarketError(ServiceError):
    """A market that cannot be opened."""


@dataclass(frozen=True)
class MarketSpec:
    type: str
    title: str
    question_key: str
    kol_a_id: int
    kol_b_id: int | None
    timeframe: str | None
    threshold: Decimal | None
    target_rank: int | None
    baseline: dict[str, Any]
    opens_at: dt.datetime
    closes_at: dt.datetime
    liquidity: Decimal  # house money seeding both pools; config market_liquidity by default


def open_market(session: Session, spec: MarketSpec, *, actor: str) -> int:
    """Insert the market with both pools at `liquidity`, open its escrow and fund it from the
    house with ledger key `liquidity:<market_id>`. Returns the market id."""
    _validate(session, spec)
    market_id = session.execute(
        text(
            "INSERT INTO markets (type, title, question_key, kol_a_id, kol_b_id, timeframe,"
            " threshold, target_rank, baseline, opens_at, closes_at, pool_yes, pool_no, liquidity)"
            " VALUES (:type, :title, :question_key, :kol_a_id, :kol_b_id, :timeframe, :threshold,"
            " :target_rank, :baseline, :opens_at, :closes_at, :liquidity, :liquidity, :liquidity)"
            # The partial unique index on an open market's question_key is the arbiter.
            f" ON CONFLICT (question_key) WHERE status = '{MarketStatus.OPEN}'"
            " DO NOTHING RETURNING id"
        ).bindparams(bindparam("baseline", type_=JSONB)),
        {
            "type": spec.type,
            "title": spec.title,
            "question_key": spec.question_key,
            "kol_a_id": spec.kol_a_id,
            "kol_b_id": spec.kol_b_id,
            "timeframe": spec.timeframe,
            "threshold": spec.threshold,
            "target_rank": spec.target_rank,
            "baseline": spec.baseline,
            "opens_at": spec.opens_at,
            "closes_at": spec.closes_at,
            "liquidity": spec.liquidity,
        },
    ).scalar()
    if market_id is None:
        raise MarketError(
            ErrorCode.DUPLICATE_MARKET,
            f"an open market already asks {spec.question_key!r}",
            question_key=spec.question_key,
        )
    escrow = ledger.open_account(session, kind=AccountKind.ESCROW, market_id=market_id)
    ledger.transfer(
        session,
        key=f"liquidity:{market_id}",
        kind=LedgerKind.LIQUIDITY,
        from_account=ledger.system_account_id(session, AccountKind.HOUSE),
        to_account=escrow,
        amount=spec.liquidity,
        actor=actor,
        market_id=market_id,
    )
    return market_id


def _invalid(message: str, **details: Any) -> MarketError:
    return MarketError(ErrorCode.INVALID_MARKET, message, **details)


def _validate(session: Session, spec: MarketSpec) -> None:
    if spec.type not in set(MarketType):
        raise _invalid(f"unknown market type {spec.type!r}", type=spec.type)
    for what, value in (("title", spec.title), ("question key", spec.question_key)):
        try:
            free_text(value, what=what, max_len=MAX_TEXT_LENGTH)
        except ServiceError as exc:
            raise _invalid(exc.message) from None
    if spec.timeframe is not None and spec.timeframe not in set(Timeframe):
        raise _invalid(f"unknown timeframe {spec.timeframe!r}", timeframe=spec.timeframe)
    if spec.opens_at.tzinfo is None or spec.closes_at.tzinfo is None:
        raise _invalid("opens_at and closes_at must be timezone-aware")
    if spec.closes_at <= spec.opens_at:
        raise _invalid(f"closes_at {spec.closes_at} is not after opens_at {spec.opens_at}")
    liquidity = spec.liquidity
    if (
        not isinstance(liquidity, Decimal)
        or not liquidity.is_finite()
        or liquidity <= 0
        or liquidity >= ledger.MAX_AMOUNT
        or liquidity != liquidity.quantize(Decimal(1).scaleb(-LIQUIDITY_DECIMALS))
    ):
        raise _invalid(
            f"liquidity must be a positive Decimal with at most {LIQUIDITY_DECIMALS} decimals,"
            f" got {liquidity!r}"
        )
    if spec.kol_b_id is not None and spec.kol_b_id == spec.kol_a_id:
        raise _invalid("KOL A and KOL B must differ")
    wanted = {spec.kol_a_id} | ({spec.kol_b_id} if spec.kol_b_id is not None else set())
    found = session.scalar(select(func.count()).select_from(Kol).where(Kol.id.in_(wanted)))
    if found != len(wanted):
        raise _invalid(f"unknown KOL among {sorted(wanted)}", kol_ids=sorted(wanted))
