"""Test database: a real PostgreSQL (embedded via pgserver, or DATABASE_URL), migrated once per
session; every test starts from empty tables. The services under test connect as the
application's role (db.privileges; DATABASE_APP_URL), the `db` fixture's URL is the owner's (for
planting faults). Subprocesses inherit both."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import launch
from config import PROJECT_ROOT, get_settings
from db import embedded, privileges
from db.engine import dispose_engine
from db.migrate import upgrade

# One database per pytest process, so parallel runs never touch each other.
TEST_DB = f"kolops_test_{os.getpid()}"


def _admin_url() -> str:
    external = os.environ.get("TEST_ADMIN_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if external:
        return external
    pgdata = Path(tempfile.gettempdir()) / f"kolops-test-pg-{os.getuid()}"
    return embedded.start(pgdata, database="postgres")


def _with_database(url: str, database: str) -> str:
    from urllib.parse import urlparse, urlunparse

    return urlunparse(urlparse(url)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def admin_url() -> str:
    return _admin_url()


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEST_DB}"')
    url = _with_database(admin_url, TEST_DB)
    previous = {k: os.environ.get(k) for k in ("DATABASE_URL", "DATABASE_APP_URL")}
    os.environ["DATABASE_URL"] = url
    # The server must let the application's role in without a password (the embedded one
    # trusts local connections).
    os.environ["DATABASE_APP_URL"] = privileges.app_url(url)
    os.environ.setdefault("TEST_ADMIN_DATABASE_URL", admin_url)
    get_settings.cache_clear()
    dispose_engine()
    upgrade(url)
    yield url
    dispose_engine()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


# Under the replica role neither foreign keys nor the ledger's immutability triggers fire, so
# every table can be emptied in any order; the three system accounts stay, zeroed.
RESET_SQL = """
SET session_replication_role = replica;
DO $$ DECLARE t text;
BEGIN
  FOR t IN SELECT tablename FROM pg_tables
           WHERE schemaname = 'public' AND tablename NOT IN ('alembic_version', 'accounts')
  LOOP EXECUTE 'DELETE FROM ' || quote_ident(t); END LOOP;
END $$;
DELETE FROM accounts WHERE kind IN ('USER', 'ESCROW');
UPDATE accounts SET balance = 0;
SET session_replication_role = origin;
"""


def reset_database(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RESET_SQL)


@pytest.fixture()
def db(database_url: str) -> Iterator[str]:
    """An empty, migrated database for this test; yields its libpq URL."""
    reset_database(database_url)
    yield database_url
    dispose_engine()


@dataclass
class Standins:
    kolscan: Any  # standins.kolscan_standin.KolscanStandin
    x: Any  # standins.xapi_standin.XApiStandin
    env: dict[str, str]


STANDIN_BUCKET = 4242


@pytest.fixture()
def standins(db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Standins]:
    """Both stand-ins on 127.0.0.1, configured through the environment (subprocesses included),
    with short timeouts so failure paths are quick. The leaderboard is pinned to one bucket."""
    from standins.kolscan_standin import KolscanStandin
    from standins.xapi_standin import XApiStandin

    with (
        KolscanStandin(bucket=STANDIN_BUCKET, first_ms=30, batch_ms=10) as site,
        XApiStandin(token="test-standin-token") as x,
    ):
        env = {
            "KOLSCAN_BASE_URL": site.base_url,
            "X_API_BASE_URL": x.base_url,
            "X_API_BEARER_TOKEN": x.token,
            "X_API_MAX_RETRIES": "1",
            "X_API_MAX_WAIT_S": "1",
            "X_API_READ_TIMEOUT_S": "1",
            "SCRAPE_TIMEOUT_S": "8",
            "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        yield Standins(site, x, env)
    get_settings.cache_clear()


@contextmanager
def running_dashboard(log_path: Path, env: dict[str, str], *extra: str) -> Iterator[str]:
    """The dashboard as `launch.py` runs it, on a free loopback port; yields its URL and is
    always stopped. Its output goes to `log_path`, shown if it does not start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *launch.dashboard_args(port), *extra],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                launch.wait_http(f"{url}/_stcore/health", timeout_s=60, alive=proc)
            except RuntimeError:
                raise AssertionError(f"streamlit did not start:\n{log_path.read_text()}") from None
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
