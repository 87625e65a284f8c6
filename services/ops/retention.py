"""Retention: history older than the policy's windows is removed or thinned (PRODUCT.md 6a).

Run daily by the scheduler's `retention` job; each step is its own transaction, so a run cut short
keeps what it finished, and running it again only does what is left.

What it removes, by table (the policy is `Policy.of(settings)`):
- `scrape_runs` started more than RETENTION_SCRAPE_DAYS ago, with their `scraped_kols` and
  `scrape_rejects` (ON DELETE CASCADE) and their saved artifacts; row deletes, not partitions,
  because each run is kept or removed by whether it is evidence, and nearly every month holds some.
- `follower_history`: readings older than RETENTION_FOLLOWER_FULL_DAYS are thinned to the first of
  each (handle, hour); older than RETENTION_FOLLOWER_DAYS removed, whole months by dropping their
  partition (migration 0011), the rest row by row.
- `job_runs` finished more than RETENTION_JOB_RUN_DAYS ago (each job's latest run always stays).
- `alert_deliveries` finished more than RETENTION_DELIVERY_DAYS ago.
- failure artifacts (saved HTML, screenshots) older than RETENTION_ARTIFACT_DAYS, then the oldest
  until the folder is within RETENTION_ARTIFACT_BUDGET_MB.

What it never removes: the ledger, the audit log, markets, bets, settlements, attempts; and the
evidence of every market that `db.rules.keeps_evidence` (open, or final within its re-settle
window): the runs its attempts used, its baseline's run, every usable run of its timeframe in
its resolution window (what a re-evaluation after a quarantine would read), and the follower
readings of its pinned account around its close.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Interval, literal_column, text
from sqlalchemy.orm import Session

from config import get_settings
from db import rules
from db.engine import read_session, transaction
from db.models import Market, ScrapeRun
from services.ops.retention_policy import (
    JOB,
    Policy,
    artifact_bytes,
    artifact_files,
    trim_artifacts,
)
from services.resolution.outcomes import FOLLOWER_TYPES
from services.vocabulary import JobStatus, ScrapeStatus, sql_in

log = logging.getLogger("kolops.retention")

# Scrape runs removed per transaction: short transactions, progress kept if the run is cut short.
BATCH = 2000


# -- what must stay --------------------------------------------------------------------------------

_KEEPS = rules.sql(
    rules.keeps_evidence(Market.__table__.c, literal_column("make_interval(days => :window)"))
)
_PINNED_HANDLE = rules.sql(rules.pinned_x_handle(Market.__table__.c))
_USABLE = rules.sql(rules.usable_run(ScrapeRun.__table__.c))
# The markets whose evidence stays, with the columns the evidence is found by (a follower
# market's pinned handle: history keeps handles lower-cased).
_FOLLOWER_MARKET = sql_in("markets.type", FOLLOWER_TYPES)
_KEPT = f"""kept AS (
    SELECT id, timeframe, closes_at, baseline,
           CASE WHEN {_FOLLOWER_MARKET} THEN lower({_PINNED_HANDLE}) END AS handle
    FROM markets WHERE {_KEEPS})"""

# The resolution windows of `db.rules`, over a kept market `k`: the snapshots that could decide
# it, and the widest window of follower readings that could stand for its count at close.
_CLOSE = literal_column("k.closes_at", DateTime(timezone=True))
_LAG = literal_column("make_interval(mins => :lag)", Interval())
_MAX_AGE = literal_column("make_interval(mins => :max_age)", Interval())
_IN_SNAPSHOT_WINDOW = rules.sql(
    rules.snapshot_window(_CLOSE, _LAG).contains(ScrapeRun.__table__.c.snapshot_at)
)
_IN_FOLLOWER_WINDOW = rules.sql(
    rules.follower_window(_CLOSE, _MAX_AGE, _LAG).contains(
        literal_column("h.fetched_at", DateTime(timezone=True))
    )
)

_PROTECTED_RUNS = f"""{_KEPT},
protected AS (
    SELECT (a.evidence ->> 'run_id')::bigint AS id
    FROM resolution_attempts a JOIN kept k ON k.id = a.market_id
    WHERE a.evidence ? 'run_id'
    UNION
    SELECT (k.baseline -> 'source' ->> 'run_id')::bigint FROM kept k
    WHERE k.baseline -> 'source' ? 'run_id'
    UNION
    -- One look-up per kept market in the usable-snapshot index, never a join of every kept
    -- market with every run of its timeframe (OFFSET 0 keeps the planner from flattening it
    -- into one).
    SELECT r.id FROM kept k CROSS JOIN LATERAL (
        SELECT scrape_runs.id FROM scrape_runs
        WHERE scrape_runs.timeframe = k.timeframe AND {_USABLE} AND {_IN_SNAPSHOT_WINDOW}
        OFFSET 0) r
)"""

_OLDEST_READING = rules.sql(rules.follower_window(_CLOSE, _MAX_AGE, _LAG).start)
_PROTECTED_READING = f"""EXISTS (
    SELECT 1 FROM kept k WHERE k.handle = h.handle AND {_IN_FOLLOWER_WINDOW})"""


@dataclass(frozen=True)
class RetentionReport:
    removed: dict[str, int]
    db_bytes_before: int
    db_bytes_after: int
    artifact_bytes_after: int
    follower_thinned_through: dt.datetime

    def counts(self) -> dict[str, Any]:
        """For the job run's record (and so the Jobs page)."""
        return {
            **self.removed,
            "db_bytes_before": self.db_bytes_before,
            "db_bytes_after": self.db_bytes_after,
            "artifact_bytes_after": self.artifact_bytes_after,
            "follower_thinned_through": self.follower_thinned_through.isoformat(),
        }


def run(policy: Policy | None = None) -> RetentionReport:
    """Apply the policy once."""
    p = policy or Policy.of(get_settings())
    params = {
        "window": p.resettle_window_days,
        "lag": p.lag_minutes,
        "max_age": p.follower_max_age_minutes,
    }
    before = database_bytes()
    removed: dict[str, int] = {}
    runs, artifacts_of_runs = _scrape_runs(p, params)
    removed.update(runs)
    thinned_through, followers = _follower_history(p, params)
    removed.update(followers)
    with transaction() as session:
        removed["job_runs"] = session.execute(
            text(
                "DELETE FROM job_runs WHERE started_at < now() - make_interval(days => :days)"
                " AND status <> :running"
                " AND id NOT IN (SELECT max(id) FROM job_runs GROUP BY job)"
            ),
            {"days": p.job_run_days, "running": JobStatus.RUNNING.value},
        ).rowcount
        removed["alert_deliveries"] = session.execute(
            text(
                "DELETE FROM alert_deliveries WHERE finished_at IS NOT NULL"
                " AND finished_at < now() - make_interval(days => :days)"
            ),
            {"days": p.delivery_days},
        ).rowcount
    files, freed = _artifacts(p, artifacts_of_runs)
    removed["artifact_files"] = files
    removed["artifact_bytes"] = freed
    report = RetentionReport(
        removed=removed,
        db_bytes_before=before,
        db_bytes_after=database_bytes(),
        artifact_bytes_after=artifact_bytes(p.artifacts_dir),
        follower_thinned_through=thinned_through,
    )
    log.info("retention: %s", " ".join(f"{k}={v}" for k, v in report.counts().items()))
    return report


def _scrape_runs(p: Policy, params: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Old runs that are no market's evidence, a batch per transaction; their artifact paths."""
    counts = {"scrape_runs": 0, "scraped_kols": 0, "scrape_rejects": 0}
    paths: list[str] = []
    while True:
        with transaction() as session:
            # The runs are locked first (a quarantine waits), then their rows go set-based: one
            # statement per table, not one cascaded delete per run.
            doomed = list(
                session.scalars(
                    text(
                        f"""WITH {_PROTECTED_RUNS}
                        SELECT r.id FROM scrape_runs r
                        WHERE r.started_at < now() - make_interval(days => :days)
                          AND r.status <> :running
                          -- (an anti-join: NOT IN would rescan the list for every run)
                          AND NOT EXISTS (SELECT 1 FROM protected p WHERE p.id = r.id)
                        ORDER BY r.started_at LIMIT :batch
                        FOR UPDATE OF r"""
                    ),
                    {
                        **params,
                        "days": p.scrape_days,
                        "running": ScrapeStatus.RUNNING.value,
                        "batch": BATCH,
                    },
                )
            )
            ids = {"ids": doomed}
            session.execute(text("DELETE FROM scraped_kols WHERE run_id = ANY(:ids)"), ids)
            session.execute(text("DELETE FROM scrape_rejects WHERE run_id = ANY(:ids)"), ids)
            rows = session.execute(
                text(
                    "DELETE FROM scrape_runs WHERE id = ANY(:ids)"
                    " RETURNING rows_stored, rows_rejected, html_path, screenshot_path"
                ),
                ids,
            ).all()
        counts["scrape_runs"] += len(rows)
        counts["scraped_kols"] += sum(r.rows_stored for r in rows)
        counts["scrape_rejects"] += sum(r.rows_rejected for r in rows)
        paths += [path for r in rows for path in (r.html_path, r.screenshot_path) if path]
        if len(rows) < BATCH:
            return counts, paths


def _follower_history(p: Policy, params: dict[str, Any]) -> tuple[dt.datetime, dict[str, int]]:
    """Partitions ahead, whole old months dropped, old rows removed, older-than-a-week thinned."""
    with transaction() as session:
        session.execute(text("SELECT follower_history_add_partitions(0, 2)"))
        now = session.scalar(text("SELECT now()"))
        assert now is not None
        cutoff = now - dt.timedelta(days=p.follower_days)
        # The oldest reading some kept market's evidence needs bounds what a month drop may take.
        oldest_needed = session.scalar(
            text(
                f"WITH {_KEPT} SELECT min({_OLDEST_READING}) FROM kept k WHERE k.handle IS NOT NULL"
            ),
            params,
        )
        drop_before = min(cutoff, oldest_needed) if oldest_needed else cutoff
        dropped = 0
        if drop_before <= now - dt.timedelta(days=7):  # the function's own floor
            dropped = len(
                session.execute(
                    text("SELECT follower_history_drop_partitions(:before)"),
                    {"before": drop_before},
                ).all()
            )
        old = session.execute(
            text(
                f"""WITH {_KEPT}
                DELETE FROM follower_history h WHERE h.fetched_at < :cutoff
                AND NOT {_PROTECTED_READING}"""
            ),
            {**params, "cutoff": cutoff},
        ).rowcount
        thin_to = session.scalar(
            text("SELECT date_trunc('hour', now() - make_interval(days => :days))"),
            {"days": p.follower_full_days},
        )
        assert thin_to is not None
        thin_from = max(_last_thinned_through(session) or cutoff, cutoff)
        thin_from = thin_from.replace(minute=0, second=0, microsecond=0)
    thinned = 0
    # A week per transaction: the first run on a long history stays a series of short ones.
    day = thin_from
    while day < thin_to:
        end = min(day + dt.timedelta(days=7), thin_to)
        with transaction() as session:
            thinned += session.execute(
                text(
                    f"""WITH {_KEPT},
                    ranked AS (
                        SELECT id, fetched_at, row_number() OVER (
                            PARTITION BY handle, date_trunc('hour', fetched_at)
                            ORDER BY fetched_at, id) AS n
                        FROM follower_history
                        WHERE fetched_at >= :lo AND fetched_at < :hi)
                    DELETE FROM follower_history h USING ranked x
                    WHERE h.fetched_at >= :lo AND h.fetched_at < :hi  -- only the week's partitions
                      AND h.id = x.id AND h.fetched_at = x.fetched_at AND x.n > 1
                      AND NOT {_PROTECTED_READING}"""
                ),
                {**params, "lo": day, "hi": end},
            ).rowcount
        day = end
    return thin_to, {
        "follower_partitions_dropped": dropped,
        "follower_rows_removed": old,
        "follower_rows_thinned": thinned,
    }


def _last_thinned_through(session: Session) -> dt.datetime | None:
    """Where the last successful run stopped thinning: this run starts there."""
    raw = session.scalar(
        text(
            "SELECT counts ->> 'follower_thinned_through' FROM job_runs"
            " WHERE job = :job AND status = :ok ORDER BY id DESC LIMIT 1"
        ),
        {"job": JOB, "ok": JobStatus.SUCCESS.value},
    )
    return dt.datetime.fromisoformat(raw) if raw else None


# -- artifacts -------------------------------------------------------------------------------------


def _artifacts(p: Policy, of_removed_runs: list[str]) -> tuple[int, int]:
    """Remove the removed runs' artifacts, those older than the window, then the oldest until
    the folder fits the budget. Returns (files, bytes) removed."""
    root = p.artifacts_dir.resolve()
    files = removed_bytes = 0

    def remove(path: Path, size: int) -> None:
        nonlocal files, removed_bytes
        try:
            path.unlink()
        except FileNotFoundError:
            return
        files += 1
        removed_bytes += size

    for raw in of_removed_runs:
        path = Path(raw).resolve()
        if path.is_relative_to(root) and path.is_file() and not Path(raw).is_symlink():
            remove(path, path.stat().st_size)
    horizon = dt.datetime.now(dt.UTC).timestamp() - p.artifact_days * 86400
    for path in artifact_files(root):
        st = path.stat()
        if st.st_mtime < horizon:
            remove(path, st.st_size)
    over_files, over_bytes = trim_artifacts(root, p.artifact_budget_bytes)
    return files + over_files, removed_bytes + over_bytes


# -- disk, for the dashboard -----------------------------------------------------------------------


def database_bytes() -> int:
    with read_session() as session:
        return int(session.scalar(text("SELECT pg_database_size(current_database())")) or 0)
