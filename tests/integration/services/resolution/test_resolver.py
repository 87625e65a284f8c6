"""The resolver on the real database, with real Chromium against the kolscan stand-in and real
HTTP against the X API stand-in. Time passing is simulated by moving a market's open/close times
back (no money is touched that way)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from db.engine import retrying, transaction
from services.errors import ErrorCode
from services.money import bets, settlement, users
from services.money.integrity import check_integrity
from services.resolution import resolver
from standins.kolscan_standin import KolscanStandin, StandinRow
from standins.xapi_standin import XApiStandin, user_id
from tests.conftest import Standins
from tests.support.accounts import principal
from tests.support.factories import close_market, new_market
from tests.support.money import user_balance


@dataclass
class Sources:
    kolscan: KolscanStandin
    x: XApiStandin
    rows: list[StandinRow]
    kol_ids: dict[str, int]  # by wallet


@pytest.fixture()
def sources(db: str, standins: Standins) -> Sources:
    """The stand-ins, the daily leaderboard's KOLs in the database, and house capital."""
    rows = standins.kolscan.expected_rows("daily")
    kol_ids: dict[str, int] = {}
    with psycopg.connect(db) as conn:
        for r in rows:
            row = conn.execute(
                "INSERT INTO kols (display_name, wallet, x_handle) VALUES (%s, %s, %s)"
                " RETURNING id",
                (r.username, r.wallet, r.x_handle),
            ).fetchone()
            assert row
            kol_ids[r.wallet] = row[0]
    with transaction() as s:
        users.fund_house(s, Decimal("100000"), key="house", actor="test")
    return Sources(standins.kolscan, standins.x, rows, kol_ids)


HOUR = dt.timedelta(hours=1)


def _market(
    src: Sources,
    type_: str,
    a: StandinRow,
    *,
    b: StandinRow | None = None,
    threshold: Decimal | None = None,
    target: int | None = None,
    baseline: dict[str, Any] | None = None,
    timeframe: str | None = "daily",
) -> int:
    now = dt.datetime.now(dt.UTC)
    base = (
        baseline
        if baseline is not None
        else {"a": {"rank": 1, "wins": a.wins, "losses": a.losses, "followers": 1000}}
    )
    with transaction() as s:
        return new_market(
            s,
            type=type_,
            kol_a_id=src.kol_ids[a.wallet],
            kol_b_id=src.kol_ids[b.wallet] if b else None,
            timeframe=timeframe,
            threshold=threshold,
            target_rank=target,
            baseline=base,
            opens_at=now,
        )


def _state(market_id: int) -> dict[str, Any]:
    with transaction() as s:
        row = s.execute(
            text(
                "SELECT status, outcome, cancel_reason, needs_attention FROM markets WHERE id = :id"
            ),
            {"id": market_id},
        ).one()
        return dict(row._mapping)


def _scrape_runs(db: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(db) as conn:
        return [
            tuple(r)
            for r in conn.execute(  # type: ignore[misc]
                "SELECT timeframe, trigger, status FROM scrape_runs ORDER BY id"
            ).fetchall()
        ]


def _bettors(market_id: int, n: int = 2) -> list[int]:
    ids = []
    for i in range(n):
        uid = users.register(f"u{market_id}_{i}", Decimal("100"), actor="test")
        bets.place_bet(
            user_id=uid,
            market_id=market_id,
            side="YES" if i % 2 == 0 else "NO",
            action="BUY",
            amount=Decimal("10"),
        )
        ids.append(uid)
    return ids


def _balance(uid: int) -> Decimal:
    with transaction() as s:
        return user_balance(s, uid)


def _positive_and_negative(src: Sources) -> tuple[StandinRow, StandinRow]:
    pos = next(r for r in src.rows if r.usd_gain > 0)
    neg = next(r for r in src.rows if r.usd_gain < 0)
    return pos, neg


def test_resolves_yes_and_no_from_one_on_demand_scrape_per_timeframe(
    db: str, sources: Sources
) -> None:
    pos, neg = _positive_and_negative(sources)
    yes_m = _market(sources, "profit_streak", pos)
    no_m = _market(sources, "profit_streak", neg)
    weekly = [_market(sources, "profit_streak", r, timeframe="weekly") for r in sources.rows[:3]]
    winners = _bettors(yes_m)
    for m in (yes_m, no_m, *weekly):
        close_market(db, m, 1, open_for=HOUR)

    report = resolver.sweep()

    assert report.resolved_yes + report.resolved_no == 5 and report.cancelled == 0
    assert _state(yes_m)["outcome"] == "YES" and _state(no_m)["outcome"] == "NO"
    runs = _scrape_runs(db)
    assert sorted(runs) == [("daily", "ON_DEMAND", "SUCCESS"), ("weekly", "ON_DEMAND", "SUCCESS")]
    # The YES buyer holds every YES share: paid 1.00 each.
    assert _balance(winners[0]) > Decimal("100") > _balance(winners[1])
    attempts = resolver.attempts(yes_m)
    assert attempts[0]["result"] == "RESOLVED_YES"
    evidence = attempts[0]["evidence"]
    assert evidence["source"] == "scrape_run"
    assert Decimal(evidence["kol_a"]["usd_gain"]) == pos.usd_gain
    assert check_integrity().ok


def test_scrape_failure_defers_within_grace_then_a_later_pass_resolves(
    db: str, sources: Sources
) -> None:
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 1, open_for=HOUR)
    sources.kolscan.set_variant("error")
    report = resolver.sweep()
    assert report.deferred == 1
    assert _state(m) == {
        "status": "OPEN",
        "outcome": None,
        "cancel_reason": None,
        "needs_attention": False,
    }
    assert resolver.attempts(m)[0]["error_code"] == "SCRAPE_FAILED"
    sources.kolscan.set_variant("normal")
    assert resolver.sweep().resolved_yes == 1
    assert _state(m)["outcome"] == "YES"


@pytest.mark.parametrize(
    ("variant", "code"), [("error", "SCRAPE_FAILED"), ("layout_changed", "SCRAPE_FAILED")]
)
def test_failed_scrape_past_grace_cancels_and_refunds(
    db: str, sources: Sources, variant: str, code: str
) -> None:
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    uids = _bettors(m)
    close_market(db, m, 45, open_for=HOUR)  # past the 30-minute grace, inside the 60-minute lag
    sources.kolscan.set_variant(variant)
    report = resolver.sweep()
    assert report.cancelled == 1
    assert _state(m)["status"] == "CANCELLED" and _state(m)["cancel_reason"] == code
    assert _state(m)["outcome"] is None
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]
    assert check_integrity().ok


def test_kol_missing_from_the_snapshot_defers_then_cancels(db: str, sources: Sources) -> None:
    with psycopg.connect(db) as conn:
        ghost = conn.execute(
            "INSERT INTO kols (display_name, wallet) VALUES ('Ghost',"
            " 'GhostWa11etGhostWa11etGhostWa11et') RETURNING id"
        ).fetchone()
    assert ghost
    ghost_row = StandinRow(
        "Ghost",
        "GhostWa11etGhostWa11etGhostWa11et",
        (),
        "",
        "",
        "",
        True,
        "Ghost",
        None,
        0,
        0,
        Decimal(0),
        Decimal(0),
    )
    sources.kol_ids[ghost_row.wallet] = ghost[0]
    m = _market(sources, "profit_streak", ghost_row)
    close_market(db, m, 1, open_for=HOUR)
    assert resolver.sweep().deferred == 1
    close_market(db, m, 31, open_for=HOUR)
    assert resolver.sweep().cancelled == 1
    assert _state(m)["cancel_reason"] == "MISSING_KOL_DATA"


def test_only_stale_snapshots_cancel_at_once_without_scraping(db: str, sources: Sources) -> None:
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(
        db, m, 90, open_for=HOUR
    )  # the lag window [close, close + 60 min] is over: no scrape can help
    report = resolver.sweep()
    assert report.cancelled == 1 and _state(m)["cancel_reason"] == "STALE_SCRAPE_DATA"
    assert _scrape_runs(db) == []


def test_a_quarantined_run_is_never_used(db: str, sources: Sources) -> None:
    from services.sources import scraper

    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 45, open_for=HOUR)
    run = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE scrape_runs SET quarantined = true, quarantine_reason = 'bad' WHERE id = %s",
            (run.run_id,),
        )
    sources.kolscan.set_variant("error")
    assert resolver.sweep().cancelled == 1
    assert _state(m)["cancel_reason"] == "SCRAPE_FAILED"


def _follower_market(db: str, sources: Sources, baseline: int, threshold: int) -> tuple[int, str]:
    row = next(r for r in sources.rows if r.x_handle)
    assert row.x_handle
    m = _market(
        sources,
        "follower_growth",
        row,
        threshold=Decimal(threshold),
        timeframe=None,
        baseline={"a": _pinned(row.x_handle, baseline)},
    )
    return m, row.x_handle


def _pinned(handle: str, followers: int) -> dict[str, Any]:
    """A follower baseline pinning the stand-in's account of `handle`, as the generator does."""
    return {"followers": followers, "x_user_id": user_id(handle), "x_handle": handle.lower()}


def _cache(
    db: str, handle: str, followers: int, fetched_sql: str, x_user_id: str | None = None
) -> None:
    """A cached count of `handle`, of the stand-in's account with that handle unless told."""
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO follower_cache (handle, x_user_id, followers, fetched_at) VALUES"
            f" (%s, %s, %s, {fetched_sql}) ON CONFLICT (handle) DO UPDATE SET"
            " followers = excluded.followers, fetched_at = excluded.fetched_at,"
            " x_user_id = excluded.x_user_id",
            (handle.lower(), x_user_id or user_id(handle), followers),
        )


def test_follower_market_resolves_from_the_x_api(db: str, sources: Sources) -> None:
    m, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    sources.x.set_followers(handle, 1500)
    close_market(db, m, 1, open_for=HOUR)
    assert resolver.sweep().resolved_yes == 1
    evidence = resolver.attempts(m)[0]["evidence"]
    assert evidence["source"] == "x_api" and evidence["followers"] == 1500


def test_x_api_down_uses_a_usable_cache(db: str, sources: Sources) -> None:
    m, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    close_market(db, m, 1, open_for=HOUR)
    _cache(db, handle, 1499, "now() - interval '2 minutes'")  # after open, within max age
    sources.x.set_fault("error_500")
    assert resolver.sweep().resolved_no == 1
    evidence = resolver.attempts(m)[0]["evidence"]
    assert evidence["source"] == "follower_cache" and evidence["followers"] == 1499


@pytest.mark.parametrize("fault", ["error_500", "rate_limit", "timeout"])
def test_x_api_down_with_a_cache_older_than_the_market_defers_then_cancels(
    db: str, sources: Sources, fault: str
) -> None:
    m, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    uids = _bettors(m)
    close_market(db, m, 1, open_for=HOUR)
    _cache(db, handle, 9999, "now() - interval '3 hours'")  # before the market opened
    sources.x.set_fault(fault)
    assert resolver.sweep().deferred == 1
    assert resolver.attempts(m)[0]["error_code"] == "X_API_UNAVAILABLE"
    close_market(db, m, 31, open_for=HOUR)
    assert resolver.sweep().cancelled == 1
    assert _state(m)["cancel_reason"] == "X_API_UNAVAILABLE" and _state(m)["outcome"] is None
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]


def test_missing_metadata_cancels_at_once(db: str, sources: Sources) -> None:
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "streak_continuation", pos, baseline={})
    close_market(db, m, 1, open_for=HOUR)
    assert resolver.sweep().cancelled == 1
    assert _state(m)["cancel_reason"] == "MISSING_METADATA"


def test_settlement_failure_rolls_back_then_cancels_and_refunds(
    db: str, sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    uids = _bettors(m)
    close_market(db, m, 1, open_for=HOUR)
    exploded: list[str] = []

    def explode(step: str) -> None:
        # The settlement fails once, mid-way; the cancel and refund that follows goes through.
        if step == "after_ledger" and not exploded:
            exploded.append(step)
            raise RuntimeError("injected settlement failure")

    monkeypatch.setattr(settlement, "_checkpoint", explode)
    report = resolver.sweep()
    assert exploded == ["after_ledger"]
    assert report.cancelled == 1
    assert _state(m)["cancel_reason"] == "SETTLEMENT_FAILED" and _state(m)["outcome"] is None
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]
    results = [a["result"] for a in resolver.attempts(m)]
    assert results == ["CANCELLED", "ERROR"]
    assert check_integrity().ok


def test_retry_now_refuses_a_market_that_is_not_due(db: str, sources: Sources) -> None:
    from services.errors import ServiceError

    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    with pytest.raises(ServiceError) as err:
        resolver.retry_now(m, actor="op")
    assert err.value.code == ErrorCode.MARKET_NOT_OPEN
    close_market(db, m, 1, open_for=HOUR)
    assert resolver.retry_now(m, actor="op").resolved_yes == 1


def test_an_attempt_is_not_recorded_against_a_market_another_caller_made_final(
    db: str, sources: Sources
) -> None:
    """An overlapping pass that found no evidence must not log DEFERRED on a market that an
    operator's retry (or another sweep) resolved meanwhile."""

    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 1, open_for=HOUR)
    [due] = resolver._claim(10, "slow-pass", dt.timedelta(minutes=30))
    retrying(
        lambda ses: settlement.settle(ses, m, "YES", actor="operator", reason="resolved by hand")
    )
    sources.kolscan.set_variant("error")
    report = resolver.SweepReport()
    p = resolver._new_pass("slow-pass")
    resolver._gather_snapshots(p, [due])
    resolver._handle([due], p, report)
    assert [a["result"] for a in resolver.attempts(m)] == []
    assert _state(m)["outcome"] == "YES"


def test_a_kol_missing_from_a_partial_snapshot_is_read_from_the_next_in_the_window(
    db: str, sources: Sources
) -> None:
    from services.sources import scraper

    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 5, open_for=HOUR)
    first = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    second = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    with psycopg.connect(db) as conn:  # the first snapshot lost KOL A's row (a reject)
        conn.execute(
            "DELETE FROM scraped_kols WHERE run_id = %s AND wallet = %s", (first.run_id, pos.wallet)
        )
    assert resolver.sweep().resolved_yes == 1
    assert resolver.attempts(m)[0]["evidence"]["run_id"] == second.run_id
    assert len(_scrape_runs(db)) == 2  # no on-demand scrape: the window had snapshots


def test_an_unexpected_error_retries_within_grace_then_cancels_and_refunds(
    db: str, sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in deciding (injected here) never resolves the market: the attempt is an ERROR,
    retried while the grace period lasts, then the market is cancelled and refunded."""
    from services.resolution import outcomes

    def broken(*_args: object) -> outcomes.Decision:
        raise RuntimeError("injected bug in an outcome rule")

    monkeypatch.setattr(outcomes, "decide", broken)
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    uids = _bettors(m)
    close_market(db, m, 1, open_for=HOUR)
    assert resolver.sweep().errors == 1
    assert _state(m)["status"] == "OPEN"
    assert resolver.attempts(m)[0]["result"] == "ERROR"
    close_market(db, m, 31, open_for=HOUR)
    report = resolver.sweep()
    assert report.errors == 1 and report.cancelled == 1
    assert _state(m)["cancel_reason"] == "INTERNAL_ERROR" and _state(m)["outcome"] is None
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]
    assert check_integrity().ok


# -- follower markets read the account pinned when they opened ------------------------------------


def _other_handle(sources: Sources, handle: str) -> str:
    return next(
        r.x_handle for r in sources.rows if r.x_handle and r.x_handle.lower() != handle.lower()
    )


def _show_handle(db: str, sources: Sources, handle: str, shown: str) -> None:
    """A later scrape overwrites the KOL's handle with another profile's."""
    row = next(r for r in sources.rows if r.x_handle == handle)
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE kols SET x_handle = %s WHERE id = %s", (shown, sources.kol_ids[row.wallet])
        )


def test_a_follower_market_is_decided_by_its_pinned_account_not_the_handle_shown_now(
    db: str, sources: Sources
) -> None:
    """Defect 1 of issue 16: the KOL's own account stays at 1,000 followers; the leaderboard now
    links an account with 900,000. The market is decided from the account it opened on."""
    m, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    other = _other_handle(sources, handle)
    sources.x.set_followers(handle, 1000)
    sources.x.set_followers(other, 900_000)
    _show_handle(db, sources, handle, other)
    close_market(db, m, 1, open_for=HOUR)
    report = resolver.sweep()
    assert _state(m)["outcome"] != "YES"
    assert report.resolved_no == 1
    evidence = resolver.attempts(m)[0]["evidence"]
    assert evidence["x_user_id"] == user_id(handle) and evidence["followers"] == 1000


def test_x_api_down_never_falls_back_on_another_accounts_cached_count(
    db: str, sources: Sources
) -> None:
    m, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    other = _other_handle(sources, handle)
    _show_handle(db, sources, handle, other)
    close_market(db, m, 1, open_for=HOUR)
    _cache(db, other, 900_000, "now() - interval '2 minutes'")  # usable, but not the pinned account
    # The pinned handle now belongs to someone else: a count under it is not the pinned account's.
    _cache(db, handle, 800_000, "now() - interval '2 minutes'", x_user_id="42")
    sources.x.set_fault("error_500")
    assert resolver.sweep().deferred == 1
    assert _state(m)["status"] == "OPEN"
    assert resolver.attempts(m)[0]["error_code"] == "X_API_UNAVAILABLE"


@pytest.mark.parametrize("fault", ["not_found", "suspended"])
def test_a_pinned_account_that_is_gone_is_never_decided_even_with_a_cached_count(
    db: str, sources: Sources, fault: str
) -> None:
    m, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    uids = _bettors(m)
    close_market(db, m, 1, open_for=HOUR)
    _cache(db, handle, 5000, "now() - interval '2 minutes'")
    sources.x.set_fault(fault, handles=[handle])
    assert resolver.sweep().deferred == 1
    assert resolver.attempts(m)[0]["error_code"] == "MISSING_KOL_DATA"
    close_market(db, m, 31, open_for=HOUR)
    assert resolver.sweep().cancelled == 1
    assert _state(m)["cancel_reason"] == "MISSING_KOL_DATA" and _state(m)["outcome"] is None
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]


def test_a_follower_market_without_a_pinned_account_cancels_at_once(
    db: str, sources: Sources
) -> None:
    """An old market whose baseline does not say which account it was counted from cannot be
    matched to one: invalid metadata, refunded at once, whatever the handle shows now."""
    row = next(r for r in sources.rows if r.x_handle)
    assert row.x_handle
    m = _market(
        sources,
        "follower_growth",
        row,
        threshold=Decimal(500),
        timeframe=None,
        baseline={"a": {"followers": 1000}},
    )
    sources.x.set_followers(row.x_handle, 900_000)
    close_market(db, m, 1, open_for=HOUR)
    assert resolver.sweep().cancelled == 1
    assert _state(m)["cancel_reason"] == "MISSING_METADATA"


@pytest.mark.parametrize(
    "baseline",
    [
        [{"followers": 1000}],
        "followers",
        {"a": [1000]},
        {"a": "1000"},
        {"a": {"followers": [1000], "x_user_id": "1", "x_handle": "x"}},
    ],
    ids=["a list", "a string", "a is a list", "a is a string", "followers a list"],
)
def test_a_baseline_of_the_wrong_shape_cancels_at_once_as_invalid_metadata(
    db: str, sources: Sources, baseline: Any
) -> None:
    """Defect 5b of issue 16: a stored baseline that is not the object expected is invalid
    metadata, cancelled on the first pass, not an error retried for the whole grace period."""
    import json

    m, _handle = _follower_market(db, sources, baseline=1000, threshold=500)
    uids = _bettors(m)
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE markets SET baseline = %s::jsonb WHERE id = %s", (json.dumps(baseline), m)
        )
    close_market(db, m, 1, open_for=HOUR)
    report = resolver.sweep()
    assert (report.cancelled, report.errors) == (1, 0)
    assert _state(m)["cancel_reason"] == "MISSING_METADATA"
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]


def _claimed(db: str) -> int:
    """OPEN markets still leased (a final market's lease means nothing)."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM markets WHERE status = 'OPEN' AND claimed_by IS NOT NULL"
        ).fetchone()
    assert row
    return int(row[0])


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every on-demand scrape raise as a full artifacts disk would; returns the calls."""
    from services.sources import scraper

    calls: list[str] = []

    def full(timeframe: str, **_kwargs: object) -> scraper.ScrapeResult:
        calls.append(str(timeframe))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scraper, "scrape_leaderboard", full)
    return calls


def test_a_scrape_that_raises_fails_into_evidence_not_out_of_the_sweep(
    db: str, sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The markets that needed the scrape get a failed scrape (deferred, or cancelled past
    grace); a follower market with good X data is decided in the same pass; nothing stays
    claimed."""
    pos, _ = _positive_and_negative(sources)
    waiting = _market(sources, "profit_streak", pos)
    close_market(db, waiting, 1, open_for=HOUR)
    late = _market(sources, "profit_streak", pos)
    uids = _bettors(late)
    close_market(db, late, 45, open_for=HOUR)  # past the grace, inside the lag
    follower, handle = _follower_market(db, sources, baseline=1000, threshold=500)
    sources.x.set_followers(handle, 1500)
    close_market(db, follower, 1, open_for=HOUR)
    calls = _disk_full(monkeypatch)

    report = resolver.sweep()

    assert calls == ["daily"]
    assert (report.resolved_yes, report.deferred, report.cancelled) == (1, 1, 1)
    assert _state(follower)["outcome"] == "YES"
    deferred = resolver.attempts(waiting)[0]
    assert (deferred["result"], deferred["error_code"]) == ("DEFERRED", "SCRAPE_FAILED")
    assert "No space left on device" in deferred["error_detail"]
    assert _state(waiting)["status"] == "OPEN"
    assert _state(late)["cancel_reason"] == "SCRAPE_FAILED"
    assert resolver.attempts(late)[0]["result"] == "CANCELLED"
    assert [_balance(u) for u in uids] == [Decimal("100"), Decimal("100")]
    assert _claimed(db) == 0
    assert check_integrity().ok


def test_an_artifacts_folder_that_refuses_writes_defers_the_market(
    db: str, sources: Sources, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from config import get_settings

    not_a_folder = tmp_path / "artifacts-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("ARTIFACTS_DIR", str(not_a_folder))
    get_settings.cache_clear()
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 1, open_for=HOUR)
    sources.kolscan.set_variant("error")  # a failed page: its HTML and screenshot are saved

    report = resolver.sweep()

    assert report.deferred == 1
    assert resolver.attempts(m)[0]["error_code"] == "SCRAPE_FAILED"
    assert _claimed(db) == 0


def test_retry_now_reports_a_scrape_that_raises_as_a_deferral(
    db: str, sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 1, open_for=HOUR)
    _disk_full(monkeypatch)

    report = resolver.retry_now(m, actor="op")

    assert report.deferred == 1
    assert resolver.attempts(m)[0]["error_code"] == "SCRAPE_FAILED"
    assert _claimed(db) == 0


def test_a_pass_scrapes_each_timeframe_once_whatever_the_batch_size(
    db: str, sources: Sources
) -> None:
    daily = [_market(sources, "profit_streak", r) for r in sources.rows[:5]]
    weekly = [_market(sources, "profit_streak", r, timeframe="weekly") for r in sources.rows[:2]]
    for m in (*daily, *weekly):
        close_market(db, m, 1, open_for=HOUR)
    sources.kolscan.set_variant("error")

    report = resolver.sweep(batch_size=2)

    assert report.claimed == 7 and report.deferred == 7
    assert sorted(_scrape_runs(db)) == [
        ("daily", "ON_DEMAND", "FAILED"),
        ("weekly", "ON_DEMAND", "FAILED"),
    ]


def test_a_run_quarantined_after_the_pass_read_it_decides_nothing(
    db: str, sources: Sources
) -> None:
    """The pass has read the run as usable; an analyst quarantines it before the market is
    settled: the settlement re-checks the run under a lock and the market is decided again on
    the next pass, without it."""
    from services.ops.quarantine import set_quarantine
    from services.sources import scraper

    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 5, open_for=HOUR)
    run = scraper.scrape_leaderboard("daily", trigger="MANUAL")
    [due] = resolver._claim(10, "slow-pass", dt.timedelta(minutes=30))
    p = resolver._new_pass("slow-pass")
    resolver._gather_snapshots(p, [due])
    set_quarantine(principal("ana", "analyst"), run.run_id, True, "ranks shifted")

    report = resolver.SweepReport()
    resolver._handle([due], p, report)

    assert (report.resolved_yes, report.resolved_no, report.deferred) == (0, 0, 1)
    assert _state(m)["status"] == "OPEN"
    attempt = resolver.attempts(m)[0]
    assert attempt["result"] == "DEFERRED"
    assert f"scrape run {run.run_id}" in attempt["error_detail"]
    assert _claimed(db) == 0
    # The next pass decides without it: the window has no usable run, so it scrapes anew.
    assert resolver.sweep().resolved_yes == 1
    assert resolver.attempts(m)[0]["evidence"]["run_id"] != run.run_id


def test_snapshots_that_cannot_be_read_defer_the_market_without_scraping(
    db: str, sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the usable runs fails (injected): that is no evidence of stale data, so the market
    is deferred as an internal error (cancelled only once the grace runs out)."""

    def unreadable(*_args: object) -> list[tuple[int, dt.datetime]]:
        raise psycopg.OperationalError("injected: connection lost")

    pos, _ = _positive_and_negative(sources)
    m = _market(sources, "profit_streak", pos)
    close_market(db, m, 1, open_for=HOUR)
    monkeypatch.setattr(resolver, "_runs", unreadable)

    assert resolver.sweep().deferred == 1
    attempt = resolver.attempts(m)[0]
    assert (attempt["result"], attempt["error_code"]) == ("DEFERRED", "INTERNAL_ERROR")
    assert "connection lost" in attempt["error_detail"]
    assert _scrape_runs(db) == [] and _claimed(db) == 0
