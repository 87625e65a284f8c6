"""The Overview's aggregates: counts by status, due and overdue by `db.rules`, the last usable
scrape per timeframe."""

from __future__ import annotations

import datetime as dt

from config import get_settings
from db.engine import transaction
from services.views.health import market_health
from tests.support.factories import new_market
from tests.support.scrape_data import NOW, board, fund_house, scrape_run


def test_health_counts_due_and_overdue_markets_and_the_last_usable_scrape(db: str) -> None:
    fund_house()
    grace = dt.timedelta(minutes=get_settings().resolution_grace_minutes)
    with transaction() as s:
        for closed_ago in (
            grace + dt.timedelta(minutes=5),
            dt.timedelta(0),
            -dt.timedelta(hours=1),
        ):
            new_market(s, opens_at=NOW - dt.timedelta(days=2), closes_at=NOW - closed_ago)
    good = NOW - dt.timedelta(minutes=30)
    scrape_run(db, "daily", good, board(2))
    scrape_run(db, "daily", NOW - dt.timedelta(minutes=1), board(2), quarantined=True)

    h = market_health()
    assert h.by_status == {"OPEN": 3, "RESOLVED": 0, "CANCELLED": 0}
    assert (h.due, h.overdue, h.needs_attention) == (2, 1, 0)
    assert h.last_good_scrape == {"daily": good, "weekly": None, "monthly": None}
