"""Bets per second through `place_bet` with 1, 4 and 8 concurrent clients, against pgbench's
TPC-B-like transactions per second at the same client counts on the same server.

A client is a process of its own, as pgbench's clients are independent connections and as a
service placing bets runs several worker processes (threads of one interpreter would measure
Python's global lock, not the database work).

Each client is its own user and alternates buying a side and selling back what it bought, on
markets shared by all clients (so clients queue on the same market row locks, as pgbench's
clients queue on its one branch row at scale 1). Each level runs for `--seconds` seconds, and
pgbench runs right after the bets at the same level. At the largest level, the same clients then
bet again with a request key on every bet (`place_bet(request_key=...)`), compared with the same
pgbench figure: the price of bets a caller can retry safely.

On a shared machine both figures drift with the load of other work, so `--rounds N` measures
each level N times, each round a bets run and a pgbench run back to back, and reports the median
of the rounds' ratios (and of each side's figures): one noisy round cannot make or break it.

    .venv/bin/python bench/bet_throughput.py [--seconds 10] [--clients 1,4,8] [--rounds 1]
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import argparse
import atexit
import datetime as dt
import multiprocessing as mp
import random
import re
import statistics
import subprocess
import time
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import text

from db import embedded
from db.engine import transaction
from services.money import users
from services.money.bets import place_bet
from services.money.integrity import check_integrity
from services.money.markets import open_market
from services.vocabulary import Side, TradeAction
from tests.support.factories import market_spec, new_kol

CLIENTS = (1, 4, 8)
MARKETS = 4
DURATION_S = 10.0
WARMUP_BETS = 20
STARTUP_S = 12.0


def setup(clients: int) -> tuple[list[int], list[int]]:
    with transaction() as s:
        kol = new_kol(s)
        now = s.execute(text("SELECT now()")).scalar_one()
        markets = [
            open_market(
                s,
                market_spec(
                    kol_a_id=kol,
                    opens_at=now - dt.timedelta(minutes=1),
                    closes_at=now + dt.timedelta(days=1),
                    liquidity=Decimal(1_000_000),
                ),
                actor="bench",
            )
            for _ in range(MARKETS)
        ]
    user_ids = [
        users.register(f"bench{i}", Decimal(1_000_000), actor="bench") for i in range(clients)
    ]
    return user_ids, markets


def client(
    user_id: int,
    markets: list[int],
    seed: int,
    start: Any,
    run_s: float,
    out: Any,
    key_prefix: str | None = None,
) -> None:
    """One client process: warm up, wait for the common start, then bet for `run_s` seconds
    (each bet with a request key of its own when `key_prefix` is given)."""
    for _ in range(WARMUP_BETS // 2):  # the connection pool and caches
        bought = place_bet(
            user_id=user_id,
            market_id=markets[0],
            side=Side.YES,
            action=TradeAction.BUY,
            amount=Decimal(1),
        )
        place_bet(
            user_id=user_id,
            market_id=markets[0],
            side=Side.YES,
            action=TradeAction.SELL,
            amount=bought.shares,
        )
    rng = random.Random(seed)
    n = 0
    start.wait()
    deadline = time.monotonic() + run_s
    while time.monotonic() < deadline:
        market, side = rng.choice(markets), rng.choice(list(Side))
        keys = (
            (None, None) if key_prefix is None else (f"{key_prefix}-{n}", f"{key_prefix}-{n + 1}")
        )
        bought = place_bet(
            user_id=user_id,
            market_id=market,
            side=side,
            action=TradeAction.BUY,
            amount=Decimal(10),
            request_key=keys[0],
        )
        place_bet(
            user_id=user_id,
            market_id=market,
            side=side,
            action=TradeAction.SELL,
            amount=bought.shares,
            request_key=keys[1],
        )
        n += 2
    out.put(n)


def bets_per_second(
    n_clients: int, user_ids: list[int], markets: list[int], run_s: float, keyed: bool = False
) -> float:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=client,
            args=(user_ids[i], markets, i, start, run_s, out, f"c{n_clients}" if keyed else None),
        )
        for i in range(n_clients)
    ]
    for p in procs:
        p.start()
    time.sleep(STARTUP_S)  # every process imported, connected and warmed up
    start.set()
    total = sum(out.get(timeout=run_s + 120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return total / run_s


def pgbench_database(url: str) -> dict[str, str]:
    """A scale-1 pgbench database next to the bench database; dropped at exit."""
    info = conninfo_to_dict(url)
    name = f"{info['dbname']}_pgbench"
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    atexit.register(drop)
    args = {"host": embedded.socket_host(url) or str(info.get("host", "")), "dbname": name}
    if info.get("port"):
        args["port"] = str(info["port"])
    if info.get("user"):
        args["user"] = str(info["user"])
    pgbench(args, "-i", "-s", "1", "-q")
    return args


def pgbench(args: dict[str, str], *extra: str) -> str:
    cmd = [str(embedded.bin_dir() / "pgbench"), "-h", args["host"]]
    if "port" in args:
        cmd += ["-p", args["port"]]
    if "user" in args:
        cmd += ["-U", args["user"]]
    result = subprocess.run(
        [*cmd, *extra, args["dbname"]], capture_output=True, text=True, check=True, timeout=300
    )
    return result.stdout + result.stderr


def pgbench_tps(args: dict[str, str], n_clients: int, run_s: float) -> float:
    # pgbench counts whole seconds.
    seconds = str(max(1, round(run_s)))
    out = pgbench(args, "-c", str(n_clients), "-j", str(n_clients), "-T", seconds)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if match is None:
        raise RuntimeError(f"could not read pgbench's tps from:\n{out}")
    return float(match.group(1))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=DURATION_S, help="length of each run (default %(default)s)"
    )
    parser.add_argument(
        "--clients",
        type=lambda v: tuple(int(n) for n in v.split(",")),
        default=CLIENTS,
        help="comma-separated client counts (default 1,4,8)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="bets and pgbench runs back to back per level; medians reported (default 1)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main() -> None:
    args = _arguments()
    clients: tuple[int, ...] = args.clients
    run_s: float = args.seconds
    url = _common.start_database("bet_throughput")
    user_ids, markets = setup(max(clients))
    pg_args = pgbench_database(url)
    rounds: int = args.rounds
    bets: dict[int, list[float]] = {n: [] for n in clients}
    tps: dict[int, list[float]] = {n: [] for n in clients}
    for _ in range(rounds):
        for n in clients:  # each ratio's two sides measured back to back, under the same load
            bets[n].append(bets_per_second(n, user_ids, markets, run_s))
            tps[n].append(pgbench_tps(pg_args, n, run_s))
    top = max(clients)
    keyed = bets_per_second(top, user_ids, markets, run_s, keyed=True)  # right after pgbench
    integrity = check_integrity()  # fast and wrong would not count
    if not integrity.ok:
        raise RuntimeError(f"integrity broken after the bets: {integrity}")
    median = statistics.median
    ratio = {n: median(b / t for b, t in zip(bets[n], tps[n], strict=True)) for n in clients}
    rows = [
        (
            f"{n} client(s)",
            f"{median(bets[n]):8.1f} bets/s   pgbench {median(tps[n]):8.1f} tps   ratio"
            f" {ratio[n]:.2f}"
            + (
                ""
                if rounds == 1
                else "   (rounds: "
                + " / ".join(f"{b / t:.2f}" for b, t in zip(bets[n], tps[n], strict=True))
                + ")"
            ),
        )
        for n in clients
    ] + [
        (
            f"{top} keyed",
            f"{keyed:8.1f} bets/s   pgbench {tps[top][-1]:8.1f} tps   ratio"
            f" {keyed / tps[top][-1]:.2f}   (a request key on every bet, against the last round)",
        ),
        ("integrity after", "clean"),
    ]
    _common.report(
        f"Bet placement vs pgbench TPC-B (scale 1): {MARKETS} shared markets, {run_s:g} s a run,"
        f" {rounds} round(s), medians",
        rows,
        {f"bets_per_s_{n}": median(bets[n]) for n in clients}
        | {f"pgbench_tps_{n}": median(tps[n]) for n in clients}
        | {f"ratio_{n}": ratio[n] for n in clients}
        | {f"bets_per_s_keyed_{top}": keyed, f"ratio_keyed_{top}": keyed / tps[top][-1]},
    )


if __name__ == "__main__":
    main()
