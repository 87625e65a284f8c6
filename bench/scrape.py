"""Seconds to scrape and store a 1,000-row leaderboard from the kolscan stand-in.

Each run is a full `scrape_leaderboard` call: a fresh Playwright and Chromium, the page with rows
arriving late and in scroll batches, one in-page extraction, the parse, and the one transaction
that stores KOLs, rows and the run. Split into load (browser start, navigation, first rows,
scrolling to the end), extract (in-page read + parse) and store (database write). The figures
are medians of a few runs; the goal is under 3 s in all.

    .venv/bin/python bench/scrape.py
"""

from __future__ import annotations

import _common  # sets sys.path: must come first

# isort: split

import statistics
import time

ROWS = 1000
RUNS = 3


def main() -> None:
    _common.start_database("scrape")
    from services.sources.scraper import scrape_leaderboard
    from services.vocabulary import ScrapeStatus, ScrapeTrigger, Timeframe
    from standins.kolscan_standin import KolscanStandin

    samples: list[dict[str, float]] = []
    with KolscanStandin(variant="big", big_rows=ROWS, bucket=1) as site:
        for _ in range(RUNS):
            started = time.perf_counter()
            result = scrape_leaderboard(
                Timeframe.DAILY, base_url=site.base_url, trigger=ScrapeTrigger.MANUAL
            )
            total = time.perf_counter() - started
            if result.status is not ScrapeStatus.SUCCESS or result.rows_stored != ROWS:
                raise SystemExit(f"scrape did not store {ROWS} rows: {result}")
            samples.append(
                {
                    "load_s": result.load_s,
                    "extract_s": result.extract_s,
                    "store_s": result.store_s,
                    "total_s": total,
                }
            )
        stand_in = (
            f"rows after {site.first_ms} ms, then {site.batch_size} per scroll "
            f"every {site.batch_ms} ms"
        )
    figures = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    _common.report(
        f"Scrape + store a {ROWS}-row leaderboard (median of {RUNS} runs)",
        [
            ("stand-in", stand_in),
            ("load (browser, page, scroll)", f"{figures['load_s']:.3f} s"),
            ("extract (one evaluate + parse)", f"{figures['extract_s']:.3f} s"),
            ("store (one transaction)", f"{figures['store_s']:.3f} s"),
            ("total (wall clock of the call)", f"{figures['total_s']:.3f} s  (goal < 3 s)"),
            ("all totals", ", ".join(f"{s['total_s']:.2f}" for s in samples)),
        ],
        figures,
    )


if __name__ == "__main__":
    main()
