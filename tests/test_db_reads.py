"""The statements a browsing press runs go through SQLAlchemy on every backend: the same rows in a
one-statement screen's autocommit session and inside a transaction, SQLAlchemy's errors, and a
pool that gets every connection back (and never hands out a broken one) whatever happens to the
statement."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import asyncpg
import pytest
from sqlalchemy import event, func, literal, literal_column, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import (
    autocommit_sessionmaker,
    database_unreachable,
    make_sessionmaker,
    read_ahead,
)
from services import cart
from services.errors import InvalidInput
from tests.factories import make_product


class Sent(NamedTuple):
    autocommit: bool  # sent on a connection in autocommit (no transaction around it)
    sql: str


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[Sent]]:
    """Every statement sent on `engine` meanwhile (SQLAlchemy's before_cursor_execute sees them all)."""
    seen: list[Sent] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(Sent(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT", statement))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_cart_reads_the_same_both_ways(engine: AsyncEngine) -> None:
    """The cart's statements give the same answers in an autocommit session and inside a
    transaction, and the autocommit session sends nothing but them (no BEGIN, no COMMIT)."""
    factory = make_sessionmaker(engine)
    async with factory() as session, session.begin():
        await cart.ensure_customer(session, 4242, 4242, "Wanjiru")
    ids = (
        4242,
        await make_product(factory, "DRL", stock=5, price_kes=150_000, price_usd=1_200),
        await make_product(factory, "SAW", stock=1, price_kes=90_000, price_usd=700),
    )
    autocommit = autocommit_sessionmaker(factory)
    with statements_sent(engine) as seen:
        async with autocommit() as session:
            added = [
                await cart.try_add(session, ids[0], ids[1], 2),
                await cart.try_add(session, ids[0], ids[2], 3),
                await cart.try_add(session, ids[0], ids[1], 9),
            ]
        async with autocommit() as session:
            fast = (
                await cart.lines(session, ids[0]),
                await cart.quantity_in_cart(session, ids[0], ids[1]),
                await cart.quantity_in_cart(session, ids[0], 999_999),
            )
    async with factory() as session, session.begin():
        slow = (
            await cart.lines(session, ids[0]),
            await cart.quantity_in_cart(session, ids[0], ids[1]),
            await cart.quantity_in_cart(session, ids[0], 999_999),
        )
    assert added == [cart.Added(0, 2), cart.Added(0, 1), cart.Added(2, 5)]  # capped by stock both times
    assert fast == slow
    lines, in_cart, none = fast
    assert [
        (line.product.name, line.quantity, line.product.stock, line.product.price_kes, line.seen_price_usd)
        for line in lines
    ] == [("Product DRL", 5, 5, 150_000, 1_200), ("Product SAW", 1, 1, 90_000, 700)]
    assert (in_cart, none) == (5, 0)
    assert all(s.autocommit for s in seen)
    if engine.dialect.name == "postgresql":  # each add is one statement there (SQLite reads, then upserts)
        assert len(seen) == 6 and sum("INSERT INTO cart_items" in s.sql for s in seen) == 3


async def test_read_ahead_runs_outside_a_transaction_not_yet_begun(engine: AsyncEngine) -> None:
    """Before the session's transaction: on a connection of its own in autocommit, given back at
    once (the session still holds none). Inside one: in that transaction."""
    factory = make_sessionmaker(engine)
    statement = select(literal(7).label("n"))
    with statements_sent(engine) as seen:
        async with factory() as session:
            assert [tuple(r) for r in await read_ahead(session, statement, {})] == [(7,)]
            assert not session.in_transaction() and engine.sync_engine.pool.checkedout() == 0
            async with session.begin():
                assert (await read_ahead(session, statement, {}))[0].n == 7
    assert [s.autocommit for s in seen] == [True, False]


async def test_a_failing_statement_raises_sqlalchemys_error_and_returns_the_connection(engine: AsyncEngine) -> None:
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))
    async with autocommit() as session:
        with pytest.raises(IntegrityError) as caught:  # a cart line for a customer that does not exist
            await cart.try_add(session, 987_654, await make_product(make_sessionmaker(engine), "LVL"), 1)
        assert not database_unreachable(caught.value)  # a bad statement, not a database gone
    async with autocommit() as session:
        assert await cart.quantity_in_cart(session, 1, 1) == 0  # and the pool still serves
    assert engine.sync_engine.pool.checkedout() == 0


@pytest.mark.pg_only
async def test_a_cancelled_statement_gives_its_connection_back(engine: AsyncEngine) -> None:
    """Cancelled mid-statement (a client gone, a shutdown): the pool gets the connection back and
    the next customer is served."""
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))

    async def wait() -> None:
        async with autocommit() as session:
            await session.execute(select(func.pg_sleep(5)))

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.sync_engine.pool.checkedout() == 0
    async with autocommit() as session:
        assert await cart.quantity_in_cart(session, 1, 1) == 0


@pytest.mark.pg_only
async def test_a_connection_killed_mid_statement_is_sqlalchemys_error_and_not_reused(engine: AsyncEngine) -> None:
    """The backend is terminated while a cart read waits on a lock: SQLAlchemy's error (the database
    went away, so a retry may get past it), and the next read gets a working connection."""
    factory = make_sessionmaker(engine)
    async with factory() as session, session.begin():
        await cart.ensure_customer(session, 4343, 4343)
    autocommit = autocommit_sessionmaker(factory)
    async with autocommit() as session:  # the pool now holds a connection that has served a read
        assert await cart.quantity_in_cart(session, 4343, 1) == 0
    async with killing_the_reader(engine, "cart_items") as killed:
        with pytest.raises(DBAPIError) as caught:
            async with autocommit() as session:
                await cart.lines(session, 4343)
    assert killed and database_unreachable(caught.value) and caught.value.connection_invalidated
    for _ in range(engine.sync_engine.pool.size() + 1):  # whichever pooled connection comes next
        async with autocommit() as session:
            assert await cart.lines(session, 4343) == []
    assert engine.sync_engine.pool.checkedout() == 0


def admin_dsn(engine: AsyncEngine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class killing_the_reader:  # a context manager, named like contextlib's
    """Holds `table` locked from an admin connection; the first statement of the shop that waits on
    the lock has its backend terminated (pg_terminate_backend), then the lock is released. The
    value is the list of terminated backends."""

    def __init__(self, engine: AsyncEngine, table: str) -> None:
        self.dsn, self.table, self.killed = admin_dsn(engine), table, []
        self.watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> list[int]:
        self.locker = await asyncpg.connect(self.dsn)
        self.lock = self.locker.transaction()
        await self.lock.start()
        await self.locker.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
        self.watcher = asyncio.create_task(self._kill_the_waiter())
        return self.killed

    async def _kill_the_waiter(self) -> None:
        admin = await asyncpg.connect(self.dsn)
        try:
            while not self.killed:
                pid = await admin.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND wait_event_type = 'Lock' AND query ILIKE $1 LIMIT 1",
                    f"%{self.table}%",
                )
                if pid is not None and await admin.fetchval("SELECT pg_terminate_backend($1)", pid):
                    self.killed.append(pid)
                else:
                    await asyncio.sleep(0.02)
        finally:
            await admin.close()

    async def __aexit__(self, *exc: object) -> None:
        assert self.watcher is not None
        await asyncio.wait([self.watcher], timeout=2)  # the kill's own answer may come after the shop's error
        self.watcher.cancel()
        await asyncio.gather(self.watcher, return_exceptions=True)
        await self.lock.rollback()
        await self.locker.close()


# --- the checkout's early read on the driver (db/driver_read.py) -----------------------------------


@pytest.mark.pg_only
async def test_the_early_cart_read_on_the_driver_reads_what_sqlalchemy_reads(engine: AsyncEngine) -> None:
    """The checkout's early read (services.orders.refuse_early) goes on the asyncpg connection: the
    same rows, read by name and position, as the same statement through a session."""
    from db import driver_read
    from services import orders

    factory = make_sessionmaker(engine)
    product = await make_product(factory, "EARLY", stock=3)
    async with factory() as session, session.begin():
        await cart.ensure_customer(session, 5151, 5151)
        await cart.try_add(session, 5151, product, 2)
    assert driver_read.usable(engine, orders._CART)
    with statements_sent(engine) as seen:
        async with factory() as session:
            early = await read_ahead(session, orders._CART, {"customer_id": 5151})
    assert seen == []  # not through SQLAlchemy's cursor: on the driver
    async with factory() as session:
        through = (await session.execute(orders._CART, {"customer_id": 5151})).all()
    assert [tuple(r) for r in early] == [tuple(r) for r in through] and early[0].quantity == 2
    assert engine.sync_engine.pool.checkedout() == 0


@pytest.mark.pg_only
async def test_the_early_read_killed_mid_statement_is_sqlalchemys_error_and_not_reused(engine: AsyncEngine) -> None:
    """The backend of the checkout's early read is terminated while it waits: SQLAlchemy's
    OperationalError, marked invalidated (the webhook answers 503 for it), and every pooled
    connection after it works."""
    from services import orders

    factory = make_sessionmaker(engine)
    async with factory() as session, session.begin():
        await cart.ensure_customer(session, 5252, 5252)
    async with factory() as session:
        with pytest.raises(InvalidInput):  # an empty cart is refused; the connection has served a read
            await orders.refuse_early(session, 5252)
    async with killing_the_reader(engine, "cart_items") as killed:
        with pytest.raises(DBAPIError) as caught:
            async with factory() as session:
                await orders.refuse_early(session, 5252)
    assert killed and database_unreachable(caught.value) and caught.value.connection_invalidated
    assert caught.value.orig is not None and "5252" not in str(caught.value)
    for _ in range(engine.sync_engine.pool.size() + 1):
        async with factory() as session:
            assert await read_ahead(session, orders._CART, {"customer_id": 5252}) == []
    assert engine.sync_engine.pool.checkedout() == 0


@pytest.mark.pg_only
async def test_a_failing_driver_read_is_sqlalchemys_error_and_the_connection_is_kept(engine: AsyncEngine) -> None:
    from db import driver_read

    statement = select(literal_column("1 / 0").label("n"))  # division by zero: the statement fails, not the connection
    assert driver_read.usable(engine, statement)
    with pytest.raises(DBAPIError) as caught:
        await driver_read.fetch(engine, statement, {})
    assert not caught.value.connection_invalidated and not database_unreachable(caught.value)
    assert engine.sync_engine.pool.checkedout() == 0
    async with make_sessionmaker(engine)() as session:
        assert (await session.execute(select(literal(1)))).scalar_one() == 1


@pytest.mark.pg_only
async def test_a_cancelled_driver_read_gives_its_connection_back(engine: AsyncEngine) -> None:
    from db import driver_read

    statement = select(literal_column("pg_sleep(5)").label("slept"))
    assert driver_read.usable(engine, statement)
    task = asyncio.create_task(driver_read.fetch(engine, statement, {}))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.sync_engine.pool.checkedout() == 0
    async with make_sessionmaker(engine)() as session:
        assert (await session.execute(select(literal(1)))).scalar_one() == 1
