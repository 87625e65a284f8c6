"""The migrations build the whole schema the models describe, and nothing else."""

from __future__ import annotations

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from db.engine import sqlalchemy_url
from db.migrate import downgrade, upgrade
from db.models import Base, include_in_autogenerate
from tests.conftest import _with_database


def test_migrations_downgrade_and_upgrade_cleanly(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "kolops_migrations" WITH (FORCE)')
        conn.execute('CREATE DATABASE "kolops_migrations"')
    url = _with_database(admin_url, "kolops_migrations")
    upgrade(url)
    downgrade(url, "base")
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname='public'"
        ).fetchall()
        domains = conn.execute(
            "SELECT typname FROM pg_type"
            " WHERE typtype = 'd' AND typnamespace = 'public'::regnamespace"
        ).fetchall()
    assert [t for (t,) in tables if t != "alembic_version"] == []
    assert domains == []
    upgrade(url)
    with psycopg.connect(url) as conn:
        kinds = conn.execute("SELECT kind FROM accounts ORDER BY kind").fetchall()
    assert [k for (k,) in kinds] == ["EXTERNAL", "FEE", "HOUSE"]


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include_in_autogenerate}
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_fillfactor_and_partial_indexes_are_in_place(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        options = dict(
            conn.execute(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN ('bets', 'positions')"
            ).fetchall()
        )
        partial = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%WHERE%' ORDER BY 1"
        ).fetchall()
    assert options == {"bets": ["fillfactor=90"], "positions": ["fillfactor=90"]}
    assert sorted(p for (p,) in partial) == [
        "ix_alert_deliveries_finished_at",
        "ix_alert_deliveries_pending",
        "ix_scrape_runs_usable_snapshot",
        "uq_accounts_system_kind",
        "uq_alerts_firing_rule_key",
        "uq_bets_user_request_key",
        "uq_ledger_entries_reverses_entry_id",
        "uq_markets_open_question",
        "uq_settlements_active_market",
    ]


def test_0011_moves_follower_history_into_monthly_partitions(admin_url: str) -> None:
    """Existing readings keep their ids and land in their month's partition; none in DEFAULT."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "kolops_partitions" WITH (FORCE)')
        conn.execute('CREATE DATABASE "kolops_partitions"')
    url = _with_database(admin_url, "kolops_partitions")
    upgrade(url, "0008")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO follower_history (handle, followers, fetched_at)"
            " SELECT 'h', g, now() - make_interval(days => g * 20) FROM generate_series(0, 5) g"
        )
        before = conn.execute("SELECT id, fetched_at FROM follower_history ORDER BY id").fetchall()
    upgrade(url)
    with psycopg.connect(url) as conn:
        after = conn.execute("SELECT id, fetched_at FROM follower_history ORDER BY id").fetchall()
        placed = conn.execute(
            "SELECT tableoid::regclass::text, to_char(fetched_at AT TIME ZONE 'UTC', 'YYYYMM')"
            " FROM follower_history"
        ).fetchall()
        # The sequence goes on after the moved rows.
        new_id = conn.execute(
            "INSERT INTO follower_history (handle, followers, fetched_at)"
            " VALUES ('h', 1, now()) RETURNING id"
        ).fetchone()
    assert after == before
    assert all(table == f"follower_history_{month}" for table, month in placed), placed
    assert new_id is not None and new_id[0] > max(i for i, _ in before)
