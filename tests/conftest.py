"""Test database: a real PostgreSQL (embedded via pgserver, or DATABASE_URL), migrated once per
session; every test starts from empty tables. Subprocesses inherit DATABASE_URL."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from config import get_settings
from db import embedded
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
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("TEST_ADMIN_DATABASE_URL", admin_url)
    get_settings.cache_clear()
    dispose_engine()
    upgrade(url)
    yield url
    dispose_engine()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    if previous is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = previous
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
