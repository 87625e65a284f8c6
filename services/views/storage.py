"""Storage and retention for the Jobs page: the policy, the last retention run and what it
removed, and the disk used by the database (largest tables) and by the failure artifacts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from config import get_settings
from db.engine import read_session
from services.ops.retention_policy import JOB, REMOVED, Policy, artifact_bytes
from services.vocabulary import JobStatus

# A partition's size and rows count toward its table.
_TABLES = """
SELECT coalesce(parent.relname, c.relname) AS "table",
       sum(greatest(c.reltuples, 0))::bigint AS rows_estimate,
       sum(pg_total_relation_size(c.oid))::bigint AS bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE c.relkind = 'r'
GROUP BY 1 ORDER BY 3 DESC LIMIT :limit
"""


@dataclass(frozen=True)
class RetentionRun:
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    counts: dict[str, Any]
    error: str | None

    @property
    def removed(self) -> list[tuple[str, str, int]]:
        """(key, label, count) of what it removed, in reading order."""
        return [(key, label, int(self.counts.get(key, 0))) for key, label in REMOVED.items()]


@dataclass(frozen=True)
class Storage:
    policy: list[dict[str, str]]
    last_run: RetentionRun | None
    database_bytes: int
    artifact_bytes: int
    tables: list[dict[str, Any]]


def storage(*, tables: int = 10) -> Storage:
    settings = get_settings()
    with read_session() as s:
        size = s.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        biggest = [dict(r) for r in s.execute(text(_TABLES), {"limit": tables}).mappings()]
        last = s.execute(
            text(
                "SELECT status, started_at, finished_at, counts, error FROM job_runs"
                " WHERE job = :job AND status <> :running ORDER BY id DESC LIMIT 1"
            ),
            {"job": JOB, "running": JobStatus.RUNNING.value},
        ).one_or_none()
    return Storage(
        policy=Policy.of(settings).describe(),
        last_run=RetentionRun(*last) if last else None,
        database_bytes=int(size),
        artifact_bytes=artifact_bytes(settings.artifacts_dir),
        tables=biggest,
    )
