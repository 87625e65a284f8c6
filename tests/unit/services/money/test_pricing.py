"""The pure market maker: worked examples, every refusal, and properties under hypothesis."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.errors import ErrorCode
from services.money.pricing import (
    SHARE_QUANTUM,
    Pools,
    PricingError,
    TradeLimits,
    buy,
    parse_action,
    parse_amount,
    parse_side,
    parse_slippage,
    quote,
    sell,
    split_fee,
)
from services.vocabulary import Side, TradeAction

D = Decimal
LIMITS = TradeLimits(fee_rate=D("0.02"), max_trade_pool_fraction=D("0.25"))
# Limits wide enough that only the price bounds refuse: for exploring long trade sequences.
WIDE = TradeLimits(fee_rate=D("0.02"), max_trade_pool_fraction=D("1e9"))
EVEN = Pools(D(1000), D(1000))


# -- worked examples ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pools", "side", "gross", "fee", "shares", "after"),
    [
        # n' = 1098, y' = ceil6(1e6 / 1098) = 910.746813, shares = 1000 + 98 - 910.746813.
        (EVEN, Side.YES, D("100"), D("2"), D("187.253187"), Pools(D("910.746813"), D("1098"))),
        (EVEN, Side.NO, D("100"), D("2"), D("187.253187"), Pools(D("1098"), D("910.746813"))),
        # y' = ceil6(1e6 / 1000.98) = 999.020959..., rounded up to 999.020960.
        (EVEN, Side.YES, D("1.00"), D("0.02"), D("1.959040"), Pools(D("999.020960"), D("1000.98"))),
        # A fee below a cent: 0.03 * 0.02 = 0.0006; y' = ceil6(999.97060086...) = 999.970601.
        (
            EVEN,
            Side.YES,
            D("0.03"),
            D("0.0006"),
            D("0.058799"),
            Pools(D("999.970601"), D("1000.0294")),
        ),
    ],
)
def test_buy_examples(
    pools: Pools, side: Side, gross: Decimal, fee: Decimal, shares: Decimal, after: Pools
) -> None:
    trade = buy(pools, side, gross, LIMITS)
    assert (trade.fee, trade.net, trade.shares, trade.after) == (fee, gross - fee, shares, after)
    assert trade.money == gross


def test_sell_example_returns_the_exact_root_rounded_down() -> None:
    # Selling back what 100 bought: the exact root is 98 but the rounded-up pool kept a sliver.
    bought = buy(EVEN, Side.YES, D("100"), LIMITS)
    sold = sell(bought.after, Side.YES, bought.shares, LIMITS)
    assert sold.money == D("97.999999")
    assert sold.fee == 0
    assert sold.after == Pools(D("1000.000001"), D("1000.000001"))


def test_prices() -> None:
    pools = Pools(D(300), D(100))
    assert pools.price(Side.YES) == D("0.25")
    assert pools.price(Side.NO) == D("0.75")
    trade = buy(EVEN, Side.NO, D("50"), LIMITS)
    assert trade.price_before == D("0.5")
    assert trade.price_after == trade.after.price(Side.NO).quantize(D("0.00000001"))
    assert trade.price_after > trade.price_before


@pytest.mark.parametrize(
    ("gross", "rate", "fee"),
    [
        (D("100"), D("0.02"), D("2")),
        (D("0.01"), D("0.02"), D("0.0002")),
        (D("0.33"), D("0.0333333"), D("0.011")),  # 0.010999989 rounds half up
        (D("10"), D("0"), D("0")),
    ],
)
def test_split_fee(gross: Decimal, rate: Decimal, fee: Decimal) -> None:
    got_fee, net = split_fee(gross, rate)
    assert got_fee == fee
    assert got_fee + net == gross


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decimals", "code"),
    [
        (D("0"), 2, ErrorCode.INVALID_AMOUNT),
        (D("-1"), 2, ErrorCode.INVALID_AMOUNT),
        (D("NaN"), 2, ErrorCode.INVALID_AMOUNT),
        (D("sNaN"), 2, ErrorCode.INVALID_AMOUNT),
        (D("Infinity"), 2, ErrorCode.INVALID_AMOUNT),
        (D("-Infinity"), 2, ErrorCode.INVALID_AMOUNT),
        (D("0.001"), 2, ErrorCode.INVALID_AMOUNT),
        (D("0.0000001"), 6, ErrorCode.INVALID_AMOUNT),
        (D("1e9"), 2, ErrorCode.INVALID_AMOUNT),
        (D("1e30"), 6, ErrorCode.INVALID_AMOUNT),
        (0.1, 2, ErrorCode.INVALID_AMOUNT),
        (1, 2, ErrorCode.INVALID_AMOUNT),
        (True, 2, ErrorCode.INVALID_AMOUNT),
        ("10", 2, ErrorCode.INVALID_AMOUNT),
        (None, 2, ErrorCode.INVALID_AMOUNT),
    ],
)
def test_bad_amounts(value: object, decimals: int, code: ErrorCode) -> None:
    with pytest.raises(PricingError) as err:
        parse_amount(value, decimals=decimals, what="amount")
    assert err.value.code == code


@pytest.mark.parametrize("value", [D("1"), D("0.01"), D("999999999.99"), D("1.50")])
def test_good_amounts(value: Decimal) -> None:
    assert parse_amount(value, decimals=2, what="amount") == value


@pytest.mark.parametrize("value", ["yes", "Yes", "MAYBE", "", None, 1])
def test_bad_side(value: object) -> None:
    with pytest.raises(PricingError) as err:
        parse_side(value)
    assert err.value.code == ErrorCode.INVALID_SIDE


@pytest.mark.parametrize("value", ["buy", "HOLD", "", None])
def test_bad_action(value: object) -> None:
    with pytest.raises(PricingError) as err:
        parse_action(value)
    assert err.value.code == ErrorCode.INVALID_ACTION


@pytest.mark.parametrize("value", [D("-0.1"), D("1"), D("NaN"), 0.05, "0.05"])
def test_bad_slippage(value: object) -> None:
    with pytest.raises(PricingError) as err:
        parse_slippage(value)
    assert err.value.code == ErrorCode.INVALID_INPUT


@pytest.mark.parametrize(
    ("pools", "side", "action", "amount", "limits", "code"),
    [
        # 0.99 is the YES ceiling: at y = 10.2, n = 1000 it is 0.98990..., any real buy crosses.
        (Pools(D("10.2"), D(1000)), Side.YES, TradeAction.BUY, D("5"), WIDE, ErrorCode.PRICE_LIMIT),
        (Pools(D(1000), D("10.2")), Side.NO, TradeAction.BUY, D("5"), WIDE, ErrorCode.PRICE_LIMIT),
        # Selling NO pushes the YES price up past 0.99 too.
        (
            Pools(D("10.2"), D(1000)),
            Side.NO,
            TradeAction.SELL,
            D("20"),
            WIDE,
            ErrorCode.PRICE_LIMIT,
        ),
        # 400 net would take 1000 - 1e6/1392 = 281.6 YES shares out of the 1000 pool: > 25%.
        (EVEN, Side.YES, TradeAction.BUY, D("400"), LIMITS, ErrorCode.TRADE_TOO_LARGE),
        # Selling 300 YES puts 300 - m > 250 shares back into the YES pool.
        (EVEN, Side.YES, TradeAction.SELL, D("600"), LIMITS, ErrorCode.TRADE_TOO_LARGE),
        (
            EVEN,
            Side.YES,
            TradeAction.BUY,
            D("20"),
            TradeLimits(D("0.02"), D("0.25"), max_slippage=D("0.01")),
            ErrorCode.SLIPPAGE_EXCEEDED,
        ),
        (
            EVEN,
            Side.YES,
            TradeAction.BUY,
            D("0.01"),
            TradeLimits(D("0.9999999"), D("1")),
            ErrorCode.INVALID_AMOUNT,
        ),
        (EVEN, Side.YES, TradeAction.SELL, D("0.000001"), WIDE, ErrorCode.INVALID_AMOUNT),
    ],
)
def test_limits_refuse(
    pools: Pools,
    side: Side,
    action: TradeAction,
    amount: Decimal,
    limits: TradeLimits,
    code: ErrorCode,
) -> None:
    with pytest.raises(PricingError) as err:
        quote(pools, side, action, amount, limits)
    assert err.value.code == code


def test_limits_just_inside_pass() -> None:
    # 20 gross moves YES from 0.5 to 0.5098: 1.96% impact passes a 2% tolerance.
    trade = buy(EVEN, Side.YES, D("20"), TradeLimits(D("0.02"), D("0.25"), D("0.02")))
    assert trade.price_after < D("0.51")
    # 330 net takes 1000 - 1e6/1330 = 248.1 shares: within 25% of the pool.
    assert buy(EVEN, Side.YES, D("336.73"), LIMITS).after.yes > D(750)


# -- properties -----------------------------------------------------------------------------------

amounts6 = st.integers(min_value=1, max_value=10**12).map(lambda i: Decimal(i).scaleb(-6))
cents = st.integers(min_value=1, max_value=10**8).map(lambda i: Decimal(i).scaleb(-2))
pool_values = st.integers(min_value=10**6, max_value=10**13).map(lambda i: Decimal(i).scaleb(-6))
sides = st.sampled_from([Side.YES, Side.NO])


@st.composite
def balanced_pools(draw: st.DrawFn) -> Pools:
    """Pools whose YES price is inside the limits, as every real market's is."""
    yes = draw(pool_values)
    no = draw(pool_values)
    assume(D("0.01") <= Pools(yes, no).price(Side.YES) <= D("0.99"))
    return Pools(yes, no)


@settings(max_examples=400, deadline=None)
@given(balanced_pools(), sides, cents)
def test_buy_keeps_k_and_rounds_for_the_pool(pools: Pools, side: Side, gross: Decimal) -> None:
    try:
        trade = buy(pools, side, gross, WIDE)
    except PricingError as exc:
        assert exc.code in (ErrorCode.PRICE_LIMIT, ErrorCode.INVALID_AMOUNT)
        return
    k, k_after = pools.k, trade.after.k
    assert k_after >= k
    # Only the last digit of the traded pool was rounded up: one quantum times the other pool.
    assert k_after - k < SHARE_QUANTUM * trade.after.pool(Side.NO if side is Side.YES else Side.YES)
    assert trade.shares > 0 and trade.shares == trade.shares.quantize(SHARE_QUANTUM)
    assert trade.fee + trade.net == gross
    assert D("0.01") <= trade.after.price(Side.YES) <= D("0.99")
    assert trade.after.price(side) > pools.price(side)


@settings(max_examples=400, deadline=None)
@given(balanced_pools(), sides, amounts6)
def test_sell_pays_the_largest_amount_that_keeps_k(
    pools: Pools, side: Side, shares: Decimal
) -> None:
    try:
        trade = sell(pools, side, shares, WIDE)
    except PricingError as exc:
        assert exc.code in (ErrorCode.PRICE_LIMIT, ErrorCode.INVALID_AMOUNT)
        return
    same, other = pools.pool(side), pools.pool(Side.NO if side is Side.YES else Side.YES)
    m = trade.money
    assert 0 < m <= other
    assert trade.after.k >= pools.k
    # One quantum more would break k: m is the exact root rounded down.
    assert (same + shares - m - SHARE_QUANTUM) * (other - m - SHARE_QUANTUM) < pools.k
    assert D("0.01") <= trade.after.price(Side.YES) <= D("0.99")


@settings(max_examples=300, deadline=None)
@given(balanced_pools(), sides, cents)
def test_buy_then_sell_never_returns_more_than_was_paid(
    pools: Pools, side: Side, gross: Decimal
) -> None:
    try:
        bought = buy(pools, side, gross, WIDE)
        sold = sell(bought.after, side, bought.shares, WIDE)
    except PricingError:
        return
    assert sold.money <= bought.net <= gross


trades = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # which user
        sides,
        st.sampled_from([TradeAction.BUY, TradeAction.SELL]),
        st.integers(min_value=1, max_value=50_000),  # cents to pay, or a per-mille of shares held
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([D(100), D(1000), D("2500.50")]), trades)
def test_escrow_equals_pool_plus_shares_after_any_sequence(
    liquidity: Decimal, sequence: list[tuple[int, Side, TradeAction, int]]
) -> None:
    pools = Pools(liquidity, liquidity)
    escrow = liquidity
    held: dict[tuple[int, Side], Decimal] = {}
    for user, side, action, size in sequence:
        if action is TradeAction.BUY:
            amount = Decimal(size).scaleb(-2)
        else:
            amount = (held.get((user, side), D(0)) * size / 50_000).quantize(SHARE_QUANTUM)
            if amount <= 0:
                continue
        try:
            trade = quote(pools, side, action, amount, LIMITS)
        except PricingError:
            continue
        k_before, pools = pools.k, trade.after
        assert pools.k >= k_before
        delta = trade.shares if action is TradeAction.BUY else -trade.shares
        held[(user, side)] = held.get((user, side), D(0)) + delta
        assert held[(user, side)] >= 0
        escrow += trade.net if action is TradeAction.BUY else -trade.net
        yes_held = sum((v for (_, s), v in held.items() if s is Side.YES), D(0))
        no_held = sum((v for (_, s), v in held.items() if s is Side.NO), D(0))
        assert escrow == pools.yes + yes_held == pools.no + no_held
        assert D("0.01") <= pools.price(Side.YES) <= D("0.99")
