"""Helpers for the browser tests (real Chromium on a running dashboard): waiting for Streamlit to
finish a run, and screenshots for a person to look at."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from config import PROJECT_ROOT

SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"


def settled(page: Page) -> None:
    """Wait until Streamlit has run the script for the last interaction (one that has not
    started yet included: a click during a run restarts it), and check it raised nothing."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def shot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save test-artifacts/screenshots/NAME.png once charts and tables have painted."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=full_page)
    return path
