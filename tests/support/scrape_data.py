"""Planted data for the read models' tests: KOLs, scrape runs with their rows and rejects, cached
follower counts, and a funded house to open markets with."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg

from db.engine import transaction
from services.money import users
from services.vocabulary import ScrapeStatus, ScrapeTrigger
from standins.xapi_standin import user_id
from tests.support.factories import new_named_kol

NOW = dt.datetime.now(dt.UTC)

# (rank, username, wallet, x handle)
BoardRow = tuple[int, str, str, str | None]


def kol(name: str, wallet: str, handle: str | None) -> int:
    with transaction() as s:
        return new_named_kol(s, name, wallet=wallet, x_handle=handle)


def fund_house(amount: str = "100000") -> None:
    with transaction() as s:
        users.fund_house(s, Decimal(amount), key="house", actor="test")


def board(n: int) -> list[BoardRow]:
    return [(i, f"kol{i}", f"W{i:03d}", f"handle{i}") for i in range(1, n + 1)]


def scrape_run(
    db: str,
    timeframe: str,
    snapshot_at: dt.datetime | None,
    rows: Sequence[BoardRow],
    *,
    status: str = ScrapeStatus.SUCCESS,
    quarantined: bool = False,
    rejects: Sequence[tuple[int, dict[str, Any], str]] = (),
    error: tuple[str, str] | None = None,
) -> int:
    """A scrape run with rows (rank, username, wallet, handle) and rejects (position, raw, code)."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "INSERT INTO scrape_runs (timeframe, trigger, source_url, started_at, finished_at,"
            " snapshot_at, status, rows_stored, rows_rejected, quarantined, quarantine_reason,"
            " error_code, error_message) VALUES (%s, %s, 'http://127.0.0.1/lb',"
            " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                timeframe,
                ScrapeTrigger.SCHEDULE.value,
                (snapshot_at or NOW) - dt.timedelta(seconds=5),
                snapshot_at or NOW,
                snapshot_at,
                str(status),
                len(rows),
                len(rejects),
                quarantined,
                "planted" if quarantined else None,
                *(error or (None, None)),
            ),
        ).fetchone()
        assert row
        run_id = int(row[0])
        for rank, username, wallet, handle in rows:
            conn.execute(
                "INSERT INTO scraped_kols (run_id, rank, username, wallet, x_handle, wins,"
                " losses, sol_gain, usd_gain, timeframe, scraped_at)"
                " VALUES (%s, %s, %s, %s, %s, 10, 5, %s, %s, %s, %s)",
                (
                    run_id,
                    rank,
                    username,
                    wallet,
                    handle,
                    100 - rank,
                    1000 - rank,
                    timeframe,
                    snapshot_at,
                ),
            )
        for position, raw, code in rejects:
            conn.execute(
                "INSERT INTO scrape_rejects (run_id, position, raw, field, reason_code, reason)"
                " VALUES (%s, %s, %s, 'sol_gain', %s, 'could not read the number')",
                (run_id, position, json.dumps(raw), code),
            )
    return run_id


def cached_count(db: str, handle: str, fetched_at: dt.datetime) -> None:
    """A follower cache row of 1,000 followers for `handle`, of the account the X stand-in
    gives that handle."""
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO follower_cache (handle, x_user_id, followers, fetched_at)"
            " VALUES (%s, %s, 1000, %s)",
            (handle, user_id(handle), fetched_at),
        )
