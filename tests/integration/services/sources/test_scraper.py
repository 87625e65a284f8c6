"""The scraper with real Chromium against the kolscan stand-in, storing into the real database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from config import PROJECT_ROOT, get_settings
from db.engine import read_session
from db.models import Kol, ScrapedKol, ScrapeReject, ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.ops.jobs import reap_abandoned
from services.sources.browser_worker import ARTIFACTS_BUDGET_S
from services.sources.scraper import ScrapeResult, scrape_leaderboard
from standins.kolscan_standin import BIG_ROWS, KolscanStandin, StandinRow, leaderboard
from tests.support.processes import browsers_watched

pytestmark = pytest.mark.browser
BUCKET = 4_242


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Set environment variables for this test only (settings are re-read both ways)."""
    saved: dict[str, str | None] = {}

    def set_env(**values: str) -> None:
        for key, value in values.items():
            saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        get_settings.cache_clear()

    set_env(ARTIFACTS_DIR=str(tmp_path / "artifacts"))
    yield set_env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture()
def site(db: str, env: Callable[..., None]) -> Iterator[KolscanStandin]:
    with KolscanStandin(bucket=BUCKET) as standin:
        yield standin


def _stored(run_id: int) -> list[tuple[Any, ...]]:
    with read_session() as s:
        rows = s.execute(
            select(
                ScrapedKol.rank,
                ScrapedKol.username,
                ScrapedKol.wallet,
                ScrapedKol.x_handle,
                ScrapedKol.wins,
                ScrapedKol.losses,
                ScrapedKol.sol_gain,
                ScrapedKol.usd_gain,
            )
            .where(ScrapedKol.run_id == run_id)
            .order_by(ScrapedKol.rank)
        )
        return [tuple(r) for r in rows]


def _expected(rows: list[StandinRow]) -> list[tuple[Any, ...]]:
    return [
        (rank, r.username, r.wallet, r.x_handle, r.wins, r.losses, r.sol_gain, r.usd_gain)
        for rank, r in enumerate(rows, start=1)
        if r.readable
    ]


def _run(run_id: int) -> ScrapeRun:
    with read_session() as s:
        run = s.get(ScrapeRun, run_id)
        assert run is not None
        s.expunge(run)
        return run


def test_normal_page_stores_every_row_exactly_and_follows_time(site: KolscanStandin) -> None:
    first = scrape_leaderboard("daily", base_url=site.base_url)
    assert (first.status, first.rows_found, first.rows_stored, first.rows_rejected) == (
        "SUCCESS",
        40,
        40,
        0,
    )
    assert _stored(first.run_id) == _expected(site.expected_rows("daily"))
    run = _run(first.run_id)
    assert run.trigger == "ON_DEMAND" and run.source_url.endswith("/leaderboard?timeframe=1")
    assert run.snapshot_at == first.snapshot_at and run.finished_at is not None
    assert run.html_path is None and run.error_code is None
    with read_session() as s:
        scraped_at = s.scalars(
            select(ScrapedKol.scraped_at).where(ScrapedKol.run_id == first.run_id).distinct()
        ).all()
        kols = {k.wallet: (k.display_name, k.x_handle) for k in s.scalars(select(Kol))}
    assert scraped_at == [first.snapshot_at]
    assert kols == {r.wallet: (r.username, r.x_handle) for r in site.expected_rows("daily")}

    # Five minutes later the board has moved: a new run, new ranks, the same 40 KOLs.
    site.fixed_bucket = BUCKET + 1
    second = scrape_leaderboard("daily", base_url=site.base_url, trigger="SCHEDULE")
    assert second.status == "SUCCESS" and second.run_id != first.run_id
    assert _stored(second.run_id) == _expected(site.expected_rows("daily"))
    assert _stored(second.run_id) != _stored(first.run_id)
    with read_session() as s:
        assert s.scalar(select(func.count()).select_from(Kol)) == 40


def test_big_page_is_scrolled_to_the_end(site: KolscanStandin) -> None:
    site.set_variant("big")
    result = scrape_leaderboard("monthly", base_url=site.base_url)
    assert (result.status, result.rows_stored) == ("SUCCESS", BIG_ROWS)
    assert _stored(result.run_id) == _expected(site.expected_rows("monthly"))
    assert _run(result.run_id).source_url.endswith("timeframe=30")


def test_odd_values_are_normalised_and_the_unreadable_row_is_rejected(
    site: KolscanStandin,
) -> None:
    scrape_leaderboard("weekly", base_url=site.base_url)  # the roster, with every handle
    site.set_variant("odd")
    expected = site.expected_rows("weekly")
    unreadable = next(i for i, r in enumerate(expected, start=1) if not r.readable)

    result = scrape_leaderboard("weekly", base_url=site.base_url)

    assert (result.status, result.rows_found, result.rows_stored, result.rows_rejected) == (
        "PARTIAL",
        40,
        39,
        1,
    )
    stored = _stored(result.run_id)
    assert stored == _expected(expected)
    assert unreadable not in [row[0] for row in stored]  # a gap in the ranks, not a zero
    with read_session() as s:
        reject = s.scalars(select(ScrapeReject).where(ScrapeReject.run_id == result.run_id)).one()
        jijo = s.scalars(select(Kol).where(Kol.display_name == "Jijo")).one()
    assert (reject.position, reject.field, reject.reason_code) == (
        unreadable,
        "sol_gain",
        "PARSE_BAD_NUMBER",
    )
    assert reject.raw["sol"] == "NaN Sol" and reject.raw["href"].startswith("/account/")
    # Nothing is zero that the page did not show as zero.
    zero_rows = [row for row in stored if row[6] == 0 or row[7] == 0]
    assert [(r[4], r[5]) for r in zero_rows] == [(0, 0)]
    assert {r.usd for r in expected} >= {"($0)"}
    assert any("M)" in r.usd for r in expected) and any("K Sol" in r.sol for r in expected)
    # The odd page shows no handle for Jijo: the scraped row says so, the known handle stays.
    assert next(row[3] for row in stored if row[1] == "Jijo") is None
    assert jijo.x_handle == "jijo_sol"


@pytest.mark.parametrize(
    ("variant", "code", "page_text", "timeout_s"),
    [
        ("layout_changed", ErrorCode.SCRAPE_LAYOUT_CHANGED, "lb-card", None),
        ("empty", ErrorCode.SCRAPE_NO_ROWS, "No KOLs found", None),
        ("slow", ErrorCode.SCRAPE_TIMEOUT, "Loading", 3),  # the stand-in waits two minutes
        ("error", ErrorCode.SCRAPE_HTTP_ERROR, "500 Internal Server Error", None),
    ],
)
def test_failed_page_is_kept_for_analysis_and_stores_nothing(
    site: KolscanStandin, variant: str, code: ErrorCode, page_text: str, timeout_s: float | None
) -> None:
    site.set_variant(variant)
    with browsers_watched() as chromium:
        result = scrape_leaderboard("daily", base_url=site.base_url, timeout_s=timeout_s)
    assert chromium, "no Chromium process was seen: the watcher is not watching"
    _assert_failed(result, code)
    assert page_text in Path(result.html_path or "").read_text(encoding="utf-8")
    png = Path(result.screenshot_path or "").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert Path(result.html_path or "").parent == get_settings().artifacts_dir / "scrapes"
    run = _run(result.run_id)
    assert (run.html_path, run.screenshot_path) == (result.html_path, result.screenshot_path)
    if variant == "layout_changed":
        assert result.rows_found == 40 and result.rows_rejected == 40
        assert "40 of 40 rows unreadable" in (result.error_message or "")
        with read_session() as s:
            rejects = s.scalar(select(func.count()).where(ScrapeReject.run_id == result.run_id))
        assert rejects == 40
    if variant == "slow":
        assert "after 3s" in (result.error_message or "")


def _assert_failed(result: ScrapeResult, code: ErrorCode) -> None:
    assert (result.status, result.error_code, result.rows_stored) == ("FAILED", code, 0)
    assert not result.ok and result.error_message
    run = _run(result.run_id)
    assert (run.status, run.error_code, run.rows_stored) == ("FAILED", code.value, 0)
    assert run.finished_at is not None and run.snapshot_at is None
    assert _stored(result.run_id) == []
    with read_session() as s:
        assert s.scalar(select(func.count()).select_from(Kol)) == 0


def test_unreachable_site_is_a_navigation_error(site: KolscanStandin) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with browsers_watched() as chromium:
        result = scrape_leaderboard("daily", base_url=f"http://127.0.0.1:{port}", timeout_s=5)
    assert chromium
    _assert_failed(result, ErrorCode.SCRAPE_NAVIGATION_ERROR)
    assert "ERR_CONNECTION_REFUSED" in (result.error_message or "")


def test_missing_browser_is_a_browser_error(
    site: KolscanStandin, env: Callable[..., None], tmp_path: Path
) -> None:
    env(CHROMIUM_PATH=str(tmp_path / "no-chromium"))
    result = scrape_leaderboard("daily", base_url=site.base_url)
    _assert_failed(result, ErrorCode.SCRAPE_BROWSER_ERROR)
    assert result.html_path is None  # there was no page to keep


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeframe": "hourly"}, "timeframe"),
        ({"timeframe": "daily", "trigger": "WHENEVER"}, "trigger"),
        ({"timeframe": "daily", "timeout_s": 0}, "timeout"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    site: KolscanStandin, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ServiceError) as err:
        scrape_leaderboard(base_url=site.base_url, **kwargs)
    assert err.value.code == ErrorCode.INVALID_INPUT and message in err.value.message
    with read_session() as s:
        assert s.scalar(select(func.count()).select_from(ScrapeRun)) == 0


def test_scheduler_threads_scrape_at_the_same_time(site: KolscanStandin) -> None:
    results: dict[str, ScrapeResult] = {}
    errors: list[BaseException] = []

    def work(timeframe: str) -> None:
        try:
            results[timeframe] = scrape_leaderboard(
                timeframe, trigger="SCHEDULE", base_url=site.base_url
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tf,)) for tf in ("daily", "weekly")]
    with browsers_watched():
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    for timeframe, result in results.items():
        assert result.status == "SUCCESS"
        assert _stored(result.run_id) == _expected(site.expected_rows(timeframe))
    assert set(results) == {"daily", "weekly"}


def test_command_line_scrape(site: KolscanStandin) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.sources.scraper",
            "--timeframe=weekly",
            f"--base-url={site.base_url}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "weekly: SUCCESS" in proc.stdout and "stored 40" in proc.stdout
    with read_session() as s:
        run = s.scalars(select(ScrapeRun)).one()
    assert (run.trigger, run.status, run.rows_stored) == ("MANUAL", "SUCCESS", 40)


# --- failures that must stay inside the run ---------------------------------------------------


def _scrape_in_thread(limit_s: float, **kwargs: Any) -> tuple[ScrapeResult, float]:
    """Scrape in a thread and give up waiting after `limit_s`: a scrape that hangs fails the
    test instead of hanging it."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = scrape_leaderboard("daily", **kwargs)
        except BaseException as exc:
            outcome["error"] = exc
        outcome["took"] = time.monotonic() - started

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"the scrape was still running after {limit_s}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], outcome["took"]


def test_a_page_that_never_yields_ends_at_its_deadline(site: KolscanStandin) -> None:
    # The rows arrive, then the page's script busy-loops: reading them can never answer.
    site.set_variant("busy")
    with browsers_watched() as chromium:
        result, took = _scrape_in_thread(40, base_url=site.base_url, timeout_s=2)
    assert chromium
    _assert_failed(result, ErrorCode.SCRAPE_TIMEOUT)
    assert "killed" in (result.error_message or "")
    # Each browser step gets 2 s: starting Chromium, the page and its rows, scrolling, reading;
    # when the page stops answering before its rows are seen, saving it gets its own budget.
    assert took < 4 * 2 + ARTIFACTS_BUDGET_S + 3


def test_artifacts_that_cannot_be_saved_leave_a_failed_run_not_a_crash(
    site: KolscanStandin, env: Callable[..., None], tmp_path: Path
) -> None:
    # A folder that cannot be created (its parent is a file; root ignores permission bits).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    env(ARTIFACTS_DIR=str(blocker / "artifacts"))
    site.set_variant("error")
    with browsers_watched():
        result = scrape_leaderboard("daily", base_url=site.base_url)
    _assert_failed(result, ErrorCode.SCRAPE_HTTP_ERROR)
    assert "HTTP 500" in (result.error_message or "")
    assert "no HTML or screenshot saved" in (result.error_message or "")
    assert (result.html_path, result.screenshot_path) == (None, None)
    assert _run(result.run_id).error_message == result.error_message


def test_a_database_that_refuses_the_rows_leaves_a_failed_run_not_a_crash(
    site: KolscanStandin, db: str
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_rows() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'disk says no'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_rows BEFORE INSERT ON scraped_kols"
            " FOR EACH ROW EXECUTE FUNCTION refuse_rows()"
        )
    try:
        result = scrape_leaderboard("daily", base_url=site.base_url)
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse_rows ON scraped_kols")
            conn.execute("DROP FUNCTION refuse_rows()")
    _assert_failed(result, ErrorCode.INTERNAL_ERROR)
    assert "disk says no" in (result.error_message or "")


def test_a_run_the_reaper_closed_is_never_overwritten_by_its_scrape(db: str) -> None:
    # Rows arrive late enough for the reaper to close the run while the page is still loading.
    with KolscanStandin(bucket=BUCKET, first_ms=2_000) as slow_site:
        outcome: dict[str, ScrapeResult] = {}
        scraping = threading.Thread(
            target=lambda: outcome.update(
                result=scrape_leaderboard("daily", base_url=slow_site.base_url)
            )
        )
        scraping.start()
        _wait_for_running_run()
        assert reap_abandoned(older_than_s=0)["scrape_runs"] == 1
        scraping.join(60)
    result = outcome["result"]
    assert (result.status, result.error_code, result.rows_stored) == (
        "FAILED",
        ErrorCode.ABANDONED,
        0,
    )
    run = _run(result.run_id)
    assert (run.status, run.error_code, run.rows_stored) == ("FAILED", "ABANDONED", 0)
    assert run.snapshot_at is None  # never usable evidence
    assert _stored(result.run_id) == []
    with read_session() as s:
        assert s.scalar(select(func.count()).select_from(Kol)) == 0


def _wait_for_running_run() -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with read_session() as s:
            if s.scalar(select(func.count()).where(ScrapeRun.status == "RUNNING")):
                return
        time.sleep(0.05)
    raise AssertionError("no RUNNING scrape run appeared")


# --- the stand-in itself (no browser) ---------------------------------------------------------


def test_standin_data_moves_both_ways_over_time() -> None:
    buckets = [leaderboard("daily", b) for b in range(BUCKET, BUCKET + 6)]
    gains: dict[str, list[Decimal]] = {r.wallet: [] for r in buckets[0]}
    for rows in buckets:
        for r in rows:
            gains[r.wallet].append(r.sol_gain)
    assert leaderboard("daily", BUCKET) == buckets[0]  # deterministic
    assert len({tuple(r.wallet for r in rows) for rows in buckets}) == 6  # ranks swap
    assert any(min(g) < 0 < max(g) for g in gains.values())  # a KOL can end up or down
    assert [r.wallet for r in leaderboard("weekly", BUCKET)] != [r.wallet for r in buckets[0]]


def test_standin_variant_switch_over_http() -> None:
    with KolscanStandin() as standin:
        url = f"{standin.base_url}/__standin__/variant"
        shell = httpx.get(f"{standin.base_url}/leaderboard?timeframe=7")
        assert shell.status_code == 200
        assert "/account/" not in shell.text.split("<script>")[0]  # rows come from the script
        ok = httpx.post(url, json={"variant": "big", "rows": 700})
        assert ok.status_code == 200 and ok.json() == {"variant": "big"}
        assert len(standin.expected_rows("daily")) == 700
        bad = httpx.post(url, json={"variant": "sideways"})
        assert bad.status_code == 400 and standin.variant == "big"
        assert httpx.post(url, content=b"not json").status_code == 400
        httpx.post(url, json={"variant": "error"})
        assert httpx.get(f"{standin.base_url}/leaderboard?timeframe=7").status_code == 500
        assert httpx.get(f"{standin.base_url}/leaderboard?timeframe=2").status_code == 404
        assert json.loads(httpx.post(url, json={"variant": "normal"}).text)["variant"] == "normal"


def test_a_kept_failed_page_keeps_the_artifacts_folder_within_its_budget(
    site: KolscanStandin, env: Callable[..., None]
) -> None:
    """Between two retention runs, a storm of failures cannot fill the disk: keeping a failed
    page removes the oldest artifacts beyond RETENTION_ARTIFACT_BUDGET_MB."""
    env(RETENTION_ARTIFACT_BUDGET_MB="1")
    folder = get_settings().artifacts_dir / "scrapes"
    folder.mkdir(parents=True)
    old = folder / "from-long-ago.html"
    old.write_bytes(b"x" * 1_040_000)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    site.set_variant("error")
    result = scrape_leaderboard("daily", base_url=site.base_url)
    _assert_failed(result, ErrorCode.SCRAPE_HTTP_ERROR)
    assert not old.exists()
    assert Path(result.html_path or "").exists() and Path(result.screenshot_path or "").exists()
