"""Alembic environment: migrates the database named by config (or a URL passed by db.migrate)."""

from alembic import context
from sqlalchemy import create_engine, pool

from db.engine import owner_url, sqlalchemy_url
from db.models import Base, include_in_autogenerate

url = context.config.attributes.get("url") or owner_url()
connectable = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        include_object=include_in_autogenerate,
    )
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
