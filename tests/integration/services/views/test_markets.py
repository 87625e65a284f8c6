"""The Markets read models: one page of markets with the due and overdue flags of `db.rules`,
and the one paging convention."""

from __future__ import annotations

import datetime as dt

import pytest

from config import get_settings
from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.views import markets as market_views
from services.vocabulary import MarketStatus
from tests.support.factories import new_market
from tests.support.scrape_data import NOW, fund_house


def _market(closed_ago: dt.timedelta) -> int:
    with transaction() as s:
        return new_market(s, opens_at=NOW - dt.timedelta(days=2), closes_at=NOW - closed_ago)


def test_due_and_overdue_follow_the_grace_period(db: str) -> None:
    fund_house()
    grace = dt.timedelta(minutes=get_settings().resolution_grace_minutes)
    overdue = _market(grace + dt.timedelta(minutes=5))
    due = _market(dt.timedelta(minutes=1))  # within the grace period
    running = _market(-dt.timedelta(hours=1))

    listed = {r["id"]: r for r in market_views.list_markets().rows}
    assert {m: (r["due"], r["overdue"]) for m, r in listed.items()} == {
        overdue: (True, True),
        due: (True, False),
        running: (False, False),
    }
    assert [r["id"] for r in market_views.list_markets(due_only=True).rows] == [overdue, due]
    assert [r["id"] for r in market_views.list_markets(attention_only=True).rows] == [overdue]
    detail = market_views.market_detail(due)
    assert (detail.due, detail.overdue) == (True, False)
    assert market_views.list_markets(status=MarketStatus.RESOLVED).total == 0


def test_markets_are_paged_like_every_other_list(db: str) -> None:
    fund_house()
    ids = [_market(-dt.timedelta(hours=h)) for h in (1, 2, 3)]
    page = market_views.list_markets(limit=2, offset=1)
    assert page.total == 3 and [r["id"] for r in page.rows] == [ids[1], ids[0]]
    assert (page.first, page.last) == (2, 3)
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "DONE"}):
        with pytest.raises(ServiceError) as err:
            market_views.list_markets(**bad)  # type: ignore[arg-type]
        assert err.value.code == ErrorCode.INVALID_INPUT
