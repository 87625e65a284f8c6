"""The browser half of a scrape, in a child process the scraper can kill at any deadline.

A page can stop answering the browser for good (a script that busy-loops), and Playwright's
`evaluate` and `content` then wait forever: no timeout of theirs ends that wait, only killing the
process that waits. So `scraper.scrape_leaderboard` runs this module as a child
(`python -m services.sources.browser_worker`) and kills its whole process tree, Chromium
included, when a step overruns its budget. Parsing and storing stay in the scraper.

The conversation, one JSON object a line. The scraper writes the request on stdin: `url`,
`budget_s`, `chromium_path`, `artifacts_dir`, `run_id`. The worker answers on stdout with:

- `{"step": what, "budget_s": s}` when a step starts: it must end within `s` seconds;
- then `{"rows": [...]}` (every row's raw strings, as the page's script gave them) or
  `{"failure": {"code": ..., "message": ...}}`;
- after rows, it waits for the scraper's verdict on stdin, `{"keep": bool}`: keep the page
  (it showed a changed layout) or not;
- after a failure or a kept page, `{"artifacts": {"html_path", "screenshot_path", "notes"}}`.

It reads no configuration and touches no database: the request carries what it needs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from services.errors import ErrorCode
from services.processes import become_subreaper, descendants, kill_tree
from services.sources import kolscan_selectors as sel

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Viewport for the page and its failure screenshot.
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# Each of the HTML and the screenshot of a failed page gets this long; the step both.
ARTIFACT_TIMEOUT_S = 5.0
ARTIFACTS_BUDGET_S = 2 * ARTIFACT_TIMEOUT_S


class Channel:
    """The answer channel: the original stdout. Anything else that prints (a library, a
    warning) is sent to stderr so that it cannot corrupt the conversation."""

    def __init__(self) -> None:
        self._out: TextIO = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)

    def send(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message, ensure_ascii=False))

    def send_rows(self, rows_json: str) -> None:
        # The page's JSON string is passed through as it is: the scraper decodes it once.
        self._write(f'{{"rows": {rows_json}}}')

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.close()


class _Failure(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _remaining_ms(deadline: float) -> float:
    return max(1.0, (deadline - time.perf_counter()) * 1000)


def _step(channel: Channel, what: str, budget_s: float) -> float:
    """Announce a step (the scraper's deadline for it starts now); returns our own deadline."""
    channel.send({"step": what, "budget_s": budget_s})
    return time.perf_counter() + budget_s


def scrape(
    request: dict[str, Any], channel: Channel, verdict: Callable[[], dict[str, Any]]
) -> None:
    """Start Chromium, read the page, tell the scraper; always close the browser."""
    url, budget_s = request["url"], float(request["budget_s"])
    _step(channel, "starting the browser", budget_s)
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=request["chromium_path"],
                args=CHROMIUM_ARGS,
                timeout=budget_s * 1000,
            )
        except PlaywrightError as exc:
            channel.send(_failure(ErrorCode.SCRAPE_BROWSER_ERROR, f"Chromium: {exc.message}"))
            channel.send(_NO_PAGE)
            return
        try:
            page = browser.new_page(viewport=VIEWPORT)
            try:
                rows_json = _read_page(page, url, budget_s, channel)
            except _Failure as failure:
                channel.send(_failure(failure.code, failure.message))
                _save_artifacts(page, request, channel)
                return
            except PlaywrightError as exc:
                channel.send(_failure(ErrorCode.SCRAPE_BROWSER_ERROR, exc.message))
                _save_artifacts(page, request, channel)
                return
            channel.send_rows(rows_json)
            if verdict().get("keep"):
                _save_artifacts(page, request, channel)
        finally:
            browser.close()


# What follows a failure that came before there was a page to keep.
_NO_PAGE: dict[str, Any] = {"artifacts": {"html_path": None, "screenshot_path": None, "notes": []}}


def _failure(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"failure": {"code": code.value, "message": message}}


def _read_page(page: Page, url: str, budget_s: float, channel: Channel) -> str:
    """Load the page and its first rows within `budget_s`, scroll to the end within as long
    again, then read every row with one evaluation (its own step)."""
    deadline = _step(channel, "loading the page and its first rows", budget_s)
    try:
        response = page.goto(url, wait_until="commit", timeout=_remaining_ms(deadline))
    except PlaywrightTimeoutError as exc:
        raise _Failure(ErrorCode.SCRAPE_TIMEOUT, f"{url} did not load in {budget_s:g}s") from exc
    except PlaywrightError as exc:
        raise _Failure(ErrorCode.SCRAPE_NAVIGATION_ERROR, f"{url}: {exc.message}") from exc
    if response is None or not response.ok:
        status = "no response" if response is None else f"HTTP {response.status}"
        raise _Failure(ErrorCode.SCRAPE_HTTP_ERROR, f"{url} answered {status}")
    try:
        page.wait_for_selector(sel.READY_SELECTOR, timeout=_remaining_ms(deadline))
    except PlaywrightTimeoutError as exc:
        raise _Failure(ErrorCode.SCRAPE_TIMEOUT, f"no rows on {url} after {budget_s:g}s") from exc
    # Scrolling gets a budget of its own: a long board must not eat the time for the first rows.
    deadline = _step(channel, "scrolling to the last row", budget_s)
    count = _scroll_to_end(page, deadline, budget_s)
    if count == 0:
        raise _Failure(ErrorCode.SCRAPE_NO_ROWS, f"{url} shows no leaderboard rows")
    _step(channel, "reading the rows", budget_s)
    rows_json: str = page.evaluate(sel.EXTRACT_ROWS_JS, sel.EXTRACT_CONFIG)
    return rows_json


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
        ErrorCode.SCRAPE_TIMEOUT, f"rows still arriving after {budget_s:g}s of scrolling ({count})"
    )


def _save_artifacts(page: Page, request: dict[str, Any], channel: Channel) -> None:
    """Keep the failed page's HTML and a screenshot. Nothing here may raise: a page too broken
    to save, or a folder that refuses the files, is noted on the run instead."""
    _step(channel, "saving the page's HTML and screenshot", ARTIFACTS_BUDGET_S)
    saved: dict[str, str | None] = {"html_path": None, "screenshot_path": None}
    notes: list[str] = []
    folder = Path(request["artifacts_dir"]) / "scrapes"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        notes.append(f"no HTML or screenshot saved: {exc}")
    else:
        run_id = request["run_id"]
        for key, path, take in (
            ("html_path", folder / f"{run_id}.html", lambda: page.content().encode("utf-8")),
            (
                "screenshot_path",
                folder / f"{run_id}.png",
                lambda: page.screenshot(timeout=ARTIFACT_TIMEOUT_S * 1000),
            ),
        ):
            what = "HTML" if key == "html_path" else "screenshot"
            try:
                path.write_bytes(take())
                saved[key] = str(path)
            except PlaywrightError as exc:
                notes.append(f"no {what} saved: {exc.message}")
            except OSError as exc:
                notes.append(f"no {what} saved: {exc}")
    channel.send({"artifacts": {**saved, "notes": notes}})


def main() -> int:
    become_subreaper()
    channel = Channel()
    request = json.loads(sys.stdin.readline())
    try:
        scrape(request, channel, lambda: json.loads(sys.stdin.readline() or "{}"))
    except Exception as exc:  # a failure the scraper must still record, never a silent exit
        channel.send(_failure(ErrorCode.SCRAPE_BROWSER_ERROR, f"browser worker: {exc!r}"))
        channel.send(_NO_PAGE)
    finally:
        channel.close()
        # Chromium's helpers (its crash reporter) outlive the browser and were adopted here:
        # the worker leaves nothing running behind it.
        for pid in descendants(os.getpid()):
            kill_tree(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
