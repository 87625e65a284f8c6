"""Settlement, cancel+refund and re-settle of a market (PRODUCT.md section 3 points 6-8, section 5).

Each operation runs inside ONE database transaction (the caller's, see below): it locks the
market row, re-checks the status the caller saw, and then changes everything with a constant number
of set-based statements (never one round trip per bet or per user): bets, positions, user stats,
one balanced ledger transaction (whose `finish` applies every balance), the settlement record and
the market row. A late or concurrent second call waits for the lock, sees the new status and
returns ALREADY_DONE or STATE_CHANGED without touching anything.

Money rules:
- SETTLE pays each user's NET winning shares (positions.shares of the winning side, shares still
  held after sells) at 1.00 each from escrow; the escrow remainder (the winning pool) goes to the
  house.
- REFUND pays each user max(0, paid_in - received) summed over both sides (fees included); the
  escrow goes to the house, which pays in whatever the refunds need beyond the escrow.
- positions.payout is exact: the winning shares (SETTLE), or the user's refund split over their
  two positions in proportion to paid_in (REFUND). A position's payout is split over its BUY bets
  in proportion to shares bought (SETTLE) or money paid (REFUND) with cumulative rounding down,
  so the bets' payouts sum exactly to the position's payout. SELL rows get payout 0.
- Bet status: SETTLE marks every bet on the winning side WON and every bet on the losing side
  LOST, BUY and SELL alike (the status says which side won; the payout says what the row got).
  REFUND marks every bet REFUNDED.
- users.profit += payout - (paid_in - received) over both sides, for SETTLE and REFUND alike;
  users.wins += 1 when a SETTLE paid the user anything.
- Re-settle (and cancel of a RESOLVED market) first takes back the active settlement's stats and
  reverses its ledger transaction with `ledger.reverse`; the new settlement then rewrites every
  bet and position of the market. If the reversal would take a user below zero, nothing changes
  and a NEGATIVE_BALANCE error lists each such user's shortfall.

Each operation runs in the caller's transaction: the caller owns the unit of work, so it can
write more in the same transaction (the audit row or the resolution attempt that explains the
change) and commit or retry the whole. `_checkpoint` is called with each step name (`*_STEPS`
below) inside the transaction: a no-op that tests replace to fail or kill the connection at that
exact point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import literal_column, text
from sqlalchemy.orm import Session, aliased

from config import get_settings
from db import rules
from db.engine import read_session
from db.models import Market
from services import lifecycle
from services.errors import ErrorCode, ServiceError
from services.inputs import free_text
from services.lifecycle import MarketState
from services.money import ledger
from services.vocabulary import (
    AccountKind,
    BetStatus,
    LedgerKind,
    MarketAction,
    MarketStatus,
    Result,
    SettlementKind,
    Side,
    TradeAction,
)

# Step names passed to `_checkpoint`, in the order they happen.
REVERSAL_STEPS = ("after_reversal",)
SETTLE_STEPS = ("after_bets", "after_stats", "after_ledger", "after_balances", "before_commit")
RESETTLE_STEPS = REVERSAL_STEPS + SETTLE_STEPS
REFUND_STEPS = SETTLE_STEPS
REFUND_RESOLVED_STEPS = REVERSAL_STEPS + REFUND_STEPS

MAX_ACTOR_LENGTH = 64
MAX_TEXT = 10_000


@dataclass(frozen=True)
class SettlementResult:
    market_id: int
    status: Result
    market_status: str
    outcome: str | None
    message: str
    settlement_id: int | None = None
    transaction_id: int | None = None
    reversal_transaction_id: int | None = None
    bets: int = 0
    users_paid: int = 0
    total_paid: Decimal = Decimal(0)
    # Negative when the house paid in (a refund larger than the escrow).
    to_house: Decimal = Decimal(0)

    @property
    def applied(self) -> bool:
        return self.status is Result.OK


@dataclass(frozen=True)
class SettlementPreview:
    """What a settle or refund would do now, for a confirmation dialog; nothing is locked."""

    market_id: int
    kind: SettlementKind
    outcome: str | None
    market_status: str
    bets: int
    users: int
    users_paid: int
    total_paid: Decimal
    to_house: Decimal
    reverses_settlement_id: int | None = None
    # Users the reversal of the active settlement would take below zero, and by how much.
    shortfalls: dict[int, Decimal] = field(default_factory=dict)


# -- public operations --------------------------------------------------------------------------


def _checkpoint(step: str) -> None:
    """The test seam: tests replace this to fail at `step`; production does nothing here."""


def settle(
    session: Session, market_id: int, outcome: str, *, actor: str, reason: str
) -> SettlementResult:
    """Resolve an OPEN market with `outcome` and pay the winners, in the caller's transaction.
    Use `resettle` to correct a final market: a stale caller must never reverse a settlement by
    accident."""
    side = _outcome(outcome)
    reason = _required(reason, "reason")
    actor = _actor(actor)
    return _settle(session, market_id, side, actor, reason, MarketStatus.OPEN)


def resettle(
    session: Session,
    market_id: int,
    outcome: str,
    *,
    actor: str,
    reason: str,
    expected_status: str,
) -> SettlementResult:
    """Reverse the active settlement of a RESOLVED or CANCELLED market and settle it anew with
    `outcome`, in the caller's transaction. `expected_status` is the status the operator saw."""
    side = _outcome(outcome)
    reason = _required(reason, "reason")
    actor = _actor(actor)
    expected = _expected(MarketAction.RESETTLE, expected_status, side)
    return _settle(session, market_id, side, actor, reason, expected)


def cancel_and_refund(
    session: Session,
    market_id: int,
    reason_code: ErrorCode | str,
    detail: str,
    *,
    actor: str,
    expected_status: str = MarketStatus.OPEN,
) -> SettlementResult:
    """Cancel an OPEN market (or a RESOLVED one, reversing its settlement first) and refund every
    user, in the caller's transaction."""
    code = _reason_code(reason_code)
    detail = _required(detail, "detail")
    actor = _actor(actor)
    expected = _expected(MarketAction.CANCEL, expected_status, None)
    return _refund(session, market_id, code, detail, actor, expected)


def preview_settle(market_id: int, outcome: str) -> SettlementPreview:
    side = _outcome(outcome)
    with read_session() as session:
        market = _market(session, market_id, lock=False)
        paid = session.execute(
            text(
                "SELECT count(*) FILTER (WHERE side = :side AND shares > 0),"
                " coalesce(sum(shares) FILTER (WHERE side = :side), 0)"
                " FROM positions WHERE market_id = :m"
            ),
            {"m": market_id, "side": side},
        ).one()
        return _preview(
            session, market, SettlementKind.SETTLE, side, int(paid[0]), Decimal(paid[1])
        )


def preview_refund(market_id: int) -> SettlementPreview:
    with read_session() as session:
        market = _market(session, market_id, lock=False)
        paid = session.execute(
            text(
                "SELECT count(*) FILTER (WHERE refund > 0), coalesce(sum(refund), 0)"
                " FROM (SELECT greatest(sum(paid_in) - sum(received), 0) AS refund"
                "       FROM positions WHERE market_id = :m GROUP BY user_id) r"
            ),
            {"m": market_id},
        ).one()
        return _preview(
            session, market, SettlementKind.REFUND, None, int(paid[0]), Decimal(paid[1])
        )


# -- validation ---------------------------------------------------------------------------------


def _outcome(value: object) -> Side:
    if isinstance(value, str) and value in tuple(Side):
        return Side(value)
    raise ServiceError(ErrorCode.INVALID_INPUT, f"outcome must be YES or NO, got {value!r}")


def _required(value: object, what: str) -> str:
    return free_text(value, what=what, max_len=MAX_TEXT, missing=ErrorCode.REASON_REQUIRED)


def _actor(value: object) -> str:
    return free_text(value, what="actor", max_len=MAX_ACTOR_LENGTH)


def _expected(action: MarketAction, status: object, side: Side | None) -> MarketStatus:
    """The status the caller saw, refused up front when `action` never applies to it."""
    try:
        expected = MarketStatus(str(status))
    except ValueError:
        raise ServiceError(
            ErrorCode.INVALID_INPUT, f"unknown market status {status!r}", expected_status=status
        ) from None
    # Seen without its outcome: a RESOLVED market may still be re-settled to the other side.
    why = lifecycle.refusal(action, MarketState(expected), side)
    if why is not None:
        raise ServiceError(
            ErrorCode.INVALID_INPUT,
            f"{action} does not apply to a market seen {expected}: {why}",
            expected_status=expected,
        )
    return expected


def _reason_code(value: object) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        raise ServiceError(
            ErrorCode.INVALID_INPUT, f"unknown cancel reason code {value!r}"
        ) from None


# -- the transaction bodies ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Market:
    id: int
    status: str
    outcome: str | None
    escrow_id: int
    resettle_closed: bool

    @property
    def state(self) -> MarketState:
        return MarketState.of(self.status, self.outcome, resettle_closed=self.resettle_closed)


_RESETTLE_CLOSED = rules.sql(
    rules.resettle_closed(
        aliased(Market, name="m"), literal_column("make_interval(days => :window)")
    )
)


def _market(session: Session, market_id: int, *, lock: bool) -> _Market:
    row = session.execute(
        text(
            f"SELECT m.id, m.status, m.outcome, a.id, {_RESETTLE_CLOSED} FROM markets m"
            " JOIN accounts a ON a.market_id = m.id WHERE m.id = :m"
            + (" FOR UPDATE OF m" if lock else "")
        ),
        {"m": market_id, "window": get_settings().resettle_window_days},
    ).one_or_none()
    if row is None:
        raise ServiceError(
            ErrorCode.UNKNOWN_MARKET, f"market {market_id} does not exist", market_id=market_id
        )
    return _Market(*row)


def _not_applied(market: _Market, status: Result, wanted: str) -> SettlementResult:
    if status is Result.ALREADY_DONE:
        message = f"market {market.id} is already {wanted}: nothing to do"
    else:
        current = market.status + (f" {market.outcome}" if market.outcome else "")
        message = f"market {market.id} is now {current}, not as expected: nothing was done"
    return SettlementResult(market.id, status, market.status, market.outcome, message)


def _noop(market: _Market, target: str, outcome: str | None) -> SettlementResult:
    """ALREADY_DONE when the market already is the target, STATE_CHANGED otherwise."""
    done = market.status == target and (outcome is None or market.outcome == outcome)
    wanted = target + (f" {outcome}" if outcome else "")
    return _not_applied(market, Result.ALREADY_DONE if done else Result.STATE_CHANGED, wanted)


def _settle(
    session: Session,
    market_id: int,
    outcome: Side,
    actor: str,
    reason: str,
    expected: MarketStatus,
) -> SettlementResult:
    market = _market(session, market_id, lock=True)
    correcting = expected is not MarketStatus.OPEN
    if correcting and market.status == expected and market.resettle_closed:
        raise ServiceError(
            ErrorCode.INVALID_INPUT,
            f"market {market_id} cannot be re-settled: final for longer than the re-settle"
            f" window ({get_settings().resettle_window_days} days), its evidence may be gone",
            market_id=market_id,
        )
    if market.status != expected or (
        correcting and lifecycle.refusal(MarketAction.RESETTLE, market.state, outcome)
    ):
        return _noop(market, MarketStatus.RESOLVED, outcome)
    reversal_tx = None
    if correcting:
        reversal_tx = _reverse_active(session, market, actor, reason)
        _checkpoint("after_reversal")
    session.execute(
        text(
            "UPDATE positions SET payout = CASE WHEN side = :side THEN shares ELSE 0 END"
            " WHERE market_id = :m"
        ),
        {"m": market_id, "side": outcome},
    )
    bets = _allocate_to_bets(session, market_id, weight="shares", outcome=outcome)
    _checkpoint("after_bets")
    _apply_stats(session, market_id, sign=1, counts_win=True)
    _checkpoint("after_stats")
    seq = _next_seq(session, market_id)
    result = _pay(
        session,
        market,
        key=f"settle:{market_id}:{seq}",
        kind=LedgerKind.PAYOUT,
        actor=actor,
        memo=reason,
        house_may_pay_in=False,
    )
    settlement_id = _record(
        session, market_id, SettlementKind.SETTLE, outcome, result[0], actor, reason
    )
    session.execute(
        text(
            f"UPDATE markets SET status = '{MarketStatus.RESOLVED}', outcome = :side,"
            " resolved_at = now(),"
            " cancel_reason = NULL, cancel_detail = NULL, cancelled_at = NULL,"
            " needs_attention = false, attention_reason = NULL WHERE id = :m"
        ),
        {"m": market_id, "side": outcome},
    )
    _checkpoint("before_commit")
    tx_id, users_paid, total, to_house = result
    verb = "re-settled" if reversal_tx else "settled"
    return SettlementResult(
        market_id,
        Result.OK,
        MarketStatus.RESOLVED,
        outcome,
        f"market {market_id} {verb} {outcome}: {users_paid} users paid {total},"
        f" {to_house} to the house",
        settlement_id=settlement_id,
        transaction_id=tx_id,
        reversal_transaction_id=reversal_tx,
        bets=bets,
        users_paid=users_paid,
        total_paid=total,
        to_house=to_house,
    )


def _refund(
    session: Session,
    market_id: int,
    code: ErrorCode,
    detail: str,
    actor: str,
    expected: MarketStatus,
) -> SettlementResult:
    market = _market(session, market_id, lock=True)
    if market.status != expected or lifecycle.refusal(MarketAction.CANCEL, market.state):
        return _noop(market, MarketStatus.CANCELLED, None)
    reversal_tx = None
    if market.status == MarketStatus.RESOLVED:
        reversal_tx = _reverse_active(session, market, actor, f"{code}: {detail}")
        _checkpoint("after_reversal")
    # Each user's refund, split over their positions in proportion to paid_in (cumulative
    # rounding down, so the split sums exactly to the refund).
    session.execute(
        text(
            "UPDATE positions p SET payout = x.payout FROM ("
            "  SELECT user_id, side, CASE WHEN whole = 0 THEN 0 ELSE"
            "    trunc(refund * cum / whole, 6) - trunc(refund * (cum - paid_in) / whole, 6)"
            "  END AS payout"
            "  FROM (SELECT user_id, side, paid_in,"
            "          greatest(sum(paid_in) OVER u - sum(received) OVER u, 0) AS refund,"
            "          sum(paid_in) OVER (u ORDER BY side) AS cum,"
            "          sum(paid_in) OVER u AS whole"
            "        FROM positions WHERE market_id = :m WINDOW u AS (PARTITION BY user_id)) w"
            ") x WHERE p.market_id = :m AND p.user_id = x.user_id AND p.side = x.side"
        ),
        {"m": market_id},
    )
    bets = _allocate_to_bets(session, market_id, weight="amount", outcome=None)
    _checkpoint("after_bets")
    _apply_stats(session, market_id, sign=1, counts_win=False)
    _checkpoint("after_stats")
    seq = _next_seq(session, market_id)
    result = _pay(
        session,
        market,
        key=f"refund:{market_id}:{seq}",
        kind=LedgerKind.REFUND,
        actor=actor,
        memo=f"{code}: {detail}",
        house_may_pay_in=True,
    )
    settlement_id = _record(
        session, market_id, SettlementKind.REFUND, None, result[0], actor, f"{code}: {detail}"
    )
    session.execute(
        text(
            f"UPDATE markets SET status = '{MarketStatus.CANCELLED}', outcome = NULL,"
            " resolved_at = NULL,"
            " cancel_reason = :code, cancel_detail = :detail, cancelled_at = now(),"
            " needs_attention = false, attention_reason = NULL WHERE id = :m"
        ),
        {"m": market_id, "code": code.value, "detail": detail},
    )
    _checkpoint("before_commit")
    tx_id, users_paid, total, to_house = result
    return SettlementResult(
        market_id,
        Result.OK,
        MarketStatus.CANCELLED,
        None,
        f"market {market_id} cancelled ({code}): {users_paid} users refunded {total},"
        f" {to_house} to the house",
        settlement_id=settlement_id,
        transaction_id=tx_id,
        reversal_transaction_id=reversal_tx,
        bets=bets,
        users_paid=users_paid,
        total_paid=total,
        to_house=to_house,
    )


# A position's payout split over its BUY bets in proportion to `weight`, with cumulative rounding
# down: bet i gets floor(P * cum_i / W) - floor(P * cum_{i-1} / W), which telescopes to exactly P.
_ALLOCATE_SQL = f"""
UPDATE bets b SET
  status = CASE WHEN CAST(:side AS text) IS NULL THEN '{BetStatus.REFUNDED}'
                WHEN b.side = CAST(:side AS text) THEN '{BetStatus.WON}'
                ELSE '{BetStatus.LOST}' END,
  payout = x.payout
FROM (
  SELECT w.id,
         CASE WHEN w.action = '{TradeAction.BUY}' AND p.payout > 0 THEN
           trunc(p.payout * w.cum / w.whole, 6) - trunc(p.payout * (w.cum - w.weight) / w.whole, 6)
         ELSE 0 END AS payout
  FROM (SELECT id, user_id, side, action, {{weight}} AS weight,
               sum({{weight}}) OVER (PARTITION BY user_id, side, action ORDER BY id) AS cum,
               sum({{weight}}) OVER (PARTITION BY user_id, side, action) AS whole
        FROM bets WHERE market_id = :m) w
  LEFT JOIN positions p ON p.market_id = :m AND p.user_id = w.user_id AND p.side = w.side
) x
WHERE b.id = x.id
"""
_ALLOCATE = {w: text(_ALLOCATE_SQL.format(weight=w)) for w in ("shares", "amount")}


def _allocate_to_bets(
    session: Session, market_id: int, *, weight: str, outcome: Side | None
) -> int:
    result = session.execute(_ALLOCATE[weight], {"m": market_id, "side": outcome})
    return int(result.rowcount)  # type: ignore[attr-defined]


def _pay(
    session: Session,
    market: _Market,
    *,
    key: str,
    kind: LedgerKind,
    actor: str,
    memo: str,
    house_may_pay_in: bool,
) -> tuple[int, int, Decimal, Decimal]:
    """One ledger transaction: every user their positions' payouts, the whole escrow out, the
    difference to (or from) the house. Returns (tx id, users paid, total paid, to house)."""
    users_paid, total, escrow = session.execute(
        text(
            "SELECT count(*) FILTER (WHERE amount > 0), coalesce(sum(amount), 0),"
            "       (SELECT balance FROM accounts WHERE id = :escrow)"
            " FROM (SELECT sum(payout) AS amount FROM positions WHERE market_id = :m"
            "       GROUP BY user_id) u"
        ),
        {"m": market.id, "escrow": market.escrow_id},
    ).one()
    to_house = escrow - total
    if to_house < 0 and not house_may_pay_in:
        raise ServiceError(
            ErrorCode.INTERNAL_ERROR,
            f"market {market.id}: escrow {escrow} does not cover winning shares {total}",
            market_id=market.id,
        )
    house = ledger.system_account_id(session, AccountKind.HOUSE)
    tx_id = ledger.begin(session, key=key, kind=kind, actor=actor, market_id=market.id, memo=memo)
    session.execute(
        text(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount)"
            " SELECT :tx, a.id, u.amount"
            " FROM (SELECT user_id, sum(payout) AS amount FROM positions WHERE market_id = :m"
            "       GROUP BY user_id HAVING sum(payout) > 0) u"
            " JOIN accounts a ON a.user_id = u.user_id"
            " UNION ALL SELECT :tx, :escrow, -CAST(:escrow_amount AS numeric)"
            "   WHERE CAST(:escrow_amount AS numeric) <> 0"
            " UNION ALL SELECT :tx, :house, CAST(:house_amount AS numeric)"
            "   WHERE CAST(:house_amount AS numeric) <> 0"
        ),
        {
            "tx": tx_id,
            "m": market.id,
            "escrow": market.escrow_id,
            "escrow_amount": escrow,
            "house": house,
            "house_amount": to_house,
        },
    )
    _checkpoint("after_ledger")
    ledger.finish(session, tx_id)
    _checkpoint("after_balances")
    return tx_id, int(users_paid), Decimal(total), Decimal(to_house)


# users.profit / wins from the market's positions; sign -1 takes back what sign +1 gave.
_STATS_SQL = text(
    "UPDATE users u SET"
    " wins = u.wins + :sign * CASE WHEN :counts_win AND x.payout > 0 THEN 1 ELSE 0 END,"
    " profit = u.profit + :sign * (x.payout - x.net)"
    " FROM (SELECT user_id, coalesce(sum(payout), 0) AS payout, sum(paid_in - received) AS net"
    "       FROM positions WHERE market_id = :m GROUP BY user_id) x"
    " WHERE u.id = x.user_id"
)


def _apply_stats(session: Session, market_id: int, *, sign: int, counts_win: bool) -> None:
    session.execute(_STATS_SQL, {"m": market_id, "sign": sign, "counts_win": counts_win})


def _next_seq(session: Session, market_id: int) -> int:
    count = session.scalar(
        text("SELECT count(*) FROM settlements WHERE market_id = :m"), {"m": market_id}
    )
    return int(count or 0) + 1


def _record(
    session: Session,
    market_id: int,
    kind: SettlementKind,
    outcome: str | None,
    tx_id: int,
    actor: str,
    reason: str,
) -> int:
    settlement_id = session.scalar(
        text(
            "INSERT INTO settlements (market_id, kind, outcome, transaction_id, actor, reason)"
            " VALUES (:m, :kind, :outcome, :tx, :actor, :reason) RETURNING id"
        ),
        {
            "m": market_id,
            "kind": kind,
            "outcome": outcome,
            "tx": tx_id,
            "actor": actor,
            "reason": reason,
        },
    )
    assert settlement_id is not None
    return int(settlement_id)


def _active_settlement(session: Session, market_id: int, *, lock: bool) -> tuple[int, str, int]:
    row = session.execute(
        text(
            "SELECT id, kind, transaction_id FROM settlements WHERE market_id = :m AND active"
            + (" FOR UPDATE" if lock else "")
        ),
        {"m": market_id},
    ).one_or_none()
    if row is None:
        raise ServiceError(
            ErrorCode.INTERNAL_ERROR,
            f"market {market_id} is final but has no active settlement",
            market_id=market_id,
        )
    return int(row[0]), str(row[1]), int(row[2])


def _shortfalls(session: Session, tx_id: int, *, lock: bool) -> dict[int, Decimal]:
    """Users whose balance is below what reversing `tx_id` takes back, and by how much. With
    `lock`, every user account of the transaction is locked (in id order) so that the answer
    holds until commit."""
    rows = session.execute(
        text(
            "WITH u AS (SELECT a.user_id, a.balance, e.amount FROM ledger_entries e"
            "           JOIN accounts a ON a.id = e.account_id"
            f"           WHERE e.transaction_id = :tx AND a.kind = '{AccountKind.USER}'"
            "           ORDER BY a.id" + (" FOR UPDATE OF a" if lock else "") + ")"
            " SELECT user_id, amount - balance FROM u WHERE balance < amount ORDER BY user_id"
        ),
        {"tx": tx_id},
    ).all()
    return {int(user_id): Decimal(short) for user_id, short in rows}


def _reverse_active(session: Session, market: _Market, actor: str, reason: str) -> int:
    settlement_id, kind, tx_id = _active_settlement(session, market.id, lock=True)
    # Users before accounts: the lock order bet placement uses.
    _apply_stats(session, market.id, sign=-1, counts_win=kind == SettlementKind.SETTLE)
    shortfalls = _shortfalls(session, tx_id, lock=True)
    if shortfalls:
        raise ServiceError(
            ErrorCode.NEGATIVE_BALANCE,
            f"reversing the settlement of market {market.id} would make"
            f" {len(shortfalls)} user balance(s) negative: "
            + ", ".join(f"user {u} short {s}" for u, s in shortfalls.items()),
            market_id=market.id,
            shortfalls=shortfalls,
        )
    reversal_tx = ledger.reverse(
        session,
        transaction_id=tx_id,
        key=f"reverse:settlement:{settlement_id}",
        actor=actor,
        memo=reason,
    )
    session.execute(
        text(
            "UPDATE settlements SET active = false, reversed_at = now(),"
            " reversal_transaction_id = :rev WHERE id = :id"
        ),
        {"id": settlement_id, "rev": reversal_tx},
    )
    return reversal_tx


def _preview(
    session: Session,
    market: _Market,
    kind: SettlementKind,
    outcome: str | None,
    users_paid: int,
    total: Decimal,
) -> SettlementPreview:
    counts: Any = session.execute(
        text(
            "SELECT (SELECT count(*) FROM bets WHERE market_id = :m),"
            " (SELECT count(DISTINCT user_id) FROM positions WHERE market_id = :m),"
            " (SELECT balance FROM accounts WHERE id = :escrow)"
        ),
        {"m": market.id, "escrow": market.escrow_id},
    ).one()
    escrow = Decimal(counts[2])
    reverses = None
    shortfalls: dict[int, Decimal] = {}
    if market.status != MarketStatus.OPEN:
        reverses, _, tx_id = _active_settlement(session, market.id, lock=False)
        # The escrow as the reversal would restore it.
        escrow -= Decimal(
            session.scalar(
                text(
                    "SELECT coalesce(sum(amount), 0) FROM ledger_entries"
                    " WHERE transaction_id = :tx AND account_id = :escrow"
                ),
                {"tx": tx_id, "escrow": market.escrow_id},
            )
        )
        shortfalls = _shortfalls(session, tx_id, lock=False)
    return SettlementPreview(
        market_id=market.id,
        kind=kind,
        outcome=outcome,
        market_status=market.status,
        bets=int(counts[0]),
        users=int(counts[1]),
        users_paid=users_paid,
        total_paid=total,
        to_house=escrow - total,
        reverses_settlement_id=reverses,
        shortfalls=shortfalls,
    )
