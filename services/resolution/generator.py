"""The market generator: opens markets of all twelve types from the latest good scrape.

Baselines come from that scrape (and from the follower cache for follower markets), so every
market records what it compares against. A definition with a problem is refused, not created,
and a question already asked by an OPEN market is skipped (the database's unique index on the
open question key is the final word on duplicates).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import func, select, text

from config import get_settings
from db import rules
from db.engine import read_session, transaction
from db.models import FollowerCache, ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.money.markets import MarketSpec, open_market
from services.resolution import outcomes
from services.vocabulary import MarketType, Timeframe

log = logging.getLogger("kolops.generator")

ACTOR = "generator"
TOP_N = 10
# The run rule in SQL text, with the table's own name (rendered once).
_USABLE_RUN = rules.sql(rules.usable_run(ScrapeRun))


@dataclass(frozen=True)
class Row:
    kol_id: int
    name: str
    wallet: str
    x_handle: str | None
    rank: int
    wins: int
    losses: int
    sol_gain: Decimal
    usd_gain: Decimal

    def baseline(self) -> dict[str, Any]:
        return {
            "kol_id": self.kol_id,
            "rank": self.rank,
            "wins": self.wins,
            "losses": self.losses,
            "sol_gain": str(self.sol_gain),
            "usd_gain": str(self.usd_gain),
        }


@dataclass
class GenerateReport:
    created: int = 0
    duplicates: int = 0
    refused: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    # Timeframes left out because their latest usable snapshot is too old: its time, ISO 8601.
    too_old: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "created": self.created,
            "duplicates": self.duplicates,
            "refused": self.refused,
        }
        if self.too_old:
            counts["too_old"] = self.too_old
        return counts


def _latest_run(timeframe: Timeframe) -> tuple[int, dt.datetime, list[Row]] | None:
    with read_session() as s:
        run = s.execute(
            text(
                f"SELECT id, snapshot_at FROM scrape_runs WHERE timeframe = :tf AND {_USABLE_RUN}"
                " ORDER BY snapshot_at DESC LIMIT 1"
            ),
            {"tf": timeframe.value},
        ).first()
        if run is None:
            return None
        rows = [
            Row(
                r.kol_id,
                r.username,
                r.wallet,
                r.x_handle,
                r.rank,
                r.wins,
                r.losses,
                r.sol_gain,
                r.usd_gain,
            )
            for r in s.execute(
                text(
                    "SELECT kol_id, username, wallet, x_handle, rank, wins, losses, sol_gain,"
                    " usd_gain FROM scraped_kols WHERE run_id = :id AND kol_id IS NOT NULL"
                    " ORDER BY rank"
                ),
                {"id": run.id},
            )
        ]
    return run.id, run.snapshot_at, rows


@dataclass(frozen=True)
class _CachedCount:
    """A cached follower count and the X account it is of: what a follower market pins."""

    followers: int
    fetched_at: dt.datetime
    x_user_id: str
    handle: str  # lower-cased


def _follower_baselines(handles: list[str], max_age: dt.timedelta) -> dict[str, _CachedCount]:
    """Cached follower counts that may stand for the count now, when a market opens (the
    resolver's rule at a close of now), by lower-cased handle. A count that does not say which
    account it is of cannot be pinned, so it is left out."""
    if not handles:
        return {}
    now = func.now()
    usable = rules.follower_count_usable(
        FollowerCache.fetched_at,
        opens_at=now - max_age,
        closes_at=now,
        max_age=max_age,
        lag=dt.timedelta(0),
        now=now,
    )
    with read_session() as s:
        return {
            r.handle: _CachedCount(r.followers, r.fetched_at, r.x_user_id, r.handle)
            for r in s.execute(
                select(
                    FollowerCache.handle,
                    FollowerCache.followers,
                    FollowerCache.fetched_at,
                    FollowerCache.x_user_id,
                )
                .where(FollowerCache.handle.in_([h.lower() for h in handles]))
                .where(FollowerCache.x_user_id.is_not(None))
                .where(usable)
            )
        }


def _pairs(rows: list[Row], n: int) -> list[tuple[Row, Row]]:
    return [(rows[i], rows[i + 1]) for i in range(0, min(len(rows) - 1, 2 * n), 2)][:n]


def _definitions(
    tf: Timeframe, rows: list[Row], per_type: int
) -> list[tuple[MarketType, str, Row, Row | None, Decimal | None, int | None]]:
    """(type, title, A, B, threshold, target_rank) for one timeframe's snapshot."""
    out: list[tuple[MarketType, str, Row, Row | None, Decimal | None, int | None]] = []
    top = rows[: max(TOP_N, 2 * per_type + 2)]
    on = f"on the {tf} leaderboard"
    for a, b in _pairs(top, per_type):
        out += [
            (
                MarketType.RANK_FLIPPENING,
                f"Will {a.name} rank above {b.name} {on}?",
                a,
                b,
                None,
                None,
            ),
            (
                MarketType.SOL_GAIN_FLIPPENING,
                f"Will {a.name} out-gain {b.name} in SOL {on}?",
                a,
                b,
                None,
                None,
            ),
            (
                MarketType.USD_GAIN_FLIPPENING,
                f"Will {a.name} out-gain {b.name} in USD {on}?",
                a,
                b,
                None,
                None,
            ),
            (
                MarketType.WIN_RATE_FLIPPENING,
                f"Will {a.name} beat {b.name}'s win rate {on}?",
                a,
                b,
                None,
                None,
            ),
            (
                MarketType.WL_RATIO_FLIPPENING,
                f"Will {a.name} beat {b.name}'s W/L ratio {on}?",
                a,
                b,
                None,
                None,
            ),
        ]
    for a in top[:per_type]:
        out.append(
            (
                MarketType.PROFIT_STREAK,
                f"Will {a.name} be in profit (USD) {on}?",
                a,
                None,
                None,
                None,
            )
        )
        out.append(
            (
                MarketType.TOP_RANK_MAINTAIN,
                f"Will {a.name} stay in the top {TOP_N} {on}?",
                a,
                None,
                None,
                TOP_N,
            )
        )
        threshold = a.sol_gain.to_integral_value(rounding=ROUND_CEILING)
        out.append(
            (
                MarketType.SOL_GAIN_THRESHOLD,
                f"Will {a.name} gain {threshold}+ SOL {on}?",
                a,
                None,
                threshold,
                None,
            )
        )
    for a in [r for r in top if r.wins + r.losses > 0][:per_type]:
        out.append(
            (
                MarketType.STREAK_CONTINUATION,
                f"Will {a.name} improve their win rate {on}?",
                a,
                None,
                None,
                None,
            )
        )
    for a in [r for r in top if r.rank > 1][:per_type]:
        target = a.rank - 1
        out.append(
            (
                MarketType.RANK_IMPROVEMENT,
                f"Will {a.name} reach rank {target} or better {on}?",
                a,
                None,
                None,
                target,
            )
        )
    for a in [r for r in top if r.losses > 0][:per_type]:
        ratio = (Decimal(a.wins) / Decimal(a.losses)).quantize(Decimal("0.01"), ROUND_FLOOR)
        if ratio > 0:
            out.append(
                (
                    MarketType.WL_RATIO_MAINTAIN,
                    f"Will {a.name} keep a W/L ratio of {ratio}+ {on}?",
                    a,
                    None,
                    ratio,
                    None,
                )
            )
    return out


def generate(*, per_type: int = 2) -> GenerateReport:
    """Open up to `per_type` markets of each type per timeframe from the latest good scrapes;
    none from a snapshot older than GENERATOR_MAX_SNAPSHOT_AGE_MINUTES (`report.too_old`)."""
    s = get_settings()
    report = GenerateReport()
    factor = s.market_duration_factor
    max_age = dt.timedelta(minutes=s.generator_max_snapshot_age_minutes)
    now = dt.datetime.now(dt.UTC)

    def create(spec: MarketSpec, wallet_a: str, wallet_b: str | None) -> None:
        definition = outcomes.Definition(
            spec.type,
            wallet_a,
            wallet_b,
            spec.timeframe,
            spec.threshold,
            spec.target_rank,
            spec.baseline,
        )
        problems = outcomes.definition_problems(definition)
        if problems:
            report.refused += 1
            log.warning("refused market %s: %s", spec.question_key, "; ".join(problems))
            return
        try:
            with transaction() as session:
                open_market(session, spec, actor=ACTOR)
        except ServiceError as exc:
            if exc.code is ErrorCode.DUPLICATE_MARKET:
                report.duplicates += 1
                return
            report.refused += 1
            log.warning("refused market %s: %s", spec.question_key, exc)
            return
        report.created += 1
        report.by_type[spec.type] = report.by_type.get(spec.type, 0) + 1

    for tf in Timeframe:
        latest = _latest_run(tf)
        if latest is None:
            continue
        run_id, snapshot_at, rows = latest
        # Baselines from an old board misstate where each KOL stands when the market opens.
        # (Compared on this clock, the one the scraper stamps snapshots with.)
        if now - snapshot_at > max_age:
            report.too_old[tf.value] = snapshot_at.isoformat()
            log.warning(
                "no %s markets: the latest usable snapshot (run %d, %s) is older than %s",
                tf,
                run_id,
                snapshot_at.isoformat(),
                max_age,
            )
            continue
        closes_at = now + dt.timedelta(days=tf.days) * float(factor)
        source = {"run_id": run_id, "snapshot_at": snapshot_at.isoformat(), "timeframe": tf.value}
        for type_, title, a, b, threshold, target in _definitions(tf, rows, per_type):
            baseline = {"a": a.baseline(), "source": source}
            if b is not None:
                baseline["b"] = b.baseline()
            key = f"{type_}:{tf}:{a.wallet}:{b.wallet if b else ''}:{threshold or target or ''}"
            spec = MarketSpec(
                type=type_.value,
                title=title,
                question_key=key,
                kol_a_id=a.kol_id,
                kol_b_id=b.kol_id if b else None,
                timeframe=tf.value,
                threshold=threshold,
                target_rank=target,
                baseline=baseline,
                opens_at=now,
                closes_at=closes_at,
                liquidity=s.market_liquidity,
            )
            create(spec, a.wallet, b.wallet if b else None)
        # Follower markets have no board; they are opened once, lasting as long as a daily one.
        if tf is Timeframe.DAILY:
            _follower_markets(rows, per_type, now, closes_at, create)
    log.info(
        "generated created=%d duplicates=%d refused=%d",
        report.created,
        report.duplicates,
        report.refused,
    )
    return report


def _follower_markets(
    rows: list[Row],
    per_type: int,
    now: dt.datetime,
    closes_at: dt.datetime,
    create: Callable[[MarketSpec, str, str | None], None],
) -> None:
    s = get_settings()
    with_handles = [r for r in rows if r.x_handle]
    cached = _follower_baselines(
        [r.x_handle or "" for r in with_handles],
        dt.timedelta(minutes=s.follower_cache_max_age_minutes),
    )
    made = 0
    for a in with_handles:
        if made >= per_type:
            break
        entry = cached.get((a.x_handle or "").lower())
        if entry is None:
            continue
        threshold = Decimal(max(10, entry.followers // 1000))
        # The account is pinned by id: resolution reads this account whatever handle shows later.
        baseline = {
            "a": {
                "kol_id": a.kol_id,
                "followers": entry.followers,
                "fetched_at": entry.fetched_at.isoformat(),
                **outcomes.XAccount(entry.x_user_id, entry.handle).pin(),
            },
            "source": {"follower_cache": entry.handle},
        }
        key = f"{MarketType.FOLLOWER_GROWTH}::{a.wallet}::{threshold}"
        spec = MarketSpec(
            type=MarketType.FOLLOWER_GROWTH.value,
            title=f"Will @{a.x_handle} gain {threshold}+ X followers?",
            question_key=key,
            kol_a_id=a.kol_id,
            kol_b_id=None,
            timeframe=None,
            threshold=threshold,
            target_rank=None,
            baseline=baseline,
            opens_at=now,
            closes_at=closes_at,
            liquidity=s.market_liquidity,
        )
        create(spec, a.wallet, None)
        made += 1
