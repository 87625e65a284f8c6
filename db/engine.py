"""Engine and unit of work: the one way code outside `db/` talks to PostgreSQL.

A service opens `with transaction() as session:` and everything inside commits together or not at
all. `retrying(work)` runs `work(session)` in a transaction and runs it again in a fresh one on a
deadlock or serialization failure, a bounded number of times, so callers never see those
transient errors.

`pipelined()` is the same unit of work for a hot path (bet placement), on plain psycopg connections
without the ORM: statements travel in pipelines, BEGIN with the first batch and COMMIT with the
last, so a transaction costs one round trip per batch instead of one per statement.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from config import get_settings
from db import embedded, privileges

log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")

_lock = threading.Lock()
_engine: Engine | None = None
_session_factory: sessionmaker[Session] | None = None
_pipeline_pool: QueuePool | None = None
POOL_SIZE, MAX_OVERFLOW = 10, 20


def owner_url() -> str:
    """The URL of the tables' owner, for migrations (starting the embedded server when no
    DATABASE_URL is configured)."""
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    return embedded.start(settings.embedded_pgdata)


def libpq_url() -> str:
    """The application's plain libpq URL: DATABASE_APP_URL, or on the embedded server the role
    `db.privileges` sets up (owning nothing, with only the privileges it uses); with only a
    DATABASE_URL, that one."""
    settings = get_settings()
    if settings.database_app_url:
        return settings.database_app_url
    if settings.database_url:
        return settings.database_url
    return privileges.app_url(owner_url())


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def get_engine() -> Engine:
    global _engine, _session_factory
    with _lock:
        if _engine is None:
            _engine = create_engine(
                sqlalchemy_url(libpq_url()),
                pool_size=POOL_SIZE,
                max_overflow=MAX_OVERFLOW,
                pool_pre_ping=True,
                # Sessions always end their transaction (commit, or rollback on close) before
                # the connection returns, so the pool's own rollback would be a wasted round trip.
                pool_reset_on_return=None,
                connect_args={"application_name": "kolops"},
            )
            _session_factory = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def _get_pipeline_pool() -> QueuePool:
    """The connections `pipelined()` uses: plain psycopg, always in autocommit mode (BEGIN and
    COMMIT are queued in the batches), and not pinged on checkout, because a broken connection
    shows in the first batch, before COMMIT, and the transaction then runs again on another."""
    global _pipeline_pool
    with _lock:
        if _pipeline_pool is None:
            url = libpq_url()
            _pipeline_pool = QueuePool(
                lambda: psycopg.connect(url, autocommit=True, application_name="kolops"),
                pool_size=POOL_SIZE,
                max_overflow=MAX_OVERFLOW,
                reset_on_return=None,
            )
        return _pipeline_pool


def dispose_engine() -> None:
    """Drop the pools (tests switching databases, forked processes)."""
    global _engine, _session_factory, _pipeline_pool
    with _lock:
        if _engine is not None:
            _engine.dispose()
        if _pipeline_pool is not None:
            _pipeline_pool.dispose()
        _engine = None
        _session_factory = None
        _pipeline_pool = None


@contextmanager
def transaction() -> Iterator[Session]:
    """One database transaction: commit on success, roll back on any exception."""
    get_engine()
    assert _session_factory is not None
    with _session_factory() as session, session.begin():
        yield session


@contextmanager
def read_session() -> Iterator[Session]:
    """A session for reads; whatever it did is rolled back on exit. Loaded objects are detached
    first, so they stay readable after the session ends (a rollback would expire them)."""
    get_engine()
    assert _session_factory is not None
    with _session_factory() as session:
        try:
            yield session
        finally:
            session.expunge_all()
            session.rollback()


class LostBeforeCommit(Exception):
    """The connection broke before COMMIT was sent: the server rolled the transaction back, so
    running it again cannot apply it twice."""


@contextmanager
def pipelined() -> Iterator[psycopg.Connection[Any]]:
    """One database transaction on a pooled psycopg connection, in pipeline mode.

    Statements the body executes are queued behind BEGIN; fetching a result sends the batch (one
    round trip), and leaving the block sends COMMIT with whatever is still queued. A statement
    that fails makes the server skip the rest of its batch, COMMIT included, so a batch never
    commits half of its work; an exception in the body rolls everything back.

    Raises LostBeforeCommit when the connection breaks before COMMIT is queued (`retrying` runs
    the work again). A connection that breaks after that raises psycopg.OperationalError: the
    transaction may or may not have committed.
    """
    pool = _get_pipeline_pool()
    pooled = pool.connect()
    conn: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    committing = False
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield conn
            committing = True
            conn.execute("COMMIT")
    except BaseException as exc:
        if conn.broken or conn.closed:
            pooled.invalidate()
            pool.dispose()  # idle connections to a restarted server are broken too
            if isinstance(exc, psycopg.OperationalError) and not committing:
                raise LostBeforeCommit(str(exc)) from exc
            raise
        with suppress(psycopg.Error):  # the original error is the one to report
            conn.rollback()
        if conn.info.transaction_status != TransactionStatus.IDLE:
            pooled.invalidate()  # an unclean connection never goes back to the pool
        raise
    finally:
        pooled.close()


_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure (raised through SQLAlchemy or by psycopg itself), or
    a connection lost before COMMIT."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(cause, (*_RETRYABLE, LostBeforeCommit))


def retrying(
    work: Callable[[U], T],
    *,
    unit: Callable[[], AbstractContextManager[U]] = transaction,  # type: ignore[assignment]
    attempts: int = 8,
    what: str = "transaction",
) -> T:
    """Run `work` in a unit of work of its own (`transaction`, or `pipelined`); on a deadlock, a
    serialization failure or a connection lost before COMMIT, the whole transaction rolls back and
    `work` runs again in a fresh one."""
    for attempt in range(1, attempts + 1):
        try:
            with unit() as handle:
                return work(handle)
        except (DBAPIError, psycopg.Error, LostBeforeCommit) as exc:
            if not is_retryable(exc) or attempt == attempts:
                raise
            delay = min(0.2, 0.005 * 2**attempt) * random.uniform(0.5, 1.5)
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            log.debug("%s: retry %d after %s", what, attempt, type(cause).__name__)
            time.sleep(delay)
    raise AssertionError("unreachable")
