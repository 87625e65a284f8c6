"""The outcome rules of the twelve market types (PRODUCT.md section 2): pure functions.

`decide(definition, evidence)` returns YES, NO, or `Undecided` with a reason code. It never turns
missing or undefined data into NO: an undefined win rate (no trades), an undefined W/L ratio
(0/0), an absent KOL whose position cannot be inferred, or a missing baseline are all Undecided.
Comparisons "A > B" are strict: a tie is NO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.errors import ErrorCode
from services.vocabulary import MarketType, Pin, Side, Timeframe


@dataclass(frozen=True)
class Undecided:
    code: ErrorCode
    detail: str


# A resolved market's outcome is the side that wins; anything else is Undecided.
Decision = Side | Undecided

ALL_TYPES = frozenset(MarketType)
FOLLOWER_TYPES = frozenset({MarketType.FOLLOWER_GROWTH})
LEADERBOARD_TYPES = ALL_TYPES - FOLLOWER_TYPES
TWO_KOL_TYPES = frozenset(
    {
        MarketType.RANK_FLIPPENING,
        MarketType.SOL_GAIN_FLIPPENING,
        MarketType.USD_GAIN_FLIPPENING,
        MarketType.WIN_RATE_FLIPPENING,
        MarketType.WL_RATIO_FLIPPENING,
    }
)
RANK_TYPES = frozenset(
    {MarketType.RANK_FLIPPENING, MarketType.TOP_RANK_MAINTAIN, MarketType.RANK_IMPROVEMENT}
)


@dataclass(frozen=True)
class KolStats:
    rank: int
    wins: int
    losses: int
    sol_gain: Decimal
    usd_gain: Decimal


@dataclass(frozen=True)
class Snapshot:
    """One leaderboard scrape: rows by wallet, and whether ranks run 1..N without gaps."""

    rows: Mapping[str, KolStats]

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def complete(self) -> bool:
        return sorted(r.rank for r in self.rows.values()) == list(range(1, len(self.rows) + 1))


@dataclass(frozen=True)
class Definition:
    """What a market asks, as stored: type, KOL wallets, parameters and the creation baseline."""

    type: str
    kol_a: str
    kol_b: str | None = None
    timeframe: str | None = None
    threshold: Decimal | None = None
    target_rank: int | None = None
    # As stored: JSON of any shape, which `definition_problems` checks before anything reads it.
    baseline: Any = field(default_factory=dict)


@dataclass(frozen=True)
class XAccount:
    """The X account a follower market was counted from when it opened: by its id, which a
    rename or a leaderboard row linking another profile never changes."""

    user_id: str
    handle: str

    def pin(self) -> dict[str, str]:
        """The baseline fields that pin a market to this account (read by `pinned_account`)."""
        return {Pin.USER_ID: self.user_id, Pin.HANDLE: self.handle}


@dataclass(frozen=True)
class Evidence:
    snapshot: Snapshot | None = None
    followers_now: int | None = None


# -- derived metrics ------------------------------------------------------------------------------


def win_rate(s: KolStats) -> Decimal | None:
    """wins / (wins + losses); undefined (None) with no trades."""
    trades = s.wins + s.losses
    return None if trades == 0 else Decimal(s.wins) / Decimal(trades)


def wl_ratio(s: KolStats) -> Decimal | float | None:
    """wins / losses; +infinity with losses only at 0, undefined (None) at 0/0."""
    if s.losses == 0:
        return None if s.wins == 0 else math.inf
    return Decimal(s.wins) / Decimal(s.losses)


def _gt(a: Decimal | float, b: Decimal | float) -> bool:
    # inf > inf is False: two unbeaten records tie, and a tie is NO.
    return bool(a > b)


def _yes_if(condition: bool) -> Side:
    return Side.YES if condition else Side.NO


# -- definition checks ----------------------------------------------------------------------------


def _count(value: Any) -> bool:
    """A stored count: a whole number, not negative (JSON true is not a count)."""
    return type(value) is int and value >= 0


def _baseline_a(d: Definition) -> Mapping[str, Any]:
    """KOL A's baseline when the stored baseline has the expected shape, else empty."""
    base_a = d.baseline.get("a") if isinstance(d.baseline, Mapping) else None
    return base_a if isinstance(base_a, Mapping) else {}


def pinned_account(d: Definition) -> XAccount | None:
    """The X account pinned in KOL A's baseline, or None when the baseline does not name one
    well-formed (an X user id is a string of digits)."""
    base_a = _baseline_a(d)
    user_id, handle = base_a.get(Pin.USER_ID), base_a.get(Pin.HANDLE)
    if not (isinstance(user_id, str) and user_id.isascii() and user_id.isdigit()):
        return None
    if not (isinstance(handle, str) and handle):
        return None
    return XAccount(user_id, handle)


def definition_problems(d: Definition) -> list[str]:
    """Everything that makes a definition invalid (empty list: valid). Used at creation and
    before resolving: an invalid market is cancelled with MISSING_METADATA, never decided.
    A stored baseline of any shape is a list of problems here, never an exception."""
    problems: list[str] = []
    if not isinstance(d.type, str) or d.type not in ALL_TYPES:
        return [f"unknown market type {d.type!r}"]
    if not d.kol_a:
        problems.append("KOL A is missing")
    if d.type in TWO_KOL_TYPES:
        if not d.kol_b:
            problems.append("KOL B is missing")
        elif d.kol_b == d.kol_a:
            problems.append("KOL A and KOL B are the same")
    elif d.kol_b:
        problems.append(f"{d.type} takes one KOL")
    if d.type in LEADERBOARD_TYPES and d.timeframe not in set(Timeframe):
        problems.append(f"timeframe {d.timeframe!r} is not daily/weekly/monthly")
    base_a = _baseline_a(d)
    if not base_a:
        problems.append("baseline is missing")
    if d.type == MarketType.FOLLOWER_GROWTH:
        # is_finite first: comparing a NaN Decimal raises.
        t = d.threshold
        if t is None or not t.is_finite() or t <= 0 or t != t.to_integral():
            problems.append("threshold must be a positive whole number of followers")
        if not _count(base_a.get("followers")):
            problems.append("baseline followers are missing")
        if pinned_account(d) is None:
            problems.append("baseline does not pin the X account (user id and handle) counted")
    if d.type in (MarketType.TOP_RANK_MAINTAIN, MarketType.RANK_IMPROVEMENT) and (
        d.target_rank is None or d.target_rank < 1
    ):
        problems.append("target rank must be 1 or more")
    if d.type == MarketType.SOL_GAIN_THRESHOLD and (
        d.threshold is None or not d.threshold.is_finite()
    ):
        problems.append("SOL threshold is missing")
    if d.type == MarketType.WL_RATIO_MAINTAIN and (
        d.threshold is None or not d.threshold.is_finite() or d.threshold <= 0
    ):
        problems.append("W/L threshold must be positive")
    if d.type == MarketType.STREAK_CONTINUATION:
        wins, losses = base_a.get("wins"), base_a.get("losses")
        if not _count(wins) or not _count(losses) or wins + losses == 0:
            problems.append("baseline win rate is missing or undefined (no trades)")
    return problems


# -- the decision ---------------------------------------------------------------------------------


def _missing(detail: str) -> Undecided:
    return Undecided(ErrorCode.MISSING_KOL_DATA, detail)


def _decide_rank(d: Definition, snap: Snapshot) -> Decision:
    a = snap.rows.get(d.kol_a)
    if d.type == MarketType.RANK_FLIPPENING:
        b = snap.rows.get(d.kol_b or "")
        if a and b:
            return _yes_if(a.rank < b.rank)
        if not a and not b:
            return _missing("neither KOL is in the snapshot")
        if not snap.complete:
            return _missing("a KOL is absent and the snapshot has rank gaps")
        # Absent from a complete snapshot = ranked below everyone in it.
        return _yes_if(a is not None)
    target = d.target_rank or 0
    if a:
        return _yes_if(a.rank <= target)
    if snap.complete and snap.size >= target:
        return Side.NO
    return _missing(
        f"KOL A is absent and the snapshot ({snap.size} rows, "
        f"{'complete' if snap.complete else 'with gaps'}) does not cover rank {target}"
    )


def decide(d: Definition, evidence: Evidence) -> Decision:
    problems = definition_problems(d)
    if problems:
        return Undecided(ErrorCode.MISSING_METADATA, "; ".join(problems))

    if d.type == MarketType.FOLLOWER_GROWTH:
        if evidence.followers_now is None:
            return Undecided(ErrorCode.STALE_FOLLOWER_DATA, "no usable follower count")
        base = int(d.baseline["a"]["followers"])
        assert d.threshold is not None
        return _yes_if(evidence.followers_now - base >= d.threshold)

    snap = evidence.snapshot
    if snap is None:
        return Undecided(ErrorCode.STALE_SCRAPE_DATA, "no usable leaderboard snapshot")
    if d.type in RANK_TYPES:
        return _decide_rank(d, snap)

    a = snap.rows.get(d.kol_a)
    if a is None:
        return _missing("KOL A is not in the snapshot")
    b = snap.rows.get(d.kol_b) if d.kol_b else None
    if d.type in TWO_KOL_TYPES and b is None:
        return _missing("KOL B is not in the snapshot")

    match d.type:
        case MarketType.PROFIT_STREAK:
            return _yes_if(a.usd_gain > 0)
        case MarketType.SOL_GAIN_FLIPPENING:
            assert b is not None
            return _yes_if(a.sol_gain > b.sol_gain)
        case MarketType.USD_GAIN_FLIPPENING:
            assert b is not None
            return _yes_if(a.usd_gain > b.usd_gain)
        case MarketType.WIN_RATE_FLIPPENING:
            assert b is not None
            ra, rb = win_rate(a), win_rate(b)
            if ra is None or rb is None:
                return _missing("win rate undefined (no trades)")
            return _yes_if(ra > rb)
        case MarketType.WL_RATIO_FLIPPENING:
            assert b is not None
            qa, qb = wl_ratio(a), wl_ratio(b)
            if qa is None or qb is None:
                return _missing("W/L ratio undefined (0 wins, 0 losses)")
            return _yes_if(_gt(qa, qb))
        case MarketType.STREAK_CONTINUATION:
            now = win_rate(a)
            if now is None:
                return _missing("win rate undefined (no trades)")
            base = win_rate(
                KolStats(
                    0,
                    int(d.baseline["a"]["wins"]),
                    int(d.baseline["a"]["losses"]),
                    Decimal(0),
                    Decimal(0),
                )
            )
            assert base is not None
            return _yes_if(now > base)
        case MarketType.SOL_GAIN_THRESHOLD:
            assert d.threshold is not None
            return _yes_if(a.sol_gain >= d.threshold)
        case MarketType.WL_RATIO_MAINTAIN:
            q = wl_ratio(a)
            if q is None:
                return _missing("W/L ratio undefined (0 wins, 0 losses)")
            assert d.threshold is not None
            return _yes_if(q >= d.threshold)
    raise AssertionError(f"unhandled market type {d.type}")
