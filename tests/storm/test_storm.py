"""The storm test: the whole system under load, faults and hostile input keeps every cent and
lets no one in.

    .venv/bin/python -m pytest tests/storm -s -q                      short form (about 75 s)
    STORM_SECONDS=600 .venv/bin/python -m pytest tests/storm -s -q    long form (10 minutes)

`-s` shows the summary; the test asserts every invariant either way. STORM_SEED replays a run's
random choices (the threads still interleave differently).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import get_settings
from standins.kolscan_standin import KolscanStandin
from standins.xapi_standin import XApiStandin
from tests.storm.harness import Config, Storm
from tests.storm.invariants import Window

SHORT_SECONDS = 75.0


@pytest.fixture()
def storm_env(db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Both stand-ins with live data (the leaderboard moves every 20 s), and a configuration that
    makes everything happen within seconds: sweeps every 2 s, scrapes every minute, generated
    daily markets lasting about half a minute, a one-minute grace. Applied to this process and
    to every scheduler process."""
    with (
        KolscanStandin(bucket_seconds=20, first_ms=30, batch_ms=10) as site,
        XApiStandin(token="storm-token", rate_limit=120, window_s=60, bucket_s=10) as x,
    ):
        env = {
            "KOLSCAN_BASE_URL": site.base_url,
            "X_API_BASE_URL": x.base_url,
            "X_API_BEARER_TOKEN": x.token,
            "X_API_MAX_RETRIES": "1",
            "X_API_MAX_WAIT_S": "1",
            "X_API_READ_TIMEOUT_S": "1",
            "SCRAPE_TIMEOUT_S": "8",
            "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "RESOLVE_INTERVAL_S": "2",
            "RESOLUTION_GRACE_MINUTES": "1",
            "MAX_SCRAPE_LAG_MINUTES": "60",
            "FOLLOWER_CACHE_MAX_AGE_MINUTES": "15",
            "FOLLOWER_REFRESH_INTERVAL_S": "10",
            "GENERATE_INTERVAL_S": "20",
            "MARKET_DURATION_FACTOR": "0.0003",
            "INTEGRITY_INTERVAL_S": "10",
            "SCRAPE_CRON": "* * * * *",
            "JOB_TIMEOUT_S": "60",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.mark.storm
def test_storm_keeps_every_cent(db: str, storm_env: dict[str, str], tmp_path: Path) -> None:
    seconds = float(os.environ.get("STORM_SECONDS") or SHORT_SECONDS)
    config = Config(seconds=seconds, drain_s=max(240.0, seconds / 2))
    if os.environ.get("STORM_SEED"):
        config.seed = int(os.environ["STORM_SEED"])
    settings = get_settings()
    storm = Storm(
        config,
        db_url=db,
        env=storm_env,
        window=Window(
            lag=dt.timedelta(minutes=settings.max_scrape_lag_minutes),
            max_age=dt.timedelta(minutes=settings.follower_cache_max_age_minutes),
        ),
        kolscan_url=storm_env["KOLSCAN_BASE_URL"],
        xapi_url=storm_env["X_API_BASE_URL"],
        logs=tmp_path,
    )
    drain_s = 0.0
    try:
        storm.setup()
        storm.run()
        storm.check("end of the storm")
        drain_s = storm.drain()
        final = storm.check("after the drain (final)", final=True)
        final.results.append(storm.refusals_audited())
    finally:
        storm.shutdown()
        print(storm.summary(drain_s))
    assert not storm.thread_errors, storm.thread_errors
    failed = [f"{p.label}: {r.line()}" for p in storm.checkpoints for r in p.results if not r.ok]
    assert not failed, "\n".join(failed)
    counts = storm.tally.counts
    # The storm really stormed: every kind of trouble happened, and work got done through it.
    assert counts["bets"]["buy"] > 0 and counts["bets"]["sell"] > 0
    assert counts["chaos"]["scheduler killed with SIGKILL"] > 0
    assert sum(n for k, n in counts["chaos"].items() if k.startswith("connection")) > 0
    assert storm.tally.total("faults injected") > 0
    assert storm.tally.total("operator") > 0
    assert len(storm.checkpoints) >= 3
