"""The dashboard's data views (KOL data, freshness, scrapes, ledger, jobs) and the analyst's
quarantine action, on the real database with planted data."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from config import get_settings
from db.engine import transaction
from services.errors import ErrorCode, ServiceError
from services.money import users
from services.money.markets import MarketSpec, open_market
from services.ops import audit
from services.ops.auth import Principal
from services.sources import followers
from services.views import freshness
from services.views import kols as kol_views
from services.views import ledger as ledger_views
from services.views import scrapes as scrape_views

ANALYST = Principal("ana", "analyst")
VIEWER = Principal("vic", "viewer")
NOW = dt.datetime.now(dt.UTC)


def _kol(db: str, name: str, wallet: str, handle: str | None) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "INSERT INTO kols (display_name, wallet, x_handle) VALUES (%s, %s, %s) RETURNING id",
            (name, wallet, handle),
        ).fetchone()
    assert row
    return int(row[0])


def _run(
    db: str,
    timeframe: str,
    snapshot_at: dt.datetime | None,
    rows: list[tuple[int, str, str, str | None]],
    *,
    status: str = "SUCCESS",
    quarantined: bool = False,
    rejects: list[tuple[int, dict[str, Any], str]] = (),  # type: ignore[assignment]
    error: tuple[str, str] | None = None,
) -> int:
    """A scrape run with rows (rank, username, wallet, handle) and rejects (position, raw, code)."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, started_at, finished_at,"
            " snapshot_at, status, rows_stored, rows_rejected, quarantined, quarantine_reason,"
            " error_code, error_message) VALUES (%s, 'SCHEDULE', 'http://127.0.0.1/lb',"
            " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                timeframe,
                (snapshot_at or NOW) - dt.timedelta(seconds=5),
                snapshot_at or NOW,
                snapshot_at,
                status,
                len(rows),
                len(rejects),
                quarantined,
                "planted" if quarantined else None,
                *(error or (None, None)),
            ),
        ).fetchone()
        assert row
        run_id = int(row[0])
        for rank, username, wallet, handle in rows:
            conn.execute(
                "INSERT INTO scraped_kols (run_id, rank, username, wallet, x_handle, wins,"
                " losses, sol_gain, usd_gain, timeframe, scraped_at)"
                " VALUES (%s, %s, %s, %s, %s, 10, 5, %s, %s, %s, %s)",
                (
                    run_id,
                    rank,
                    username,
                    wallet,
                    handle,
                    100 - rank,
                    1000 - rank,
                    timeframe,
                    snapshot_at,
                ),
            )
        for position, raw, code in rejects:
            conn.execute(
                "INSERT INTO scrape_rejects (run_id, position, raw, field, reason_code, reason)"
                " VALUES (%s, %s, %s, 'sol_gain', %s, 'could not read the number')",
                (run_id, position, json.dumps(raw), code),
            )
    return run_id


def _board(n: int) -> list[tuple[int, str, str, str | None]]:
    return [(i, f"kol{i}", f"W{i:03d}", f"handle{i}") for i in range(1, n + 1)]


def test_snapshot_changes_and_anomalies_come_from_the_latest_usable_run(db: str) -> None:
    previous = _board(20)
    _run(db, "daily", NOW - dt.timedelta(hours=2), previous)
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
    latest_id = _run(
        db,
        "daily",
        NOW - dt.timedelta(hours=1),
        latest,
        status="PARTIAL",
        rejects=[(20, raw, "PARSE_BAD_NUMBER"), (21, {"name": ""}, "PARSE_MISSING_FIELD")],
    )
    # Newer runs that must not count: quarantined, failed, and another timeframe.
    _run(db, "daily", NOW - dt.timedelta(minutes=5), _board(3), quarantined=True)
    _run(db, "daily", None, [], status="FAILED", error=("SCRAPE_TIMEOUT", "slow"))
    _run(db, "weekly", NOW, _board(2))

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


def test_views_refuse_bad_input_and_handle_an_empty_board(db: str) -> None:
    for call in (
        lambda: kol_views.latest_snapshot("hourly"),
        lambda: kol_views.latest_snapshot("daily", limit=0),
        lambda: kol_views.latest_snapshot("daily", offset=-1),
        lambda: kol_views.anomalies("daily", min_jump=0),
        lambda: scrape_views.runs(status="BROKEN"),
        lambda: ledger_views.transactions(kind="GIFT"),
    ):
        with pytest.raises(ServiceError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_INPUT
    assert kol_views.latest_snapshot("daily").run is None
    assert kol_views.changes("daily").moved == 0
    assert kol_views.anomalies("daily").rank_jumps.total == 0


def test_kol_and_follower_history_run_oldest_first(db: str) -> None:
    for hours in (3, 2, 1):
        _run(db, "daily", NOW - dt.timedelta(hours=hours), [(hours, "kol", "WK", "kh")])
    _run(db, "weekly", NOW, [(7, "kol", "WK", "kh")], quarantined=True)
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
    _kol(db, "Kay 100%", "WK", "kh")
    assert [k["wallet"] for k in kol_views.find_kols("y 100%")] == ["WK"]
    assert kol_views.find_kols("zzz") == []


def _house(amount: str = "100000") -> None:
    with transaction() as s:
        users.fund_house(s, Decimal(amount), key="house", actor="test")


def _market(
    kol_id: int,
    type_: str,
    *,
    opened_ago: dt.timedelta,
    closes_in: dt.timedelta,
    timeframe: str | None = "daily",
) -> int:
    with transaction() as s:
        return open_market(
            s,
            MarketSpec(
                type=type_,
                title=f"{type_} <b>{kol_id}</b>",
                question_key=f"{type_}:{kol_id}:{opened_ago}:{closes_in}",
                kol_a_id=kol_id,
                kol_b_id=None,
                timeframe=timeframe,
                threshold=Decimal(100) if type_ == "follower_growth" else None,
                target_rank=5 if type_ == "top_rank_maintain" else None,
                baseline={"a": {"rank": 3, "followers": 1000}},
                opens_at=NOW - opened_ago,
                closes_at=NOW + closes_in,
                liquidity=Decimal(100),
            ),
            actor="test",
        )


def _cache(db: str, handle: str, fetched_at: dt.datetime) -> None:
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO follower_cache (handle, followers, fetched_at) VALUES (%s, 1000, %s)",
            (handle, fetched_at),
        )


def test_follower_cache_staleness_agrees_with_the_resolver_rule(db: str) -> None:
    _house()
    max_age = followers.max_cache_age()
    day = dt.timedelta(days=1)
    fresh = _market(_kol(db, "F", "WF", "Fresh"), "follower_growth", opened_ago=day, closes_in=day)
    old = _market(_kol(db, "O", "WO", "old"), "follower_growth", opened_ago=day, closes_in=day)
    early = _market(
        _kol(db, "E", "WE", "early"),
        "follower_growth",
        opened_ago=dt.timedelta(minutes=1),
        closes_in=day,
    )
    never = _market(_kol(db, "N", "WN", "never"), "follower_growth", opened_ago=day, closes_in=day)
    nohandle = _market(_kol(db, "H", "WH", None), "follower_growth", opened_ago=day, closes_in=day)
    _market(_kol(db, "L", "WL", "lb"), "top_rank_maintain", opened_ago=day, closes_in=day)
    cached = {
        "fresh": NOW - dt.timedelta(minutes=1),
        "old": NOW - max_age - dt.timedelta(minutes=5),
        "early": NOW - dt.timedelta(minutes=3),  # fetched before this market opened
    }
    for handle, at in cached.items():
        _cache(db, handle, at)
    _cache(db, "lb", NOW - dt.timedelta(days=5))  # no follower market: not counted

    report = freshness.follower_freshness()
    assert report.counts == {"FRESH": 1, "STALE": 2, "NEVER_FETCHED": 1, "NO_HANDLE": 1}
    states = {r["market_id"]: r["state"] for r in report.problems.rows}
    assert states == {old: "STALE", early: "STALE", never: "NEVER_FETCHED", nohandle: "NO_HANDLE"}
    assert fresh not in states and report.problems.total == 4
    # The database's verdict is the resolver's own rule applied as if the market closed now.
    with transaction() as s:
        markets = s.execute(text("SELECT id, opens_at FROM markets")).all()
    opens = dict(markets)
    for market_id, handle in ((fresh, "fresh"), (old, "old"), (early, "early")):
        usable = followers.cache_usable(
            cached[handle],
            opens_at=opens[market_id],
            closes_at=report.now,
            max_age=max_age,
            now=report.now,
        )
        assert usable.usable == (market_id == fresh)


def test_scrape_age_per_timeframe(db: str) -> None:
    lag = get_settings().max_scrape_lag_minutes
    _run(db, "daily", NOW - dt.timedelta(minutes=5), _board(2))
    _run(db, "daily", None, [], status="FAILED", error=("SCRAPE_NO_ROWS", "empty"))
    _run(db, "weekly", NOW - dt.timedelta(minutes=lag + 10), _board(2))
    _run(db, "weekly", NOW - dt.timedelta(minutes=1), _board(2), quarantined=True)
    ages = {a.timeframe: a for a in freshness.scrape_ages()}
    assert not ages["daily"].stale and ages["daily"].last_status == "FAILED"
    assert ages["daily"].last_error_code == "SCRAPE_NO_ROWS"
    assert (ages["daily"].runs_24h, ages["daily"].failed_24h) == (2, 1)
    assert ages["weekly"].stale and ages["weekly"].age_s is not None
    assert ages["weekly"].age_s > (lag + 9) * 60  # the quarantined newer run does not count
    assert ages["monthly"].last_good_at is None and ages["monthly"].stale


def test_would_be_cancelled_lists_due_markets_without_usable_evidence(db: str) -> None:
    _house()
    s = get_settings()
    window = dt.timedelta(minutes=min(s.resolution_grace_minutes, s.max_scrape_lag_minutes))
    hour = dt.timedelta(hours=1)
    kol = _kol(db, "A", "WA", "alpha")
    # Closed 10 minutes ago: a snapshot 5 minutes ago is in its window; a quarantined one is not.
    covered = _market(kol, "profit_streak", opened_ago=hour, closes_in=-dt.timedelta(minutes=10))
    bare = _market(
        kol,
        "top_rank_maintain",
        opened_ago=hour,
        closes_in=-dt.timedelta(minutes=10),
        timeframe="weekly",
    )
    long_ago = _market(kol, "rank_improvement", opened_ago=4 * hour, closes_in=-3 * hour)
    follower_stale = _market(
        kol, "follower_growth", opened_ago=hour, closes_in=-dt.timedelta(minutes=2)
    )
    no_handle = _market(
        _kol(db, "B", "WB", None),
        "follower_growth",
        opened_ago=hour,
        closes_in=-dt.timedelta(minutes=2),
    )
    _market(kol, "sol_gain_threshold", opened_ago=hour, closes_in=hour)  # not due
    _run(db, "daily", NOW - dt.timedelta(minutes=5), _board(3))
    _run(db, "weekly", NOW - dt.timedelta(minutes=5), _board(3), quarantined=True)
    _cache(db, "alpha", NOW - hour + dt.timedelta(minutes=1))  # after the open, but too old

    risk = freshness.would_be_cancelled()
    got = {r["market_id"]: r for r in risk.markets.rows}
    assert set(got) == {bare, long_ago, follower_stale, no_handle}
    assert covered not in got
    assert got[bare]["code"] == "STALE_SCRAPE_DATA"
    assert got[follower_stale]["code"] == "STALE_FOLLOWER_DATA"
    assert got[no_handle]["code"] == "MISSING_METADATA"
    assert got[bare]["cancel_at"] == got[bare]["closes_at"] + window
    assert risk.by_code == {"MISSING_METADATA": 1, "STALE_FOLLOWER_DATA": 1, "STALE_SCRAPE_DATA": 2}
    assert risk.past_deadline == 2  # closed 3 hours ago, and the one missing its handle
    assert [r["market_id"] for r in risk.markets.rows][:2] == sorted(
        [long_ago, no_handle], key=lambda m: got[m]["cancel_at"]
    )

    # A fresh count taken after the close makes the follower market decidable.
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE follower_cache SET fetched_at = now() WHERE handle = 'alpha'")
    assert follower_stale not in {
        r["market_id"] for r in freshness.would_be_cancelled().markets.rows
    }
    page = freshness.would_be_cancelled(limit=1, offset=1)
    assert page.markets.total == 3 and len(page.markets.rows) == 1


def _quarantine_state(run_id: int) -> tuple[bool, str | None, str | None]:
    with transaction() as s:
        row = s.execute(
            text(
                "SELECT quarantined, quarantine_reason, quarantined_by FROM scrape_runs"
                " WHERE id = :id"
            ),
            {"id": run_id},
        ).one()
    return row.quarantined, row.quarantine_reason, row.quarantined_by


def test_analyst_quarantines_and_releases_a_run_audited(db: str) -> None:
    older = _run(db, "daily", NOW - dt.timedelta(hours=2), _board(3))
    newer = _run(db, "daily", NOW - dt.timedelta(hours=1), _board(4))
    assert scrape_views.quarantine_preview(newer).rows_stored == 4

    result = scrape_views.set_quarantine(ANALYST, newer, True, "  ranks look shifted  ")
    assert result.applied
    assert _quarantine_state(newer) == (True, "ranks look shifted", "ana")
    snap = kol_views.latest_snapshot("daily")
    assert snap.run is not None and snap.run.id == older  # the quarantined run is not used
    entry = audit.recent(action="quarantine_scrape_run")[0]
    assert (entry["username"], entry["result"], entry["target"]) == (
        "ana",
        "OK",
        f"scrape_run:{newer}",
    )
    assert entry["reason"] == "ranks look shifted"
    assert entry["before"]["quarantined"] is False and entry["after"]["quarantined"] is True

    # A second click changes nothing and says so.
    again = scrape_views.set_quarantine(ANALYST, newer, True, "double click")
    assert not again.applied
    assert _quarantine_state(newer) == (True, "ranks look shifted", "ana")

    released = scrape_views.set_quarantine(Principal("ops", "operator"), newer, False, "checked")
    assert released.applied and _quarantine_state(newer)[0] is False
    assert audit.recent(action="release_scrape_run")[0]["after"]["quarantined"] is False


def test_quarantine_refusals_change_nothing_and_are_audited(db: str) -> None:
    run_id = _run(db, "daily", NOW, _board(2))
    with pytest.raises(ServiceError) as err:
        scrape_views.set_quarantine(VIEWER, run_id, True, "I think so")
    assert err.value.code == ErrorCode.PERMISSION_DENIED
    refused = audit.recent(action="quarantine_scrape_run")[0]
    assert (refused["username"], refused["result"]) == ("vic", "REFUSED")

    with pytest.raises(ServiceError) as err:
        scrape_views.set_quarantine(None, run_id, True, "anon")
    assert err.value.code == ErrorCode.NOT_AUTHENTICATED

    for blank in ("", "   "):
        with pytest.raises(ServiceError) as err:
            scrape_views.set_quarantine(ANALYST, run_id, True, blank)
        assert err.value.code == ErrorCode.REASON_REQUIRED
    assert audit.recent(action="quarantine_scrape_run")[0]["detail"] == "no reason given"

    with pytest.raises(ServiceError) as err:
        scrape_views.set_quarantine(ANALYST, run_id + 999, True, "gone")
    assert err.value.code == ErrorCode.NOT_FOUND
    assert _quarantine_state(run_id) == (False, None, None)


def test_scrape_runs_failures_rejects_and_artifacts(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    ok = _run(db, "daily", NOW - dt.timedelta(hours=1), _board(2))
    failed = _run(
        db,
        "daily",
        None,
        [],
        status="FAILED",
        error=("SCRAPE_LAYOUT_CHANGED", "no rows"),
        rejects=[(1, {"name": "x"}, "PARSE_MISSING_FIELD")],
    )
    html = tmp_path / "scrapes" / f"{failed}.html"
    html.parent.mkdir()
    html.write_text("<html><script>alert(1)</script></html>")
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE scrape_runs SET html_path = %s, screenshot_path = %s WHERE id = %s",
            (str(html), str(tmp_path / "scrapes" / "gone.png"), failed),
        )

    all_runs = scrape_views.runs()
    assert [r["id"] for r in all_runs.rows] == [failed, ok] and all_runs.total == 2
    failures = scrape_views.runs(status="FAILED")
    assert [(r["id"], r["error_code"]) for r in failures.rows] == [
        (failed, "SCRAPE_LAYOUT_CHANGED")
    ]
    assert scrape_views.runs(timeframe="weekly").total == 0
    detail = scrape_views.run(failed)
    assert scrape_views.artifact(detail["html_path"]) == html.read_bytes()
    assert scrape_views.artifact(detail["screenshot_path"]) is None  # the file is gone
    with pytest.raises(ServiceError) as err:
        scrape_views.artifact("/etc/passwd")
    assert err.value.code == ErrorCode.INVALID_INPUT
    rej = scrape_views.rejects(run_id=failed)
    assert rej.total == 1 and rej.rows[0]["reason_code"] == "PARSE_MISSING_FIELD"
    over_time = scrape_views.success_over_time(days=2)
    assert {(r["status"], r["runs"]) for r in over_time} == {("SUCCESS", 1), ("FAILED", 1)}
    get_settings.cache_clear()


def test_ledger_balances_transactions_and_last_integrity_run(db: str) -> None:
    _house("5000")
    alice = users.register("alice", Decimal("250.50"), actor="test")
    users.register("bob", Decimal("100"), actor="test")
    by_kind = {b.kind: b for b in ledger_views.balances()}
    assert by_kind["USER"].accounts == 2 and by_kind["USER"].balance == Decimal("350.50")
    assert by_kind["HOUSE"].balance == Decimal("5000")
    assert by_kind["ESCROW"].accounts == 0
    assert sum(b.balance for b in by_kind.values()) == 0

    txs = ledger_views.transactions(limit=2)
    assert txs.total == 3 and len(txs.rows) == 2
    newest = txs.rows[0]
    assert newest["kind"] == "DEPOSIT" and newest["moved"] == Decimal("100")
    assert ledger_views.transactions(kind="DEPOSIT").total == 3
    legs = ledger_views.entries(ledger_views.transactions(offset=1, limit=1).rows[0]["id"])
    assert {(e["account_kind"], e["user_id"], e["amount"]) for e in legs} == {
        ("USER", alice, Decimal("250.50")),
        ("EXTERNAL", None, Decimal("-250.50")),
    }

    assert ledger_views.last_integrity_run() is None
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, status, finished_at, counts, error)"
            " VALUES ('integrity', 'h', 1, 'FAILED', now(), '{\"violations\": 2}', 'bad')"
        )
    last = ledger_views.last_integrity_run()
    assert last is not None and (last.status, last.violations) == ("FAILED", 2)


def test_job_schedule_shows_next_run_after_the_last(db: str) -> None:
    started = NOW - dt.timedelta(seconds=10)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, host, pid, started_at, finished_at, status)"
            " VALUES ('resolve', 'h', 1, %s, %s, 'SUCCESS')",
            (started, started),
        )
    jobs = {j["job"]: j for j in freshness.job_schedule()}
    assert set(jobs) == {
        "resolve",
        "scrape_daily",
        "scrape_weekly",
        "scrape_monthly",
        "followers",
        "generate",
        "integrity",
        "reap",
    }
    resolve = jobs["resolve"]
    interval = dt.timedelta(seconds=get_settings().resolve_interval_s)
    assert resolve["last_status"] == "SUCCESS" and resolve["runs"] == 1
    assert resolve["next_run_at"] == started + interval
    assert jobs["integrity"]["last_status"] is None and jobs["integrity"]["next_run_at"]
