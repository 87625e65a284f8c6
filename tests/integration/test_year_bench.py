"""`bench/year.py` at a small scale runs end to end (issue 19): the year is built, its ledger
passes the full audit before and after retention (the script exits non-zero otherwise), every
figure the issue names is on the last line, and retention shrinks what it should.

The quick form a developer runs is `--scale 0.1`; this is smaller still, so the suite stays short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config import PROJECT_ROOT

pytestmark = pytest.mark.slow

NAMED = {
    "integrity_periodic_s",
    "integrity_full_s",
    "sweep_ratio",
    "store_ratio",
    "db_bytes_before_retention",
    "db_bytes_after_retention",
}
PAGES = {"overview", "markets", "kol_data", "freshness", "scrapes", "jobs", "ledger", "audit"}


def test_year_bench_at_a_small_scale(admin_url: str) -> None:
    env = {**os.environ, "BENCH_ADMIN_DATABASE_URL": admin_url}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "bench/year.py", "--scale", "0.002", "--rounds", "2"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) >= NAMED
    assert {f"page_{p}_s" for p in PAGES} <= set(figures)
    assert all(figures[f"page_{p}_s"] < 1.5 for p in PAGES), figures
    assert figures["db_bytes_after_retention"] < figures["db_bytes_before_retention"]
    assert figures["artifact_bytes_after_retention"] < figures["artifact_bytes_before_retention"]
