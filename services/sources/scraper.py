"""The kolscan leaderboard scraper: Chromium reads the page in a child process, the parser
normalises, one transaction stores the run.

Every call is a `scrape_runs` row, committed as RUNNING before the browser starts, so a crash
mid-scrape is still visible. A run ends SUCCESS, PARTIAL (some rows rejected) or FAILED (with an
error code, and the page's HTML and a screenshot saved for analysis when they can be). A FAILED
run stores no `scraped_kols` rows: a broken page is never mistaken for an empty leaderboard. Only
a run still RUNNING is ended here: one the reaper closed meanwhile stays as the reaper left it.

The browser runs in a child process (`browser_worker`) that reports each step as it starts; the
child's whole process tree, Chromium included, is killed when a step overruns its budget, since
a page whose script never yields blocks Playwright's `evaluate` and `content` for good. Each call
has its own child: scheduler threads can scrape at the same time.

CLI: `python -m services.sources.scraper --timeframe daily [--base-url URL] [--trigger MANUAL]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, update
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from config import PROJECT_ROOT, get_settings
from db.engine import retrying, transaction
from db.models import Kol, ScrapedKol, ScrapeReject, ScrapeRun, utcnow
from services.errors import ErrorCode, ServiceError
from services.ops.retention_policy import MB, trim_artifacts
from services.processes import kill_tree
from services.sources import kolscan_selectors as sel
from services.sources.browser_worker import CHROMIUM_ARGS as CHROMIUM_ARGS  # for other drivers
from services.sources.leaderboard_parser import ParsedRow, Reject, layout_changed, parse_rows
from services.vocabulary import SUCCEEDED_SCRAPES, ScrapeStatus, ScrapeTrigger, Timeframe

log = logging.getLogger(__name__)

# How much later than the child's own deadline for a step it is killed: time to report the
# step's failure itself (with its real error code) when it still can.
_KILL_GRACE_S = 1.0
# How long the child may take to close Chromium and exit once the rows are read.
_CLOSE_S = 10.0


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


class _RunClosed(Exception):
    """The run is no longer RUNNING (the reaper closed it): nothing of this scrape is stored."""


def scrape_leaderboard(
    timeframe: Timeframe | str,
    *,
    trigger: ScrapeTrigger | str = ScrapeTrigger.ON_DEMAND,
    base_url: str | None = None,
    timeout_s: float | None = None,
) -> ScrapeResult:
    """Scrape one timeframe's leaderboard (`daily`, `weekly`, `monthly`) and record the run.

    Bad arguments raise ServiceError before anything is written. Once the run row exists nothing
    raises: every failure (the page, the browser, saving artifacts, storing) comes back as a
    FAILED result with its code. `timeout_s` overrides SCRAPE_TIMEOUT_S, the budget of each
    browser step: starting Chromium, the page and its first rows, scrolling until no new rows
    come, reading them.
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
        return _scrape(run_id, timeframe, url, budget_s, timings)
    except _Failure as failure:
        return _finish_failed(run_id, timeframe, failure, timings)
    except _RunClosed:
        return _closed_result(run_id, timeframe, timings)
    except Exception as exc:
        log.exception("scrape run %d %s: unexpected error", run_id, timeframe)
        failure = _Failure(ErrorCode.INTERNAL_ERROR, f"unexpected error: {exc!r}")
        return _finish_failed(run_id, timeframe, failure, timings)
    except BaseException as exc:  # interrupted (Ctrl-C, exit): record it, then let it go on
        _finish_failed(run_id, timeframe, _Failure(ErrorCode.INTERNAL_ERROR, repr(exc)), timings)
        raise


def _scrape(
    run_id: int, timeframe: Timeframe, url: str, budget_s: float, timings: _Timings
) -> ScrapeResult:
    settings = get_settings()
    request = {
        "url": url,
        "budget_s": budget_s,
        "chromium_path": settings.chromium_path,
        "artifacts_dir": str(settings.artifacts_dir),
        "run_id": run_id,
    }
    with _BrowserChild(request, budget_s) as child:
        snapshot = _read_leaderboard(child, timings)
        # The child closes Chromium while the rows are stored.
        started = time.perf_counter()
        status = retrying(
            lambda session: _store(session, run_id, timeframe, snapshot), what="store scrape"
        )
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


# --- the browser, in its child process ------------------------------------------------------


class _StepOverran(Exception):
    def __init__(self, step: str, budget_s: float) -> None:
        super().__init__(step)
        self.step = step
        self.budget_s = budget_s


class _BrowserChild:
    """One `browser_worker` process: the request sent, its answers read each within the
    deadline of the step it announced last, its whole process tree killed on overrun."""

    def __init__(self, request: dict[str, Any], budget_s: float) -> None:
        self.started = time.perf_counter()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "services.sources.browser_worker"],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        # Until its first step is announced, the child is starting Python and Playwright.
        self.step, self.budget_s = "starting the browser worker", budget_s
        self._deadline = self.started + budget_s + _KILL_GRACE_S
        self.tell(request)

    def tell(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # the child is gone: reading its answers says how

    def answer(self) -> dict[str, Any]:
        """The child's next answer other than a step (steps move the deadline)."""
        while True:
            message = self._next_line()
            if "step" not in message:
                return message
            self.step, self.budget_s = message["step"], float(message["budget_s"])
            self._deadline = time.perf_counter() + self.budget_s + _KILL_GRACE_S

    def _next_line(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = self._deadline - time.perf_counter()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.kill()
                raise _StepOverran(self.step, self.budget_s)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = self._proc.wait()
                raise _Failure(
                    ErrorCode.SCRAPE_BROWSER_ERROR,
                    f"the browser process ended (exit code {code}) while {self.step}",
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def kill(self) -> None:
        if self._proc.poll() is None:
            kill_tree(self._proc.pid)
        self._proc.wait()

    def __enter__(self) -> _BrowserChild:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # A normal end waits (boundedly) for the child to close Chromium; any other is killed.
        if exc_type is None:
            try:
                self._proc.wait(timeout=_CLOSE_S)
            except subprocess.TimeoutExpired:
                log.warning("browser worker %d did not exit; killed", self._proc.pid)
        self.kill()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


def _read_leaderboard(child: _BrowserChild, timings: _Timings) -> _PageRead:
    """The child's rows, parsed; any failure raised with the page's artifacts when kept."""
    try:
        answer = child.answer()
    except _StepOverran as overran:
        raise _Failure(
            ErrorCode.SCRAPE_TIMEOUT,
            f"the browser did not finish {overran.step} within {overran.budget_s:g}s"
            " (a page script that never yields?): killed",
        ) from None
    if "failure" in answer:
        failure = _Failure(ErrorCode(answer["failure"]["code"]), answer["failure"]["message"])
        timings.load_s = time.perf_counter() - child.started
        raise _with_artifacts(child, failure)
    extracting = time.perf_counter()
    timings.load_s = extracting - child.started
    raws: list[dict[str, Any]] = answer["rows"]
    snapshot_at = utcnow()
    parsed, rejects = parse_rows(raws)
    problem = layout_changed(len(raws), rejects)
    child.tell({"keep": bool(problem)})
    timings.extract_s = time.perf_counter() - extracting
    if problem:
        failure = _Failure(
            ErrorCode.SCRAPE_LAYOUT_CHANGED, problem, rejects=rejects, rows_found=len(raws)
        )
        raise _with_artifacts(child, failure)
    return _PageRead(len(raws), parsed, rejects, snapshot_at)


def _with_artifacts(child: _BrowserChild, failure: _Failure) -> _Failure:
    """`failure` with where the child saved the page, or why it could not."""
    try:
        answer = child.answer()
    except _StepOverran as overran:
        failure.message += (
            " (no HTML or screenshot saved: the page did not answer within"
            f" {overran.budget_s:g}s: killed)"
        )
        return failure
    except _Failure as gone:
        failure.message += f" (no HTML or screenshot saved: {gone.message})"
        return failure
    saved = answer.get("artifacts")
    if saved is None:  # a failure while saving: the child's own words
        failure.message += f" (no HTML or screenshot saved: {answer})"
        return failure
    failure.html_path, failure.screenshot_path = saved["html_path"], saved["screenshot_path"]
    for note in saved["notes"]:
        failure.message += f" ({note})"
    settings = get_settings()
    files, freed = trim_artifacts(
        settings.artifacts_dir, settings.retention_artifact_budget_mb * MB
    )
    if files:
        log.warning("artifacts over budget: removed the %d oldest (%d bytes)", files, freed)
    return failure


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
    """KOLs, their rows and the rejects, and the run's end: one transaction, on a run that is
    still RUNNING. The row lock makes the reaper wait for this transaction, and a run it closed
    first is left as it is."""
    _lock_running(s, run_id)
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


def _lock_running(s: Session, run_id: int) -> None:
    status = s.scalar(sql_select(ScrapeRun.status).where(ScrapeRun.id == run_id).with_for_update())
    if status != ScrapeStatus.RUNNING.value:
        raise _RunClosed(run_id)


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
    """Record the run FAILED, unless the reaper closed it first. When even that cannot be
    written (the database is away), the result still says FAILED: the reaper closes the row."""
    try:
        with transaction() as s:
            _lock_running(s, run_id)
            # The rejects of an unreadable page are kept: they show what the new layout is.
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
    except _RunClosed:
        return _closed_result(run_id, timeframe, timings)
    except Exception as exc:
        log.exception("scrape run %d %s: its failure could not be recorded", run_id, timeframe)
        failure.message += f" (not recorded: {exc!r})"
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


def _closed_result(run_id: int, timeframe: Timeframe, timings: _Timings) -> ScrapeResult:
    """The run as whoever closed it (the reaper) left it; this scrape stored nothing."""
    with transaction() as s:
        run = s.get_one(ScrapeRun, run_id)
        code = ErrorCode(run.error_code) if run.error_code else None
        log.warning(
            "scrape run %d %s was closed meanwhile (%s): not stored", run_id, timeframe, code
        )
        return ScrapeResult(
            run_id=run_id,
            timeframe=timeframe,
            status=ScrapeStatus(run.status),
            rows_found=run.rows_found,
            rows_stored=0,
            rows_rejected=0,
            error_code=code,
            error_message=run.error_message,
            snapshot_at=None,
            html_path=run.html_path,
            screenshot_path=run.screenshot_path,
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
