"""Bet placement: THE one way a bet (a buy or a sale of shares) enters the system.

One database transaction per bet, retried whole on deadlock or serialization failure:
lock the market row, then the user row (always this order, so two bets never wait on each other
in a cycle), check the market is open by database time, check the balance or the shares held,
price the trade with `services.money.pricing`, then write the bet, the position, the pools and the
user's bet count in one statement and post one balanced ledger transaction `bet:<bet_id>`.

This is the hot path, so it runs on `db.engine.pipelined` in two round trips: BEGIN and both
locks travel together, and so do the writes, the ledger post and COMMIT. The bet's id is drawn
with the market lock so that its ledger transaction can be queued behind it.

Row semantics other services rely on (settlement, refunds):
- bets.amount: BUY the gross money paid (fee included), SELL the money received; bets.fee is 0
  on a SELL; bets.shares the shares bought or sold; price_before/after the traded side's price.
- positions.shares: shares of that side currently held; paid_in: gross money paid on that side,
  fees included; received: money received from selling that side.
- bets.created_at is the transaction's now(), the same instant the close-time check used, so no
  bet carries a time at or after its market's closes_at.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row

from config import get_settings
from db.engine import pipelined, retrying
from db.models import MONEY_SCALE
from services.errors import ErrorCode, ServiceError
from services.money import ledger, pricing
from services.money.ledger import Posting
from services.money.pricing import Pools, Trade, TradeLimits
from services.vocabulary import AccountKind, LedgerKind, MarketStatus, Side, TradeAction

BUY_DECIMALS = 2  # users pay whole cents
_MAX_ID = 2**63 - 1


class BetError(ServiceError):
    """A bet refused by the bet service; nothing of it was written."""


@dataclass(frozen=True)
class BetReceipt:
    bet_id: int
    side: Side
    action: TradeAction
    shares: Decimal
    money: Decimal  # BUY: paid, fee included; SELL: received
    fee: Decimal
    price_before: Decimal
    price_after: Decimal


def place_bet(
    *,
    user_id: int,
    market_id: int,
    side: str,
    action: str,
    amount: Decimal,
    max_slippage: Decimal | None = None,
    actor: str = "user",
) -> BetReceipt:
    """Place one bet. BUY: `amount` is the money paid, fee included (at most 2 decimals).
    SELL: `amount` is the number of shares to sell (at most 6 decimals).

    Raises ServiceError (BetError, PricingError, LedgerError) with an ErrorCode; then nothing
    was written. Deadlocks, serialization failures and connections lost before COMMIT are retried
    here; a connection lost while committing raises psycopg.OperationalError, and then the bet
    may or may not have been placed.
    """
    side_ = pricing.parse_side(side)
    action_ = pricing.parse_action(action)
    if action_ is TradeAction.BUY:
        amount = pricing.parse_amount(amount, decimals=BUY_DECIMALS, what="amount paid")
    else:
        amount = pricing.parse_amount(amount, decimals=MONEY_SCALE, what="shares to sell")
    settings = get_settings()
    limits = TradeLimits(
        fee_rate=settings.fee_rate,
        max_trade_pool_fraction=settings.max_trade_pool_fraction,
        max_slippage=pricing.parse_slippage(max_slippage),
    )
    if not _is_id(user_id):
        raise BetError(ErrorCode.UNKNOWN_USER, f"user {user_id!r} does not exist")
    if not _is_id(market_id):
        raise BetError(ErrorCode.UNKNOWN_MARKET, f"market {market_id!r} does not exist")

    try:
        return retrying(
            lambda conn: _place(conn, user_id, market_id, side_, action_, amount, limits, actor),
            unit=pipelined,
            what="place_bet",
        )
    except psycopg.IntegrityError as exc:  # the database's last word on the ledger post
        if (refused := ledger.refusal(exc)) is None:
            raise
        raise refused from None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


# The escrow and fee account ids ride along with the market lock: no extra round trips.
# The vocabulary is interpolated once, at import: the text stays one constant prepared statement.
_LOCK_MARKET = (
    "SELECT m.status, m.opens_at <= now() AS started, m.closes_at > now() AS before_close,"
    " m.pool_yes, m.pool_no, e.id AS escrow_account,"
    f" (SELECT id FROM accounts WHERE kind = '{AccountKind.FEE}') AS fee_account,"
    " nextval('bets_id_seq') AS bet_id"
    " FROM markets m JOIN accounts e ON e.market_id = m.id"
    " WHERE m.id = %(market_id)s FOR UPDATE OF m"
)

# A separate statement, so its snapshot is taken once the market lock is held: the position
# (only ever changed under that lock) is current. The account row is locked with the user so
# that, after waiting on another bet of the same user, the balance re-read is current too.
_LOCK_USER = (
    "SELECT a.id AS account, a.balance, coalesce(p.shares, 0) AS held"
    " FROM users u JOIN accounts a ON a.user_id = u.id"
    " LEFT JOIN positions p"
    "   ON p.user_id = u.id AND p.market_id = %(market_id)s AND p.side = %(side)s"
    " WHERE u.id = %(user_id)s FOR UPDATE OF u, a"
)

_POSITION_BUY = (
    "INSERT INTO positions (user_id, market_id, side, shares, paid_in, received)"
    " VALUES (%(user_id)s, %(market_id)s, %(side)s, %(shares)s, %(money)s, 0)"
    " ON CONFLICT (user_id, market_id, side) DO UPDATE"
    " SET shares = positions.shares + EXCLUDED.shares,"
    "     paid_in = positions.paid_in + EXCLUDED.paid_in"
)
# A sale needs a position (the shares held were checked under the locks).
_POSITION_SELL = (
    "UPDATE positions SET shares = shares - %(shares)s, received = received + %(money)s"
    " WHERE user_id = %(user_id)s AND market_id = %(market_id)s AND side = %(side)s"
)


def _write(position_sql: str) -> str:
    return (
        "WITH bet AS ("
        "  INSERT INTO bets (id, market_id, user_id, side, action, amount, fee, shares,"
        "                    price_before, price_after)"
        "  VALUES (%(bet_id)s, %(market_id)s, %(user_id)s, %(side)s, %(action)s, %(money)s,"
        "          %(fee)s, %(shares)s, %(price_before)s, %(price_after)s)),"
        f" position AS ({position_sql}),"
        " pools AS (UPDATE markets SET pool_yes = %(pool_yes)s, pool_no = %(pool_no)s"
        "           WHERE id = %(market_id)s)"
        " UPDATE users SET bets_count = bets_count + 1 WHERE id = %(user_id)s"
    )


_WRITE = {TradeAction.BUY: _write(_POSITION_BUY), TradeAction.SELL: _write(_POSITION_SELL)}
# The ledger transaction a trade posts.
_LEDGER_KIND = {TradeAction.BUY: LedgerKind.BET, TradeAction.SELL: LedgerKind.SELL}


def _place(
    conn: psycopg.Connection[Any],
    user_id: int,
    market_id: int,
    side: Side,
    action: TradeAction,
    amount: Decimal,
    limits: TradeLimits,
    actor: str,
) -> BetReceipt:
    locked_market = conn.cursor(row_factory=namedtuple_row).execute(
        _LOCK_MARKET, {"market_id": market_id}
    )
    locked_user = conn.cursor(row_factory=namedtuple_row).execute(
        _LOCK_USER, {"user_id": user_id, "market_id": market_id, "side": side.value}
    )
    market = locked_market.fetchone()  # sends BEGIN and both locks: the first round trip
    if market is None:
        raise BetError(ErrorCode.UNKNOWN_MARKET, f"market {market_id} does not exist")
    if market.status != MarketStatus.OPEN:
        raise BetError(
            ErrorCode.MARKET_NOT_OPEN,
            f"market {market_id} is {market.status}",
            status=market.status,
        )
    if not market.before_close:
        raise BetError(ErrorCode.MARKET_CLOSED, f"market {market_id} is closed for betting")
    if not market.started:
        raise BetError(ErrorCode.MARKET_NOT_OPEN, f"market {market_id} has not opened yet")

    user = locked_user.fetchone()
    if user is None:
        raise BetError(ErrorCode.UNKNOWN_USER, f"user {user_id} does not exist")
    if action is TradeAction.BUY and amount > user.balance:
        raise BetError(
            ErrorCode.INSUFFICIENT_BALANCE,
            f"paying {amount} needs more than the balance {user.balance}",
            balance=str(user.balance),
        )
    if action is TradeAction.SELL and amount > user.held:
        raise BetError(
            ErrorCode.INSUFFICIENT_SHARES,
            f"selling {amount} {side} shares needs more than the {user.held} held",
            held=str(user.held),
        )

    trade = pricing.quote(Pools(market.pool_yes, market.pool_no), side, action, amount, limits)
    bet_id: int = market.bet_id
    post = ledger.posting(  # checked before anything is written
        key=f"bet:{bet_id}",
        kind=_LEDGER_KIND[action],
        postings=_postings(trade, user.account, market.escrow_account, market.fee_account),
        actor=actor,
        market_id=market_id,
        bet_id=bet_id,
    )
    conn.execute(
        _WRITE[action],
        {
            "bet_id": bet_id,
            "market_id": market_id,
            "user_id": user_id,
            "side": side.value,
            "action": action.value,
            "money": trade.money,
            "fee": trade.fee,
            "shares": trade.shares,
            "price_before": trade.price_before,
            "price_after": trade.price_after,
            "pool_yes": trade.after.yes,
            "pool_no": trade.after.no,
        },
    )
    conn.execute(ledger.POST, post)
    # Both travel with COMMIT when `pipelined` ends: the second round trip.
    return BetReceipt(
        bet_id=bet_id,
        side=side,
        action=action,
        shares=trade.shares,
        money=trade.money,
        fee=trade.fee,
        price_before=trade.price_before,
        price_after=trade.price_after,
    )


def _postings(trade: Trade, user: int, escrow: int, fee: int) -> list[Posting]:
    if trade.action is TradeAction.SELL:
        return [Posting(escrow, -trade.net), Posting(user, trade.net)]
    postings = [Posting(user, -trade.money), Posting(escrow, trade.net)]
    if trade.fee:
        postings.append(Posting(fee, trade.fee))
    return postings
