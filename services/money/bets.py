"""Bet placement: THE one way a bet (a buy or a sale of shares) enters the system.

One database transaction per bet, retried whole on deadlock or serialization failure:
lock the market row, then the user row (always this order, so two bets never wait on each other
in a cycle), check the market is open by database time, check the balance or the shares held,
price the trade with `services.money.pricing`, then write the bet, the position, the pools and the
user's bet count and post one balanced ledger transaction `bet:<bet_id>`, all in one statement.

This is the hot path, so it runs on `db.engine.pipelined` in two round trips: BEGIN and both
locks travel together, and so do the statement of writes and ledger post, and COMMIT. The bet's id
is drawn with the market lock so that its ledger transaction can be written with the bet.

Row semantics other services rely on (settlement, refunds):
- bets.amount: BUY the gross money paid (fee included), SELL the money received; bets.fee is 0
  on a SELL; bets.shares the shares bought or sold; price_before/after the traded side's price.
- positions.shares: shares of that side currently held; paid_in: gross money paid on that side,
  fees included; received: money received from selling that side.
- bets.created_at is the transaction's now(), the same instant the close-time check used, so no
  bet carries a time at or after its market's closes_at.
- bets.request_key: the caller's key for this request, unique per user (NULL when none was
  given); bets.max_slippage: the slippage limit the caller set (NULL: none).

Request keys. A caller that may retry (its connection broke while committing, so it cannot tell
whether the bet was placed) passes `request_key`. The key is looked up in the first batch, after
the user's row lock, which every bet of that user holds until it commits: so the lookup sees any
bet of this user placed with the key, even one that committed while this one waited. A key
already used returns the original bet's receipt, rebuilt from its row, when the parameters are
the same: same market, side and action, the same amount (BUY: the money paid; SELL: the shares
sold; compared as numbers, so 10 and 10.00 are the same) and the same slippage limit (none, or the
same number). Anything else is refused with IDEMPOTENCY_KEY_REUSED. Either way nothing is written,
and neither the market's state nor the balance is checked again: the original was placed when it
was placed. The unique index on (user_id, request_key) is the last word: a duplicate that got past
the lookup fails the bet's INSERT, which rolls the whole transaction back, and placement runs again
to find the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.orm import aliased

from config import get_settings
from db import rules
from db.engine import pipelined, retrying
from db.models import MONEY_SCALE, Market
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.money import ledger, pricing
from services.money.ledger import Posting
from services.money.pricing import Pools, Trade, TradeLimits
from services.vocabulary import AccountKind, LedgerKind, MarketStatus, Side, TradeAction

BUY_DECIMALS = 2  # users pay whole cents
REQUEST_KEY_MAX_LEN = 128  # a UUID is 36
_MAX_ID = 2**63 - 1
_REQUEST_KEY_INDEX = "uq_bets_user_request_key"


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
    request_key: str | None = None,
    actor: str = "user",
) -> BetReceipt:
    """Place one bet. BUY: `amount` is the money paid, fee included (at most 2 decimals).
    SELL: `amount` is the number of shares to sell (at most 6 decimals).

    `request_key` (optional, at most REQUEST_KEY_MAX_LEN characters, surrounding blanks not part
    of it) names this request among the user's: placing it again with the same key and the same
    parameters returns the original receipt and places nothing; with other parameters it raises
    IDEMPOTENCY_KEY_REUSED (see the module's docstring).

    Raises ServiceError (BetError, PricingError, LedgerError) with an ErrorCode; then nothing
    was written. Deadlocks, serialization failures and connections lost before COMMIT are retried
    here; a connection lost while committing raises psycopg.OperationalError, and then the bet
    may or may not have been placed: with a request key, placing it again with the same key is
    safe (it returns the original, or places it once); without one, it may place it twice.
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
    if request_key is not None:
        request_key = free_text(request_key, what="request key", max_len=REQUEST_KEY_MAX_LEN)
    request = _Request(user_id, market_id, side_, action_, amount, limits, request_key, actor)

    for attempt in (1, 2):
        try:
            return retrying(lambda conn: _place(conn, request), unit=pipelined, what="place_bet")
        except _Replay as replay:  # the key's original bet: nothing was written
            return replay.receipt
        except psycopg.IntegrityError as exc:  # the database's last word on the writes
            if _names_the_request_key(exc) and attempt == 1:
                continue  # placed by another call since the lookup: the next one finds it
            if (refused := ledger.refusal(exc)) is None:
                raise
            raise refused from None
        except psycopg.OperationalError as exc:
            exc.add_note(_COMMIT_LOST if request_key is None else _COMMIT_LOST_KEYED)
            raise
    raise AssertionError("unreachable")


_COMMIT_LOST = (
    "place_bet: if the connection was lost while committing, the bet may or may not have been"
    " placed; placing it again without a request_key may place it twice."
)
_COMMIT_LOST_KEYED = (
    "place_bet: if the connection was lost while committing, the bet may or may not have been"
    " placed; place it again with the same request_key: that returns the original receipt, or"
    " places it once."
)


@dataclass(frozen=True)
class _Request:
    user_id: int
    market_id: int
    side: Side
    action: TradeAction
    amount: Decimal
    limits: TradeLimits
    key: str | None
    actor: str


class _Replay(Exception):
    """Raised inside the transaction (so it rolls back) to return the key's original receipt."""

    def __init__(self, receipt: BetReceipt) -> None:
        super().__init__(receipt.bet_id)
        self.receipt = receipt


def _names_the_request_key(exc: psycopg.IntegrityError) -> bool:
    return (
        isinstance(exc, psycopg.errors.UniqueViolation)
        and exc.diag.constraint_name == _REQUEST_KEY_INDEX
    )


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


# The escrow and fee account ids ride along with the market lock: no extra round trips.
# The vocabulary is interpolated once, at import: the text stays one constant prepared statement.
_LOCK_MARKET = (
    "SELECT m.status, m.opens_at <= now() AS started, m.closes_at > now() AS before_close,"
    f" {rules.sql(rules.held(aliased(Market, name='m')))} AS held,"
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

# Keyed bets only, queued after the user lock: a statement of its own, so its snapshot is taken
# once every other bet of the user (the key's original included) has committed or rolled back.
_FIND_KEYED = (
    "SELECT b.id, b.market_id, b.side, b.action, b.amount, b.fee, b.shares,"
    " b.price_before, b.price_after, b.max_slippage"
    " FROM bets b WHERE b.user_id = %(user_id)s AND b.request_key = %(request_key)s"
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
    """The bet, the position, the pools and the user's bet count, then the ledger post: one
    statement (the writes are CTEs leading the ledger's own)."""
    return ledger.post_sql(
        "bet AS ("
        "  INSERT INTO bets (id, market_id, user_id, side, action, amount, fee, shares,"
        "                    price_before, price_after, request_key, max_slippage)"
        "  VALUES (%(bet_id)s, %(market_id)s, %(user_id)s, %(side)s, %(action)s, %(money)s,"
        "          %(fee)s, %(shares)s, %(price_before)s, %(price_after)s, %(request_key)s,"
        "          %(max_slippage)s)),"
        f" position AS ({position_sql}),"
        " pools AS (UPDATE markets SET pool_yes = %(pool_yes)s, pool_no = %(pool_no)s"
        "           WHERE id = %(market_id)s),"
        " counted AS (UPDATE users SET bets_count = bets_count + 1 WHERE id = %(user_id)s),"
    )


_WRITE = {TradeAction.BUY: _write(_POSITION_BUY), TradeAction.SELL: _write(_POSITION_SELL)}
# The ledger transaction a trade posts.
_LEDGER_KIND = {TradeAction.BUY: LedgerKind.BET, TradeAction.SELL: LedgerKind.SELL}


def _place(conn: psycopg.Connection[Any], r: _Request) -> BetReceipt:
    user_id, market_id, side, action, amount = r.user_id, r.market_id, r.side, r.action, r.amount
    locked_market = conn.cursor(row_factory=namedtuple_row).execute(
        _LOCK_MARKET, {"market_id": market_id}
    )
    locked_user = conn.cursor(row_factory=namedtuple_row).execute(
        _LOCK_USER, {"user_id": user_id, "market_id": market_id, "side": side.value}
    )
    keyed = None
    if r.key is not None:
        keyed = conn.cursor(row_factory=namedtuple_row).execute(
            _FIND_KEYED, {"user_id": user_id, "request_key": r.key}
        )
    market = locked_market.fetchone()  # sends BEGIN, both locks (and the lookup): 1st round trip
    if keyed is not None and (original := keyed.fetchone()) is not None:
        raise _Replay(_replay(original, r))
    if market is None:
        raise BetError(ErrorCode.UNKNOWN_MARKET, f"market {market_id} does not exist")
    if market.status != MarketStatus.OPEN:
        raise BetError(
            ErrorCode.MARKET_NOT_OPEN,
            f"market {market_id} is {market.status}",
            status=market.status,
        )
    if market.held:
        raise BetError(
            ErrorCode.MARKET_ON_HOLD, f"market {market_id} is on hold while it is investigated"
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

    trade = pricing.quote(Pools(market.pool_yes, market.pool_no), side, action, amount, r.limits)
    bet_id: int = market.bet_id
    post = ledger.posting(  # checked before anything is written
        key=f"bet:{bet_id}",
        kind=_LEDGER_KIND[action],
        postings=_postings(trade, user.account, market.escrow_account, market.fee_account),
        actor=r.actor,
        market_id=market_id,
        bet_id=bet_id,
    )
    conn.execute(
        _WRITE[action],
        post  # the ledger's parameters (bet_id and market_id are the same in both)
        | {
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
            "request_key": r.key,
            "max_slippage": r.limits.max_slippage,
        },
    )
    # It travels with COMMIT when `pipelined` ends: the second round trip.
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


def _replay(original: Any, r: _Request) -> BetReceipt:
    """The receipt of the key's original bet, or IDEMPOTENCY_KEY_REUSED if `r` differs from it."""
    amount = original.amount if original.action == TradeAction.BUY else original.shares
    given = {
        "market": r.market_id,
        "side": r.side.value,
        "action": r.action.value,
        "amount": r.amount,
        "slippage limit": r.limits.max_slippage,
    }
    placed = {
        "market": original.market_id,
        "side": original.side,
        "action": original.action,
        "amount": amount,
        "slippage limit": original.max_slippage,
    }
    if differing := [name for name in given if given[name] != placed[name]]:
        raise BetError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            f"request key {r.key!r} was already used for bet {original.id} with another "
            + ", ".join(differing)
            + f" ({original.action} {amount} {original.side} on market {original.market_id}):"
            " nothing was placed",
            bet_id=original.id,
            differing=differing,
        )
    return BetReceipt(
        bet_id=original.id,
        side=Side(original.side),
        action=TradeAction(original.action),
        shares=original.shares,
        money=original.amount,
        fee=original.fee,
        price_before=original.price_before,
        price_after=original.price_after,
    )


def _postings(trade: Trade, user: int, escrow: int, fee: int) -> list[Posting]:
    if trade.action is TradeAction.SELL:
        return [Posting(escrow, -trade.net), Posting(user, trade.net)]
    postings = [Posting(user, -trade.money), Posting(escrow, trade.net)]
    if trade.fee:
        postings.append(Posting(fee, trade.fee))
    return postings
