"""Market health at a glance: the aggregates behind the dashboard's overview (read-only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal_column, text
from sqlalchemy.orm import aliased

from config import get_settings
from db import rules
from db.engine import read_session
from db.models import Market, ScrapeRun
from services.vocabulary import AttemptResult, JobStatus, MarketStatus, Side, Timeframe, sql_in

_M = aliased(Market, name="m")
_DUE = rules.sql(rules.due(_M))
_OVERDUE = rules.sql(rules.overdue(_M, literal_column("make_interval(mins => :grace)")))
_HELD = rules.sql(rules.held(_M))
_USABLE_RUN = rules.sql(rules.usable_run(aliased(ScrapeRun, name="r")))
_RESOLVED = sql_in("a.result", tuple(AttemptResult.resolved(side) for side in Side))


@dataclass(frozen=True)
class Health:
    now: dt.datetime
    by_status: dict[str, int]
    due: int
    overdue: int
    needs_attention: int
    held: int  # open markets on an operator's hold (issue 17)
    cancellations_by_reason: dict[str, int]
    failed_attempts_24h: int
    resolved_24h: int
    median_resolution_lag_s: float | None
    last_good_scrape: dict[str, dt.datetime | None]
    x_api: list[dict[str, Any]]
    last_integrity: dict[str, Any] | None


def market_health() -> Health:
    """Counts by status, due and overdue (`db.rules`), the last day's resolutions, the last
    usable scrape per timeframe, the X API's budget and the last integrity check."""
    grace = get_settings().resolution_grace_minutes
    with read_session() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
        by_status = dict(
            s.execute(text("SELECT status, count(*) FROM markets GROUP BY status")).all()
        )
        due, overdue, attention, held = s.execute(
            text(
                f"SELECT count(*) FILTER (WHERE {_DUE}), count(*) FILTER (WHERE {_OVERDUE}),"
                f" count(*) FILTER (WHERE m.needs_attention), count(*) FILTER (WHERE {_HELD})"
                f" FROM markets m WHERE m.status = '{MarketStatus.OPEN}'"
            ),
            {"grace": grace},
        ).one()
        cancellations = dict(
            s.execute(
                text(
                    "SELECT cancel_reason, count(*) FROM markets"
                    f" WHERE status = '{MarketStatus.CANCELLED}'"
                    " GROUP BY cancel_reason ORDER BY 2 DESC"
                )
            ).all()
        )
        failed, resolved, lag = s.execute(
            text(
                f"SELECT count(*) FILTER (WHERE a.result = '{AttemptResult.ERROR}'),"
                f" count(*) FILTER (WHERE {_RESOLVED}),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM"
                f"   a.finished_at - m.closes_at)) FILTER (WHERE {_RESOLVED})"
                " FROM resolution_attempts a JOIN markets m ON m.id = a.market_id"
                " WHERE a.started_at > now() - interval '24 hours'"
            )
        ).one()
        scrapes = dict(
            s.execute(
                text(
                    "SELECT r.timeframe, max(r.snapshot_at) FROM scrape_runs r"
                    f" WHERE {_USABLE_RUN} GROUP BY r.timeframe"
                )
            ).all()
        )
        x_api = [
            dict(r._mapping)
            for r in s.execute(
                text(
                    'SELECT endpoint, remaining, "limit", reset_at, last_status, updated_at'
                    " FROM x_api_state ORDER BY endpoint"
                )
            )
        ]
        integrity = s.execute(
            text(
                "SELECT status, started_at, counts, error FROM job_runs"
                f" WHERE job = 'integrity' AND status <> '{JobStatus.RUNNING}'"
                " ORDER BY started_at DESC LIMIT 1"
            )
        ).first()
    return Health(
        now=now,
        by_status={k.value: by_status.get(k, 0) for k in MarketStatus},
        due=due,
        overdue=overdue,
        needs_attention=attention,
        held=held,
        cancellations_by_reason=cancellations,
        failed_attempts_24h=failed,
        resolved_24h=resolved,
        median_resolution_lag_s=float(lag) if lag is not None else None,
        last_good_scrape={tf.value: scrapes.get(tf) for tf in Timeframe},
        x_api=x_api,
        last_integrity=dict(integrity._mapping) if integrity else None,
    )
