"""Apply the migrations: `python -m db.migrate` (to head), `python -m db.migrate downgrade base`.

Migrations run as the tables' owner; every upgrade then grants the application's role exactly
what `db.privileges` declares."""

from __future__ import annotations

import sys

from alembic import command
from alembic.config import Config

from config import PROJECT_ROOT
from db import privileges
from db.engine import owner_url


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        privileges.apply(url or owner_url())


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "downgrade":
        downgrade(revision=sys.argv[2] if len(sys.argv) > 2 else "base")
    else:
        upgrade()
