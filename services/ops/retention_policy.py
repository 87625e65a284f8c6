"""The retention policy (from configuration, shown on the Jobs page) and what it measures on
disk; `services/ops/retention.py` applies it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config import Settings

# The scheduler's job that applies the policy (its runs record what it removed).
JOB = "retention"
MB = 1024 * 1024

# What a retention run counts as removed (its job run's counts), in the order people read it.
REMOVED = {
    "scrape_runs": "Scrape runs",
    "scraped_kols": "Scraped rows",
    "scrape_rejects": "Rejected rows",
    "follower_rows_thinned": "Follower readings thinned",
    "follower_rows_removed": "Follower readings removed",
    "follower_partitions_dropped": "Follower history months dropped",
    "job_runs": "Job runs",
    "alert_deliveries": "Alert deliveries",
    "artifact_files": "Artifact files",
    "artifact_bytes": "Artifact bytes",
}


@dataclass(frozen=True)
class Policy:
    resettle_window_days: int
    scrape_days: int
    follower_full_days: int
    follower_days: int
    job_run_days: int
    delivery_days: int
    artifact_days: int
    artifact_budget_bytes: int
    # The resolution windows, as the resolver reads them: evidence kept around each close.
    lag_minutes: int
    follower_max_age_minutes: int
    artifacts_dir: Path

    @classmethod
    def of(cls, s: Settings) -> Policy:
        return cls(
            resettle_window_days=s.resettle_window_days,
            scrape_days=s.retention_scrape_days,
            follower_full_days=s.retention_follower_full_days,
            follower_days=max(s.retention_follower_days, s.retention_follower_full_days),
            job_run_days=s.retention_job_run_days,
            delivery_days=s.retention_delivery_days,
            artifact_days=s.retention_artifact_days,
            artifact_budget_bytes=s.retention_artifact_budget_mb * MB,
            lag_minutes=s.max_scrape_lag_minutes,
            follower_max_age_minutes=s.follower_cache_max_age_minutes,
            artifacts_dir=s.artifacts_dir,
        )

    def describe(self) -> list[dict[str, str]]:
        """The policy for people (the Jobs page)."""
        return [
            {"what": "Scrape runs, their rows and rejects", "kept": f"{self.scrape_days} days"},
            {
                "what": "Follower history",
                "kept": f"every reading {self.follower_full_days} days, then one per hour"
                f" until {self.follower_days} days",
            },
            {"what": "Job runs", "kept": f"{self.job_run_days} days (each job's latest always)"},
            {"what": "Alert deliveries (finished)", "kept": f"{self.delivery_days} days"},
            {
                "what": "Failure artifacts (HTML, screenshots)",
                "kept": f"{self.artifact_days} days, at most"
                f" {self.artifact_budget_bytes // MB} MB in all",
            },
            {
                "what": "Evidence of open markets and of markets final within the re-settle window",
                "kept": f"always; the re-settle window is {self.resettle_window_days} days",
            },
            {"what": "Ledger, audit log, markets, bets, settlements", "kept": "always"},
        ]


def artifact_files(root: Path) -> Iterator[Path]:
    """The regular files under the artifacts folder; symlinks are never followed or removed."""
    if not root.is_dir():
        return
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def artifact_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in artifact_files(root))


def trim_artifacts(root: Path, budget_bytes: int) -> tuple[int, int]:
    """Remove the oldest artifacts until the folder holds at most `budget_bytes`; returns the
    (files, bytes) removed. Retention calls it daily, the scraper after keeping a failed page, so
    a storm of failures between two retention runs cannot fill the disk."""
    kept = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in artifact_files(root))
    total = sum(size for _, size, _ in kept)
    files = freed = 0
    for _, size, path in kept:
        if total <= budget_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        total -= size
        files += 1
        freed += size
    return files, freed
