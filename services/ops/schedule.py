"""When each timed job runs: the one schedule that the scheduler follows and the dashboard shows.

Triggers come from configuration. `coalesce` and `max_instances` are set by the scheduler for
every job; the misfire grace is per job: half the interval for frequent jobs (a run that is
later than that is skipped, the next tick does the same work with fresher data).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from config import get_settings
from services.vocabulary import Timeframe


@dataclass(frozen=True)
class Schedule:
    name: str
    trigger: Callable[[], BaseTrigger]  # a fresh trigger each time a scheduler is built
    misfire_grace_s: int
    describe: str  # for people: "every 60 s", "cron */15 * * * * (UTC)"


def schedules() -> dict[str, Schedule]:
    s = get_settings()

    def every(name: str, seconds: int) -> Schedule:
        return Schedule(
            name,
            lambda: IntervalTrigger(seconds=seconds),
            max(1, seconds // 2),
            f"every {seconds} s",
        )

    def cron(name: str, expression: str = s.scrape_cron, grace_s: int = 60) -> Schedule:
        return Schedule(
            name,
            lambda: CronTrigger.from_crontab(expression, timezone=dt.UTC),
            grace_s,
            f"cron {expression} (UTC)",
        )

    return {
        sched.name: sched
        for sched in (
            every("resolve", s.resolve_interval_s),
            *(cron(f"scrape_{tf}") for tf in Timeframe),
            every("followers", s.follower_refresh_interval_s),
            every("generate", s.generate_interval_s),
            every("integrity", s.integrity_interval_s),
            every("reap", s.job_timeout_s),
            every("alerts", s.alert_interval_s),
            # Issue 19: the nightly full integrity audit and retention (a late run still runs).
            cron("integrity_full", s.integrity_full_cron, 3600),
            cron("retention", s.retention_cron, 3600),
        )
    }
