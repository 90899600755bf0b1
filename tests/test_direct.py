"""db/direct.py: a one-statement screen's statement skips the ORM session on PostgreSQL. Same rows as
the session path, the session path wherever a transaction or SQLite needs it, and a pool that gets
every connection back whatever happens to the statement."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
from sqlalchemy import Integer, String, TypeDecorator, bindparam, func, literal, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from db import direct
from db.direct import Direct
from db.models import TZDateTime
from db.session import autocommit_sessionmaker, make_sessionmaker
from services import cart
from tests.factories import make_product


@contextmanager
def sent_directly() -> Iterator[list[str]]:
    seen: list[str] = []
    direct.watchers.append(seen.append)
    try:
        yield seen
    finally:
        direct.watchers.remove(seen.append)


async def test_cart_reads_the_same_both_ways(engine: AsyncEngine) -> None:
    """The cart's statements give the same answers in an autocommit session (direct on PostgreSQL)
    and inside a transaction (always the ORM session), and only the former goes direct."""
    factory = make_sessionmaker(engine)
    async with factory() as session, session.begin():
        await cart.ensure_customer(session, 4242, 4242, "Wanjiru")
    ids = (4242, await make_product(factory, "DRL", stock=5, price_kes=150_000, price_usd=1_200),
           await make_product(factory, "SAW", stock=1, price_kes=90_000, price_usd=700))
    autocommit = autocommit_sessionmaker(factory)
    with sent_directly() as seen:
        async with autocommit() as session:
            added = [await cart.try_add(session, ids[0], ids[1], 2), await cart.try_add(session, ids[0], ids[2], 3),
                     await cart.try_add(session, ids[0], ids[1], 9)]
        async with autocommit() as session:
            fast = (await cart.lines(session, ids[0]), await cart.quantity_in_cart(session, ids[0], ids[1]),
                    await cart.quantity_in_cart(session, ids[0], 999_999))
    async with factory() as session, session.begin():
        slow = (await cart.lines(session, ids[0]), await cart.quantity_in_cart(session, ids[0], ids[1]),
                await cart.quantity_in_cart(session, ids[0], 999_999))
    assert added == [cart.Added(0, 2), cart.Added(0, 1), cart.Added(2, 5)]  # capped by stock both times
    assert fast == slow
    lines, in_cart, none = fast
    assert [(line.product.name, line.quantity, line.product.stock, line.product.price_kes, line.seen_price_usd)
            for line in lines] == [("Product DRL", 5, 5, 150_000, 1_200), ("Product SAW", 1, 1, 90_000, 700)]
    assert (in_cart, none) == (5, 0)
    if engine.dialect.name == "postgresql":
        # Three adds (a later one in the same session: it holds no connection, so it goes direct too),
        # one lines read, two quantities; none of the transaction's statements.
        assert len(seen) == 6 and sum("INSERT INTO cart_items" in s for s in seen) == 3
    else:
        assert seen == []


async def test_a_session_that_holds_a_connection_keeps_using_it(engine: AsyncEngine) -> None:
    """After an ORM statement the autocommit session has its connection: the next statement uses it
    (going direct would take a second connection from the pool for the same task)."""
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))
    with sent_directly() as seen:
        async with autocommit() as session:
            await session.execute(select(literal(1)))
            assert await cart.quantity_in_cart(session, 1, 1) == 0
    assert seen == []


class Shouted(TypeDecorator):  # a type whose values SQLAlchemy converts on the way in
    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        return value.upper()


@pytest.mark.pg_only
async def test_parameters_are_converted_like_sqlalchemy_does(engine: AsyncEngine) -> None:
    """A TypeDecorator's bind conversion runs on the direct path, and values compiled into the
    statement (literals) are sent with it."""
    statement = Direct(select(bindparam("word", type_=Shouted()).label("word"),
                              (bindparam("n", type_=Integer) + literal(41)).label("answer")))
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))
    with sent_directly() as seen:
        async with autocommit() as session:
            assert list(await statement.rows(session, {"word": "jambo", "n": 1})) == [("JAMBO", 42)]
    assert len(seen) == 1


@pytest.mark.pg_only
async def test_results_sqlalchemy_must_convert_take_the_session_path(engine: AsyncEngine) -> None:
    """TZDateTime makes a timestamp aware on the way out; only the session path does that."""
    at = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    statement = Direct(select(bindparam("at", type_=TZDateTime()).label("at")))
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))
    with sent_directly() as seen:
        async with autocommit() as session:
            [(back,)] = await statement.rows(session, {"at": at})
    assert seen == [] and back == at and back.tzinfo is not None


@pytest.mark.pg_only
async def test_a_failing_statement_raises_sqlalchemys_error_and_returns_the_connection(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))
    not_a_time = Direct(select(func.cast(literal("x"), TZDateTime()).label("when")))
    async with autocommit() as session:
        with pytest.raises(DBAPIError):
            await not_a_time.rows(session, {})
    async with autocommit() as session:
        with pytest.raises(IntegrityError):  # a cart line for a customer that does not exist
            await cart.try_add(session, 987_654, await make_product(make_sessionmaker(engine), "LVL"), 1)
        assert await cart.quantity_in_cart(session, 1, 1) == 0  # the connection went back healthy
    assert pool.checkedout() == 0


@pytest.mark.pg_only
async def test_a_cancelled_statement_gives_its_connection_back_closed(engine: AsyncEngine) -> None:
    """Cancelled mid-statement (a client gone, a shutdown): the connection may still be busy inside
    PostgreSQL, so it is discarded rather than handed to the next customer."""
    pool = engine.sync_engine.pool
    autocommit = autocommit_sessionmaker(make_sessionmaker(engine))
    slow = Direct(select(func.pg_sleep(5).label("slept")))

    async def wait() -> None:
        async with autocommit() as session:
            await slow.rows(session, {})

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.checkedout() == 0
    async with autocommit() as session:  # and the pool still serves
        assert await cart.quantity_in_cart(session, 1, 1) == 0
