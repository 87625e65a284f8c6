"""The market generator: markets of all twelve types from the latest good scrapes, each with a
valid definition, never twice, and none whose baseline is undefined."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from config import get_settings
from db.engine import transaction
from services.money import users
from services.money.integrity import check_integrity
from services.resolution import generator, outcomes
from services.sources import followers, scraper
from services.vocabulary import MarketType
from standins.xapi_standin import user_id
from tests.conftest import Standins


def test_generator_opens_all_twelve_types_once(db: str, standins: Standins) -> None:
    scraper.scrape_leaderboard("daily", trigger="MANUAL")
    scraper.scrape_leaderboard("weekly", trigger="MANUAL")
    with psycopg.connect(db) as conn:
        handles = [h for (h,) in conn.execute("SELECT x_handle FROM kols WHERE x_handle <> ''")]
    followers.fetch_followers(handles)
    with transaction() as s:
        users.fund_house(s, Decimal("1000000"), key="house", actor="test")

    first = generator.generate(per_type=1)
    assert set(first.by_type) == outcomes.ALL_TYPES
    assert first.refused == 0 and first.duplicates == 0
    second = generator.generate(per_type=1)
    assert second.created == 0 and second.duplicates == first.created
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT type, kol_b_id, timeframe, threshold, target_rank, baseline FROM markets"
        ).fetchall()
    for type_, kol_b, timeframe, threshold, target, baseline in rows:
        assert baseline.get("a"), type_
        definition = outcomes.Definition(
            type_, "A", "B" if kol_b else None, timeframe, threshold, target, baseline
        )
        assert outcomes.definition_problems(definition) == [], (type_, baseline)
    assert check_integrity().ok


def test_generator_refuses_invalid_definitions(db: str, standins: Standins) -> None:
    run = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    with psycopg.connect(db) as conn:  # every KOL without trades: no win-rate baseline exists
        conn.execute(
            "UPDATE scraped_kols SET wins = 0, losses = 0 WHERE run_id = %s", (run.run_id,)
        )
    with transaction() as s:
        users.fund_house(s, Decimal("1000000"), key="house", actor="test")
    report = generator.generate(per_type=1)
    assert "streak_continuation" not in report.by_type
    assert "wl_ratio_maintain" not in report.by_type
    assert report.created > 0


def test_generator_opens_nothing_from_a_snapshot_older_than_the_bound(
    db: str, standins: Standins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENERATOR_MAX_SNAPSHOT_AGE_MINUTES", "30")
    get_settings.cache_clear()
    daily = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    scraper.scrape_leaderboard("weekly", trigger="MANUAL")
    with psycopg.connect(db) as conn:  # the daily board has not been read for 45 minutes
        conn.execute(
            "UPDATE scrape_runs SET snapshot_at = now() - interval '45 minutes' WHERE id = %s",
            (daily.run_id,),
        )
    with transaction() as s:
        users.fund_house(s, Decimal("1000000"), key="house", actor="test")

    report = generator.generate(per_type=1)

    with psycopg.connect(db) as conn:
        timeframes = {tf for (tf,) in conn.execute("SELECT DISTINCT timeframe FROM markets")}
    assert timeframes == {"weekly"}
    assert report.created > 0
    assert list(report.counts()["too_old"]) == ["daily"]


def test_follower_markets_pin_the_account_their_baseline_was_counted_from(
    db: str, standins: Standins
) -> None:
    run = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    with psycopg.connect(db) as conn:
        handles = [
            h
            for (h,) in conn.execute(
                "SELECT x_handle FROM scraped_kols WHERE run_id = %s AND x_handle <> ''"
                " ORDER BY rank",
                (run.run_id,),
            )
        ]
    followers.fetch_followers(handles)
    with psycopg.connect(db) as conn:  # the top KOL's count does not say whose it is
        unpinned = conn.execute(
            "UPDATE follower_cache SET x_user_id = NULL WHERE handle = %s RETURNING handle",
            (handles[0].lower(),),
        ).fetchone()
    assert unpinned
    with transaction() as s:
        users.fund_house(s, Decimal("1000000"), key="house", actor="test")

    assert generator.generate(per_type=2).by_type.get(MarketType.FOLLOWER_GROWTH) == 2
    with psycopg.connect(db) as conn:
        baselines = [
            b
            for (b,) in conn.execute(
                "SELECT baseline FROM markets WHERE type = %s", (MarketType.FOLLOWER_GROWTH,)
            )
        ]
        cached = dict(conn.execute("SELECT handle, x_user_id FROM follower_cache").fetchall())
    for baseline in baselines:
        pinned = baseline["a"]
        assert pinned["x_handle"] != unpinned[0]
        assert pinned["x_user_id"] == cached[pinned["x_handle"]] == user_id(pinned["x_handle"])
