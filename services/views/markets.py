"""Read models behind the Markets and Overview pages (read-only).

Every query aggregates in the database and returns one page of rows, so the pages stay fast on a
big database (100,000 markets, 1,000,000 bets): lists use the `(status, closes_at)` index, a
LIMIT/OFFSET page and a COUNT with the same filters; per-market figures use the market_id
indexes of bets, positions, ledger transactions and resolution attempts. "Due" and "overdue" are
`db.rules.due` and `db.rules.overdue`, and "on hold" is `db.rules.held`, rendered into the SQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import literal_column, text
from sqlalchemy.orm import aliased

from config import get_settings
from db import rules
from db.engine import read_session
from db.models import Market
from services.errors import ErrorCode, ServiceError
from services.views.paging import Page, check_page
from services.vocabulary import AccountKind, BetStatus, MarketStatus, MarketType, TradeAction

MAX_SEARCH = 200
LEDGER_LIMIT = 500
TOP_POSITIONS = 10

# The rules as SQL over `markets m`, the grace period a bound parameter (minutes).
_M = aliased(Market, name="m")
_DUE = rules.sql(rules.due(_M))
_OVERDUE = rules.sql(rules.overdue(_M, literal_column("make_interval(mins => :grace)")))
_HELD = rules.sql(rules.held(_M))
_GRACE_ENDS = rules.sql(rules.grace_ends(_M, literal_column("make_interval(mins => :grace)")))
_OPEN = MarketStatus.OPEN.value


@dataclass(frozen=True)
class MarketDetail:
    market: dict[str, Any]
    # Figures computed from the row: implied YES price, due / overdue against the grace period.
    price_yes: Decimal
    due: bool
    overdue: bool
    held: bool
    escrow_balance: Decimal
    # One row per side and action: bets, amount, fees, shares.
    bets_by_side: list[dict[str, Any]]
    # One row per side: holders, shares still held, money in and out.
    positions_by_side: list[dict[str, Any]]
    top_positions: list[dict[str, Any]]
    settlements: list[dict[str, Any]] = field(default_factory=list)


def escape_like(term: str) -> str:
    """`term` as a literal inside an ILIKE pattern (backslash is the escape character)."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_filters(status: str | None, type_: str | None) -> None:
    if status is not None and status not in set(MarketStatus):
        raise ServiceError(
            ErrorCode.INVALID_INPUT, f"status must be one of {', '.join(MarketStatus)}"
        )
    if type_ is not None and type_ not in set(MarketType):
        raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown market type {type_!r}")


def list_markets(
    status: str | None = None,
    type: str | None = None,
    search: str | None = None,
    due_only: bool = False,
    attention_only: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """One page of markets matching every given filter, with the total count.

    `search` matches the title or either KOL's name or X handle (case-insensitive substring), or
    the market id when it is a number. `due_only`: OPEN and past close. `attention_only`: OPEN and
    flagged for attention, on hold, or past the grace period. Newest close first; with `due_only` or
    `attention_only` the longest overdue first, as an operator works through them.
    """
    _check_filters(status, type)
    check_page(limit, offset)
    where = ["true"]
    params: dict[str, Any] = {"grace": get_settings().resolution_grace_minutes}
    if status is not None:
        where.append("m.status = :status")
        params["status"] = status
    if type is not None:
        where.append("m.type = :type")
        params["type"] = type
    if due_only:
        where.append(f"({_DUE})")
    if attention_only:
        where.append(f"((m.status = '{_OPEN}' AND m.needs_attention) OR ({_HELD}) OR ({_OVERDUE}))")
    term = (search or "").strip()[:MAX_SEARCH]
    if term:
        params["pattern"] = f"%{escape_like(term)}%"
        match = [
            "m.title ILIKE :pattern",
            "EXISTS (SELECT 1 FROM kols k WHERE k.id IN (m.kol_a_id, m.kol_b_id)"
            " AND (k.display_name ILIKE :pattern OR k.x_handle ILIKE :pattern))",
        ]
        if term.isdigit() and len(term) < 18:
            match.append("m.id = :search_id")
            params["search_id"] = int(term)
        where.append("(" + " OR ".join(match) + ")")
    condition = " AND ".join(where)
    order = "m.closes_at, m.id" if due_only or attention_only else "m.closes_at DESC, m.id DESC"
    with read_session() as s:
        total = s.execute(
            text(f"SELECT count(*) FROM markets m WHERE {condition}"), params
        ).scalar_one()
        rows = s.execute(
            text(
                f"""
                SELECT m.id, m.status, m.outcome, m.type, m.title, ka.display_name AS kol_a,
                       kb.display_name AS kol_b, m.timeframe, m.closes_at, m.cancel_reason,
                       m.needs_attention, ({_DUE}) AS due, ({_OVERDUE}) AS overdue,
                       ({_HELD}) AS held,
                       round(m.pool_no / (m.pool_yes + m.pool_no), 4) AS price_yes,
                       b.bets, b.volume
                FROM (SELECT * FROM markets m WHERE {condition}
                      ORDER BY {order} LIMIT :limit OFFSET :offset) m
                JOIN kols ka ON ka.id = m.kol_a_id
                LEFT JOIN kols kb ON kb.id = m.kol_b_id
                CROSS JOIN LATERAL (
                    SELECT count(*) AS bets,
                           coalesce(sum(amount) FILTER (WHERE action = '{TradeAction.BUY}'), 0)
                             AS volume
                    FROM bets WHERE market_id = m.id) b
                ORDER BY {order}
                """
            ),
            {**params, "limit": limit, "offset": offset},
        ).mappings()
        return Page([dict(r) for r in rows], int(total), offset)


def market_detail(market_id: int) -> MarketDetail:
    with read_session() as s:
        market = (
            s.execute(
                text(
                    f"""
                SELECT m.id, m.type, m.title, m.status, m.outcome, m.timeframe, m.threshold,
                       m.target_rank, m.baseline, m.opens_at, m.closes_at, m.resolved_at,
                       m.cancelled_at, m.cancel_reason, m.cancel_detail, m.needs_attention,
                       m.attention_reason, m.pool_yes, m.pool_no, m.liquidity, m.created_at,
                       m.claimed_by, m.claim_expires_at, m.held_at, m.held_by, m.hold_reason,
                       m.held_for, ({_GRACE_ENDS}) AS grace_ends,
                       ka.id AS kol_a_id, ka.display_name AS kol_a, ka.wallet AS kol_a_wallet,
                       ka.x_handle AS kol_a_handle,
                       kb.id AS kol_b_id, kb.display_name AS kol_b, kb.wallet AS kol_b_wallet,
                       kb.x_handle AS kol_b_handle,
                       e.balance AS escrow_balance, ({_DUE}) AS due, ({_OVERDUE}) AS overdue,
                       ({_HELD}) AS held
                FROM markets m
                JOIN kols ka ON ka.id = m.kol_a_id
                LEFT JOIN kols kb ON kb.id = m.kol_b_id
                JOIN accounts e ON e.market_id = m.id
                WHERE m.id = :m
                """
                ),
                {"m": market_id, "grace": get_settings().resolution_grace_minutes},
            )
            .mappings()
            .one_or_none()
        )
        if market is None:
            raise ServiceError(
                ErrorCode.UNKNOWN_MARKET, f"market {market_id} does not exist", market_id=market_id
            )
        bets = s.execute(
            text(
                "SELECT side, action, count(*) AS bets, sum(amount) AS amount, sum(fee) AS fees,"
                " sum(shares) AS shares,"
                f" count(*) FILTER (WHERE status = '{BetStatus.OPEN}') AS open,"
                " coalesce(sum(payout), 0) AS paid_out"
                " FROM bets WHERE market_id = :m GROUP BY side, action ORDER BY side DESC, action"
            ),
            {"m": market_id},
        ).mappings()
        positions = s.execute(
            text(
                "SELECT side, count(*) FILTER (WHERE shares > 0) AS holders,"
                " sum(shares) AS shares_held, sum(paid_in) AS paid_in, sum(received) AS received,"
                " sum(payout) AS payout"
                " FROM positions WHERE market_id = :m GROUP BY side ORDER BY side DESC"
            ),
            {"m": market_id},
        ).mappings()
        top = s.execute(
            text(
                "SELECT u.username, p.side, p.shares, p.paid_in, p.received, p.payout"
                " FROM positions p JOIN users u ON u.id = p.user_id"
                " WHERE p.market_id = :m ORDER BY p.shares DESC, p.user_id LIMIT :n"
            ),
            {"m": market_id, "n": TOP_POSITIONS},
        ).mappings()
        settlements = s.execute(
            text(
                "SELECT id, kind, outcome, active, actor, reason, created_at, reversed_at"
                " FROM settlements WHERE market_id = :m ORDER BY id DESC"
            ),
            {"m": market_id},
        ).mappings()
        m = dict(market)
        return MarketDetail(
            market=m,
            price_yes=(m["pool_no"] / (m["pool_yes"] + m["pool_no"])).quantize(Decimal("0.0001")),
            due=bool(m.pop("due")),
            overdue=bool(m.pop("overdue")),
            held=bool(m.pop("held")),
            escrow_balance=m.pop("escrow_balance"),
            bets_by_side=[dict(r) for r in bets],
            positions_by_side=[dict(r) for r in positions],
            top_positions=[dict(r) for r in top],
            settlements=[dict(r) for r in settlements],
        )


def market_ledger(market_id: int, *, limit: int = LEDGER_LIMIT) -> list[dict[str, Any]]:
    """The market's ledger entries, newest transaction first: one row per entry with its
    transaction's kind, key, actor and memo, and the account it moved (user, escrow, house...)."""
    with read_session() as s:
        rows = s.execute(
            text(
                f"""
                SELECT t.id AS tx, t.created_at, t.kind, t.idempotency_key AS key, t.actor,
                       t.memo, t.reverses_transaction_id AS reverses_tx, e.id AS entry,
                       CASE a.kind WHEN '{AccountKind.USER}' THEN 'user ' || u.username
                                   ELSE lower(a.kind) END AS account,
                       e.amount
                FROM (SELECT * FROM ledger_transactions WHERE market_id = :m
                      ORDER BY id DESC LIMIT :limit) t
                JOIN ledger_entries e ON e.transaction_id = t.id
                JOIN accounts a ON a.id = e.account_id
                LEFT JOIN users u ON u.id = a.user_id
                ORDER BY t.id DESC, e.id
                """
            ),
            {"m": market_id, "limit": limit},
        ).mappings()
        return [dict(r) for r in rows]


def outcomes_per_hour(days: int = 7) -> list[dict[str, Any]]:
    """Resolutions (by outcome) and cancellations (by reason code) per UTC hour over the last
    `days` days: rows of hour, event ('resolved' or 'cancelled'), reason, markets."""
    if not isinstance(days, int) or not 1 <= days <= 90:
        raise ServiceError(ErrorCode.INVALID_INPUT, "days must be 1 to 90")
    with read_session() as s:
        rows = s.execute(
            text(
                f"""
                SELECT date_trunc('hour', resolved_at AT TIME ZONE 'UTC') AS hour,
                       'resolved' AS event, outcome AS reason, count(*) AS markets
                FROM markets WHERE status = '{MarketStatus.RESOLVED}'
                  AND resolved_at > now() - make_interval(days => :days)
                GROUP BY 1, 3
                UNION ALL
                SELECT date_trunc('hour', cancelled_at AT TIME ZONE 'UTC'), 'cancelled',
                       cancel_reason, count(*)
                FROM markets WHERE status = '{MarketStatus.CANCELLED}'
                  AND cancelled_at > now() - make_interval(days => :days)
                GROUP BY 1, 3
                ORDER BY 1, 2, 3
                """
            ),
            {"days": days},
        ).mappings()
        return [
            {**r, "hour": r["hour"].replace(tzinfo=dt.UTC), "markets": int(r["markets"])}
            for r in rows
        ]
