"""The storm: many threads and processes doing everything at once against one real database.

Threads (each bounded by the storm's deadline and an iteration cap, all joined at the end):
- bettors: buys, sells, top-up deposits and bad input through `bets.place_bet` / `users`;
- a market maker: waves of markets closing every few seconds (`markets.open_market`), some with
  hostile titles and some invalid on purpose (the resolver must cancel those at once);
- an operator: cancel & refund, re-settle, retry resolution on random markets through
  `services.ops.operator` (double clicks, a viewer, no login, missing or oversized reasons too);
- faults: X API 500/429/timeouts/garbage and kolscan error/layout change/empty page/a page whose
  script never yields, switched on and off over the stand-ins' HTTP control planes; an artifacts
  folder that refuses writes; a KOL's X handle switched to another account's between a market's
  open and close;
- an analyst: quarantines a usable scrape run mid-pass and releases it a moment later;
- chaos: `kill -9` of a scheduler process (restarted a moment later) and `pg_terminate_backend`
  of a random application connection;
- a checker: every invariant at checkpoints, from one consistent snapshot each.

Scheduler processes (`python scheduler.py`) sweep, scrape, refresh followers and generate markets
the whole time. Services may refuse (ServiceError) or lose their connection (a DBAPIError): both
are counted; the invariants are what must hold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.exc import DBAPIError

from config import PROJECT_ROOT
from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.money import bets, users
from services.money.ledger import DuplicateTransaction
from services.money.markets import MarketSpec, open_market
from services.ops import operator
from services.ops.auth import Principal
from services.ops.quarantine import set_quarantine
from services.sources import followers, scraper
from standins.xapi_standin import user_id
from tests.storm import invariants
from tests.storm.invariants import Result, Window
from tests.support import accounts
from tests.support.factories import market_spec

HOUSE_CAPITAL = Decimal("50000000")
USERS = 40
INITIAL_DEPOSIT = Decimal("2000")
TOP_UP = Decimal("500")

# Text that must stay text wherever it goes (also what the dashboard test plants).
HOSTILE = (
    "<script>window.__pwned=1</script>",
    "<img src=x onerror=window.__pwned=1>",
    "'; DROP TABLE users; --",
    "Robert'); DELETE FROM ledger_entries WHERE ('1'='1",
    "ctrl \x1b[31mred\x07 bell\r\nnew line\ttab \u202eevil\u202c **bold** [link](javascript:x)",
)
LONG = "L" * 10_000

X_FAULTS = (
    "error_500",
    "rate_limit",
    "timeout",
    "malformed",
    "unauthorized",
    "not_found",
    "suspended",
    "clear",
)
REFUSAL_CODES = ("PERMISSION_DENIED", "NOT_AUTHENTICATED", "REASON_REQUIRED", "INVALID_INPUT")

OPERATOR = Principal("storm-operator", "operator")
ANALYST = Principal("storm-analyst", "analyst")
VIEWER = Principal("storm-viewer", "viewer")


class Tally:
    """Thread-safe counters, by section and kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = {}

    def add(self, section: str, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts.setdefault(section, Counter())[kind] += n

    def total(self, section: str) -> int:
        with self._lock:
            return sum(self.counts.get(section, Counter()).values())


@dataclass
class Config:
    seconds: float
    bettors: int = 6
    schedulers: int = 2
    checkpoint_s: float = 20.0
    drain_s: float = 240.0
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    # Iteration caps: generous, only there so that no loop can spin forever.
    max_iterations: int = 1_000_000


@dataclass
class Checkpoint:
    label: str
    at_s: float
    results: list[Result]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


class Storm:
    def __init__(
        self,
        config: Config,
        *,
        db_url: str,
        env: dict[str, str],
        window: Window,
        kolscan_url: str,
        xapi_url: str,
        logs: Path,
    ) -> None:
        self.cfg = config
        self.db_url = db_url
        self.env = env
        self.window = window
        self.kolscan_url = kolscan_url
        self.xapi_url = xapi_url
        self.logs = logs
        self.tally = Tally()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.deadline = self.started + config.seconds
        self.capital = Decimal(0)
        self._money_lock = threading.Lock()  # a deposit and its count change together
        self.users: list[int] = []
        self.kols: list[tuple[int, str, str | None]] = []  # id, wallet, handle
        self.open_markets: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed_pids: list[int] = []
        self.checkpoints: list[Checkpoint] = []
        # (run id, quarantined from, released at): database times, the release's taken before
        # it was asked for, so a settlement inside the window can only be a quarantine ignored.
        self.quarantines: list[tuple[int, dt.datetime, dt.datetime]] = []
        self.artifacts = Path(env["ARTIFACTS_DIR"])
        self.thread_errors: list[str] = []
        self._proc_lock = threading.Lock()
        self._engine = invariants.checker_engine(db_url)

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self) -> None:
        accounts.ensure(OPERATOR, ANALYST, VIEWER)
        with transaction() as s:
            users.fund_house(s, HOUSE_CAPITAL, key="storm:house", actor="storm")
        self.capital += HOUSE_CAPITAL
        for i in range(USERS):
            self.users.append(users.register(f"storm{i:03d}", INITIAL_DEPOSIT, actor="storm"))
            self.capital += INITIAL_DEPOSIT
        run = scraper.scrape_leaderboard("daily", trigger="MANUAL")
        assert run.ok, run
        with psycopg.connect(self.db_url) as conn:
            self.kols = conn.execute("SELECT id, wallet, x_handle FROM kols ORDER BY id").fetchall()
        handles = [h for _, _, h in self.kols if h]
        followers.fetch_followers(handles)
        for _ in range(self.cfg.schedulers):
            self.start_scheduler()

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        out = (self.logs / f"scheduler-{n}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "scheduler.py"],
            cwd=PROJECT_ROOT,
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the clean-up reaps Chromium children too
        )
        out.close()
        with self._proc_lock:
            self.procs.append(proc)
        self.tally.add("processes", "scheduler started")
        return proc

    def live_schedulers(self) -> list[subprocess.Popen[bytes]]:
        with self._proc_lock:
            return [p for p in self.procs if p.poll() is None]

    # -- running --------------------------------------------------------------------------------

    def run(self) -> None:
        threads = [
            *(
                self._thread(f"bettor-{i}", partial(self._bettor, random.Random(self.cfg.seed + i)))
                for i in range(self.cfg.bettors)
            ),
            self._thread("markets", self._market_maker),
            self._thread("operator", self._operator),
            self._thread("faults", self._faults),
            self._thread("analyst", self._analyst),
            self._thread("chaos", self._chaos),
            self._thread("checker", self._checker),
        ]
        try:
            while time.monotonic() < self.deadline and not self.stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=120)
                if t.is_alive():
                    self.thread_errors.append(f"thread {t.name} did not stop")

    def _thread(self, name: str, body: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                body()
            except Exception:
                self.thread_errors.append(f"{name}: {traceback.format_exc()}")
                self.stop.set()

        thread = threading.Thread(target=guarded, name=f"storm-{name}", daemon=True)
        thread.start()
        return thread

    def _running(self, rng: random.Random, pause: tuple[float, float]) -> Iterator[int]:
        """Iterate until the deadline (or the cap), pausing between iterations."""
        for i in range(self.cfg.max_iterations):
            if self.stop.is_set() or time.monotonic() >= self.deadline:
                return
            yield i
            if self.stop.wait(rng.uniform(*pause)):
                return

    def _call(self, section: str, fn: Callable[[], Any]) -> Any:
        """Run one service call; refusals and lost connections are counted, not raised."""
        try:
            return fn()
        except ServiceError as exc:
            self.tally.add(section, f"refused {exc.code.value}")
        except DBAPIError as exc:
            self.tally.add("db errors survived", f"{section}: {type(exc.orig).__name__}")
        except psycopg.Error as exc:  # bet placement runs on psycopg directly
            self.tally.add("db errors survived", f"{section}: {type(exc).__name__}")
        return None

    # -- money ----------------------------------------------------------------------------------

    def deposit(self, user_id: int, key: str) -> None:
        """A top-up that is counted exactly when it lands: a lost acknowledgement is retried with
        the same idempotency key, and the ledger recognises the replay."""
        with self._money_lock:
            for _ in range(20):
                try:
                    with transaction() as s:
                        users.deposit(s, user_id, TOP_UP, key=key, actor="storm")
                except DuplicateTransaction:
                    self.tally.add("bets", "deposit replay recognised")
                except DBAPIError as exc:
                    self.tally.add("db errors survived", f"deposit: {type(exc.orig).__name__}")
                    time.sleep(0.1)
                    continue
                self.capital += TOP_UP
                self.tally.add("bets", "deposit")
                return
            raise AssertionError(f"deposit {key} never landed")

    def _bettor(self, rng: random.Random) -> None:
        for i in self._running(rng, (0.0, 0.03)):
            user = rng.choice(self.users)
            markets = self.open_markets
            if not markets:
                continue
            market = rng.choice(markets)
            side = rng.choice(("YES", "NO"))
            roll = rng.random()
            if roll < 0.6:
                amount = Decimal(rng.randint(1, 6000)) / 100
                receipt = self._call(
                    "bets",
                    partial(
                        bets.place_bet,
                        user_id=user,
                        market_id=market,
                        side=side,
                        action="BUY",
                        amount=amount,
                    ),
                )
                if receipt:
                    self.tally.add("bets", "buy")
            elif roll < 0.82:
                self._sell(rng)
            elif roll < 0.84:
                self.deposit(user, f"storm:topup:{threading.get_ident()}:{i}")
            else:
                self._bad_bet(rng, user, market)

    def _sell(self, rng: random.Random) -> None:
        with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
            row = conn.execute(
                "SELECT p.user_id, p.market_id, p.side, p.shares FROM positions p"
                " JOIN markets m ON m.id = p.market_id"
                " WHERE m.status = 'OPEN' AND m.closes_at > now() + interval '1 second'"
                " AND p.shares > 0 ORDER BY random() LIMIT 1"
            ).fetchone()
        if row is None:
            return
        user, market, side, held = row
        shares = (held * Decimal(rng.choice(("0.1", "0.5", "1")))).quantize(
            Decimal("0.000001"), ROUND_DOWN
        )
        if shares <= 0:
            return
        receipt = self._call(
            "bets",
            lambda: bets.place_bet(
                user_id=user, market_id=market, side=side, action="SELL", amount=shares
            ),
        )
        if receipt:
            self.tally.add("bets", "sell")

    def _bad_bet(self, rng: random.Random, user: int, market: int) -> None:
        """Bad input must be refused with a typed error (never a crash, never a write)."""
        bad: dict[str, Any] = {"user_id": user, "market_id": market, "side": "YES"}
        bad["action"] = "BUY"
        case = rng.randrange(9)
        if case == 0:
            bad["amount"] = Decimal(-5)
        elif case == 1:
            bad["amount"] = Decimal("NaN")
        elif case == 2:
            bad["amount"] = Decimal("Infinity")
        elif case == 3:
            bad["amount"] = Decimal("1.001")
        elif case == 4:
            bad["amount"] = 0.1  # a float
        elif case == 5:
            bad |= {"amount": Decimal(1), "side": rng.choice(HOSTILE)}
        elif case == 6:
            bad |= {"amount": Decimal(1), "market_id": 10**12}
        elif case == 7:
            bad |= {"amount": Decimal(1), "user_id": -1}
        else:
            bad |= {"amount": Decimal(10**9)}  # more than any balance
        try:
            bets.place_bet(**bad)
        except ServiceError as exc:
            self.tally.add("bad input refused", exc.code.value)
            return
        except DBAPIError as exc:
            self.tally.add("db errors survived", f"bad bet: {type(exc.orig).__name__}")
            return
        raise AssertionError(f"bad bet accepted: {bad!r}")

    # -- markets --------------------------------------------------------------------------------

    def _spec(self, rng: random.Random, wave: int, n: int, closes_at: dt.datetime) -> MarketSpec:
        now = dt.datetime.now(dt.UTC)
        (a_id, a_wallet, a_handle), (b_id, _, _) = rng.sample(self.kols, 2)
        kind = rng.choice(
            ("rank_flippening", "sol_gain_threshold", "top_rank_maintain", "profit_streak")
            + ("follower_growth",) * 2
        )
        baseline: dict[str, Any] = {"a": {"kol_id": a_id, "source": "storm"}}
        threshold: Decimal | None = None
        target: int | None = None
        kol_b: int | None = None
        timeframe: str | None = "daily"
        if kind == "rank_flippening":
            kol_b = b_id
            baseline["b"] = {"kol_id": b_id}
        elif kind == "sol_gain_threshold":
            threshold = Decimal(rng.randint(-40, 40))
        elif kind == "top_rank_maintain":
            target = rng.randint(1, 20)
        elif kind == "follower_growth":
            handled = [k for k in self.kols if k[2]]
            a_id, a_wallet, a_handle = rng.choice(handled)
            with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
                row = conn.execute(
                    "SELECT followers FROM follower_cache WHERE handle = %s",
                    ((a_handle or "").lower(),),
                ).fetchone()
            # Pinned to the account the stand-in gives the handle, as the generator pins it.
            baseline = {
                "a": {
                    "kol_id": a_id,
                    "followers": row[0] if row else 100_000,
                    "x_user_id": user_id(a_handle or ""),
                    "x_handle": (a_handle or "").lower(),
                }
            }
            threshold = Decimal(rng.randint(1, 300))
            timeframe = None
        if rng.random() < 0.05:
            baseline = {}  # invalid on purpose: MISSING_METADATA, cancelled at once
            self.tally.add("markets", "invalid on purpose")
        title = f"storm {kind} w{wave}"
        if rng.random() < 0.1:
            title = f"{rng.choice(HOSTILE)} w{wave}"
        return market_spec(
            type=kind,
            title=title,
            question_key=f"storm:{wave}:{n}:{a_wallet}",
            kol_a_id=a_id,
            kol_b_id=kol_b,
            timeframe=timeframe,
            threshold=threshold,
            target_rank=target,
            baseline=baseline,
            opens_at=now - dt.timedelta(seconds=1),
            closes_at=closes_at,
            liquidity=Decimal(rng.choice(("50", "200", "1000"))),
        )

    def _market_maker(self) -> None:
        rng = random.Random(self.cfg.seed ^ 0xA5)
        for wave in self._running(rng, (1.5, 4.0)):
            # Every wave closes together: one on-demand scrape serves all of them.
            closes_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=rng.uniform(4, 18))
            for n in range(rng.randint(2, 6)):
                spec = self._spec(rng, wave, n, closes_at)

                def create(spec: MarketSpec = spec) -> int:
                    with transaction() as s:
                        return open_market(s, spec, actor="storm")

                if self._call("markets", create):
                    self.tally.add("markets", "opened")
            if rng.random() < 0.2:
                self._bad_market(replace(self._spec(rng, wave, 99, closes_at)))
            self._refresh_open_markets()

    def _bad_market(self, spec: MarketSpec) -> None:
        def create() -> None:
            with transaction() as s:
                open_market(s, replace(spec, liquidity=Decimal("0.001")), actor="storm")
            raise AssertionError("a market with bad liquidity was opened")

        try:
            create()
        except ServiceError as exc:
            self.tally.add("bad input refused", f"open_market {exc.code.value}")
        except DBAPIError as exc:
            self.tally.add("db errors survived", f"open_market: {type(exc.orig).__name__}")

    def _refresh_open_markets(self) -> None:
        try:
            with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
                self.open_markets = [
                    m
                    for (m,) in conn.execute(
                        "SELECT id FROM markets WHERE status = 'OPEN'"
                        " AND closes_at > now() - interval '2 seconds'"
                    )
                ]
        except psycopg.OperationalError:
            self.tally.add("db errors survived", "refresh: OperationalError")

    # -- the operator ---------------------------------------------------------------------------

    def _pick_market(self, rng: random.Random) -> tuple[int, str, str | None, bool] | None:
        """A random market; mostly one the operator can act on (due, resolved or cancelled)."""
        actionable = "WHERE status <> 'OPEN' OR closes_at <= now()" if rng.random() < 0.8 else ""
        with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
            return conn.execute(
                "SELECT id, status, outcome, closes_at <= now() FROM markets"
                f" {actionable} ORDER BY random() LIMIT 1"
            ).fetchone()

    def _operator(self) -> None:
        rng = random.Random(self.cfg.seed ^ 0x0B)
        for _ in self._running(rng, (0.2, 0.8)):
            picked = self._pick_market(rng)
            if picked is None:
                continue
            market_id, status, outcome, due = picked
            reason = rng.choice((*HOSTILE, "storm: operator check", "x" * 1999))
            label, act = self._operator_action(rng, market_id, status, outcome, due, reason)
            if act is None:
                continue
            if rng.random() < 0.15:
                self._double_click(label, act)
            else:
                result = self._call("operator", act)
                if result is not None:
                    self.tally.add("operator", f"{label}: {result.outcome.value}")
            if rng.random() < 0.3:
                self._operator_refusals(rng, market_id)

    def _operator_action(
        self,
        rng: random.Random,
        market_id: int,
        status: str,
        outcome: str | None,
        due: bool,
        reason: str,
    ) -> tuple[str, Callable[[], operator.ActionResult] | None]:
        if status == "OPEN" and due:
            return "retry resolution", partial(
                operator.retry_resolution, OPERATOR, market_id, reason
            )
        if status == "OPEN" and rng.random() < 0.15:
            return "cancel open", partial(
                operator.cancel_and_refund, OPERATOR, market_id, reason, expected_status="OPEN"
            )
        if status == "RESOLVED" and rng.random() < 0.5:
            return "cancel resolved", partial(
                operator.cancel_and_refund, OPERATOR, market_id, reason, expected_status="RESOLVED"
            )
        if status in ("RESOLVED", "CANCELLED"):
            new = "NO" if outcome == "YES" else "YES" if outcome else rng.choice(("YES", "NO"))
            return "re-settle", partial(
                operator.resettle, OPERATOR, market_id, new, reason, expected_status=status
            )
        return "", None

    def _double_click(self, label: str, act: Callable[[], operator.ActionResult]) -> None:
        outcomes: list[str] = []

        def click() -> None:
            result = self._call("operator", act)
            if result is not None:
                outcomes.append(result.outcome.value)

        clicks = [threading.Thread(target=click) for _ in range(2)]
        for c in clicks:
            c.start()
        for c in clicks:
            c.join(timeout=120)
        self.tally.add("operator", f"{label} double click: {'+'.join(sorted(outcomes))}")
        if outcomes.count("OK") > 1 and label != "retry resolution":
            # Two OKs for one money action would be paying twice; the invariants confirm.
            self.tally.add("operator", f"{label} double click applied twice!")

    def _operator_refusals(self, rng: random.Random, market_id: int) -> None:
        """Who may not act, or without a reason, is refused with a typed error and audited."""
        cases: list[tuple[ErrorCode, Callable[[], object]]] = [
            (
                ErrorCode.PERMISSION_DENIED,
                lambda: operator.cancel_and_refund(
                    VIEWER, market_id, "viewer tries", expected_status="OPEN"
                ),
            ),
            (
                ErrorCode.NOT_AUTHENTICATED,
                lambda: operator.resettle(
                    None, market_id, "YES", "no login", expected_status="RESOLVED"
                ),
            ),
            (
                ErrorCode.REASON_REQUIRED,
                lambda: operator.retry_resolution(OPERATOR, market_id, " "),
            ),
            (
                ErrorCode.INVALID_INPUT,
                lambda: operator.cancel_and_refund(
                    OPERATOR, market_id, LONG, expected_status="OPEN"
                ),
            ),
        ]
        code, act = rng.choice(cases)
        try:
            act()
        except ServiceError as exc:
            if exc.code is not code:
                raise AssertionError(f"expected {code}, got {exc.code}: {exc}") from exc
            self.tally.add("bad input refused", f"operator {exc.code.value}")
            return
        except DBAPIError as exc:
            self.tally.add("db errors survived", f"operator refusal: {type(exc.orig).__name__}")
            return
        raise AssertionError(f"{code} case was not refused")

    # -- faults and chaos -----------------------------------------------------------------------

    def _faults(self) -> None:
        rng = random.Random(self.cfg.seed ^ 0xFA)
        handles = [h for _, _, h in self.kols if h]
        with httpx.Client(timeout=5) as http:
            broken_until = 0.0
            unwritable_until = 0.0
            for _ in self._running(rng, (1.0, 4.0)):
                if broken_until and time.monotonic() > broken_until:
                    http.post(f"{self.kolscan_url}/__standin__/variant", json={"variant": "normal"})
                    broken_until = 0.0
                if unwritable_until and time.monotonic() > unwritable_until:
                    self._artifacts_writable(True)
                    unwritable_until = 0.0
                roll = rng.random()
                if roll < 0.1 and not unwritable_until:
                    self._artifacts_writable(False)
                    unwritable_until = time.monotonic() + rng.uniform(5, 15)
                    self.tally.add("faults injected", "artifacts folder refuses writes")
                elif roll < 0.2:
                    self._switch_a_handle(rng)
                elif roll < 0.55:
                    kind = rng.choice(X_FAULTS)
                    if kind == "clear":
                        http.post(f"{self.xapi_url}/__standin__/clear", json={})
                    else:
                        body: dict[str, Any] = {
                            "kind": kind,
                            "count": rng.randint(1, 6),
                            "delay_s": 1.5,
                            "reset_in_s": 3,
                        }
                        if kind in ("not_found", "suspended"):
                            body["handles"] = rng.sample(handles, 2)
                        answer = http.post(f"{self.xapi_url}/__standin__/fault", json=body)
                        answer.raise_for_status()
                    self.tally.add("faults injected", f"x api {kind}")
                elif not broken_until:
                    variant = rng.choice(("error", "layout_changed", "empty", "odd", "busy"))
                    http.post(
                        f"{self.kolscan_url}/__standin__/variant", json={"variant": variant}
                    ).raise_for_status()
                    broken_until = time.monotonic() + rng.uniform(3, 10)
                    self.tally.add("faults injected", f"kolscan {variant}")
            http.post(f"{self.xapi_url}/__standin__/clear", json={})
            http.post(f"{self.kolscan_url}/__standin__/variant", json={"variant": "normal"})
            self._artifacts_writable(True)

    def _artifacts_writable(self, writable: bool) -> None:
        """A file where the artifacts folder should be makes every save fail (root ignores
        permissions, so a read-only folder would not)."""
        aside = self.artifacts.with_name("artifacts.aside")
        if writable:
            if self.artifacts.is_file():
                self.artifacts.unlink()
                if aside.exists():
                    aside.rename(self.artifacts)
            return
        if self.artifacts.exists():
            self.artifacts.rename(aside)
        self.artifacts.write_text("not a folder")

    def _switch_a_handle(self, rng: random.Random) -> None:
        """The leaderboard links another X profile for a KOL (until the next scrape puts the
        stand-in's back): markets pinned at open must not follow it."""
        handled = [(k, h) for k, _, h in self.kols if h]
        (kol, _), (_, other) = rng.sample(handled, 2)
        with psycopg.connect(self.db_url, application_name="kolops-storm-faults") as conn:
            conn.execute("UPDATE kols SET x_handle = %s WHERE id = %s", (other, kol))
        self.tally.add("faults injected", "x handle switched to another account")

    def _analyst(self) -> None:
        rng = random.Random(self.cfg.seed ^ 0xA7)
        for _ in self._running(rng, (2.0, 6.0)):
            with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
                row = conn.execute(
                    "SELECT id FROM scrape_runs WHERE status IN ('SUCCESS', 'PARTIAL')"
                    " AND NOT quarantined AND snapshot_at IS NOT NULL"
                    " ORDER BY snapshot_at DESC LIMIT 1"
                ).fetchone()
            if row is None:
                continue
            run_id = int(row[0])
            if not self._call(
                "analyst", partial(set_quarantine, ANALYST, run_id, True, "storm: looks wrong")
            ):
                continue
            start = self._db_now()
            self.stop.wait(rng.uniform(0.5, 4.0))
            end = self._db_now()
            self._call(
                "analyst", partial(set_quarantine, ANALYST, run_id, False, "storm: it was fine")
            )
            self.quarantines.append((run_id, start, end))
            self.tally.add("analyst", "run quarantined mid-pass, then released")

    def _db_now(self) -> dt.datetime:
        with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
            (now,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
        assert isinstance(now, dt.datetime)
        return now

    def quarantine_bites(self) -> Result:
        """No market was settled from a run while that run was quarantined."""
        problems = []
        with psycopg.connect(self.db_url, application_name="storm-reader") as conn:
            for run_id, start, end in self.quarantines:
                rows = conn.execute(
                    "SELECT market_id, finished_at FROM resolution_attempts"
                    " WHERE result IN ('RESOLVED_YES', 'RESOLVED_NO')"
                    " AND (evidence ->> 'run_id')::bigint = %s AND finished_at > %s"
                    " AND finished_at < %s",
                    (run_id, start, end),
                ).fetchall()
                problems += [
                    f"market {m} settled at {at} from run {run_id}, quarantined {start}..{end}"
                    for m, at in rows
                ]
        return Result(
            "no market settled from a run while it was quarantined", problems, len(self.quarantines)
        )

    def _chaos(self) -> None:
        rng = random.Random(self.cfg.seed ^ 0xC4)
        with psycopg.connect(self.db_url, autocommit=True, application_name="storm-chaos") as conn:
            for _ in self._running(rng, (3.0, 9.0)):
                if rng.random() < 0.35:
                    self._kill_a_scheduler(rng)
                    continue
                row = conn.execute(
                    "SELECT pid, application_name FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND application_name LIKE 'kolops%' ORDER BY random() LIMIT 1"
                ).fetchone()
                if row is None:
                    continue
                (done,) = conn.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone()
                if done:
                    self.tally.add("chaos", f"connection terminated ({row[1]})")

    def _kill_a_scheduler(self, rng: random.Random) -> None:
        live = self.live_schedulers()
        if not live:
            return
        victim = rng.choice(live)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        self.killed_pids.append(victim.pid)
        self.tally.add("chaos", "scheduler killed with SIGKILL")
        self.stop.wait(rng.uniform(0.5, 3.0))
        self.start_scheduler()

    # -- checks ---------------------------------------------------------------------------------

    def check(self, label: str, *, final: bool = False) -> Checkpoint:
        with self._money_lock:  # no deposit lands between counting and reading
            results = invariants.check_all(
                self._engine, window=self.window, capital=self.capital, final=final
            )
        point = Checkpoint(label, time.monotonic() - self.started, results)
        self.checkpoints.append(point)
        return point

    def refusals_audited(self) -> Result:
        """Every refusal the operator thread saw was written to the audit log, and only those."""
        counts = self.tally.counts.get("bad input refused", Counter())
        with psycopg.connect(self.db_url) as conn:
            audited = dict(
                conn.execute(
                    "SELECT CASE WHEN username = %s THEN 'PERMISSION_DENIED'"
                    "            WHEN username IS NULL THEN 'NOT_AUTHENTICATED'"
                    "            WHEN detail = 'no reason given' THEN 'REASON_REQUIRED'"
                    "            ELSE 'INVALID_INPUT' END, count(*)"
                    " FROM audit_log WHERE result = 'REFUSED' AND (username = %s"
                    "   OR (username IS NULL AND detail = 'not logged in')"
                    "   OR detail IN ('no reason given', 'reason too long'))"
                    " GROUP BY 1",
                    (VIEWER.username, VIEWER.username),
                ).fetchall()
            )
        problems = [
            f"{code}: {counts[f'operator {code}']} refused, {audited.get(code, 0)} audited"
            for code in REFUSAL_CODES
            if counts[f"operator {code}"] != audited.get(code, 0)
        ]
        return Result(
            "every refused operator call (viewer, no login, no or oversized reason) is audited",
            problems,
            checked=sum(audited.values()),
        )

    def _checker(self) -> None:
        rng = random.Random(self.cfg.seed ^ 0xCC)
        for n in self._running(rng, (self.cfg.checkpoint_s, self.cfg.checkpoint_s)):
            if n:
                self.check(f"checkpoint {n}")

    # -- the quiet end --------------------------------------------------------------------------

    def drain(self) -> float:
        """After the storm: faults off, schedulers up, dead processes' leases released; wait
        until no due market is OPEN. Returns the seconds it took."""
        with httpx.Client(timeout=5) as http:
            http.post(f"{self.xapi_url}/__standin__/clear", json={})
            http.post(f"{self.kolscan_url}/__standin__/variant", json={"variant": "normal"})
        while len(self.live_schedulers()) < self.cfg.schedulers:
            self.start_scheduler()
        started = time.monotonic()
        patterns = [f"%:{pid}:%" for pid in self.killed_pids]
        with psycopg.connect(self.db_url, autocommit=True, application_name="storm-drain") as c:
            if patterns:
                cur = c.execute(
                    "UPDATE markets SET claim_expires_at = now() WHERE status = 'OPEN'"
                    " AND claimed_by LIKE ANY(%s) AND claim_expires_at > now()",
                    (patterns,),
                )
                self.tally.add("drain", "leases of killed processes released", cur.rowcount)
            while time.monotonic() - started < self.cfg.drain_s:
                (left,) = c.execute(
                    "SELECT count(*) FROM markets WHERE status = 'OPEN' AND closes_at <= now()"
                ).fetchone()
                if left == 0:
                    break
                time.sleep(1.0)
        return time.monotonic() - started

    def shutdown(self) -> None:
        """Stop every scheduler (SIGTERM, then SIGKILL) and reap their process groups."""
        for proc in self.live_schedulers():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for proc in self.procs:  # orphaned Chromium of killed schedulers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._engine.dispose()

    # -- the summary ----------------------------------------------------------------------------

    def summary(self, drain_s: float) -> str:
        lines = [
            "",
            "=" * 78,
            f"STORM SUMMARY  {self.cfg.seconds:.0f} s of storm, seed {self.cfg.seed},"
            f" {self.cfg.bettors} bettor threads, {self.cfg.schedulers} scheduler processes",
            "=" * 78,
        ]
        with psycopg.connect(self.db_url) as conn:
            markets = conn.execute(
                "SELECT status, coalesce(outcome, cancel_reason, ''), count(*) FROM markets"
                " GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            attempts = conn.execute(
                "SELECT result, coalesce(error_code, ''), count(*) FROM resolution_attempts"
                " GROUP BY 1, 2 ORDER BY 3 DESC"
            ).fetchall()
            scrapes = conn.execute(
                "SELECT trigger, status, count(*) FROM scrape_runs GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            jobs = conn.execute(
                "SELECT job, status, count(*) FROM job_runs GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            money = conn.execute(
                "SELECT kind, count(*), sum(balance) FROM accounts GROUP BY kind ORDER BY kind"
            ).fetchall()
        sections = dict(sorted(self.tally.counts.items()))
        for section, counts in sections.items():
            lines.append(f"{section} ({sum(counts.values())}):")
            lines += [f"    {n:>7}  {kind}" for kind, n in sorted(counts.items())]
        lines.append("markets by final state:")
        lines += [f"    {n:>7}  {s} {o}" for s, o, n in markets]
        lines.append("resolution attempts:")
        lines += [f"    {n:>7}  {r} {c}" for r, c, n in attempts]
        lines.append("scrape runs:")
        lines += [f"    {n:>7}  {t} {s}" for t, s, n in scrapes]
        lines.append("scheduler job runs:")
        lines += [f"    {n:>7}  {j} {s}" for j, s, n in jobs]
        lines.append("money (accounts by kind: count, balance):")
        lines += [f"    {k:<9} {n:>6}  {b:>20}" for k, n, b in money]
        lines.append(f"    paid in from outside (house capital + deposits): {self.capital}")
        lines.append(f"drain after the storm: {drain_s:.1f} s until no due market was OPEN")
        for point in self.checkpoints:
            verdict = "PASS" if point.ok else "FAIL"
            lines.append(f"{point.label} at {point.at_s:.0f} s: {verdict}")
            if point is self.checkpoints[-1] or not point.ok:
                lines += [f"    {r.line()}" for r in point.results]
        if self.thread_errors:
            lines.append("THREAD ERRORS:")
            lines += [f"    {e}" for e in self.thread_errors]
        lines.append("=" * 78)
        return "\n".join(lines)
