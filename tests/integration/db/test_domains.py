"""Every column limited to a vocabulary term has that term's domain as its type, and the database
allows exactly the enum's members: the migrations froze the lists, so this is where a member added
to `services/vocabulary.py` without a migration is caught."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from enum import StrEnum
from typing import Any

import psycopg
import pytest

from db.engine import transaction
from db.models import Base, _enum, _EnumDomain
from services import vocabulary
from services.money.bets import place_bet
from services.vocabulary import Side, TradeAction
from tests.support.factories import new_market
from tests.support.money import register


@pytest.fixture()
def conn(db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db, autocommit=True) as c:
        yield c


def _allowed(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """Each domain's allowed values, read back from its CHECK as the database prints it."""
    rows = conn.execute(
        "SELECT t.typname, pg_get_constraintdef(c.oid) FROM pg_type t"
        " JOIN pg_constraint c ON c.contypid = t.oid"
        " WHERE t.typtype = 'd' AND t.typnamespace = 'public'::regnamespace"
    ).fetchall()
    return {name: set(re.findall(r"'([^']*)'::text", check)) for name, check in rows}


def test_each_domain_allows_exactly_its_enums_members(conn: psycopg.Connection[Any]) -> None:
    used = {
        column.type.name
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, _EnumDomain)
    }
    terms = [
        term
        for term in vars(vocabulary).values()
        if isinstance(term, type) and issubclass(term, StrEnum) and term is not StrEnum
    ]
    expected = {_enum(term).name: {m.value for m in term} for term in terms}
    expected = {name: values for name, values in expected.items() if name in used}
    assert len(expected) == len(used) >= 20
    assert _allowed(conn) == expected


def test_each_enum_column_has_its_domain_as_its_type(conn: psycopg.Connection[Any]) -> None:
    expected = {
        (table.name, column.name): column.type.name
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, _EnumDomain)
    }
    rows = conn.execute(
        "SELECT table_name, column_name, domain_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND domain_name IS NOT NULL"
    ).fetchall()
    assert {(t, c): d for t, c, d in rows} == expected


@pytest.mark.parametrize(
    ("statement", "domain"),
    [
        ("UPDATE markets SET status = 'PAUSED'", "market_status"),
        ("UPDATE markets SET outcome = 'MAYBE'", "side"),
        ("UPDATE bets SET side = 'yes'", "side"),
        ("INSERT INTO accounts (kind) VALUES ('SAVINGS')", "account_kind"),
    ],
)
def test_a_value_outside_the_vocabulary_is_refused(
    conn: psycopg.Connection[Any], statement: str, domain: str
) -> None:
    with transaction() as session:
        market = new_market(session)
    place_bet(
        user_id=register("u"),
        market_id=market,
        side=Side.YES,
        action=TradeAction.BUY,
        amount=Decimal(1),
    )
    before = conn.execute("SELECT m.status, b.side FROM markets m, bets b").fetchall()
    with pytest.raises(psycopg.errors.CheckViolation, match=f"domain {domain} violates"):
        conn.execute(statement)
    assert conn.execute("SELECT m.status, b.side FROM markets m, bets b").fetchall() == before
