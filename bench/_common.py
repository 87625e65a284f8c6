"""Shared set-up for bench scripts: a fresh database on the embedded server, and the output format
(a readable table, then one JSON object as the very last line)."""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def use_database(url: str) -> None:
    """Point the services at database `url`, as its owner: a DATABASE_APP_URL inherited from the
    caller (the test suite's) names another database."""
    from config import get_settings
    from db.engine import dispose_engine

    os.environ["DATABASE_URL"] = url
    os.environ.pop("DATABASE_APP_URL", None)
    get_settings.cache_clear()
    dispose_engine()


def start_database(name: str) -> str:
    """Create a fresh, migrated database for this bench; returns its URL and sets DATABASE_URL."""
    import psycopg

    from db import embedded
    from db.engine import dispose_engine
    from db.migrate import upgrade

    admin = os.environ.get("BENCH_ADMIN_DATABASE_URL") or embedded.start(
        Path(tempfile.gettempdir()) / f"kolops-bench-pg-{os.getuid()}", database="postgres"
    )
    database = f"kolops_bench_{name}_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    url = urlunparse(urlparse(admin)._replace(path=f"/{database}"))
    use_database(url)
    upgrade(url)

    def drop() -> None:
        dispose_engine()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    atexit.register(drop)
    return url


def report(title: str, rows: list[tuple[str, str]], figures: dict[str, float]) -> None:
    """Print a table a person can read, then the same figures as JSON on the last line."""
    width = max(len(k) for k, _ in rows) if rows else 10
    print(title)
    print("-" * len(title))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
