"""Table-driven and property tests of the twelve outcome rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.errors import ErrorCode
from services.resolution.outcomes import (
    ALL_TYPES,
    Definition,
    Evidence,
    KolStats,
    Snapshot,
    Undecided,
    XAccount,
    decide,
    definition_problems,
    pinned_account,
)
from services.vocabulary import MarketType, Side

YES, NO = Side.YES, Side.NO
MISSING = ErrorCode.MISSING_KOL_DATA
META = ErrorCode.MISSING_METADATA


def k(rank: int, wins: int = 10, losses: int = 5, sol: str = "1", usd: str = "100") -> KolStats:
    return KolStats(rank, wins, losses, Decimal(sol), Decimal(usd))


def snap(**rows: KolStats) -> Snapshot:
    return Snapshot(rows)


# The X account a follower market was counted from, pinned when it opened.
PIN = {"x_user_id": "1234567890", "x_handle": "alice"}
BASE = {
    "a": {"rank": 5, "wins": 10, "losses": 10, "sol_gain": "1", "usd_gain": "1", "followers": 1000}
    | PIN,
    "b": {"rank": 6},
}


def d(type_: str, b: str | None = None, **kw: object) -> Definition:
    params: dict[str, object] = {"timeframe": "daily", "baseline": BASE}
    if type_ == "follower_growth":
        params["timeframe"] = None
    params.update(kw)
    return Definition(type=type_, kol_a="A", kol_b=b, **params)  # type: ignore[arg-type]


FULL3 = {"C": k(3)}  # a third KOL to make snapshots of size 3

CASES: list[tuple[str, Definition, Evidence, object]] = [
    # rank_flippening: rank(A) < rank(B)
    ("rank A above B", d("rank_flippening", "B"), Evidence(snap(A=k(1), B=k(2))), YES),
    ("rank A below B", d("rank_flippening", "B"), Evidence(snap(A=k(2), B=k(1))), NO),
    ("rank A absent, complete", d("rank_flippening", "B"), Evidence(snap(B=k(1), C=k(2))), NO),
    ("rank B absent, complete", d("rank_flippening", "B"), Evidence(snap(A=k(2), C=k(1))), YES),
    ("rank A absent, gaps", d("rank_flippening", "B"), Evidence(snap(B=k(1), C=k(3))), MISSING),
    ("rank both absent", d("rank_flippening", "B"), Evidence(snap(C=k(1))), MISSING),
    # profit_streak: usd_gain(A) > 0
    ("profit positive", d("profit_streak"), Evidence(snap(A=k(1, usd="0.01"))), YES),
    ("profit zero is NO", d("profit_streak"), Evidence(snap(A=k(1, usd="0"))), NO),
    ("profit negative", d("profit_streak"), Evidence(snap(A=k(1, usd="-5"))), NO),
    ("profit absent", d("profit_streak"), Evidence(snap(C=k(1))), MISSING),
    # follower_growth: now - baseline >= threshold
    (
        "followers reach",
        d("follower_growth", threshold=Decimal(500)),
        Evidence(followers_now=1500),
        YES,
    ),
    (
        "followers short",
        d("follower_growth", threshold=Decimal(500)),
        Evidence(followers_now=1499),
        NO,
    ),
    (
        "followers unknown",
        d("follower_growth", threshold=Decimal(500)),
        Evidence(),
        ErrorCode.STALE_FOLLOWER_DATA,
    ),
    # sol / usd flippening: strict
    ("sol A more", d("sol_gain_flippening", "B"), Evidence(snap(A=k(1, sol="2"), B=k(2))), YES),
    ("sol tie NO", d("sol_gain_flippening", "B"), Evidence(snap(A=k(1), B=k(2))), NO),
    ("sol B absent", d("sol_gain_flippening", "B"), Evidence(snap(A=k(1), C=k(2))), MISSING),
    ("usd A more", d("usd_gain_flippening", "B"), Evidence(snap(A=k(1, usd="101"), B=k(2))), YES),
    ("usd tie NO", d("usd_gain_flippening", "B"), Evidence(snap(A=k(1), B=k(2))), NO),
    # win_rate flippening
    ("wr A more", d("win_rate_flippening", "B"), Evidence(snap(A=k(1, 9, 1), B=k(2, 5, 5))), YES),
    ("wr tie NO", d("win_rate_flippening", "B"), Evidence(snap(A=k(1, 2, 2), B=k(2, 5, 5))), NO),
    ("wr 0 trades", d("win_rate_flippening", "B"), Evidence(snap(A=k(1, 0, 0), B=k(2))), MISSING),
    # wl_ratio flippening, with infinity
    ("wl A inf", d("wl_ratio_flippening", "B"), Evidence(snap(A=k(1, 3, 0), B=k(2, 9, 1))), YES),
    (
        "wl both inf tie",
        d("wl_ratio_flippening", "B"),
        Evidence(snap(A=k(1, 3, 0), B=k(2, 1, 0))),
        NO,
    ),
    ("wl 0/0", d("wl_ratio_flippening", "B"), Evidence(snap(A=k(1, 0, 0), B=k(2))), MISSING),
    ("wl less", d("wl_ratio_flippening", "B"), Evidence(snap(A=k(1, 1, 1), B=k(2, 2, 1))), NO),
    # top_rank_maintain: rank(A) <= N
    ("top in", d("top_rank_maintain", target_rank=3), Evidence(snap(A=k(3), **FULL3)), YES),
    ("top out", d("top_rank_maintain", target_rank=2), Evidence(snap(A=k(3), B=k(1), C2=k(2))), NO),
    (
        "top absent covered",
        d("top_rank_maintain", target_rank=2),
        Evidence(snap(B=k(1), C=k(2), D=k(3))),
        NO,
    ),
    (
        "top absent not covered",
        d("top_rank_maintain", target_rank=10),
        Evidence(snap(B=k(1), C=k(2))),
        MISSING,
    ),
    (
        "top absent gaps",
        d("top_rank_maintain", target_rank=2),
        Evidence(snap(B=k(1), C=k(5), D=k(6))),
        MISSING,
    ),
    # streak_continuation: win_rate(A) > baseline win rate (0.5)
    ("streak up", d("streak_continuation"), Evidence(snap(A=k(1, 6, 4))), YES),
    ("streak equal NO", d("streak_continuation"), Evidence(snap(A=k(1, 5, 5))), NO),
    ("streak no trades", d("streak_continuation"), Evidence(snap(A=k(1, 0, 0))), MISSING),
    # rank_improvement: rank(A) <= target
    ("improve yes", d("rank_improvement", target_rank=3), Evidence(snap(A=k(2), B=k(1))), YES),
    ("improve no", d("rank_improvement", target_rank=1), Evidence(snap(A=k(2), B=k(1))), NO),
    # sol_gain_threshold: >= (inclusive)
    ("sol thr equal", d("sol_gain_threshold", threshold=Decimal("1")), Evidence(snap(A=k(1))), YES),
    (
        "sol thr below",
        d("sol_gain_threshold", threshold=Decimal("1.000001")),
        Evidence(snap(A=k(1))),
        NO,
    ),
    # wl_ratio_maintain: >= threshold; inf meets any
    (
        "wl keep equal",
        d("wl_ratio_maintain", threshold=Decimal(2)),
        Evidence(snap(A=k(1, 10, 5))),
        YES,
    ),
    (
        "wl keep below",
        d("wl_ratio_maintain", threshold=Decimal(3)),
        Evidence(snap(A=k(1, 10, 5))),
        NO,
    ),
    (
        "wl keep inf",
        d("wl_ratio_maintain", threshold=Decimal(99)),
        Evidence(snap(A=k(1, 1, 0))),
        YES,
    ),
    (
        "wl keep 0/0",
        d("wl_ratio_maintain", threshold=Decimal(1)),
        Evidence(snap(A=k(1, 0, 0))),
        MISSING,
    ),
    # no snapshot at all
    ("no snapshot", d("profit_streak"), Evidence(), ErrorCode.STALE_SCRAPE_DATA),
    # invalid definitions: never decided
    ("missing baseline", d("profit_streak", baseline={}), Evidence(snap(A=k(1))), META),
    ("missing kol b", d("rank_flippening"), Evidence(snap(A=k(1))), META),
    (
        "same kols",
        Definition("rank_flippening", "A", "A", "daily", baseline=BASE),
        Evidence(snap(A=k(1))),
        META,
    ),
    ("no target", d("top_rank_maintain"), Evidence(snap(A=k(1))), META),
    ("no threshold", d("follower_growth"), Evidence(followers_now=5), META),
    ("bad timeframe", d("profit_streak", timeframe="hourly"), Evidence(snap(A=k(1))), META),
    (
        "undefined base wr",
        d("streak_continuation", baseline={"a": {"wins": 0, "losses": 0}}),
        Evidence(snap(A=k(1))),
        META,
    ),
    ("unknown type", Definition("moon", "A", baseline=BASE), Evidence(), META),
]


@pytest.mark.parametrize(
    ("name", "definition", "evidence", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_outcome_table(
    name: str, definition: Definition, evidence: Evidence, expected: object
) -> None:
    result = decide(definition, evidence)
    if isinstance(expected, Side):
        assert result == expected
    else:
        assert isinstance(result, Undecided), result
        assert result.code == expected


def test_every_type_is_covered_by_the_table() -> None:
    assert {c[1].type for c in CASES} >= ALL_TYPES


stats = st.builds(
    KolStats,
    rank=st.integers(1, 50),
    wins=st.integers(0, 30),
    losses=st.integers(0, 30),
    sol_gain=st.decimals(-1000, 1000, places=2),
    usd_gain=st.decimals(-(10**6), 10**6, places=2),
)

# -- an independent oracle: PRODUCT.md section 2 restated in exact rational arithmetic ----------

Metric = Fraction | float  # a float only for +infinity


def _win_rate(s: KolStats) -> Fraction | None:
    return Fraction(s.wins, s.wins + s.losses) if s.wins + s.losses else None


def _wl_ratio(s: KolStats) -> Metric | None:
    if s.losses:
        return Fraction(s.wins, s.losses)
    return math.inf if s.wins else None


# For each flippening, the number that "A beats B" compares (higher is better; a lower rank is
# better, so rank counts negatively).
FLIPPENINGS: dict[MarketType, Callable[[KolStats], Metric | None]] = {
    MarketType.RANK_FLIPPENING: lambda s: Fraction(-s.rank),
    MarketType.SOL_GAIN_FLIPPENING: lambda s: Fraction(s.sol_gain),
    MarketType.USD_GAIN_FLIPPENING: lambda s: Fraction(s.usd_gain),
    MarketType.WIN_RATE_FLIPPENING: _win_rate,
    MarketType.WL_RATIO_FLIPPENING: _wl_ratio,
}


def _oracle_flippening(type_: MarketType, a: KolStats, b: KolStats) -> object:
    ma, mb = FLIPPENINGS[type_](a), FLIPPENINGS[type_](b)
    if ma is None or mb is None:
        return MISSING  # an undefined value is missing data, never zero
    return YES if ma > mb else NO  # strict: a tie (two infinities too) is NO


def _decided(result: object) -> object:
    return result.code if isinstance(result, Undecided) else result


@given(a=stats, b=stats, t=st.sampled_from(sorted(FLIPPENINGS)))
def test_flippenings_follow_the_rule_in_exact_arithmetic(
    a: KolStats, b: KolStats, t: MarketType
) -> None:
    """Both present in a snapshot: decided as the oracle says, and swapping A and B gives YES in
    exactly one direction, or NO in both on a tie."""
    b = KolStats(
        a.rank + 1 if b.rank == a.rank else b.rank, b.wins, b.losses, b.sol_gain, b.usd_gain
    )
    s = Snapshot({"A": a, "B": b})
    ab = decide(Definition(t, "A", "B", "daily", baseline=BASE), Evidence(s))
    ba = decide(Definition(t, "B", "A", "daily", baseline=BASE), Evidence(s))
    assert _decided(ab) == _oracle_flippening(t, a, b)
    assert _decided(ba) == _oracle_flippening(t, b, a)
    assert not (ab == YES and ba == YES)
    if isinstance(ab, Side) and FLIPPENINGS[t](a) != FLIPPENINGS[t](b):
        assert {ab, ba} == {YES, NO}


@given(
    a=stats, base_wins=st.integers(0, 30), base_losses=st.integers(0, 30), thr=st.integers(1, 40)
)
def test_one_kol_rules_follow_the_rule_in_exact_arithmetic(
    a: KolStats, base_wins: int, base_losses: int, thr: int
) -> None:
    """streak_continuation, wl_ratio_maintain and sol_gain_threshold against the oracle."""
    s = Evidence(Snapshot({"A": a}))
    baseline = {"a": {"wins": base_wins, "losses": base_losses}}
    streak = decide(d("streak_continuation", baseline=baseline), s)
    if base_wins + base_losses == 0:
        assert _decided(streak) == META
    elif (now := _win_rate(a)) is None:
        assert _decided(streak) == MISSING
    else:
        assert streak == (YES if now > Fraction(base_wins, base_wins + base_losses) else NO)

    ratio = Decimal(thr) / 4  # thresholds in quarters: exact in Decimal and in Fraction
    keep = decide(d("wl_ratio_maintain", threshold=ratio), s)
    wl = _wl_ratio(a)
    assert _decided(keep) == (MISSING if wl is None else YES if wl >= Fraction(ratio) else NO)

    gain = decide(d("sol_gain_threshold", threshold=a.sol_gain + Decimal(thr - 20) / 100), s)
    assert gain == (YES if thr <= 20 else NO)  # inclusive: the threshold itself is YES


@given(base=st.integers(0, 10**7), thr=st.integers(1, 10**5), delta=st.integers(-(10**5), 10**5))
def test_follower_growth_is_yes_from_baseline_plus_threshold_on(
    base: int, thr: int, delta: int
) -> None:
    """Counts are generated around the boundary `base + thr`: YES exactly from there up."""
    followers = max(0, base + thr + delta)
    definition = Definition(
        "follower_growth", "A", threshold=Decimal(thr), baseline={"a": {"followers": base} | PIN}
    )
    expected = YES if delta >= 0 else NO
    assert decide(definition, Evidence(followers_now=followers)) == expected


@given(st.permutations(range(1, 9)), st.integers(1, 8), st.data())
def test_snapshot_complete_means_ranks_one_to_n(
    order: list[int], n: int, data: st.DataObject
) -> None:
    """A snapshot built from a shuffle of 1..n is complete; changing any one rank to a value
    outside 1..n, or to a rank already taken, leaves a gap."""
    ranks = [r for r in order if r <= n]
    assert Snapshot({f"w{i}": k(r) for i, r in enumerate(ranks)}).complete
    broken = list(ranks)
    at = data.draw(st.integers(0, n - 1))
    # Any other value is either outside 1..n or a rank another row already has.
    broken[at] = data.draw(st.integers(1, 60).filter(lambda r: r != ranks[at]))
    assert not Snapshot({f"w{i}": k(r) for i, r in enumerate(broken)}).complete


def test_valid_definitions_have_no_problems() -> None:
    assert definition_problems(d("rank_flippening", "B")) == []
    assert definition_problems(d("follower_growth", threshold=Decimal(100))) == []


# -- baselines of the wrong shape: problems, never exceptions -------------------------------------

FOLLOWERS_A = {"followers": 1000} | PIN

WRONG_SHAPES: list[tuple[str, str, object]] = [
    # (name, market type, the stored baseline)
    ("baseline a list", "follower_growth", [FOLLOWERS_A]),
    ("baseline a string", "follower_growth", "followers"),
    ("baseline a number", "profit_streak", 5),
    ("baseline null", "profit_streak", None),
    ("a a list", "follower_growth", {"a": [1000]}),
    ("a a string", "follower_growth", {"a": "1000"}),
    ("a a number", "streak_continuation", {"a": 7}),
    ("followers a string", "follower_growth", {"a": FOLLOWERS_A | {"followers": "1000"}}),
    ("followers a bool", "follower_growth", {"a": FOLLOWERS_A | {"followers": True}}),
    ("followers a float", "follower_growth", {"a": FOLLOWERS_A | {"followers": 1000.0}}),
    ("followers negative", "follower_growth", {"a": FOLLOWERS_A | {"followers": -1}}),
    ("wins a bool", "streak_continuation", {"a": {"wins": True, "losses": 3}}),
    ("wins a string", "streak_continuation", {"a": {"wins": "5", "losses": 3}}),
    ("losses negative", "streak_continuation", {"a": {"wins": 5, "losses": -3}}),
    # A follower market that does not pin the X account it was counted from (an old market).
    ("no pinned account", "follower_growth", {"a": {"followers": 1000}}),
    ("no pinned id", "follower_growth", {"a": {"followers": 1000, "x_handle": "alice"}}),
    ("no pinned handle", "follower_growth", {"a": {"followers": 1000, "x_user_id": "12"}}),
    ("pinned id a number", "follower_growth", {"a": FOLLOWERS_A | {"x_user_id": 1234567890}}),
    ("pinned id not digits", "follower_growth", {"a": FOLLOWERS_A | {"x_user_id": "alice"}}),
    ("pinned id empty", "follower_growth", {"a": FOLLOWERS_A | {"x_user_id": ""}}),
    ("pinned handle a list", "follower_growth", {"a": FOLLOWERS_A | {"x_handle": ["alice"]}}),
]


def _with_baseline(type_: str, baseline: object) -> Definition:
    threshold = {"follower_growth": Decimal(100)}.get(type_)
    return d(type_, threshold=threshold, baseline=baseline)


@pytest.mark.parametrize(
    ("name", "type_", "baseline"), WRONG_SHAPES, ids=[c[0] for c in WRONG_SHAPES]
)
def test_a_baseline_of_the_wrong_shape_is_invalid_metadata(
    name: str, type_: str, baseline: object
) -> None:
    definition = _with_baseline(type_, baseline)
    assert definition_problems(definition)
    evidence = Evidence(snapshot=snap(A=k(1, 9, 1)), followers_now=10**6)
    result = decide(definition, evidence)
    assert isinstance(result, Undecided) and result.code == META, result


@pytest.mark.parametrize("threshold", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity")])
def test_a_follower_threshold_that_is_not_a_number_is_invalid_metadata(
    threshold: Decimal,
) -> None:
    definition = d("follower_growth", threshold=threshold)
    assert definition_problems(definition)
    assert decide(definition, Evidence(followers_now=10**6)) == Undecided(
        META, "threshold must be a positive whole number of followers"
    )


def test_the_pinned_account_is_read_from_a_well_formed_baseline_only() -> None:
    assert pinned_account(d("follower_growth")) == XAccount("1234567890", "alice")
    for _name, type_, baseline in WRONG_SHAPES:
        if type_ == "follower_growth" and "followers" not in _name:
            assert pinned_account(_with_baseline(type_, baseline)) is None, _name


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
BASELINE_KEYS = ["followers", "x_user_id", "x_handle", "wins", "losses", "rank", "kol_id"]


@given(
    type_=st.sampled_from(sorted(ALL_TYPES)),
    baseline=json_values
    | st.dictionaries(st.sampled_from(["a", "b", "source"]), json_values)
    | st.builds(lambda a: {"a": a}, st.dictionaries(st.sampled_from(BASELINE_KEYS), json_values)),
    followers_now=st.none() | st.integers(0, 10**9),
)
def test_arbitrary_json_as_a_baseline_never_raises(
    type_: str, baseline: object, followers_now: int | None
) -> None:
    definition = _with_baseline(type_, baseline)
    problems = definition_problems(definition)
    assert isinstance(problems, list)
    result = decide(definition, Evidence(snap(A=k(1), B=k(2)), followers_now))
    if problems:
        assert result == Undecided(META, "; ".join(problems))
    pinned_account(definition)
