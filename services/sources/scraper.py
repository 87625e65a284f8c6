"""The kolscan leaderboard scraper: Playwright drives Chromium, the parser normalises, one
transaction stores the run.

Every call is a `scrape_runs` row, committed as RUNNING before the browser starts, so a crash
mid-scrape is still visible. A run ends SUCCESS, PARTIAL (some rows rejected) or FAILED (with an
error code, and the page's HTML and a screenshot saved for analysis). A FAILED run stores no
`scraped_kols` rows: a broken page is never mistaken for an empty leaderboard.

Playwright's sync API is bound to the thread that started it, so each call starts its own
Playwright and browser: scheduler threads can scrape at the same time.

CLI: `python -m services.sources.scraper --timeframe daily [--base-url URL] [--trigger MANUAL]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from sqlalchemy import func, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from config import get_settings
from db.engine import retrying, transaction
from db.models import Kol, ScrapedKol, ScrapeReject, ScrapeRun, utcnow
from services.errors import ErrorCode, ServiceError
from services.sources import kolscan_selectors as sel
from services.sources.leaderboard_parser import ParsedRow, Reject, layout_changed, parse_rows
from services.vocabulary import SUCCEEDED_SCRAPES, ScrapeStatus, ScrapeTrigger, Timeframe

log = logging.getLogger(__name__)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
_ARTIFACT_TIMEOUT_MS = 5_000
# Viewport for the page and its failure screenshot.
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


@dataclass(frozen=True)
class ScrapeResult:
    run_id: int
    timeframe: Timeframe
    status: ScrapeStatus  # SUCCESS, PARTIAL or FAILED: never RUNNING
    rows_found: int
    rows_stored: int
    rows_rejected: int
    error_code: ErrorCode | None
    error_message: str | None
    snapshot_at: dt.datetime | None
    html_path: str | None
    screenshot_path: str | None
    # Seconds spent starting the browser and loading every row, reading them, storing them.
    load_s: float
    extract_s: float
    store_s: float

    @property
    def ok(self) -> bool:
        return self.status in SUCCEEDED_SCRAPES


@dataclass
class _Timings:
    load_s: float = 0.0
    extract_s: float = 0.0
    store_s: float = 0.0


class _Failure(Exception):
    """The page could not be read; becomes a FAILED run."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        rejects: list[Reject] | None = None,
        rows_found: int = 0,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rejects = rejects or []
        self.rows_found = rows_found
        self.html_path: str | None = None
        self.screenshot_path: str | None = None


@dataclass(frozen=True)
class _PageRead:
    """What one read of the leaderboard page gave, before it is stored."""

    rows_found: int
    parsed: list[ParsedRow]
    rejects: list[Reject]
    snapshot_at: dt.datetime


def scrape_leaderboard(
    timeframe: Timeframe | str,
    *,
    trigger: ScrapeTrigger | str = ScrapeTrigger.ON_DEMAND,
    base_url: str | None = None,
    timeout_s: float | None = None,
) -> ScrapeResult:
    """Scrape one timeframe's leaderboard (`daily`, `weekly`, `monthly`) and record the run.

    Page failures (timeout, navigation, HTTP status, no rows, changed layout, browser) come back
    as a FAILED result; only bad arguments (ServiceError) and database errors raise.
    `timeout_s` overrides SCRAPE_TIMEOUT_S: the budget for the page and its first rows, and again
    for scrolling until no new rows come.
    """
    try:
        timeframe = Timeframe(timeframe)
    except ValueError:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown timeframe {timeframe!r}") from None
    try:
        trigger = ScrapeTrigger(trigger)
    except ValueError:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown trigger {trigger!r}") from None
    settings = get_settings()
    budget_s = settings.scrape_timeout_s if timeout_s is None else timeout_s
    if budget_s <= 0:
        raise ServiceError(ErrorCode.INVALID_INPUT, f"timeout must be positive, got {budget_s}")
    url = sel.leaderboard_url(base_url or settings.kolscan_base_url, timeframe)

    run_id = _start_run(timeframe, trigger, url)
    timings = _Timings()
    try:
        snapshot = _read_leaderboard(url, run_id, budget_s, timings)
    except _Failure as failure:
        return _finish_failed(run_id, timeframe, failure, timings)
    except BaseException as exc:
        _finish_failed(run_id, timeframe, _Failure(ErrorCode.INTERNAL_ERROR, repr(exc)), timings)
        raise

    started = time.perf_counter()
    try:
        status = retrying(
            lambda session: _store(session, run_id, timeframe, snapshot), what="store scrape"
        )
    except BaseException as exc:
        _finish_failed(run_id, timeframe, _Failure(ErrorCode.INTERNAL_ERROR, repr(exc)), timings)
        raise
    timings.store_s = time.perf_counter() - started
    stored, rejected = len(snapshot.parsed), len(snapshot.rejects)
    log.info(
        "scrape run %d %s %s: %d stored, %d rejected", run_id, timeframe, status, stored, rejected
    )
    return ScrapeResult(
        run_id=run_id,
        timeframe=timeframe,
        status=status,
        rows_found=snapshot.rows_found,
        rows_stored=stored,
        rows_rejected=rejected,
        error_code=None,
        error_message=None,
        snapshot_at=snapshot.snapshot_at,
        html_path=None,
        screenshot_path=None,
        load_s=timings.load_s,
        extract_s=timings.extract_s,
        store_s=timings.store_s,
    )


# --- the browser ------------------------------------------------------------------------------


def _read_leaderboard(url: str, run_id: int, budget_s: float, timings: _Timings) -> _PageRead:
    """Start a private Playwright and Chromium, read the page, always close both."""
    started = time.perf_counter()
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=get_settings().chromium_path,
                args=CHROMIUM_ARGS,
                timeout=budget_s * 1000,
            )
        except PlaywrightError as exc:
            raise _Failure(ErrorCode.SCRAPE_BROWSER_ERROR, f"Chromium: {exc.message}") from exc
        try:
            page = browser.new_page(viewport=VIEWPORT)
            try:
                return _read_page(page, url, budget_s, started, timings)
            except _Failure as failure:
                _save_artifacts(page, run_id, failure)
                raise
            except PlaywrightError as exc:
                failure = _Failure(ErrorCode.SCRAPE_BROWSER_ERROR, exc.message)
                _save_artifacts(page, run_id, failure)
                raise failure from exc
        finally:
            browser.close()


def _remaining_ms(deadline: float) -> float:
    return max(1.0, (deadline - time.perf_counter()) * 1000)


def _read_page(
    page: Page, url: str, budget_s: float, started: float, timings: _Timings
) -> _PageRead:
    """Load the page and its first rows within `budget_s`, scroll to the end, read them once."""
    deadline = time.perf_counter() + budget_s
    try:
        response = page.goto(url, wait_until="commit", timeout=_remaining_ms(deadline))
    except PlaywrightTimeoutError as exc:
        raise _Failure(ErrorCode.SCRAPE_TIMEOUT, f"{url} did not load in {budget_s}s") from exc
    except PlaywrightError as exc:
        raise _Failure(ErrorCode.SCRAPE_NAVIGATION_ERROR, f"{url}: {exc.message}") from exc
    if response is None or not response.ok:
        status = "no response" if response is None else f"HTTP {response.status}"
        raise _Failure(ErrorCode.SCRAPE_HTTP_ERROR, f"{url} answered {status}")
    try:
        page.wait_for_selector(sel.READY_SELECTOR, timeout=_remaining_ms(deadline))
    except PlaywrightTimeoutError as exc:
        raise _Failure(ErrorCode.SCRAPE_TIMEOUT, f"no rows on {url} after {budget_s}s") from exc
    # Scrolling gets a budget of its own: a long board must not eat the time for the first rows.
    count = _scroll_to_end(page, time.perf_counter() + budget_s, budget_s)
    if count == 0:
        raise _Failure(ErrorCode.SCRAPE_NO_ROWS, f"{url} shows no leaderboard rows")
    timings.load_s = time.perf_counter() - started

    extracting = time.perf_counter()
    raws: list[dict[str, Any]] = json.loads(page.evaluate(sel.EXTRACT_ROWS_JS, sel.EXTRACT_CONFIG))
    snapshot_at = utcnow()
    parsed, rejects = parse_rows(raws)
    timings.extract_s = time.perf_counter() - extracting
    problem = layout_changed(len(raws), rejects)
    if problem:
        raise _Failure(
            ErrorCode.SCRAPE_LAYOUT_CHANGED, problem, rejects=rejects, rows_found=len(raws)
        )
    return _PageRead(len(raws), parsed, rejects, snapshot_at)


def _scroll_to_end(page: Page, deadline: float, budget_s: float) -> int:
    """Scroll until a scroll brings no new rows; returns the number of row links."""
    count: int = page.evaluate(sel.ROW_COUNT_JS, sel.ROW_LINK_SELECTOR)
    if count == 0:
        return 0
    for _ in range(sel.MAX_SCROLL_ROUNDS):
        try:
            more = page.wait_for_function(
                sel.SCROLL_FOR_MORE_JS,
                arg=[sel.ROW_LINK_SELECTOR, count],
                timeout=min(sel.SCROLL_IDLE_MS, _remaining_ms(deadline)),
            )
        except PlaywrightTimeoutError:
            if time.perf_counter() < deadline:
                return count  # scrolled to the bottom and nothing came: the list is complete
            break
        count = more.json_value()
    # Rows were still arriving: a partial list would misstate every rank below it.
    raise _Failure(
        ErrorCode.SCRAPE_TIMEOUT, f"rows still arriving after {budget_s}s of scrolling ({count})"
    )


def _save_artifacts(page: Page, run_id: int, failure: _Failure) -> None:
    """Keep the failed page's HTML and a screenshot; a page too broken for that is noted."""
    folder = Path(get_settings().artifacts_dir) / "scrapes"
    folder.mkdir(parents=True, exist_ok=True)
    html_path, png_path = folder / f"{run_id}.html", folder / f"{run_id}.png"
    try:
        html_path.write_text(page.content(), encoding="utf-8")
        failure.html_path = str(html_path)
    except PlaywrightError as exc:
        failure.message += f" (no HTML saved: {exc.message})"
    try:
        page.screenshot(path=png_path, timeout=_ARTIFACT_TIMEOUT_MS)
        failure.screenshot_path = str(png_path)
    except PlaywrightError as exc:
        failure.message += f" (no screenshot saved: {exc.message})"


# --- the database ---------------------------------------------------------------------------


def _start_run(timeframe: Timeframe, trigger: ScrapeTrigger, url: str) -> int:
    with transaction() as s:
        run_id = s.scalar(
            insert(ScrapeRun)
            .values(
                timeframe=timeframe.value,
                trigger=trigger.value,
                source_url=url,
                status=ScrapeStatus.RUNNING.value,
            )
            .returning(ScrapeRun.id)
        )
    assert run_id is not None
    return run_id


def _store(s: Session, run_id: int, timeframe: Timeframe, snapshot: _PageRead) -> ScrapeStatus:
    """KOLs, their rows and the rejects, and the run's end: one transaction."""
    status = ScrapeStatus.PARTIAL if snapshot.rejects else ScrapeStatus.SUCCESS
    kol_ids: dict[str, int] = {}
    if snapshot.parsed:
        upsert = pg_insert(Kol)
        upsert = upsert.on_conflict_do_update(
            index_elements=[Kol.wallet],
            set_={
                "display_name": upsert.excluded.display_name,
                # A handle missing from one snapshot does not erase the one we know.
                "x_handle": func.coalesce(upsert.excluded.x_handle, Kol.x_handle),
                "updated_at": func.now(),
            },
        ).returning(Kol.id, Kol.wallet)
        # Wallet order: concurrent scrapes lock the same KOLs in the same order.
        kols = sorted(snapshot.parsed, key=lambda r: r.wallet)
        params = [
            {"display_name": r.username, "wallet": r.wallet, "x_handle": r.x_handle} for r in kols
        ]
        kol_ids = {wallet: kol_id for kol_id, wallet in s.execute(upsert, params)}
        s.execute(
            insert(ScrapedKol),
            [
                {
                    "run_id": run_id,
                    "kol_id": kol_ids[r.wallet],
                    "rank": r.rank,
                    "username": r.username,
                    "wallet": r.wallet,
                    "x_handle": r.x_handle,
                    "wins": r.wins,
                    "losses": r.losses,
                    "sol_gain": r.sol_gain,
                    "usd_gain": r.usd_gain,
                    "timeframe": timeframe.value,
                    "scraped_at": snapshot.snapshot_at,
                }
                for r in snapshot.parsed
            ],
        )
    _insert_rejects(s, run_id, snapshot.rejects)
    s.execute(
        update(ScrapeRun)
        .where(ScrapeRun.id == run_id)
        .values(
            status=status.value,
            finished_at=func.now(),
            snapshot_at=snapshot.snapshot_at,
            rows_found=snapshot.rows_found,
            rows_stored=len(snapshot.parsed),
            rows_rejected=len(snapshot.rejects),
        )
    )
    return status


def _insert_rejects(s: Session, run_id: int, rejects: list[Reject]) -> None:
    if rejects:
        s.execute(
            insert(ScrapeReject),
            [
                {
                    "run_id": run_id,
                    "position": r.position,
                    "raw": r.raw,
                    "field": r.field,
                    "reason_code": r.code.value,
                    "reason": r.reason,
                }
                for r in rejects
            ],
        )


def _finish_failed(
    run_id: int, timeframe: Timeframe, failure: _Failure, timings: _Timings
) -> ScrapeResult:
    with transaction() as s:
        # The rejects of an unreadable page are kept: they show what the new layout looks like.
        _insert_rejects(s, run_id, failure.rejects)
        s.execute(
            update(ScrapeRun)
            .where(ScrapeRun.id == run_id)
            .values(
                status=ScrapeStatus.FAILED.value,
                finished_at=func.now(),
                rows_found=failure.rows_found,
                rows_rejected=len(failure.rejects),
                error_code=failure.code.value,
                error_message=failure.message,
                html_path=failure.html_path,
                screenshot_path=failure.screenshot_path,
            )
        )
    log.warning("scrape run %d %s FAILED %s: %s", run_id, timeframe, failure.code, failure.message)
    return ScrapeResult(
        run_id=run_id,
        timeframe=timeframe,
        status=ScrapeStatus.FAILED,
        rows_found=failure.rows_found,
        rows_stored=0,
        rows_rejected=len(failure.rejects),
        error_code=failure.code,
        error_message=failure.message,
        snapshot_at=None,
        html_path=failure.html_path,
        screenshot_path=failure.screenshot_path,
        load_s=timings.load_s,
        extract_s=timings.extract_s,
        store_s=timings.store_s,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scrape one kolscan leaderboard and store it.")
    parser.add_argument("--timeframe", required=True, choices=[t.value for t in Timeframe])
    parser.add_argument("--base-url", help="default: KOLSCAN_BASE_URL")
    parser.add_argument(
        "--trigger", choices=[t.value for t in ScrapeTrigger], default=ScrapeTrigger.MANUAL.value
    )
    parser.add_argument("--timeout-s", type=float, help="default: SCRAPE_TIMEOUT_S")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = scrape_leaderboard(
        args.timeframe, trigger=args.trigger, base_url=args.base_url, timeout_s=args.timeout_s
    )
    print(f"run {result.run_id} {result.timeframe}: {result.status}")
    print(f"  rows found {result.rows_found}, stored {result.rows_stored}, ", end="")
    print(f"rejected {result.rows_rejected}")
    print(f"  load {result.load_s:.2f}s, extract {result.extract_s:.2f}s, ", end="")
    print(f"store {result.store_s:.2f}s")
    if result.error_code:
        print(f"  error {result.error_code}: {result.error_message}")
        print(f"  html {result.html_path}\n  screenshot {result.screenshot_path}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
