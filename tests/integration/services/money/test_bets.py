"""Opening markets and placing bets on the real database: what is written, and every refusal
leaving the database exactly as it was."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.money import users
from services.money.bets import place_bet
from services.money.integrity import check_integrity
from services.money.markets import MarketSpec, open_market
from services.money.pricing import Pools, TradeLimits, quote
from services.vocabulary import MarketStatus, Side, TradeAction
from tests.support.factories import market_spec, new_kol
from tests.support.money import (
    bet_killed_while_committing,
    get_market,
    kill_the_bet_once_it_waits,
    plant_final,
    user_balance,
)

D = Decimal
HOUR = dt.timedelta(hours=1)


def _kol() -> int:
    with transaction() as s:
        return new_kol(s)


def _db_now() -> dt.datetime:
    with transaction() as s:
        return s.execute(text("SELECT now()")).scalar_one()


def _spec(
    kol: int, key: str, *, opens: dt.timedelta, closes: dt.timedelta, **kw: Any
) -> MarketSpec:
    now = _db_now()
    base = market_spec(
        kol_a_id=kol,
        title=f"Will {key} happen?",
        question_key=key,
        baseline={"streak": 3},
        opens_at=now + opens,
        closes_at=now + closes,
        liquidity=D(1000),
    )
    # Replaced, not passed to the builder: the bad values must reach `open_market` as they are.
    return replace(base, **kw)


def _open(spec: MarketSpec) -> int:
    with transaction() as s:
        return open_market(s, spec, actor="test")


def _snapshot() -> tuple[Any, ...]:
    """Everything a bet may touch."""
    with transaction() as s:
        return (
            s.execute(
                text(
                    "SELECT (SELECT count(*) FROM bets),"
                    " (SELECT count(*) FROM ledger_transactions),"
                    " (SELECT count(*) FROM ledger_entries),"
                    " (SELECT count(*) FROM markets)"
                )
            ).one(),
            s.execute(text("SELECT id, balance FROM accounts ORDER BY id")).all(),
            s.execute(text("SELECT id, pool_yes, pool_no FROM markets ORDER BY id")).all(),
            s.execute(text("SELECT * FROM positions ORDER BY 1, 2, 3")).all(),
            s.execute(text("SELECT id, bets_count FROM users ORDER BY id")).all(),
        )


@pytest.fixture()
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Set a config variable for one test."""

    def set_env(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_env
    monkeypatch.undo()
    get_settings.cache_clear()


@dataclass(frozen=True)
class World:
    user: int
    rich: int
    market: int
    closed: int
    future: int
    resolved: int
    cancelled: int
    held: Decimal  # YES shares `user` holds in `market`


@pytest.fixture()
def world(db: str) -> World:
    kol = _kol()
    market = _open(_spec(kol, "open", opens=-HOUR, closes=HOUR))
    closed = _open(_spec(kol, "closed", opens=-2 * HOUR, closes=dt.timedelta(seconds=-1)))
    future = _open(_spec(kol, "future", opens=HOUR, closes=2 * HOUR))
    resolved = _open(_spec(kol, "resolved", opens=-HOUR, closes=HOUR))
    cancelled = _open(_spec(kol, "cancelled", opens=-HOUR, closes=HOUR))
    with transaction() as s:
        plant_final(s, resolved, MarketStatus.RESOLVED)
        plant_final(s, cancelled, MarketStatus.CANCELLED)
    user = users.register("alice", D(100), actor="test")
    rich = users.register("rich", D(100000), actor="test")
    bought = place_bet(user_id=user, market_id=market, side="YES", action="BUY", amount=D(10))
    return World(user, rich, market, closed, future, resolved, cancelled, bought.shares)


# -- opening markets ------------------------------------------------------------------------------


def test_open_market_funds_escrow_from_the_house(db: str) -> None:
    kol, kol_b = _kol(), _kol()
    spec = _spec(kol, "q1", opens=-HOUR, closes=HOUR, kol_b_id=kol_b, liquidity=D("250.50"))
    market_id = _open(spec)
    with transaction() as s:
        market = get_market(s, market_id)
        assert (market.pool_yes, market.pool_no, market.liquidity) == (D("250.5"),) * 3
        assert market.status == "OPEN"
        assert market.baseline == {"streak": 3}
        rows = s.execute(
            text(
                "SELECT t.kind, t.market_id, a.kind, e.amount FROM ledger_transactions t"
                " JOIN ledger_entries e ON e.transaction_id = t.id"
                " JOIN accounts a ON a.id = e.account_id"
                " WHERE t.idempotency_key = :key ORDER BY e.amount"
            ),
            {"key": f"liquidity:{market_id}"},
        ).all()
    assert [tuple(r) for r in rows] == [
        ("LIQUIDITY", market_id, "HOUSE", D("-250.5")),
        ("LIQUIDITY", market_id, "ESCROW", D("250.5")),
    ]
    assert check_integrity().ok


def test_a_second_open_market_on_the_same_question_is_refused(db: str) -> None:
    kol = _kol()
    _open(_spec(kol, "same", opens=-HOUR, closes=HOUR))
    before = _snapshot()
    with pytest.raises(ServiceError) as err:
        _open(_spec(kol, "same", opens=-HOUR, closes=2 * HOUR))
    assert err.value.code == ErrorCode.DUPLICATE_MARKET
    assert _snapshot() == before


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "coin_flip"},
        {"timeframe": "yearly"},
        {"title": " "},
        {"question_key": ""},
        {"closes_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
        {"opens_at": dt.datetime(2020, 1, 1), "closes_at": dt.datetime(2020, 1, 2)},
        {"liquidity": D(0)},
        {"liquidity": D("-5")},
        {"liquidity": D("10.001")},
        {"liquidity": D("NaN")},
        {"liquidity": 1000.0},
        {"liquidity": D("1e20")},
        {"kol_a_id": 987654},
        {"kol_b_id": 987654},
        {"kol_b_id": "same"},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()),
)
def test_bad_market_specs_are_refused(db: str, changes: dict[str, Any]) -> None:
    kol = _kol()
    if changes.get("kol_b_id") == "same":
        changes = {"kol_b_id": kol}
    before = _snapshot()
    with pytest.raises(ServiceError) as err:
        _open(_spec(kol, "bad", opens=-HOUR, closes=HOUR, **changes))
    assert err.value.code == ErrorCode.INVALID_MARKET
    assert _snapshot() == before


# -- placing bets ---------------------------------------------------------------------------------


def _pools(market_id: int) -> Pools:
    with transaction() as s:
        market = get_market(s, market_id)
        return Pools(market.pool_yes, market.pool_no)


def _ledger(bet_id: int) -> list[tuple[str, str, Decimal]]:
    with transaction() as s:
        rows = s.execute(
            text(
                "SELECT t.kind, a.kind, e.amount FROM ledger_transactions t"
                " JOIN ledger_entries e ON e.transaction_id = t.id"
                " JOIN accounts a ON a.id = e.account_id"
                " WHERE t.idempotency_key = :key AND t.bet_id = :bet ORDER BY e.amount"
            ),
            {"key": f"bet:{bet_id}", "bet": bet_id},
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_buy_writes_bet_position_pools_and_one_balanced_ledger_transaction(world: World) -> None:
    pools = _pools(world.market)
    expected = quote(pools, Side.NO, TradeAction.BUY, D("25.50"), TradeLimits(D("0.02"), D("0.25")))
    receipt = place_bet(
        user_id=world.user, market_id=world.market, side="NO", action="BUY", amount=D("25.50")
    )
    assert (receipt.side, receipt.action, receipt.money, receipt.fee) == (
        "NO",
        "BUY",
        D("25.50"),
        D("0.51"),
    )
    assert receipt.shares == expected.shares
    assert (receipt.price_before, receipt.price_after) == (
        expected.price_before,
        expected.price_after,
    )
    assert receipt.price_after > receipt.price_before
    assert _pools(world.market) == expected.after
    assert _ledger(receipt.bet_id) == [
        ("BET", "USER", D("-25.50")),
        ("BET", "FEE", D("0.51")),
        ("BET", "ESCROW", D("24.99")),
    ]
    with transaction() as s:
        bet = s.execute(
            text("SELECT amount, fee, shares, status FROM bets WHERE id = :id"),
            {"id": receipt.bet_id},
        ).one()
        position = s.execute(
            text(
                "SELECT shares, paid_in, received FROM positions"
                " WHERE user_id = :u AND market_id = :m AND side = 'NO'"
            ),
            {"u": world.user, "m": world.market},
        ).one()
        assert tuple(bet) == (D("25.50"), D("0.51"), receipt.shares, "OPEN")
        assert tuple(position) == (receipt.shares, D("25.50"), 0)
        assert user_balance(s, world.user) == D(100) - D(10) - D("25.50")
        assert (
            s.execute(
                text("SELECT bets_count FROM users WHERE id = :u"), {"u": world.user}
            ).scalar()
            == 2
        )
    assert check_integrity().ok


def test_sell_pays_from_escrow_and_updates_the_position(world: World) -> None:
    half = (world.held / 2).quantize(D("0.000001"))
    receipt = place_bet(
        user_id=world.user, market_id=world.market, side="YES", action="SELL", amount=half
    )
    assert receipt.action == "SELL" and receipt.fee == 0 and receipt.shares == half
    assert 0 < receipt.money < D("9.80")
    assert receipt.price_after < receipt.price_before
    assert _ledger(receipt.bet_id) == [
        ("SELL", "ESCROW", -receipt.money),
        ("SELL", "USER", receipt.money),
    ]
    with transaction() as s:
        position = s.execute(
            text(
                "SELECT shares, paid_in, received FROM positions"
                " WHERE user_id = :u AND market_id = :m AND side = 'YES'"
            ),
            {"u": world.user, "m": world.market},
        ).one()
        assert tuple(position) == (world.held - half, D(10), receipt.money)
        assert user_balance(s, world.user) == D(90) + receipt.money
    # Everything held can be sold, down to zero shares, and never for more than was put in.
    rest = place_bet(
        user_id=world.user,
        market_id=world.market,
        side="YES",
        action="SELL",
        amount=world.held - half,
    )
    assert receipt.money + rest.money <= D("9.80")
    assert check_integrity().ok


def test_zero_fee_rate_writes_no_fee_entry(
    world: World, settings_env: Callable[[str, str], None]
) -> None:
    settings_env("FEE_RATE", "0")
    receipt = place_bet(
        user_id=world.user, market_id=world.market, side="YES", action="BUY", amount=D(5)
    )
    assert receipt.fee == 0
    assert [kind for _, kind, _ in _ledger(receipt.bet_id)] == ["USER", "ESCROW"]
    assert check_integrity().ok


def test_bet_time_is_the_transaction_time_before_the_close(world: World) -> None:
    receipt = place_bet(
        user_id=world.user, market_id=world.market, side="NO", action="BUY", amount=D(1)
    )
    with transaction() as s:
        bet_at, tx_at, closes_at = s.execute(
            text(
                "SELECT b.created_at, t.created_at, m.closes_at FROM bets b"
                " JOIN markets m ON m.id = b.market_id"
                " JOIN ledger_transactions t ON t.bet_id = b.id WHERE b.id = :id"
            ),
            {"id": receipt.bet_id},
        ).one()
    assert bet_at == tx_at < closes_at


# Each case: what to change from a valid buy of 1.00 YES on the open market, and the refusal.
BAD_BETS: list[tuple[str, Callable[[World], dict[str, Any]], ErrorCode]] = [
    ("unknown user", lambda w: {"user_id": 987654}, ErrorCode.UNKNOWN_USER),
    ("user id not an int", lambda w: {"user_id": str(w.user)}, ErrorCode.UNKNOWN_USER),
    ("user id out of range", lambda w: {"user_id": 2**70}, ErrorCode.UNKNOWN_USER),
    ("unknown market", lambda w: {"market_id": 987654}, ErrorCode.UNKNOWN_MARKET),
    ("market id negative", lambda w: {"market_id": -1}, ErrorCode.UNKNOWN_MARKET),
    ("closed market", lambda w: {"market_id": w.closed}, ErrorCode.MARKET_CLOSED),
    ("not yet open", lambda w: {"market_id": w.future}, ErrorCode.MARKET_NOT_OPEN),
    ("resolved market", lambda w: {"market_id": w.resolved}, ErrorCode.MARKET_NOT_OPEN),
    ("cancelled market", lambda w: {"market_id": w.cancelled}, ErrorCode.MARKET_NOT_OPEN),
    ("side lower case", lambda w: {"side": "yes"}, ErrorCode.INVALID_SIDE),
    ("side unknown", lambda w: {"side": "MAYBE"}, ErrorCode.INVALID_SIDE),
    ("action unknown", lambda w: {"action": "HOLD"}, ErrorCode.INVALID_ACTION),
    ("amount zero", lambda w: {"amount": D(0)}, ErrorCode.INVALID_AMOUNT),
    ("amount negative", lambda w: {"amount": D(-5)}, ErrorCode.INVALID_AMOUNT),
    ("amount NaN", lambda w: {"amount": D("NaN")}, ErrorCode.INVALID_AMOUNT),
    ("amount infinite", lambda w: {"amount": D("Infinity")}, ErrorCode.INVALID_AMOUNT),
    ("amount float", lambda w: {"amount": 1.5}, ErrorCode.INVALID_AMOUNT),
    ("amount str", lambda w: {"amount": "1.50"}, ErrorCode.INVALID_AMOUNT),
    ("buy sub-cent", lambda w: {"amount": D("1.001")}, ErrorCode.INVALID_AMOUNT),
    ("absurdly large", lambda w: {"amount": D("1e15")}, ErrorCode.INVALID_AMOUNT),
    ("more than balance", lambda w: {"amount": D("90.01")}, ErrorCode.INSUFFICIENT_BALANCE),
    (
        "sell 7 decimals",
        lambda w: {"action": "SELL", "amount": D("0.0000001")},
        ErrorCode.INVALID_AMOUNT,
    ),
    (
        "sell more than held",
        lambda w: {"action": "SELL", "amount": w.held + D("0.000001")},
        ErrorCode.INSUFFICIENT_SHARES,
    ),
    (
        "sell a side not held",
        lambda w: {"action": "SELL", "side": "NO", "amount": D(1)},
        ErrorCode.INSUFFICIENT_SHARES,
    ),
    (
        "trade too large",
        lambda w: {"user_id": w.rich, "amount": D(500)},
        ErrorCode.TRADE_TOO_LARGE,
    ),
    (
        "slippage exceeded",
        lambda w: {"amount": D(10), "max_slippage": D("0.001")},
        ErrorCode.SLIPPAGE_EXCEEDED,
    ),
    ("slippage not a Decimal", lambda w: {"max_slippage": 0.5}, ErrorCode.INVALID_INPUT),
]


@pytest.mark.parametrize(("case", "change", "code"), BAD_BETS, ids=[c for c, _, _ in BAD_BETS])
def test_bad_bets_are_refused_and_change_nothing(
    world: World, case: str, change: Callable[[World], dict[str, Any]], code: ErrorCode
) -> None:
    bet: dict[str, Any] = {
        "user_id": world.user,
        "market_id": world.market,
        "side": "YES",
        "action": "BUY",
        "amount": D("1.00"),
    }
    bet.update(change(world))
    before = _snapshot()
    with pytest.raises(ServiceError) as err:
        place_bet(**bet)
    assert err.value.code == code, err.value
    assert _snapshot() == before
    assert check_integrity().ok


def test_price_limit_is_refused_and_changes_nothing(
    world: World, settings_env: Callable[[str, str], None]
) -> None:
    settings_env("MAX_TRADE_POOL_FRACTION", "100")
    # 1000 liquidity: paying 9500 would push YES past 0.99; the pool limit no longer stops it.
    before = _snapshot()
    with pytest.raises(ServiceError) as err:
        place_bet(
            user_id=world.rich, market_id=world.market, side="YES", action="BUY", amount=D(9500)
        )
    assert err.value.code == ErrorCode.PRICE_LIMIT
    assert _snapshot() == before
    # Just inside the band is accepted.
    receipt = place_bet(
        user_id=world.rich, market_id=world.market, side="YES", action="BUY", amount=D(8000)
    )
    assert receipt.price_after < D("0.99")


# -- faults between the two batches and at COMMIT ---------------------------------------------


def _bets_of(user: int) -> int:
    with transaction() as s:
        return s.execute(
            text("SELECT count(*) FROM bets WHERE user_id = :u"), {"u": user}
        ).scalar_one()


def _no_connection_left_in_a_transaction(db: str) -> bool:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'kolops' AND state LIKE 'idle in transaction%'"
        ).fetchone()
    return row is not None and row[0] == 0


def test_a_ledger_post_the_database_refuses_rolls_the_whole_bet_back(world: World, db: str) -> None:
    # The bet's row, position, pools and stats are written by the same statement as the post
    # (CTEs leading it); a post the database refuses must take them all back.
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM accounts WHERE user_id = %s", (world.rich,)).fetchone()
        assert row is not None
        conn.execute(
            "CREATE FUNCTION refuse_entry() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'injected ledger failure'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER refuse_entry BEFORE INSERT ON ledger_entries FOR EACH ROW"
            f" WHEN (NEW.account_id = {int(row[0])}) EXECUTE FUNCTION refuse_entry()"
        )
    before = _snapshot()
    with pytest.raises(psycopg.errors.RaiseException, match="injected ledger failure"):
        place_bet(user_id=world.rich, market_id=world.market, side="NO", action="BUY", amount=D(7))
    assert _snapshot() == before
    assert _no_connection_left_in_a_transaction(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_entry ON ledger_entries")
    place_bet(user_id=world.rich, market_id=world.market, side="NO", action="BUY", amount=D(7))
    assert _bets_of(world.rich) == 1
    assert check_integrity().ok


def test_a_connection_killed_before_commit_is_retried_and_the_bet_placed_once(
    world: World, db: str
) -> None:
    before = _bets_of(world.rich)
    outcome: list[object] = []
    with psycopg.connect(db) as blocker:
        blocker.execute("SELECT 1 FROM markets WHERE id = %s FOR UPDATE", (world.market,))
        bettor = threading.Thread(
            target=lambda: outcome.append(
                place_bet(
                    user_id=world.rich,
                    market_id=world.market,
                    side="YES",
                    action="BUY",
                    amount=D(5),
                )
            )
        )
        bettor.start()
        kill_the_bet_once_it_waits(db, blocker)  # killed in the first batch, waiting on the lock
        bettor.join(timeout=30)
    assert len(outcome) == 1, "the bet should have been retried on a fresh connection"
    assert _bets_of(world.rich) == before + 1
    assert _no_connection_left_in_a_transaction(db)
    assert check_integrity().ok


def test_a_connection_killed_while_committing_is_reported_not_retried(
    world: World, db: str
) -> None:
    before = _snapshot()
    outcome = bet_killed_while_committing(
        db,
        lambda: place_bet(
            user_id=world.rich, market_id=world.market, side="YES", action="BUY", amount=D(5)
        ),
    )
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.OperationalError), outcome
    # It died before COMMIT ran, so nothing is there; but the caller could not know, and a
    # bet retried blindly after a lost COMMIT could be placed twice.
    assert _snapshot() == before
    place_bet(user_id=world.rich, market_id=world.market, side="YES", action="BUY", amount=D(5))
    assert check_integrity().ok


# -- request keys: a bet the caller can retry safely -----------------------------------------------


def _keyed(world: World, key: object, **change: Any) -> Any:
    bet: dict[str, Any] = {
        "user_id": world.user,
        "market_id": world.market,
        "side": "NO",
        "action": "BUY",
        "amount": D("7.50"),
        "request_key": key,
    }
    return place_bet(**(bet | change))


def _bets_with_key(user: int, key: str) -> int:
    with transaction() as s:
        return s.execute(
            text("SELECT count(*) FROM bets WHERE user_id = :u AND request_key = :k"),
            {"u": user, "k": key},
        ).scalar_one()


def test_the_same_key_twice_returns_the_original_receipt_and_places_one_bet(
    world: World,
) -> None:
    first = _keyed(world, "order-1")
    after_first = _snapshot()
    again = _keyed(world, "order-1")
    assert again == first  # bet id, shares, money, fee and both prices
    assert _snapshot() == after_first  # no second bet, ledger transaction, balance or pool change
    assert _bets_with_key(world.user, "order-1") == 1
    assert len(_ledger(first.bet_id)) == 3
    # A sale is replayed the same way, and so is a limit given with the same value.
    sold = _keyed(world, "order-2", side="YES", action="SELL", amount=D(1), max_slippage=D("0.5"))
    after_sale = _snapshot()
    same = {"side": "YES", "action": "SELL", "amount": D("1.000"), "max_slippage": D("0.50")}
    assert _keyed(world, "order-2", **same) == sold
    assert _snapshot() == after_sale
    assert check_integrity().ok


def test_a_replay_is_returned_whatever_happened_since(world: World) -> None:
    # The original spent the whole balance and moved the price, then the market closed: a retry
    # must still get the receipt, not INSUFFICIENT_BALANCE, SLIPPAGE_EXCEEDED or MARKET_CLOSED.
    first = _keyed(world, "all-in", amount=D(90), max_slippage=D("0.2"))
    with transaction() as s:
        assert user_balance(s, world.user) == 0
        s.execute(
            text("UPDATE markets SET closes_at = now() - interval '1 second' WHERE id = :m"),
            {"m": world.market},
        )
    before = _snapshot()
    assert _keyed(world, "all-in", amount=D(90), max_slippage=D("0.2")) == first
    assert _snapshot() == before
    assert check_integrity().ok


# Each case: what differs from the original keyed buy of 7.50 NO on the open market.
KEY_REUSES: list[tuple[str, Callable[[World], dict[str, Any]]]] = [
    ("amount", lambda w: {"amount": D("7.51")}),
    ("side", lambda w: {"side": "YES"}),
    ("action", lambda w: {"action": "SELL"}),
    ("market", lambda w: {"market_id": w.closed}),
    ("unknown market", lambda w: {"market_id": 987654}),
    ("a slippage limit added", lambda w: {"max_slippage": D("0.5")}),
]


@pytest.mark.parametrize(("case", "change"), KEY_REUSES, ids=[c for c, _ in KEY_REUSES])
def test_the_same_key_with_other_parameters_is_refused_and_changes_nothing(
    world: World, case: str, change: Callable[[World], dict[str, Any]]
) -> None:
    first = _keyed(world, "order-1")
    before = _snapshot()
    with pytest.raises(ServiceError) as err:
        _keyed(world, "order-1", **change(world))
    assert err.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED, err.value
    assert err.value.details["bet_id"] == first.bet_id
    assert _snapshot() == before
    assert check_integrity().ok


def test_a_slippage_limit_changed_or_dropped_is_other_parameters(world: World) -> None:
    _keyed(world, "limited", max_slippage=D("0.5"))
    before = _snapshot()
    for limit in (D("0.4"), None):
        with pytest.raises(ServiceError) as err:
            _keyed(world, "limited", max_slippage=limit)
        assert err.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert _snapshot() == before


def test_keys_are_per_user_and_unkeyed_bets_are_never_replays(world: World) -> None:
    mine = _keyed(world, "shared-key")
    theirs = _keyed(world, "shared-key", user_id=world.rich)
    assert theirs.bet_id != mine.bet_id
    assert _bets_with_key(world.user, "shared-key") == _bets_with_key(world.rich, "shared-key") == 1
    one = _keyed(world, None, amount=D(1))
    two = _keyed(world, None, amount=D(1))
    assert one.bet_id != two.bet_id
    assert _bets_of(world.user) == 1 + 3  # the world's bet, the keyed one, two unkeyed
    assert check_integrity().ok


BAD_KEYS: list[tuple[str, object]] = [
    ("empty", ""),
    ("blank", "   "),
    ("too long", "k" * 129),
    ("NUL", "order\x00-1"),
    ("not a string", 12345),
    ("bytes", b"order-1"),
]


@pytest.mark.parametrize(("case", "key"), BAD_KEYS, ids=[c for c, _ in BAD_KEYS])
def test_bad_request_keys_are_refused_and_change_nothing(
    world: World, case: str, key: object
) -> None:
    before = _snapshot()
    with pytest.raises(ServiceError) as err:
        _keyed(world, key)
    assert err.value.code == ErrorCode.INVALID_INPUT, err.value
    assert _snapshot() == before


def test_the_longest_key_is_accepted_and_surrounding_blanks_are_not_part_of_it(
    world: World,
) -> None:
    longest = "k" * 128
    assert _keyed(world, longest) == _keyed(world, longest)
    padded = _keyed(world, " order-9 ")
    assert _keyed(world, "order-9") == padded
    assert _bets_with_key(world.user, "order-9") == 1


def test_a_duplicate_the_lookup_missed_is_stopped_by_the_unique_index(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup in the first batch is blinded once: the bet's INSERT then fails on the unique
    index, the whole transaction rolls back, and placement runs again and finds the original."""
    from services.money import bets

    first = _keyed(world, "order-1")
    before = _snapshot()
    real_place, real_find, calls = bets._place, bets._FIND_KEYED, []

    def place(conn: Any, request: Any) -> Any:
        calls.append(request)
        monkeypatch.setattr(
            bets, "_FIND_KEYED", real_find + (" AND false" if len(calls) == 1 else "")
        )
        return real_place(conn, request)

    monkeypatch.setattr(bets, "_place", place)
    assert _keyed(world, "order-1") == first
    assert len(calls) == 2
    assert _snapshot() == before
    assert check_integrity().ok
