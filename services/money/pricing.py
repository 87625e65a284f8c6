"""The binary constant-product market maker (PRODUCT.md section 4), pure and in Decimal.

Pools `y` (YES) and `n` (NO), `k = y * n`, price of YES `= n / (y + n)`. One unit of net money
mints one YES and one NO share; a winning share pays 1.

Rounding: every amount a user receives (shares bought, money from a sale) is rounded DOWN to
6 decimals and the pools absorb the remainder, so with stored 6-decimal values

    escrow = pool_yes + YES shares held = pool_no + NO shares held

holds exactly after every trade, and `k` never decreases.

Limits, checked on the state after the trade:
- the price of YES stays within [PRICE_MIN, PRICE_MAX];
- the traded side's pool moves by at most `max_trade_pool_fraction` of its size before the trade,
  i.e. `|pool_S' - pool_S| <= fraction * pool_S` (a buy of S takes shares out of pool S, a sale
  of S puts shares back into it);
- with a slippage tolerance, the relative price impact on the traded side,
  `|p_S' - p_S| / p_S`, may not exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Decimal,
    localcontext,
)

from services.errors import ErrorCode, ServiceError
from services.vocabulary import Side, TradeAction

SHARE_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.00000001")  # bets.price_before/after are NUMERIC(12, 8)
PRICE_MIN = Decimal("0.01")
PRICE_MAX = Decimal("0.99")
# No single trade is anywhere near this; anything larger is a typo or an attack.
MAX_TRADE_AMOUNT = Decimal("1000000000")
# Enough digits for exact products of 6-decimal values up to 1e15 and a precise square root.
_PRECISION = 80


class PricingError(ServiceError):
    """A trade the market maker refuses."""


@dataclass(frozen=True)
class Pools:
    yes: Decimal
    no: Decimal

    @property
    def k(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            return self.yes * self.no

    def price(self, side: Side) -> Decimal:
        """The side's price (its probability), exact to the context precision."""
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            other = self.no if side is Side.YES else self.yes
            return other / (self.yes + self.no)

    def pool(self, side: Side) -> Decimal:
        return self.yes if side is Side.YES else self.no


@dataclass(frozen=True)
class TradeLimits:
    fee_rate: Decimal
    max_trade_pool_fraction: Decimal
    max_slippage: Decimal | None = None


@dataclass(frozen=True)
class Trade:
    """A priced trade. `money` is what the user pays (BUY, fee included) or receives (SELL);
    `net` is what enters (BUY) or leaves (SELL) the pool and escrow."""

    side: Side
    action: TradeAction
    money: Decimal
    fee: Decimal
    net: Decimal
    shares: Decimal
    before: Pools
    after: Pools

    @property
    def price_before(self) -> Decimal:
        return self.before.price(self.side).quantize(PRICE_QUANTUM, ROUND_HALF_EVEN)

    @property
    def price_after(self) -> Decimal:
        return self.after.price(self.side).quantize(PRICE_QUANTUM, ROUND_HALF_EVEN)


# -- input validation ---------------------------------------------------------------------------


def parse_side(value: object) -> Side:
    if isinstance(value, str) and value in Side.__members__:
        return Side(value)
    raise PricingError(ErrorCode.INVALID_SIDE, f"side must be YES or NO, got {value!r}")


def parse_action(value: object) -> TradeAction:
    if isinstance(value, str) and value in TradeAction.__members__:
        return TradeAction(value)
    raise PricingError(ErrorCode.INVALID_ACTION, f"action must be BUY or SELL, got {value!r}")


def parse_amount(value: object, *, decimals: int, what: str) -> Decimal:
    """A positive, finite Decimal with at most `decimals` decimals and below MAX_TRADE_AMOUNT.

    Floats are refused outright: 0.1 is not a tenth, and money must not pass through binary.
    """
    if not isinstance(value, Decimal):
        raise PricingError(
            ErrorCode.INVALID_AMOUNT, f"{what} must be a Decimal, not {type(value).__name__}"
        )
    if not value.is_finite():
        raise PricingError(ErrorCode.INVALID_AMOUNT, f"{what} must be finite, got {value}")
    if value <= 0:
        raise PricingError(ErrorCode.INVALID_AMOUNT, f"{what} must be positive, got {value}")
    if value >= MAX_TRADE_AMOUNT:
        raise PricingError(ErrorCode.INVALID_AMOUNT, f"{what} is absurdly large: {value}")
    if value != value.quantize(Decimal(1).scaleb(-decimals)):
        raise PricingError(
            ErrorCode.INVALID_AMOUNT, f"{what} has more than {decimals} decimals: {value}"
        )
    return value


def parse_slippage(value: object) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, Decimal) or not value.is_finite() or not 0 <= value < 1:
        raise PricingError(
            ErrorCode.INVALID_INPUT, f"max_slippage must be a Decimal in [0, 1), got {value!r}"
        )
    return value


# -- the market maker ---------------------------------------------------------------------------


def split_fee(gross: Decimal, fee_rate: Decimal) -> tuple[Decimal, Decimal]:
    """(fee, net) with fee + net == gross exactly; the fee is rounded half up to 6 decimals."""
    fee = (gross * fee_rate).quantize(SHARE_QUANTUM, ROUND_HALF_UP)
    return fee, gross - fee


def buy(pools: Pools, side: Side, gross: Decimal, limits: TradeLimits) -> Trade:
    """Buy `side` paying `gross` (fee included)."""
    fee, net = split_fee(gross, limits.fee_rate)
    if net <= 0:
        raise PricingError(ErrorCode.INVALID_AMOUNT, f"{gross} is too small to buy any shares")
    k = pools.k
    same, other = pools.pool(side), pools.pool(_opposite(side))
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        ctx.rounding = ROUND_CEILING  # the pool's new size rounds up, the buyer's shares down
        other_after = other + net
        same_after = (k / other_after).quantize(SHARE_QUANTUM, ROUND_CEILING)
        shares = same + net - same_after
    if shares <= 0:
        raise PricingError(ErrorCode.INVALID_AMOUNT, f"{gross} is too small to buy any shares")
    after = _pools(side, same_after, other_after)
    trade = Trade(side, TradeAction.BUY, gross, fee, net, shares, pools, after)
    _check_limits(trade, limits)
    return trade


def sell(pools: Pools, side: Side, shares: Decimal, limits: TradeLimits) -> Trade:
    """Sell `shares` of `side` back to the pool for the largest 6-decimal m that keeps k."""
    k = pools.k
    same, other = pools.pool(side), pools.pool(_opposite(side))
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        # (same + s - m)(other - m) = k with k = same * other  <=>  m² - b·m + s·other = 0;
        # the smaller root is the one in (0, other].
        b = same + shares + other
        root = (b - (b * b - 4 * shares * other).sqrt()) / 2
        money = root.quantize(SHARE_QUANTUM, ROUND_DOWN)
        # The square root is rounded; settle the last digit exactly against k.
        while money > 0 and (same + shares - money) * (other - money) < k:
            money -= SHARE_QUANTUM
    if money <= 0:
        raise PricingError(ErrorCode.INVALID_AMOUNT, f"{shares} shares are too few to sell")
    after = _pools(side, same + shares - money, other - money)
    trade = Trade(side, TradeAction.SELL, money, Decimal(0), money, shares, pools, after)
    _check_limits(trade, limits)
    return trade


def quote(
    pools: Pools, side: Side, action: TradeAction, amount: Decimal, limits: TradeLimits
) -> Trade:
    return (buy if action is TradeAction.BUY else sell)(pools, side, amount, limits)


def _opposite(side: Side) -> Side:
    return Side.NO if side is Side.YES else Side.YES


def _pools(side: Side, same: Decimal, other: Decimal) -> Pools:
    return Pools(yes=same, no=other) if side is Side.YES else Pools(yes=other, no=same)


def _check_limits(trade: Trade, limits: TradeLimits) -> None:
    price_yes = trade.after.price(Side.YES)
    if not PRICE_MIN <= price_yes <= PRICE_MAX:
        raise PricingError(
            ErrorCode.PRICE_LIMIT,
            f"this trade would move the YES price to {price_yes:.4f},"
            f" outside [{PRICE_MIN}, {PRICE_MAX}]",
            price_after=str(price_yes.quantize(PRICE_QUANTUM)),
        )
    pool_before = trade.before.pool(trade.side)
    moved = abs(trade.after.pool(trade.side) - pool_before)
    if moved > limits.max_trade_pool_fraction * pool_before:
        raise PricingError(
            ErrorCode.TRADE_TOO_LARGE,
            f"this trade would move the {trade.side} pool by {moved}, more than"
            f" {limits.max_trade_pool_fraction} of its {pool_before}",
            moved=str(moved),
        )
    if limits.max_slippage is not None:
        before = trade.before.price(trade.side)
        impact = abs(trade.after.price(trade.side) - before) / before
        if impact > limits.max_slippage:
            raise PricingError(
                ErrorCode.SLIPPAGE_EXCEEDED,
                f"price impact {impact:.4%} exceeds the tolerance {limits.max_slippage:.4%}",
                impact=str(impact.quantize(PRICE_QUANTUM)),
            )
