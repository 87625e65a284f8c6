"""What the application may do to each table: the one declaration, applied after every migration.

Migrations run as the owner of the tables. The dashboard and the scheduler connect as APP_ROLE,
which owns nothing: it cannot alter a table, switch a trigger off, set
`session_replication_role` or TRUNCATE, and it has only the privileges below. The ledger and
the audit log are append-only for it (their triggers refuse changes even to the owner).

A table missing here fails `test_privileges` (every table of the models must be declared), so a
table a later change adds is declared with it.
"""

from __future__ import annotations

from contextlib import suppress
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

APP_ROLE = "kolops_app"

_APPEND = ("SELECT", "INSERT")
_WRITE = ("SELECT", "INSERT", "UPDATE")

TABLES: dict[str, tuple[str, ...]] = {
    # Money: balances move; the ledger only grows.
    "accounts": _WRITE,
    "users": _WRITE,
    "markets": _WRITE,
    "bets": _WRITE,
    "positions": _WRITE,
    "settlements": _WRITE,
    "ledger_transactions": _APPEND,
    "ledger_entries": _APPEND,
    # Sources.
    "kols": _WRITE,
    "scrape_runs": (*_WRITE, "DELETE"),
    "scraped_kols": (*_APPEND, "DELETE"),
    "scrape_rejects": (*_APPEND, "DELETE"),
    "follower_cache": _WRITE,
    "follower_history": (*_APPEND, "DELETE"),
    "x_api_state": _WRITE,
    # Resolution and jobs.
    "resolution_attempts": _APPEND,
    "job_runs": (*_WRITE, "DELETE"),
    "scheduler_instances": _WRITE,
    # Interventions: a proposal is decided or expires (an UPDATE), never removed.
    "proposals": _WRITE,
    # Alerts and incidents.
    "alerts": _WRITE,
    "alert_events": _APPEND,
    "alert_deliveries": (*_WRITE, "DELETE"),
    "alert_evaluations": _WRITE,
    "alert_mutes": _WRITE,
    "incidents": _WRITE,
    # The dashboard: accounts, sessions, failed logins (an unlock deletes them), the audit log.
    "dashboard_accounts": _WRITE,
    "dashboard_sessions": _WRITE,
    "login_throttle": (*_WRITE, "DELETE"),
    "audit_log": _APPEND,
    # Incremental integrity: a trigger notes each new ledger transaction (as its writer), the
    # periodic check removes what it verified and keeps each account's verified balance.
    "integrity_pending": (*_APPEND, "DELETE"),
    "integrity_account_marks": _WRITE,
}
# Retention removes old rows (DELETE above, the rows a market's evidence needs never) and drops
# whole months of follower history through these owner's functions (migration 0011): the
# application may call them, not run DDL itself.
FUNCTIONS = (
    "follower_history_add_partitions(integer, integer)",
    "follower_history_drop_partitions(timestamptz)",
)


def app_url(owner_url: str, role: str = APP_ROLE) -> str:
    """The owner's URL with `role` as the user (no password: the embedded server trusts local
    connections)."""
    parts = urlsplit(owner_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def apply(owner_url: str, role: str = APP_ROLE) -> None:
    """Create `role` if needed and give it exactly TABLES on this database (as the owner)."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            # Another process may create it meanwhile: then it exists, which is all we need.
            with suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    ).format(sql.Identifier(role))
                )
        ident = sql.Identifier(role)
        with conn.transaction():
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(conn.info.dbname), ident
                )
            )
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(ident))
            for table, privileges in TABLES.items():
                conn.execute(
                    sql.SQL("GRANT {} ON {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in privileges),
                        sql.Identifier(table),
                        ident,
                    )
                )
            conn.execute(
                sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident)
            )
            for function in FUNCTIONS:
                conn.execute(
                    sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function), ident)
                )
