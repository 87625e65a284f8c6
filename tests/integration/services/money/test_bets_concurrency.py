"""Many clients betting on the same markets from the same users at once, threads and processes,
one market closing mid-run. Afterwards the money must add up exactly."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import read_session, transaction
from services.errors import ErrorCode, ServiceError
from services.money import bets, users
from services.money.bets import place_bet
from services.money.integrity import check_integrity
from services.money.pricing import SHARE_QUANTUM, Pools, TradeLimits, quote
from services.vocabulary import Side, TradeAction
from tests.support.factories import new_kol, new_market
from tests.support.money import bet_killed_while_committing

D = Decimal
LIQUIDITY = D(1000)
# Refusals a racing client may legitimately meet; anything else is a bug.
EXPECTED = {
    ErrorCode.INSUFFICIENT_BALANCE,
    ErrorCode.INSUFFICIENT_SHARES,
    ErrorCode.MARKET_CLOSED,
    ErrorCode.PRICE_LIMIT,
    ErrorCode.TRADE_TOO_LARGE,
    ErrorCode.INVALID_AMOUNT,
}
OPS_PER_CLIENT = 60


@dataclass
class Tally:
    accepted: Counter[int] = field(default_factory=Counter)  # per market
    refused: Counter[tuple[int, str]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.accepted.update(other.accepted)
        self.refused.update(other.refused)
        self.unexpected.extend(other.unexpected)


def _held(user_id: int, market_id: int, side: str) -> Decimal:
    with read_session() as s:
        held = s.execute(
            text(
                "SELECT shares FROM positions"
                " WHERE user_id = :u AND market_id = :m AND side = :side"
            ),
            {"u": user_id, "m": market_id, "side": side},
        ).scalar()
    return held or D(0)


def _client(
    seed: int,
    user_ids: list[int],
    market_ids: list[int],
    start: Any,
    stop: Any,
) -> Tally:
    """Buy and sell at random until OPS_PER_CLIENT are done and the racing market has closed."""
    rng = random.Random(seed)
    tally = Tally()
    start.wait()
    done = 0
    while done < OPS_PER_CLIENT or not stop.is_set():
        done += 1
        user, market = rng.choice(user_ids), rng.choice(market_ids)
        side = rng.choice(["YES", "NO"])
        if rng.random() < 0.6:
            action, amount = "BUY", D(rng.randint(100, 4000)).scaleb(-2)
        else:
            fraction = D(rng.randint(1, 100)) / 100
            held = _held(user, market, side)
            action, amount = "SELL", max((held * fraction).quantize(SHARE_QUANTUM), D(1))
        try:
            place_bet(user_id=user, market_id=market, side=side, action=action, amount=amount)
            tally.accepted[market] += 1
        except ServiceError as exc:
            if exc.code in EXPECTED:
                tally.refused[(market, exc.code.value)] += 1
            else:
                tally.unexpected.append(repr(exc))
        except Exception as exc:  # a deadlock or serialization error reaching the caller
            tally.unexpected.append(f"{type(exc).__name__}: {exc}")
    return tally


def _run_threads(
    n: int, seed: int, user_ids: list[int], market_ids: list[int], start: Any, stop: Any
) -> Tally:
    results: list[Tally] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        tally = _client(seed * 100 + i, user_ids, market_ids, start, stop)
        with lock:
            results.append(tally)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    total = Tally()
    for r in results:
        total.add(r)
    if len(results) != n:
        total.unexpected.append(f"only {len(results)} of {n} clients finished")
    return total


def _process_main(
    seed: int, user_ids: list[int], market_ids: list[int], start: Any, stop: Any, out: Any
) -> None:
    """One spawned process: reaches the database through DATABASE_URL, runs 4 threads."""
    tally = _run_threads(4, seed, user_ids, market_ids, start, stop)
    out.put((dict(tally.accepted), dict(tally.refused), tally.unexpected))


# -- set-up and the checks afterwards ------------------------------------------------------------


def _setup() -> tuple[list[int], list[int], int]:
    with transaction() as s:
        kol = new_kol(s)
        now = s.execute(text("SELECT now()")).scalar_one()
        markets = [
            new_market(
                s,
                kol_a_id=kol,
                opens_at=now - dt.timedelta(minutes=1),
                closes_at=now + dt.timedelta(hours=1),
                liquidity=LIQUIDITY,
            )
            for _ in range(3)
        ]
    # One poor user, so balance checks race too.
    user_ids = [users.register(f"u{i}", D(5000), actor="test") for i in range(5)]
    user_ids.append(users.register("poor", D(60), actor="test"))
    return user_ids, markets, markets[-1]


def _close_soon(market_id: int, ms: int) -> None:
    """Move the racing market's close to a moment away (test set-up, not trading)."""
    with transaction() as s:
        s.execute(
            text("UPDATE markets SET closes_at = now() + make_interval(secs => :s) WHERE id = :m"),
            {"s": ms / 1000, "m": market_id},
        )


def _check_everything(tally: Tally, user_ids: list[int], markets: list[int], racing: int) -> None:
    assert tally.unexpected == []
    assert sum(tally.accepted.values()) >= 200
    # The race really happened: bets on the closing market both before and after the close.
    assert tally.accepted[racing] > 0
    assert tally.refused[(racing, ErrorCode.MARKET_CLOSED.value)] > 0
    assert not any(m != racing and code == "MARKET_CLOSED" for m, code in tally.refused)

    report = check_integrity()
    assert report.ok, report.violations

    limits = TradeLimits(fee_rate=get_settings().fee_rate, max_trade_pool_fraction=D("1e9"))
    with read_session() as s:
        assert s.execute(text("SELECT count(*) FROM bets")).scalar() == sum(tally.accepted.values())
        late = s.execute(
            text(
                "SELECT count(*) FROM bets b JOIN markets m ON m.id = b.market_id"
                " WHERE b.created_at >= m.closes_at"
            )
        ).scalar()
        assert late == 0
        negative = s.execute(
            text("SELECT count(*) FROM accounts WHERE balance < 0 AND kind = 'USER'")
        )
        assert negative.scalar() == 0

        # Pools equal their replay from the bet rows, in the order the market lock granted.
        for market_id in markets:
            pools = Pools(LIQUIDITY, LIQUIDITY)
            rows = s.execute(
                text(
                    "SELECT side, action, amount, fee, shares FROM bets"
                    " WHERE market_id = :m ORDER BY id"
                ),
                {"m": market_id},
            ).all()
            for side, action, amount, fee, shares in rows:
                size = amount if action == "BUY" else shares
                trade = quote(pools, Side(side), TradeAction(action), size, limits)
                assert (trade.money, trade.fee, trade.shares) == (amount, fee, shares)
                pools = trade.after
            stored = s.execute(
                text("SELECT pool_yes, pool_no FROM markets WHERE id = :m"), {"m": market_id}
            ).one()
            assert Pools(*stored) == pools

        # Positions, balances and bet counts agree with the bet rows, user by user.
        mismatched_positions = s.execute(
            text(
                "SELECT p.* FROM positions p LEFT JOIN ("
                "  SELECT user_id, market_id, side,"
                "    sum(CASE action WHEN 'BUY' THEN shares ELSE -shares END) AS shares,"
                "    coalesce(sum(amount) FILTER (WHERE action = 'BUY'), 0) AS paid_in,"
                "    coalesce(sum(amount) FILTER (WHERE action = 'SELL'), 0) AS received"
                "  FROM bets GROUP BY 1, 2, 3) b USING (user_id, market_id, side)"
                " WHERE (p.shares, p.paid_in, p.received) IS DISTINCT FROM"
                "       (b.shares, b.paid_in, b.received)"
            )
        ).all()
        assert mismatched_positions == []
        for user_id in user_ids:
            deposited, spent, received, count, balance, bets_count = s.execute(
                text(
                    "SELECT (SELECT sum(e.amount) FROM ledger_entries e"
                    "        JOIN ledger_transactions t ON t.id = e.transaction_id"
                    "        JOIN accounts a ON a.id = e.account_id"
                    "        WHERE a.user_id = :u AND t.kind = 'DEPOSIT'),"
                    " coalesce((SELECT sum(amount) FROM bets WHERE user_id = :u"
                    "           AND action = 'BUY'), 0),"
                    " coalesce((SELECT sum(amount) FROM bets WHERE user_id = :u"
                    "           AND action = 'SELL'), 0),"
                    " (SELECT count(*) FROM bets WHERE user_id = :u),"
                    " (SELECT balance FROM accounts WHERE user_id = :u),"
                    " (SELECT bets_count FROM users WHERE id = :u)"
                ),
                {"u": user_id},
            ).one()
            assert balance == deposited - spent + received
            assert bets_count == count


def test_eight_threads_racing_the_close(db: str) -> None:
    user_ids, markets, racing = _setup()
    start, stop = threading.Barrier(9), threading.Event()
    results: list[Tally] = []
    runner = threading.Thread(
        target=lambda: results.append(_run_threads(8, 1, user_ids, markets, start, stop))
    )
    runner.start()
    start.wait()
    _close_soon(racing, 400)
    time.sleep(0.7)
    stop.set()
    runner.join(timeout=120)
    assert results, "the clients did not finish"
    _check_everything(results[0], user_ids, markets, racing)


@pytest.mark.slow
def test_two_processes_of_four_threads_racing_the_close(db: str) -> None:
    user_ids, markets, racing = _setup()
    ctx = multiprocessing.get_context("spawn")
    start, stop, out = ctx.Barrier(9), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_process_main, args=(seed, user_ids, markets, start, stop, out))
        for seed in (7, 8)
    ]
    for p in procs:
        p.start()
    start.wait(timeout=60)  # every client thread of both processes has started
    _close_soon(racing, 400)
    time.sleep(0.7)
    stop.set()
    total = Tally()
    for _ in procs:
        accepted, refused, unexpected = out.get(timeout=120)
        total.add(Tally(Counter(accepted), Counter(refused), unexpected))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    _check_everything(total, user_ids, markets, racing)


# -- one request key, many racing callers ---------------------------------------------------------

KEYED_BUY = {"side": "NO", "action": "BUY", "amount": D("12.34")}


def _keyed_setup() -> tuple[int, int]:
    user_ids, markets, _ = _setup()
    return user_ids[0], markets[0]


def _race_one_key(user: int, market: int, n: int, start: Any, out: Any, amounts: list[Any]) -> None:
    """`n` threads place the bet keyed 'race-key' at once; each puts its receipt or refusal."""

    def run(i: int) -> None:
        start.wait()
        try:
            bet = KEYED_BUY | {"amount": amounts[i % len(amounts)]}
            out.put(place_bet(user_id=user, market_id=market, request_key="race-key", **bet))
        except ServiceError as exc:
            out.put((exc.code.value, exc.details.get("bet_id")))
        except Exception as exc:
            out.put(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


def _keyed_bets(user: int) -> list[tuple[Any, ...]]:
    with read_session() as s:
        rows = s.execute(
            text("SELECT id, amount FROM bets WHERE user_id = :u AND request_key = 'race-key'"),
            {"u": user},
        ).all()
    return [tuple(r) for r in rows]


def _check_one_keyed_bet(user: int, outcomes: list[Any]) -> None:
    placed = _keyed_bets(user)
    assert len(placed) == 1, placed
    receipts = [o for o in outcomes if not isinstance(o, tuple | str)]
    assert receipts and all(r == receipts[0] for r in receipts), outcomes
    assert receipts[0].bet_id == placed[0][0] and receipts[0].money == placed[0][1]
    with read_session() as s:
        count = s.execute(
            text("SELECT count(*) FROM ledger_transactions WHERE bet_id = :b"), {"b": placed[0][0]}
        ).scalar()
        bets_count = s.execute(text("SELECT bets_count FROM users WHERE id = :u"), {"u": user})
        assert count == 1 and bets_count.scalar() == 1
    report = check_integrity()
    assert report.ok, report.violations


def test_eight_threads_racing_one_key_place_one_bet(db: str) -> None:
    user, market = _keyed_setup()
    start, out = threading.Barrier(8), queue.Queue()
    _race_one_key(user, market, 8, start, out, [KEYED_BUY["amount"]])
    outcomes = [out.get(timeout=5) for _ in range(8)]
    assert not [o for o in outcomes if isinstance(o, tuple | str)], outcomes
    _check_one_keyed_bet(user, outcomes)


def test_threads_racing_one_key_with_other_amounts_get_the_bet_or_a_refusal(db: str) -> None:
    user, market = _keyed_setup()
    start, out = threading.Barrier(8), queue.Queue()
    _race_one_key(user, market, 8, start, out, [D("12.34"), D("43.21")])
    outcomes = [out.get(timeout=5) for _ in range(8)]
    _check_one_keyed_bet(user, outcomes)
    (bet_id, amount) = _keyed_bets(user)[0]
    # Whoever's amount won, the callers with the other amount are told the key is taken.
    refused = [o for o in outcomes if isinstance(o, tuple)]
    assert refused == [(ErrorCode.IDEMPOTENCY_KEY_REUSED.value, bet_id)] * 4, outcomes
    assert all(r.money == amount for r in outcomes if not isinstance(r, tuple | str))


def _keyed_process_main(user: int, market: int, start: Any, out: Any) -> None:
    _race_one_key(user, market, 4, start, out, [KEYED_BUY["amount"]])


@pytest.mark.slow
def test_two_processes_racing_one_key_place_one_bet(db: str) -> None:
    user, market = _keyed_setup()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_keyed_process_main, args=(user, market, start, out)) for _ in "ab"]
    for p in procs:
        p.start()
    outcomes = [out.get(timeout=120) for _ in range(8)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert not [o for o in outcomes if isinstance(o, tuple | str)], outcomes
    _check_one_keyed_bet(user, outcomes)


# -- a connection lost while committing, then the same request again ------------------------------


def test_a_keyed_bet_killed_while_committing_is_placed_once_by_its_retry(db: str) -> None:
    user, market = _keyed_setup()
    outcome = bet_killed_while_committing(
        db, lambda: place_bet(user_id=user, market_id=market, request_key="race-key", **KEYED_BUY)
    )
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.OperationalError), outcome
    assert "request_key" in "\n".join(getattr(outcome[0], "__notes__", [])), outcome[0]
    # The caller cannot tell whether it was placed; retrying with the key is safe either way.
    first = place_bet(user_id=user, market_id=market, request_key="race-key", **KEYED_BUY)
    again = place_bet(user_id=user, market_id=market, request_key="race-key", **KEYED_BUY)
    assert again == first
    _check_one_keyed_bet(user, [first, again])


def test_a_keyed_bet_committed_but_reported_lost_is_returned_by_its_retry(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server committed, then the reply never arrived (the connection broke between COMMIT
    and its result): the seam lets the real transaction commit, then raises what psycopg raises
    for a connection lost while committing."""
    user, market = _keyed_setup()
    real = bets.pipelined
    lost = []

    @contextmanager
    def commit_then_lose_the_reply() -> Iterator[Any]:
        with real() as conn:
            yield conn
        if not lost:
            lost.append(True)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(bets, "pipelined", commit_then_lose_the_reply)
    with pytest.raises(psycopg.OperationalError) as err:
        place_bet(user_id=user, market_id=market, request_key="race-key", **KEYED_BUY)
    assert "request_key" in "\n".join(getattr(err.value, "__notes__", []))
    assert len(_keyed_bets(user)) == 1  # it was placed; the caller does not know
    retried = place_bet(user_id=user, market_id=market, request_key="race-key", **KEYED_BUY)
    assert retried.bet_id == _keyed_bets(user)[0][0]
    _check_one_keyed_bet(user, [retried])
