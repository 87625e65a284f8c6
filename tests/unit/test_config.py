"""The retention settings (issue 19): whole numbers of at least 1, refused clearly otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config import ConfigError, get_settings

RETENTION = (
    "RESETTLE_WINDOW_DAYS",
    "RETENTION_SCRAPE_DAYS",
    "RETENTION_FOLLOWER_FULL_DAYS",
    "RETENTION_FOLLOWER_DAYS",
    "RETENTION_JOB_RUN_DAYS",
    "RETENTION_DELIVERY_DAYS",
    "RETENTION_ARTIFACT_DAYS",
    "RETENTION_ARTIFACT_BUDGET_MB",
)


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("name", RETENTION)
@pytest.mark.parametrize("raw", ["0", "-3", "ten", "1.5"])
def test_a_retention_window_must_be_a_whole_number_of_at_least_one(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match=name):
        get_settings()


def test_retention_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RETENTION:
        monkeypatch.delenv(name, raising=False)
    s = get_settings()
    assert (s.resettle_window_days, s.retention_scrape_days, s.retention_follower_days) == (
        30,
        90,
        365,
    )
    assert (s.retention_cron, s.integrity_full_cron) == ("40 3 * * *", "10 3 * * *")
