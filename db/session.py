"""Engine and session factory.

SQLite gets WAL and a busy timeout so the embedded default copes with the scheduler and the bot
writing at once; PostgreSQL gets a pool sized for a couple of web and worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, Row, Select, UpdateBase, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db import driver_read


def is_sqlite(url_or_engine: str | AsyncEngine) -> bool:
    url = url_or_engine if isinstance(url_or_engine, str) else str(url_or_engine.url)
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: object) -> AsyncEngine:
    # A statement's bound values are customers' phone numbers, emails and addresses: an error's text
    # (and so any log line or traceback carrying it) shows the statement without them.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # the DBAPI's own connection: untyped
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # A fixed pool of 20 per process. Overflow connections are opened in a burst and closed again
    # after it, and more transactions at once than cores only queue inside PostgreSQL (the flash-sale
    # figures for each pool shape are in bench/RESULTS.md). 20 leaves room for the scheduler and the
    # outbox sender beside the web handlers. A fixed pool deadlocks if tasks hold two connections each, so
    # the code never does (tests/pool_guard.py fails any test in which one task holds two).
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 0)
    # No pre-ping: it costs a round trip per checkout from the pool, on every webhook update.
    # A connection that died (database restart) fails its statement, SQLAlchemy then discards the whole
    # pool, and the failed request is retried by its sender (Telegram and the payment providers retry
    # on 5xx; the scheduler on its next cycle). Recycling keeps idle connections from going stale.
    kwargs.setdefault("pool_pre_ping", False)
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(url, **kwargs)


def insert_with_conflicts(dialect_name: str) -> Callable[[Any], PgInsert | SqliteInsert]:
    """The dialect's `insert()`, the one with `on_conflict_do_update` / `on_conflict_do_nothing`
    (PostgreSQL's and SQLite's spell them alike)."""
    return pg_insert if dialect_name == "postgresql" else sqlite_insert


def dialect_name(session: AsyncSession) -> str:
    """The name of the dialect the session runs on ("postgresql", "sqlite"). Every session of the
    shop's factories is bound to an engine; an unbound one is a programming error."""
    bind = session.bind
    if bind is None:
        raise RuntimeError("the session is not bound to an engine or a connection")
    return bind.dialect.name


async def execute_dml(
    session: AsyncSession, statement: UpdateBase, params: Mapping[str, Any] | None = None
) -> CursorResult[Any]:
    """Run an INSERT, UPDATE or DELETE in the session. Its result is a CursorResult (with the
    `rowcount` the compare-and-set writes check), which `AsyncSession.execute` types only as a Result."""
    return cast(CursorResult[Any], await session.execute(statement, params))


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def autocommit_sessionmaker(factory: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """Sessions like `factory`'s on the same pool, whose every statement commits on its own. For work
    that is one statement (a screen's read, a single-statement upsert): PostgreSQL then needs no
    BEGIN and no COMMIT, two of a screen's three round trips."""
    bind = factory.kw["bind"]
    return async_sessionmaker(**{**factory.kw, "bind": bind.execution_options(isolation_level="AUTOCOMMIT")})


async def read_ahead(session: AsyncSession, statement: Executable, params: Mapping[str, Any]) -> Sequence[Row[Any]]:
    """The rows of a read that may run ahead of the session's transaction (a lock-free check before
    one is opened). When the session holds no connection yet, the read runs on a pooled connection
    of its own in autocommit, given back before this returns: no BEGIN and no ROLLBACK, and the task
    still holds one pooled connection at a time. Inside a transaction (or a session bound to a
    connection) it runs in the session, as usual."""
    engine = session.bind
    if session.in_transaction() or not isinstance(engine, AsyncEngine):
        return (await session.execute(statement, params)).all()
    if isinstance(statement, Select) and driver_read.usable(engine, statement):
        return await driver_read.fetch(engine, statement, params)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        return (await conn.execute(statement, params)).all()


def database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached, or the connection broke under a statement (a restart, a
    network cut, a killed backend): a failure of ours that the same request retried later can get
    past. SQLAlchemy has already discarded the broken connection by the time this is raised."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    return isinstance(exc, (OSError, ConnectionError))
