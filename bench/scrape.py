"""Seconds to scrape and store a 1,000-row leaderboard from the kolscan stand-in, against a bare
Playwright floor for the same page, measured in the same run.

Each scrape is a full `scrape_leaderboard` call: a browser worker process, a fresh Chromium, the
page with rows arriving late and in scroll batches, one in-page extraction, the parse, and the
one transaction that stores KOLs, rows and the run. Split into load (worker and browser start,
navigation, first rows, scrolling to the end), extract (in-page read + parse) and store (database
write). The floor is what no scraper of this page can avoid: launch Chromium, load the page, scroll
to the end, one `evaluate` of all rows, close, in this process with nothing else. Floor and scrape
alternate, so that both see the same machine; the figures are medians. Goal: the scrape within
1.5x the floor.

    .venv/bin/python bench/scrape.py
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import json
import statistics
import time

ROWS = 1000
RUNS = 5
GOAL_RATIO = 1.5


def floor_seconds(url: str) -> float:
    """Launch, load, scroll until no new rows come, read every row once, close."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    from config import get_settings
    from services.sources import kolscan_selectors as sel
    from services.sources.scraper import CHROMIUM_ARGS

    started = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=get_settings().chromium_path, args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        page.goto(url, wait_until="commit")
        page.wait_for_selector(sel.ROW_LINK_SELECTOR)
        count = 0
        while True:
            try:
                count = page.wait_for_function(
                    sel.SCROLL_FOR_MORE_JS,
                    arg=[sel.ROW_LINK_SELECTOR, count],
                    timeout=sel.SCROLL_IDLE_MS,
                ).json_value()
            except PlaywrightTimeoutError:
                break
        rows = json.loads(page.evaluate(sel.EXTRACT_ROWS_JS, sel.EXTRACT_CONFIG))
        browser.close()
    took = time.perf_counter() - started
    if len(rows) != ROWS:
        raise SystemExit(f"the floor read {len(rows)} rows, not {ROWS}")
    return took


def main() -> None:
    _common.start_database("scrape")
    from services.sources import kolscan_selectors as sel
    from services.sources.scraper import scrape_leaderboard
    from services.vocabulary import ScrapeStatus, ScrapeTrigger, Timeframe
    from standins.kolscan_standin import KolscanStandin

    samples: list[dict[str, float]] = []
    with KolscanStandin(variant="big", big_rows=ROWS, bucket=1) as site:
        url = sel.leaderboard_url(site.base_url, Timeframe.DAILY)
        floor_seconds(url)  # warm-up: the first Chromium start reads its files from disk
        for _ in range(RUNS):
            floor = floor_seconds(url)
            started = time.perf_counter()
            result = scrape_leaderboard(
                Timeframe.DAILY, base_url=site.base_url, trigger=ScrapeTrigger.MANUAL
            )
            total = time.perf_counter() - started
            if result.status is not ScrapeStatus.SUCCESS or result.rows_stored != ROWS:
                raise SystemExit(f"scrape did not store {ROWS} rows: {result}")
            samples.append(
                {
                    "load_1000_s": result.load_s,
                    "extract_1000_s": result.extract_s,
                    "store_1000_s": result.store_s,
                    "scrape_1000_s": total,
                    "floor_1000_s": floor,
                }
            )
        stand_in = (
            f"rows after {site.first_ms} ms, then {site.batch_size} per scroll "
            f"every {site.batch_ms} ms"
        )
    figures = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    figures["ratio_1000"] = figures["scrape_1000_s"] / figures["floor_1000_s"]
    _common.report(
        f"Scrape + store a {ROWS}-row leaderboard vs a bare Playwright floor "
        f"(median of {RUNS} alternating runs)",
        [
            ("stand-in", stand_in),
            ("load (worker, browser, page, scroll)", f"{figures['load_1000_s']:.3f} s"),
            ("extract (one evaluate + parse)", f"{figures['extract_1000_s']:.3f} s"),
            ("store (one transaction)", f"{figures['store_1000_s']:.3f} s"),
            ("scrape + store (wall clock)", f"{figures['scrape_1000_s']:.3f} s"),
            ("floor (launch, load, scroll, evaluate)", f"{figures['floor_1000_s']:.3f} s"),
            ("ratio scrape / floor", f"{figures['ratio_1000']:.2f}x  (goal <= {GOAL_RATIO}x)"),
            ("all scrapes", ", ".join(f"{s['scrape_1000_s']:.2f}" for s in samples)),
            ("all floors", ", ".join(f"{s['floor_1000_s']:.2f}" for s in samples)),
        ],
        figures,
    )


if __name__ == "__main__":
    main()
