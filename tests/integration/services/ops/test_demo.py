"""The demo loader: an empty database gets users, KOLs, markets of every type and bets, all
through the real services, and the books balance."""

from __future__ import annotations

import psycopg
import pytest

from services.money.integrity import check_integrity
from services.ops import demo
from services.resolution import outcomes
from tests.conftest import Standins


def test_demo_loads_once_through_the_services(
    db: str, standins: Standins, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setattr(demo, "CREDENTIALS", tmp_path / "creds.txt")  # type: ignore[operator]
    demo.load()
    with psycopg.connect(db) as conn:
        types = {t for (t,) in conn.execute("SELECT DISTINCT type FROM markets")}
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM bets),"
            " (SELECT count(*) FROM dashboard_accounts),"
            " (SELECT count(*) FROM ledger_transactions WHERE kind = 'BET')"
        ).fetchone()
    assert types == outcomes.ALL_TYPES
    assert counts is not None
    users, bets, accounts, bet_txs = counts
    assert users == demo.DEMO_USERS and bets > 50 and accounts == 4 and bet_txs > 50
    assert check_integrity().ok
    lines = (tmp_path / "creds.txt").read_text().splitlines()  # type: ignore[operator]
    assert [line.split()[0] for line in lines] == [
        "demo-admin",
        "demo-operator",
        "demo-analyst",
        "demo-viewer",
    ]

    demo.load()  # a second launch adds nothing
    with psycopg.connect(db) as conn:
        again = conn.execute("SELECT count(*) FROM users").fetchone()
    assert again == (demo.DEMO_USERS,)
