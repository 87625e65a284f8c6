"""Fixtures of the browser tests: a freshly started dashboard on the test database, and Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from config import get_settings
from services.sources.scraper import CHROMIUM_ARGS
from tests.conftest import running_dashboard


@pytest.fixture()
def dashboard(db: str, tmp_path: Path) -> Iterator[str]:
    """`streamlit run app.py` on a free loopback port, on the test database; always stopped, and
    its log must hold no traceback."""
    log_path = tmp_path / "streamlit.log"
    with running_dashboard(log_path, {**os.environ, "DATABASE_URL": db}) as url:
        yield url
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture()
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=get_settings().chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
