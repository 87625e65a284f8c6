"""The KOL data read models: the latest snapshot, changes, anomalies and histories, from the
usable runs only, on the real database with planted data."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest

from services.errors import ErrorCode, ServiceError
from services.views import kols as kol_views
from tests.support.scrape_data import NOW, board, kol, scrape_run


def test_snapshot_changes_and_anomalies_come_from_the_latest_usable_run(db: str) -> None:
    previous = board(20)
    scrape_run(db, "daily", NOW - dt.timedelta(hours=2), previous)
    # Latest: kol15 jumps to 1st (14 places), kol1 and kol2 slip, kol3 and kol4 share rank 3,
    # kol5 lost its handle, kol20 left and a newcomer entered; two rows were rejected.
    latest = [
        (1, "kol15", "W015", "handle15"),
        (2, "kol1", "W001", "handle1"),
        (3, "kol3", "W003", "handle3"),
        (3, "kol4", "W004", "handle4"),
        (4, "kol2", "W002", "handle2"),
        (5, "kol5", "W005", None),
        *[(i, f"kol{i}", f"W{i:03d}", f"handle{i}") for i in range(6, 15)],
        *[(i, f"kol{i}", f"W{i:03d}", f"handle{i}") for i in range(16, 20)],
        (20, "<script>alert(1)</script>", "WNEW", None),
    ]
    raw = {"name": "kol99", "sol": "12..3 Sol"}
    latest_id = scrape_run(
        db,
        "daily",
        NOW - dt.timedelta(hours=1),
        latest,
        status="PARTIAL",
        rejects=[(20, raw, "PARSE_BAD_NUMBER"), (21, {"name": ""}, "PARSE_MISSING_FIELD")],
    )
    # Newer runs that must not count: quarantined, failed, and another timeframe.
    scrape_run(db, "daily", NOW - dt.timedelta(minutes=5), board(3), quarantined=True)
    scrape_run(db, "daily", None, [], status="FAILED", error=("SCRAPE_TIMEOUT", "slow"))
    scrape_run(db, "weekly", NOW, board(2))

    snap = kol_views.latest_snapshot("daily", limit=5)
    assert snap.run is not None and snap.run.id == latest_id and snap.run.status == "PARTIAL"
    assert snap.page.total == len(latest)
    top = snap.page.rows[0]
    assert (top["username"], top["previous_rank"], top["rank_change"]) == ("kol15", 15, 14)
    assert [r["rank"] for r in snap.page.rows] == [1, 2, 3, 3, 4]
    found = kol_views.latest_snapshot("daily", search="SCRIPT")
    assert [(r["wallet"], r["previous_rank"]) for r in found.page.rows] == [("WNEW", None)]
    # The user's wildcards are literal: "%" matches no name.
    assert kol_views.latest_snapshot("daily", search="%").page.total == 0

    ch = kol_views.changes("daily")
    assert ch.moved == 4  # kol15, kol1, kol2, kol4 (3rd -> 3rd for kol3)
    assert ch.movers[0]["wallet"] == "W015"
    assert [r["wallet"] for r in ch.entered] == ["WNEW"]
    assert [r["wallet"] for r in ch.left] == ["W020"]

    an = kol_views.anomalies("daily", min_jump=10)
    assert an.run is not None and an.run.id == latest_id
    assert [(r["wallet"], r["rank_change"]) for r in an.rank_jumps.rows] == [("W015", 14)]
    assert an.duplicate_ranks.total == 1
    assert an.duplicate_ranks.rows[0] == {"rank": 3, "kols": 2, "usernames": "kol3, kol4"}
    # The handle kol5 had before comes first: that is the surprising one.
    assert [(r["wallet"], r["previous_handle"]) for r in an.missing_handles.rows] == [
        ("W005", "handle5"),
        ("WNEW", None),
    ]
    assert an.rejects.total == 2
    assert json.loads(an.rejects.rows[0]["raw"]) == raw
    assert an.rejects.rows[0]["reason_code"] == "PARSE_BAD_NUMBER"
    assert kol_views.anomalies("daily", min_jump=2).rank_jumps.total == 2  # kol15 and kol2


def test_kol_views_refuse_bad_input_and_handle_an_empty_board(db: str) -> None:
    for call in (
        lambda: kol_views.latest_snapshot("hourly"),
        lambda: kol_views.latest_snapshot("daily", limit=0),
        lambda: kol_views.latest_snapshot("daily", offset=-1),
        lambda: kol_views.anomalies("daily", min_jump=0),
    ):
        with pytest.raises(ServiceError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_INPUT
    assert kol_views.latest_snapshot("daily").run is None
    assert kol_views.changes("daily").moved == 0
    assert kol_views.anomalies("daily").rank_jumps.total == 0


def test_kol_and_follower_history_run_oldest_first(db: str) -> None:
    for hours in (3, 2, 1):
        scrape_run(db, "daily", NOW - dt.timedelta(hours=hours), [(hours, "kol", "WK", "kh")])
    scrape_run(db, "weekly", NOW, [(7, "kol", "WK", "kh")], quarantined=True)
    history = kol_views.kol_history("WK")
    assert [(r["timeframe"], r["rank"]) for r in history] == [
        ("daily", 3),
        ("daily", 2),
        ("daily", 1),
        ("weekly", 7),
    ]
    assert [r["quarantined"] for r in history] == [False, False, False, True]
    assert [r["rank"] for r in kol_views.kol_history("WK", limit=2)] == [1, 7]
    with psycopg.connect(db) as conn:
        for i, n in enumerate((100, 150, 120)):
            conn.execute(
                "INSERT INTO follower_history (handle, followers, fetched_at) VALUES"
                " ('kh', %s, %s)",
                (n, NOW - dt.timedelta(hours=3 - i)),
            )
    assert [r["followers"] for r in kol_views.follower_history("KH")] == [100, 150, 120]
    kol("Kay 100%", "WK", "kh")
    assert [k["wallet"] for k in kol_views.find_kols("y 100%")] == ["WK"]
    assert kol_views.find_kols("zzz") == []
