"""Demo data for an empty database, made only through the real services.

Run it with `python -m services.ops.demo`.

House capital and user deposits go through the ledger, markets are generated from real scrapes of
the configured leaderboard (the local stand-in in the demo), and bets are placed with the one bet
service. Demo dashboard accounts get random passwords, written once to var/demo-credentials.txt
(readable by the owner only) and printed at every launch.
"""

from __future__ import annotations

import logging
import random
import secrets
import sys
from decimal import Decimal

from sqlalchemy import func, select, text

from config import PROJECT_ROOT, setup_logging
from db.engine import read_session, transaction
from db.models import User
from services.errors import ServiceError
from services.money import bets, users
from services.ops import auth
from services.resolution import generator
from services.sources import followers, scraper
from services.vocabulary import MarketStatus, Role, ScrapeTrigger, Side, Timeframe, TradeAction

log = logging.getLogger("kolops.demo")

CREDENTIALS = PROJECT_ROOT / "var" / "demo-credentials.txt"
DEMO_USERS = 12
HOUSE_CAPITAL = Decimal("1000000")
DEPOSIT = Decimal("1000")


def _accounts() -> None:
    """Create the demo accounts that do not exist yet; record the new passwords."""
    lines = []
    for role in reversed(Role):  # most powerful first, as the credentials file lists them
        password = secrets.token_urlsafe(12)
        try:
            auth.create_account(f"demo-{role}", password, role.value)
        except ServiceError:  # it exists: its password is already in the credentials file
            continue
        lines.append(f"demo-{role}  {password}  ({role})")
    if lines:
        CREDENTIALS.parent.mkdir(parents=True, exist_ok=True)
        CREDENTIALS.write_text("\n".join(lines) + "\n")
        CREDENTIALS.chmod(0o600)


def _money_and_markets() -> None:
    with transaction() as session:
        users.fund_house(session, HOUSE_CAPITAL, key="demo:house", actor="demo")
    ids = [users.register(f"trader{i:02d}", DEPOSIT, actor="demo") for i in range(DEMO_USERS)]
    for tf in Timeframe:
        result = scraper.scrape_leaderboard(tf, trigger=ScrapeTrigger.MANUAL)
        log.info("demo scrape %s: %s", tf, result.status)
    with read_session() as session:
        handles = [
            h
            for (h,) in session.execute(
                text("SELECT x_handle FROM kols WHERE x_handle IS NOT NULL")
            )
        ]
    followers.fetch_followers(handles)
    report = generator.generate(per_type=2)
    log.info("demo markets: %s", report.counts())
    with read_session() as session:
        markets = list(
            session.scalars(
                text("SELECT id FROM markets WHERE status = :open"),
                {"open": MarketStatus.OPEN.value},
            )
        )
    rng = random.Random(7)
    placed = 0
    for market_id in markets:
        for user_id in rng.sample(ids, 4):
            side = rng.choice([Side.YES.value, Side.NO.value])
            try:
                receipt = bets.place_bet(
                    user_id=user_id,
                    market_id=market_id,
                    side=side,
                    action=TradeAction.BUY.value,
                    amount=Decimal(rng.randint(5, 40)),
                )
                placed += 1
                if rng.random() < 0.2:
                    bets.place_bet(
                        user_id=user_id,
                        market_id=market_id,
                        side=side,
                        action=TradeAction.SELL.value,
                        amount=(receipt.shares / 2).quantize(Decimal("0.000001")),
                    )
                    placed += 1
            except ServiceError as exc:
                log.info("demo bet refused: %s", exc)
    log.info("demo bets placed: %d", placed)


def load() -> None:
    """Load the demo into an empty database (one without market users); print the accounts."""
    with read_session() as session:
        empty = not session.scalar(select(func.count()).select_from(User))
    if empty:
        _money_and_markets()
    _accounts()
    if CREDENTIALS.exists():
        print("\nDemo dashboard accounts (username  password):")
        print(CREDENTIALS.read_text(), flush=True)


if __name__ == "__main__":
    setup_logging()
    load()
    sys.exit(0)
