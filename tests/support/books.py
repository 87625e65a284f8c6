"""Markets with real bets, followed by hand (a `Book`), and the database reads the money tests
compare before and after an operation."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from db.engine import transaction
from services.money import users
from services.money.bets import BetReceipt, place_bet
from services.money.integrity import check_integrity
from tests.support import factories

D = Decimal
LIQUIDITY = D(1000)
HOUSE_CAPITAL = D(1_000_000)
DEPOSIT = D(1000)

_seq = itertools.count(1)


# -- building markets with real bets ------------------------------------------------------------


@dataclass
class Book:
    """What each user did on one market, followed in Python from the bet receipts."""

    market_id: int
    users: dict[str, int] = field(default_factory=dict)
    held: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    paid: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    received: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    receipts: dict[str, list[BetReceipt]] = field(default_factory=lambda: defaultdict(list))

    def trade(self, name: str, side: str, action: str, amount: Decimal) -> BetReceipt:
        r = place_bet(
            user_id=self.users[name],
            market_id=self.market_id,
            side=side,
            action=action,
            amount=amount,
        )
        self.receipts[name].append(r)
        if action == "BUY":
            self.held[name, side] += r.shares
            self.paid[name] += r.money
        else:
            self.held[name, side] -= r.shares
            self.received[name] += r.money
        return r

    def payout(self, name: str, outcome: str) -> Decimal:
        return self.held[name, outcome]

    def refund(self, name: str) -> Decimal:
        return max(D(0), self.paid[name] - self.received[name])

    def net_cost(self, name: str) -> Decimal:
        return self.paid[name] - self.received[name]


def fund_house(amount: Decimal = HOUSE_CAPITAL) -> None:
    with transaction() as s:
        users.fund_house(s, amount, key=f"house:{next(_seq)}", actor="test")


def new_market(liquidity: Decimal = LIQUIDITY) -> int:
    """An open market (drawing `liquidity` from the house), in a transaction of its own."""
    with transaction() as s:
        return factories.new_market(s, liquidity=liquidity)


def new_book(names: list[str], deposit: Decimal = DEPOSIT) -> Book:
    fund_house()
    book = Book(new_market())
    for name in names:
        book.users[name] = users.register(f"{name}{book.market_id}", deposit, actor="test")
    return book


def busy_book() -> Book:
    """alice sells half her YES, bob holds NO, carol holds both sides, dave sold all his YES,
    erin bought YES three times."""
    book = new_book(["alice", "bob", "carol", "dave", "erin"])
    a = book.trade("alice", "YES", "BUY", D(100))
    book.trade("bob", "NO", "BUY", D(50))
    book.trade("carol", "YES", "BUY", D(30))
    book.trade("carol", "NO", "BUY", D(20))
    book.trade("alice", "YES", "SELL", (a.shares / 2).quantize(D("0.000001")))
    d = book.trade("dave", "YES", "BUY", D(10))
    book.trade("dave", "YES", "SELL", d.shares)
    for amount in (D("12.34"), D(7), D("0.01")):
        book.trade("erin", "YES", "BUY", amount)
    return book


# -- reading the database -----------------------------------------------------------------------


def q(sql: str, **params: Any) -> list[Any]:
    with transaction() as s:
        return list(s.execute(text(sql), params).all())


def one(sql: str, **params: Any) -> Any:
    with transaction() as s:
        return s.execute(text(sql), params).scalar_one()


def snapshot() -> dict[str, Any]:
    """Every row settlement may touch, and the ledger's size."""
    return {
        table: q(f"SELECT * FROM {table} ORDER BY {order}")
        for table, order in (
            ("accounts", "id"),
            ("bets", "id"),
            ("positions", "user_id, market_id, side"),
            ("markets", "id"),
            ("users", "id"),
            ("settlements", "id"),
        )
    } | {
        "ledger": q(
            "SELECT (SELECT count(*) FROM ledger_transactions),"
            " (SELECT count(*) FROM ledger_entries)"
        )
    }


def assert_clean() -> None:
    report = check_integrity()
    assert report.ok, report.violations
