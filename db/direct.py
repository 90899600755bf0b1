"""Statements a browsing customer runs on every press, sent straight to asyncpg on PostgreSQL.

A one-statement screen (the product card's "in your cart", Add to cart, the cart screen) runs in an
autocommit session (bot/middlewares.ONE_STATEMENT_EACH). Through the ORM session such a statement
costs about 380 µs of CPU on the bench machine; checked out of the same pool and sent on the asyncpg
connection itself, about 130 µs. The statement is still written once, with SQLAlchemy Core, and
compiled once per dialect; only the trip through Session, Connection and the cursor adapter is
skipped. Everywhere else (SQLite, a session already inside a transaction, statements whose types
need SQLAlchemy to convert values) the same statement goes through the session as usual, so callers
see the same rows either way.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

AUTOCOMMIT = "autocommit"  # session.info key set by db.session.autocommit_sessionmaker

# Called with each SQL text sent directly (SQLAlchemy's before_cursor_execute does not see these):
# the tests' and benches' statement counters listen here too.
watchers: list[Callable[[str], None]] = []


class Direct:
    """A Core SELECT (or a SELECT over a data-modifying CTE) that can skip the ORM session."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[Any, _Compiled | None] = {}

    async def rows(self, session: AsyncSession, params: Mapping[str, Any], *,
                   before_transaction: bool = False) -> Sequence[Sequence[Any]]:
        """The result rows: tuples that also read by column name, like SQLAlchemy's rows.
        `before_transaction`: a read that may run ahead of the session's transaction, when it has
        not begun yet (a lock-free check before one is opened); otherwise only autocommit sessions
        go direct."""
        compiled = self._direct_form(session, before_transaction)
        if compiled is None:
            return (await session.execute(self.statement, params)).all()
        return await compiled.fetch(session, params)

    def _direct_form(self, session: AsyncSession, before_transaction: bool) -> _Compiled | None:
        if session.in_transaction() or not (before_transaction or session.info.get(AUTOCOMMIT)):
            return None  # inside a transaction the statement must run on the session's connection
        dialect = session.bind.dialect
        if dialect.name != "postgresql" or dialect.driver != "asyncpg":
            return None
        key = dialect.server_version_info  # what the PostgreSQL compiler's output can depend on
        if key not in self._compiled:
            self._compiled[key] = _Compiled.of(self.statement, dialect)
        return self._compiled[key]


class _Compiled:
    """The statement's PostgreSQL text, its parameter order and the values compiled into it."""

    def __init__(self, sql: str, names: list[str], defaults: dict[str, Any],
                 converters: dict[str, Callable[[Any], Any]], columns: list[str]) -> None:
        self.sql, self.names, self.defaults, self.converters = sql, names, defaults, converters
        # Rows read like SQLAlchemy's: by position and by column name (row.stock).
        self.row = namedtuple("Row", columns, rename=True)  # type: ignore[misc]

    @classmethod
    def of(cls, statement: Select[Any], dialect: Dialect) -> _Compiled | None:
        """None when a result column needs SQLAlchemy to convert it (then the session path is used)."""
        if any(col.type.dialect_impl(dialect).result_processor(dialect, None) is not None
               for col in statement.selected_columns):
            return None
        compiled = statement.compile(dialect=dialect)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = list(compiled.positiontup or ())
        converters = {}
        for name in names:
            convert = by_name[name].type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                converters[name] = convert
        defaults = {name: bind.effective_value for name, bind in by_name.items() if not bind.required}
        return cls(compiled.string, names, defaults, converters,
                   [col.key or f"_{n}" for n, col in enumerate(statement.selected_columns)])

    async def fetch(self, session: AsyncSession, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        values = {**self.defaults, **params}
        args = [self.converters[n](values[n]) if n in self.converters else values[n] for n in self.names]
        for watch in watchers:
            watch(self.sql)
        pooled = await session.bind.raw_connection()  # the session's pool: same limits, same guards
        healthy = False
        try:
            records = await pooled.driver_connection.fetch(self.sql, *args)
            healthy = True
            return [self.row._make(record) for record in records]
        except asyncpg.PostgresError as exc:  # the statement failed, the connection is fine
            healthy = True
            raise _as_sqlalchemy_error(exc, self.sql, args) from exc
        finally:
            await greenlet_spawn(_give_back, pooled, healthy)


def _give_back(pooled: Any, healthy: bool) -> None:
    if not healthy:  # cancelled or cut off mid-statement: never hand this connection out again
        pooled.invalidate()
    pooled.close()


def _as_sqlalchemy_error(exc: asyncpg.PostgresError, sql: str, args: list[Any]) -> sa_exc.DBAPIError:
    """The exception family SQLAlchemy raises for the same failure, so callers catch one kind."""
    kind = sa_exc.IntegrityError if isinstance(exc, asyncpg.IntegrityConstraintViolationError) else sa_exc.DBAPIError
    return kind(sql, args, exc, hide_parameters=True)  # like the engine: values never reach a log
