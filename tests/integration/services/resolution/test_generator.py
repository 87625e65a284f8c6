"""The market generator: markets of all twelve types from the latest good scrapes, each with a
valid definition, never twice, and none whose baseline is undefined."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from db.engine import transaction
from services.money import users
from services.money.integrity import check_integrity
from services.resolution import generator, outcomes
from services.sources import followers, scraper
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
