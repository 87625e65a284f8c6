"""Read models behind the KOL data page: the latest snapshot of a timeframe, a KOL's history,
changes since the previous run and anomalies an analyst should look at (read-only).

"Usable" runs are the ones the resolver may use (`db.rules.usable_run`). Every query aggregates
or pages in the database; lists come back as a `Page` (one page plus the total).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, aliased

from db import rules
from db.engine import read_session
from db.models import ScrapeRun
from services.errors import ErrorCode, ServiceError
from services.views.paging import EMPTY, Page, check_page
from services.vocabulary import Timeframe

DEFAULT_MIN_JUMP = 10

_USABLE_RUN = rules.sql(rules.usable_run(aliased(ScrapeRun, name="r")))


@dataclass(frozen=True)
class RunRef:
    id: int
    timeframe: str
    status: str
    snapshot_at: dt.datetime
    rows_stored: int
    rows_rejected: int


@dataclass(frozen=True)
class LeaderboardPage:
    """One page of the latest usable run of a timeframe, each row with its change since the
    previous usable run (None when the KOL was not in it)."""

    run: RunRef | None
    previous: RunRef | None
    page: Page


@dataclass(frozen=True)
class Changes:
    run: RunRef | None
    previous: RunRef | None
    moved: int  # KOLs in both runs whose rank changed
    movers: list[dict[str, Any]] = field(default_factory=list)  # biggest rank changes first
    entered: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Anomalies:
    run: RunRef | None
    min_jump: int
    rank_jumps: Page
    duplicate_ranks: Page
    missing_handles: Page
    rejects: Page


def like_pattern(query: str) -> str:
    """A case-insensitive substring pattern for ILIKE, with the user's wildcards taken literally."""
    escaped = query.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _check_timeframe(timeframe: str) -> None:
    if timeframe not in set(Timeframe):
        raise ServiceError(ErrorCode.INVALID_INPUT, f"unknown timeframe {timeframe!r}")


def _latest_runs(s: Session, timeframe: str) -> tuple[RunRef | None, RunRef | None]:
    """The latest usable run of a timeframe and the one before it."""
    rows = s.execute(
        text(
            "SELECT r.id, r.timeframe, r.status, r.snapshot_at, r.rows_stored, r.rows_rejected"
            f" FROM scrape_runs r WHERE r.timeframe = :tf AND {_USABLE_RUN}"
            " ORDER BY r.snapshot_at DESC, r.id DESC LIMIT 2"
        ),
        {"tf": timeframe},
    ).all()
    refs = [RunRef(**r._mapping) for r in rows]
    return (refs[0] if refs else None, refs[1] if len(refs) > 1 else None)


def latest_snapshot(
    timeframe: str, *, search: str = "", limit: int = 100, offset: int = 0
) -> LeaderboardPage:
    """The latest usable run's rows by rank (optionally only names/wallets/handles matching
    `search`), each with its previous rank and gains' change."""
    _check_timeframe(timeframe)
    check_page(limit, offset)
    with read_session() as s:
        run, previous = _latest_runs(s, timeframe)
        if run is None:
            return LeaderboardPage(None, None, EMPTY)
        where = "k.run_id = :run"
        params: dict[str, Any] = {
            "run": run.id,
            "prev": previous.id if previous else None,
            "limit": limit,
            "offset": offset,
        }
        if search.strip():
            where += " AND (k.username ILIKE :pat OR k.wallet ILIKE :pat OR k.x_handle ILIKE :pat)"
            params["pat"] = like_pattern(search)
        total = s.execute(
            text(f"SELECT count(*) FROM scraped_kols k WHERE {where}"), params
        ).scalar_one()
        rows = s.execute(
            text(
                "SELECT k.rank, k.username, k.wallet, k.x_handle, k.wins, k.losses,"
                " k.sol_gain, k.usd_gain, p.rank AS previous_rank,"
                " p.rank - k.rank AS rank_change, k.sol_gain - p.sol_gain AS sol_gain_change,"
                " k.usd_gain - p.usd_gain AS usd_gain_change"
                " FROM scraped_kols k"
                " LEFT JOIN scraped_kols p ON p.run_id = :prev AND p.wallet = k.wallet"
                f" WHERE {where} ORDER BY k.rank, k.wallet LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        return LeaderboardPage(run, previous, Page([dict(r._mapping) for r in rows], total, offset))


def changes(timeframe: str, *, limit: int = 20) -> Changes:
    """What changed between the previous usable run and the latest: biggest rank moves, KOLs who
    entered and who left the board."""
    _check_timeframe(timeframe)
    check_page(limit, 0)
    with read_session() as s:
        run, previous = _latest_runs(s, timeframe)
        if run is None or previous is None:
            return Changes(run, previous, 0)
        params = {"run": run.id, "prev": previous.id, "limit": limit}
        moved = s.execute(
            text(
                "SELECT count(*) FROM scraped_kols k JOIN scraped_kols p"
                " ON p.run_id = :prev AND p.wallet = k.wallet"
                " WHERE k.run_id = :run AND p.rank <> k.rank"
            ),
            params,
        ).scalar_one()
        movers = s.execute(
            text(
                "SELECT k.username, k.wallet, p.rank AS previous_rank, k.rank,"
                " p.rank - k.rank AS rank_change, k.usd_gain - p.usd_gain AS usd_gain_change"
                " FROM scraped_kols k JOIN scraped_kols p"
                " ON p.run_id = :prev AND p.wallet = k.wallet"
                " WHERE k.run_id = :run AND p.rank <> k.rank"
                " ORDER BY abs(p.rank - k.rank) DESC, k.rank LIMIT :limit"
            ),
            params,
        )
        entered = s.execute(
            text(
                "SELECT k.rank, k.username, k.wallet FROM scraped_kols k"
                " WHERE k.run_id = :run AND NOT EXISTS (SELECT 1 FROM scraped_kols p"
                "   WHERE p.run_id = :prev AND p.wallet = k.wallet)"
                " ORDER BY k.rank LIMIT :limit"
            ),
            params,
        )
        left = s.execute(
            text(
                "SELECT p.rank AS previous_rank, p.username, p.wallet FROM scraped_kols p"
                " WHERE p.run_id = :prev AND NOT EXISTS (SELECT 1 FROM scraped_kols k"
                "   WHERE k.run_id = :run AND k.wallet = p.wallet)"
                " ORDER BY p.rank LIMIT :limit"
            ),
            params,
        )
        return Changes(
            run,
            previous,
            moved,
            [dict(r._mapping) for r in movers],
            [dict(r._mapping) for r in entered],
            [dict(r._mapping) for r in left],
        )


def anomalies(timeframe: str, *, min_jump: int = DEFAULT_MIN_JUMP, limit: int = 100) -> Anomalies:
    """Rows of the latest usable run that deserve a look: ranks that moved `min_jump`+ places
    since the previous run, ranks held by more than one KOL, KOLs without an X handle (with the
    handle the previous run had, if any), and the run's rejected rows."""
    _check_timeframe(timeframe)
    check_page(limit, 0)
    if min_jump < 1:
        raise ServiceError(ErrorCode.INVALID_INPUT, "a rank jump is at least 1 place")
    with read_session() as s:
        run, previous = _latest_runs(s, timeframe)
        if run is None:
            return Anomalies(None, min_jump, EMPTY, EMPTY, EMPTY, EMPTY)
        params = {
            "run": run.id,
            "prev": previous.id if previous else None,
            "jump": min_jump,
            "limit": limit,
        }

        def paged(select_sql: str, from_sql: str, order: str) -> Page:
            total = s.execute(text(f"SELECT count(*) {from_sql}"), params).scalar_one()
            rows = s.execute(
                text(f"SELECT {select_sql} {from_sql} ORDER BY {order} LIMIT :limit"), params
            )
            return Page([dict(r._mapping) for r in rows], total)

        jumps = paged(
            "k.username, k.wallet, p.rank AS previous_rank, k.rank, p.rank - k.rank AS rank_change",
            "FROM scraped_kols k JOIN scraped_kols p ON p.run_id = :prev AND p.wallet = k.wallet"
            " WHERE k.run_id = :run AND abs(p.rank - k.rank) >= :jump",
            "abs(p.rank - k.rank) DESC, k.rank",
        )
        duplicates = paged(
            "rank, kols, usernames",
            "FROM (SELECT rank, count(*) AS kols, string_agg(username, ', ' ORDER BY wallet)"
            "   AS usernames FROM scraped_kols WHERE run_id = :run GROUP BY rank"
            "   HAVING count(*) > 1) d",
            "rank",
        )
        missing = paged(
            "k.rank, k.username, k.wallet, p.x_handle AS previous_handle",
            "FROM scraped_kols k LEFT JOIN scraped_kols p ON p.run_id = :prev"
            " AND p.wallet = k.wallet WHERE k.run_id = :run AND k.x_handle IS NULL",
            "(p.x_handle IS NULL), k.rank",
        )
        rejects = paged(
            "position, field, reason_code, reason, raw::text AS raw",
            "FROM scrape_rejects WHERE run_id = :run",
            "position",
        )
    return Anomalies(run, min_jump, jumps, duplicates, missing, rejects)


def find_kols(search: str = "", *, limit: int = 50) -> list[dict[str, Any]]:
    """KOLs whose name, wallet or handle contains `search` (all, by name, when empty)."""
    check_page(limit, 0)
    where, params = "", {"limit": limit}
    if search.strip():
        where = "WHERE display_name ILIKE :pat OR wallet ILIKE :pat OR x_handle ILIKE :pat"
        params["pat"] = like_pattern(search)
    with read_session() as s:
        rows = s.execute(
            text(
                f"SELECT id, display_name, wallet, x_handle FROM kols {where}"
                " ORDER BY display_name, wallet LIMIT :limit"
            ),
            params,
        )
        return [dict(r._mapping) for r in rows]


def kol_history(wallet: str, *, limit: int = 500) -> list[dict[str, Any]]:
    """A KOL's rows over time (oldest first, the latest `limit`), every timeframe, with whether
    their run was quarantined."""
    check_page(limit, 0)
    with read_session() as s:
        rows = s.execute(
            text(
                "SELECT * FROM (SELECT k.scraped_at, k.timeframe, k.rank, k.wins, k.losses,"
                " k.sol_gain, k.usd_gain, k.run_id, r.quarantined"
                " FROM scraped_kols k JOIN scrape_runs r ON r.id = k.run_id"
                " WHERE k.wallet = :wallet ORDER BY k.scraped_at DESC LIMIT :limit) h"
                " ORDER BY scraped_at"
            ),
            {"wallet": wallet, "limit": limit},
        )
        return [dict(r._mapping) for r in rows]


def follower_history(handle: str, *, limit: int = 500) -> list[dict[str, Any]]:
    """A handle's follower counts over time (oldest first, the latest `limit`)."""
    check_page(limit, 0)
    with read_session() as s:
        rows = s.execute(
            text(
                "SELECT * FROM (SELECT fetched_at, followers FROM follower_history"
                " WHERE handle = lower(:handle) ORDER BY fetched_at DESC LIMIT :limit) h"
                " ORDER BY fetched_at"
            ),
            {"handle": handle, "limit": limit},
        )
        return [dict(r._mapping) for r in rows]
