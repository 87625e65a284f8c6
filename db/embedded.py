"""The embedded PostgreSQL: a real server from the `pgserver` wheel, in a local data folder.

Used only when `DATABASE_URL` is unset. pgserver reference-counts the processes using a data
folder and stops the server when the last one exits, so the scheduler and the dashboard share one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg

log = logging.getLogger(__name__)

DATABASE_NAME = "kolops"

_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def start(pgdata: Path, database: str = DATABASE_NAME) -> str:
    """Start (or join) the server in `pgdata`, create `database` if needed, return its libpq URL."""
    import pgserver  # imported lazily: only the embedded path needs the binaries

    pgdata = pgdata.resolve()
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            pgdata.mkdir(parents=True, exist_ok=True)
            log.info("starting embedded PostgreSQL in %s", pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = server
    admin_url = server.get_uri()
    ensure_database(admin_url, database)
    return server.get_uri(database)


def ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')


def bin_dir() -> Path:
    """The folder holding the embedded server's binaries (pgbench, psql, ...)."""
    import pgserver._commands as commands

    return Path(commands.POSTGRES_BIN_PATH)


def socket_host(url: str) -> str | None:
    """The unix-socket directory of a libpq URL, if it uses one."""
    hosts = parse_qs(urlparse(url).query).get("host")
    return hosts[0] if hosts else None
