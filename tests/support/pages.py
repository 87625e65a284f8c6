"""The dashboard under Streamlit's AppTest, markets with real bets, and what to read back after an
operator acts on one: shared by the page and browser tests."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from db.engine import read_session, transaction
from services.money import users
from services.money.bets import place_bet
from services.ops import audit
from services.ops.auth import Principal
from services.vocabulary import AccountKind, TradeAction
from tests.support import accounts
from tests.support.factories import close_market, new_kol, new_market, new_named_kol
from tests.support.money import user_balance

D = Decimal
DEPOSIT = D(500)
TRADES = [
    ("alice", "YES", D(100)),
    ("bob", "NO", D("60.50")),
    ("carol", "YES", D(25)),
    ("carol", "NO", D(40)),
]


@dataclass
class Scenario:
    market_id: int
    users: dict[str, int]  # username -> user id
    bets: int


_seq = itertools.count(1)


def dashboard_app(principal: Principal | None = None) -> AppTest:
    """The dashboard's shell under AppTest as `principal` (its account is created if needed),
    not yet run."""
    if principal is not None:
        accounts.ensure(principal)
    at = AppTest.from_file(str(Path(__file__).with_name("dashboard_as.py")), default_timeout=30)
    at.session_state["principal"] = principal
    return at


def open_market_now(
    *, kol_name: str | None = None, x_handle: str | None = None, **fields: Any
) -> int:
    """A market opened a minute ago, closing in a day, on a new KOL (named `kol_name`, with X
    handle `x_handle`), with the house funded to back its liquidity."""
    with transaction() as s:
        if not s.scalar(text(f"SELECT balance FROM accounts WHERE kind = '{AccountKind.HOUSE}'")):
            users.fund_house(s, D(1_000_000), key=f"house:{next(_seq)}", actor="test")
        kol = (
            new_named_kol(s, kol_name, x_handle=x_handle)
            if kol_name
            else new_kol(s, x_handle=x_handle)
        )
        now = s.execute(text("SELECT now()")).scalar_one()
        defaults: dict[str, Any] = {
            "baseline": {"a": {"usd_gain": 10}},
            "opens_at": now - dt.timedelta(minutes=1),
            "closes_at": now + dt.timedelta(days=1),
            "liquidity": D(1000),
        }
        return new_market(s, kol_a_id=kol, **(defaults | fields))


def bet_on(market_id: int, trades: list[tuple[str, str, Decimal]]) -> dict[str, int]:
    """Register each new user with DEPOSIT and place their BUYs; returns username -> id."""
    ids: dict[str, int] = {}
    for name, side, amount in trades:
        if name not in ids:
            ids[name] = users.register(f"{name}{market_id}", DEPOSIT, actor="test")
        place_bet(
            user_id=ids[name], market_id=market_id, side=side, action=TradeAction.BUY, amount=amount
        )
    return ids


def overdue_market_with_bets(db: str, **fields: Any) -> Scenario:
    """A market past its close and grace period, with four bets by three users."""
    market_id = open_market_now(**fields)
    ids = bet_on(market_id, TRADES)
    close_market(db, market_id, 120)
    return Scenario(market_id, ids, len(TRADES))


def market_row(market_id: int) -> dict[str, Any]:
    with read_session() as s:
        return dict(
            s.execute(
                text(
                    "SELECT status, outcome, cancel_reason, cancel_detail FROM markets"
                    " WHERE id = :m"
                ),
                {"m": market_id},
            )
            .mappings()
            .one()
        )


def bet_statuses(market_id: int) -> list[str]:
    with read_session() as s:
        return list(
            s.scalars(
                text("SELECT status FROM bets WHERE market_id = :m ORDER BY id"), {"m": market_id}
            )
        )


def balances(user_ids: dict[str, int]) -> dict[str, Decimal]:
    with read_session() as s:
        return {name: user_balance(s, uid) for name, uid in user_ids.items()}


def settlement_count(market_id: int) -> dict[str, int]:
    with read_session() as s:
        rows = s.execute(
            text("SELECT kind, count(*) FROM settlements WHERE market_id = :m GROUP BY kind"),
            {"m": market_id},
        ).all()
    return {kind: int(n) for kind, n in rows}


def market_audit(market_id: int) -> list[dict[str, Any]]:
    """Audit rows about this market, oldest first."""
    return [r for r in reversed(audit.recent()) if r["target"] == f"market:{market_id}"]
