"""The application's role owns nothing and holds only what db.privileges declares: it cannot
rewrite the ledger or the audit log, switch their triggers off, or empty a table."""

from __future__ import annotations

import psycopg
import pytest

from config import get_settings
from db.models import Base
from db.privileges import APP_ROLE, TABLES
from services.ops import audit


def test_every_table_of_the_models_is_declared() -> None:
    """A table added later must say what the application may do to it."""
    assert set(TABLES) == set(Base.metadata.tables)


def test_the_application_connects_as_its_own_role(db: str) -> None:
    with psycopg.connect(get_settings().database_app_url or "") as conn:
        user, superuser = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or (None, None)
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = current_user"
        ).fetchone()
    assert (user, superuser, owned) == (APP_ROLE, False, (0,))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = amount",
        "DELETE FROM ledger_transactions",
        "TRUNCATE ledger_entries",
        "UPDATE audit_log SET result = 'OK'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "TRUNCATE markets CASCADE",
        "DELETE FROM users",
        "ALTER TABLE ledger_entries DISABLE TRIGGER ALL",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_immutable",
        "DROP TRIGGER ledger_transactions_balanced ON ledger_transactions",
        "SET session_replication_role = replica",
        "CREATE TABLE sneaky (id int)",
    ],
)
def test_the_application_role_cannot_rewrite_history(db: str, statement: str) -> None:
    audit.record(None, action="login", result="REFUSED", detail="x")
    with (
        psycopg.connect(get_settings().database_app_url or "", autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)
    with psycopg.connect(db) as owner:
        assert owner.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
