"""One read sent on the asyncpg connection itself: the checkout's early cart read (`read_ahead`).

In a flash sale almost every checkout is refused by that one read, on a CPU that is then the
bottleneck, and SQLAlchemy's execution path (execution context, cursor adapter, result) costs about
as much CPU again as the read itself. Sent on the driver connection of a connection checked out
from the same pool, the sale keeps its p99 (bench/RESULTS.md, "The early read on the driver").
Only this read takes the path, and only through
SQLAlchemy's public API: the statement is compiled with `ClauseElement.compile`, the connection
comes from `AsyncConnection.get_raw_connection()`, and a failure is raised as SQLAlchemy's own
exception, the connection invalidated when it may be broken, as SQLAlchemy does for its statements.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import Select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

# SQLSTATE classes after which the connection is gone or unusable: 08 connection exception,
# 57 operator intervention (the backend terminated, the server shutting down).
_CONNECTION_LOST = ("08", "57")


class _Prepared(NamedTuple):
    sql: str
    names: tuple[str, ...]
    row: Any  # a namedtuple class: rows read by position and by column name, like SQLAlchemy's


_prepared: dict[tuple[int, str], _Prepared | None] = {}


def usable(engine: AsyncEngine, statement: Select[Any]) -> bool:
    """The statement can be sent on the driver: PostgreSQL over asyncpg, and no column or parameter
    whose values SQLAlchemy would have to convert."""
    return engine.dialect.driver == "asyncpg" and _prepare(engine.dialect, statement) is not None


async def fetch(engine: AsyncEngine, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Any]:
    """The statement's rows, on a pooled connection of its own in autocommit (asyncpg runs a
    statement outside a transaction unless one is begun), given back before this returns."""
    prepared = _prepare(engine.dialect, statement)
    assert prepared is not None, "call usable() first"
    args = [params[name] for name in prepared.names]
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection  # the asyncpg Connection
        assert driver is not None, "a checked-out connection has its driver connection"
        try:
            records = await driver.fetch(prepared.sql, *args)
        except asyncpg.PostgresError as exc:
            lost = (exc.sqlstate or "")[:2] in _CONNECTION_LOST
            if lost:
                await conn.invalidate(exc)
            raise _as_sqlalchemy(exc, prepared.sql, lost) from exc
        except (asyncpg.InterfaceError, OSError) as exc:  # the connection broke under the statement
            await conn.invalidate(exc)
            raise _as_sqlalchemy(exc, prepared.sql, True) from exc
        except BaseException:  # cancelled mid-statement: the connection's state is unknown
            await conn.invalidate()
            raise
    return [prepared.row._make(record) for record in records]


def _prepare(dialect: Dialect, statement: Select[Any]) -> _Prepared | None:
    key = (id(statement), dialect.name)
    if key not in _prepared:
        _prepared[key] = _compile(dialect, statement)
    return _prepared[key]


def _compile(dialect: Dialect, statement: Select[Any]) -> _Prepared | None:
    if any(
        col.type.dialect_impl(dialect).result_processor(dialect, None) is not None for col in statement.selected_columns
    ):
        return None
    compiled = statement.compile(dialect=dialect)
    binds = {bind.key: bind for bind in compiled.binds.values()}
    if any(
        bind.type.dialect_impl(dialect).bind_processor(dialect) is not None or not bind.required
        for bind in binds.values()
    ):
        return None  # a converted or a literal parameter: leave it to SQLAlchemy
    names = tuple(compiled.positiontup or ())
    columns = [col.key or f"_{n}" for n, col in enumerate(statement.selected_columns)]
    return _Prepared(compiled.string, names, namedtuple("Row", columns, rename=True))


def _as_sqlalchemy(exc: Exception, sql: str, lost: bool) -> sa_exc.DBAPIError:
    """The exception SQLAlchemy raises for the same failure (bound values left out, as the engine's
    hide_parameters does), so callers and the webhook's error path see one family."""
    if lost:
        return sa_exc.OperationalError(sql, None, exc, hide_parameters=True, connection_invalidated=True)
    kind = sa_exc.IntegrityError if isinstance(exc, asyncpg.IntegrityConstraintViolationError) else sa_exc.DBAPIError
    return kind(sql, None, exc, hide_parameters=True)
