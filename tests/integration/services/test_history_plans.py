"""The reads that must not grow with history, checked on a year of it (issue 19).

A year is built by `bench/year.py`'s own builder, small except for the scrape runs (a run of each
timeframe every 15 minutes, the production cadence: 105,120 runs). Then the resolver's evidence
reads, retention's protected-evidence query and the periodic integrity check run for real, every
statement they send is captured, and its plan (`tests.support.plans`) must read history only
through the index that bounds it: no sequential scan of a history table, and (where the plan is
executed) no more rows than the markets' windows hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from config import PROJECT_ROOT, get_settings
from db.engine import dispose_engine
from services.money.integrity import check_recent
from services.ops import retention
from services.resolution import resolver
from tests.conftest import reset_database
from tests.support import plans

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import year as year_bench  # (bench/ is scripts, not a package)

pytestmark = pytest.mark.slow

SCALE = 0.02
RUNS_A_YEAR = 35_040  # every 15 minutes
USABLE_INDEX = "ix_scrape_runs_usable_snapshot"
HISTORY = {
    "scrape_runs",
    "scraped_kols",
    "follower_history",
    "resolution_attempts",
    "ledger_transactions",
    "ledger_entries",
    "bets",
    "positions",
}


@pytest.fixture(scope="module")
def year(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reset_database(database_url)
    sizes = year_bench.sizes(SCALE) | {"runs_per_timeframe": RUNS_A_YEAR, "rows_per_run": 3}
    year_bench.build(database_url, sizes, tmp_path_factory.mktemp("artifacts"))
    dispose_engine()
    yield database_url
    reset_database(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # the next tests plan on empty tables again
    dispose_engine()


def _runs_per_window() -> int:
    """The most runs of one timeframe a snapshot window can hold at the 15-minute cadence."""
    return get_settings().max_scrape_lag_minutes // 15 + 1


def test_resolver_reads_only_the_runs_in_its_markets_windows(year: str) -> None:
    with psycopg.connect(year) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM markets WHERE timeframe IS NOT NULL AND status <> 'OPEN'"
                " AND closes_at > now() - interval '30 days' ORDER BY id DESC LIMIT 40"
            )
        ]
    assert len(ids) == 40
    with (
        plans.explained("FROM scrape_runs", analyze=True) as reads,  # one per timeframe
        plans.explained("FROM scraped_kols") as snapshots,
    ):
        found = resolver.reevaluate(ids, trigger="plans")
    decided = [e for e in found.values() if e.evidence.get("source") == "scrape_run"]
    assert decided, "no market found its snapshot: the windows were not read"

    scans = [s for r in reads for s in r.scans() if s.relation == "scrape_runs"]
    assert scans and all(s.index == USABLE_INDEX for s in scans), scans
    read = sum(s.rows_read or 0 for s in scans)
    assert read <= len(ids) * _runs_per_window(), f"{read} runs read for {len(ids)} markets"
    for snapshot in snapshots:
        assert not snapshot.seq_scans(HISTORY), snapshot.scans()


def test_the_periodic_integrity_check_reads_only_what_changed(year: str) -> None:
    with plans.explained("") as statements:
        report = check_recent()
    assert report.ok, report.violations[:3]
    assert report.transactions_verified > 0
    for explained in statements:
        assert not explained.seq_scans(HISTORY), (explained.sql, explained.scans())


# Last in the module: retention removes the year's old runs.
def test_retention_finds_protected_evidence_by_index(year: str, tmp_path: Path) -> None:
    policy = dataclasses.replace(retention.Policy.of(get_settings()), artifacts_dir=tmp_path)
    with psycopg.connect(year) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM markets WHERE timeframe IS NOT NULL AND (status = 'OPEN'"
            " OR greatest(resolved_at, cancelled_at) > now() - make_interval(days => %s))",
            (policy.resettle_window_days,),
        ).fetchone()[0]  # type: ignore[index]
    started = dt.datetime.now(dt.UTC)
    with plans.explained("protected AS", analyze=True) as batches:
        report = retention.run(policy)
    assert report.removed["scrape_runs"] > 0
    assert dt.datetime.now(dt.UTC) - started < dt.timedelta(minutes=5)

    first = batches[0]  # the first batch: every old run still there to be checked
    # The lateral look-up of each kept market's window (alias `scrape_runs`; the outer `r` is
    # the scan for old runs, which may well read them all).
    lateral = [s for s in first.scans() if s.alias == "scrape_runs"]
    assert lateral and all(s.index == USABLE_INDEX for s in lateral), first.scans()
    read = sum(s.rows_read or 0 for s in lateral)
    assert read <= kept * _runs_per_window(), f"{read} runs read for {kept} kept markets"
