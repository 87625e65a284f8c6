"""The demo's outage schedule (pure), and that it switches the stand-ins over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from config import PROJECT_ROOT
from standins.outages import in_outage
from tests.conftest import Standins


def test_outage_windows() -> None:
    assert in_outage(0, every_s=600, for_s=60)
    assert in_outage(59.9, every_s=600, for_s=60)
    assert not in_outage(60, every_s=600, for_s=60)
    assert in_outage(600, every_s=600, for_s=60)
    assert not in_outage(0, every_s=600, for_s=60, offset_s=100)
    assert not in_outage(99, every_s=600, for_s=60, offset_s=100)
    assert in_outage(100, every_s=600, for_s=60, offset_s=100)
    assert in_outage(700, every_s=600, for_s=60, offset_s=100)


def test_outages_switch_the_standins(db: str, standins: Standins) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "standins.outages",
            "--kolscan",
            standins.kolscan.base_url,
            "--xapi",
            standins.x.base_url,
            "--every",
            "2",
            "--kolscan-for",
            "2",
            "--xapi-for",
            "2",
            "--first-after",
            "0",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while standins.kolscan.variant != "error" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert standins.kolscan.variant == "error"
        response = httpx.get(f"{standins.kolscan.base_url}/leaderboard?timeframe=1")
        assert response.status_code == 500
    finally:
        proc.terminate()
        proc.wait(timeout=10)
