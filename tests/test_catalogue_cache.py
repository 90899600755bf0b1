"""Catalogue screens are shared between customers for a few seconds (services/cache.py) and browsing
customers are not looked up on every press (bot/middlewares.py): what that may and may not change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from db.changes import catalogue_version, catalogue_written
from db.models import CartItem, Customer, Product
from services import admin, catalog, inventory
from services.cache import CatalogueMemo
from tests.harness import DEMO, Harness
from tests.standins import BotAPIStandIn

A, B = 7101, 7102


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def reading(seen: list[str], table: str) -> list[str]:
    return [s for s in seen if s.startswith("select") and f" from {table}" in s]


def another_process(engine: AsyncEngine) -> AsyncEngine:
    """An engine this process does not watch, standing for a second web or admin process."""
    return create_async_engine(engine.url.render_as_string(hide_password=False))


async def open_workstations(shop: Harness, user: int) -> Any:
    await shop.send(user, "/catalog")
    return await shop.press(user, shop.botapi.last(user).button("Workstations"))


async def test_second_customer_gets_the_same_screens_without_a_query(shop: Harness) -> None:
    await shop.load_demo()
    first = await open_workstations(shop, A)
    with statements(shop.engine) as seen:
        second = await open_workstations(shop, B)
    assert second.text == first.text and second.buttons == first.buttons
    assert reading(seen, "categories") == [] and reading(seen, "products") == []


async def test_a_write_in_this_process_shows_at_once(shop: Harness) -> None:
    await shop.load_demo()
    before = await open_workstations(shop, A)
    async with shop.session_factory() as session, session.begin():  # a sale, an admin's stock change, ...
        await session.execute(update(Product).values(stock=0))
        catalogue_written(session)  # as the shop's own stock moves do
    after = await open_workstations(shop, B)
    assert after.text == before.text and after.buttons != before.buttons
    assert all(sold_out(label) for label, data in after.buttons if data.startswith("cat:v:"))


def sold_out(label: str) -> bool:
    return "sold out" in label.lower() or "out of stock" in label.lower()


async def test_a_write_elsewhere_shows_once_the_screen_expires(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    shop = await Harness(engine, botapi, catalog_cache_seconds=0.3).start()
    try:
        await shop.load_demo()
        before = await open_workstations(shop, A)
        other = another_process(engine)
        try:
            async with other.begin() as conn:
                await conn.execute(update(Product).values(stock=0))
        finally:
            await other.dispose()
        await asyncio.sleep(0.35)
        after = await open_workstations(shop, B)
        assert after.buttons != before.buttons
        assert all(sold_out(label) for label, data in after.buttons if data.startswith("cat:v:"))
    finally:
        await shop.stop()


async def test_add_to_cart_caps_on_live_stock_when_the_card_was_cached(shop: Harness) -> None:
    await shop.load_demo()
    listing = await open_workstations(shop, A)
    view = next(data for _, data in listing.buttons if data.startswith("cat:v:"))
    pid = int(view.split(":")[2])
    await shop.press(A, view)  # the card is now cached with the full stock
    await open_workstations(shop, B)
    card = await shop.press(B, view)
    other = another_process(shop.engine)
    try:
        async with other.begin() as conn:  # sold elsewhere down to one
            await conn.execute(update(Product).where(Product.id == pid).values(stock=1))
    finally:
        await other.dispose()
    await shop.press(B, f"cat:q:{pid}:2", message=card)
    await shop.press(B, f"cat:a:{pid}:2")
    assert shop.last_answer is not None and "1" in shop.last_answer.params.get("text", "")
    async with shop.session_factory() as session:
        assert await session.scalar(select(CartItem.quantity).where(CartItem.customer_id == B)) == 1


async def test_browsing_customer_is_looked_up_once(shop: Harness) -> None:
    await shop.load_demo()
    await shop.send(A, "/start")
    with statements(shop.engine) as seen:
        await shop.press(A, "menu:cart")
        await shop.press(A, "menu:catalog")
        await shop.send(A, "/start")
    assert reading(seen, "customers") == []


async def test_first_contact_whose_update_failed_is_registered_again(shop: Harness) -> None:
    """The first update's transaction (with the new customer row) rolled back: the next one must
    register them again instead of trusting a row that was never committed."""
    await shop.load_demo()

    async def fail_sends(method: str, params: dict[str, Any]) -> Any:
        from aiohttp import web

        return web.json_response({"ok": False, "error_code": 500, "description": "Internal Server Error"}, status=500)

    shop.botapi.responder = fail_sends
    with suppress(AssertionError):  # nothing reached the chat: the orders list and the apology both failed
        await shop.send(A, "/orders")
    shop.botapi.responder = None
    async with shop.session_factory() as session:
        assert await session.get(Customer, A) is None
    listing = await open_workstations(shop, A)
    view = next(data for _, data in listing.buttons if data.startswith("cat:v:"))
    await shop.press(A, view)
    await shop.press(A, "cat:a:" + view.split(":", 2)[2])
    assert shop.last_answer is not None and "added" in shop.last_answer.params.get("text", "").lower()
    async with shop.session_factory() as session:
        assert await session.get(Customer, A) is not None
        assert await session.scalar(select(CartItem.quantity).where(CartItem.customer_id == A)) == 1


async def test_the_shops_own_stock_moves_refresh_the_screens(shop: Harness) -> None:
    """Reserving, releasing, restocking and importing move the catalogue version (at the write and
    again at commit); turning reserved into sold does not change what customers see, so it does not."""
    await shop.load_demo()
    async with shop.session_factory() as session:
        product = (await session.execute(select(Product).where(Product.stock > 2).limit(1))).unique().scalar_one()

    async def moved(change: Callable[[AsyncSession], Awaitable[object]]) -> int:
        before = catalogue_version()
        async with shop.session_factory() as session, session.begin():
            await change(session)
        return catalogue_version() - before

    assert await moved(lambda s: inventory.reserve(s, product, 1)) == 2
    assert await moved(lambda s: inventory.commit_sale(s, [(product.id, 1)])) == 0
    assert await moved(lambda s: inventory.release(s, [(product.id, 0)])) == 2
    assert await moved(lambda s: admin.restock(s, product.sku, 3, "test")) == 2
    assert await moved(lambda s: catalog.import_rows(s, catalog.parse_catalog(DEMO))) == 2


async def test_customers_asking_at_once_share_one_rendering() -> None:
    memo: CatalogueMemo[str] = CatalogueMemo(ttl=5)
    made = 0

    async def make() -> str:
        nonlocal made
        made += 1
        await asyncio.sleep(0.01)
        return "screen"

    assert await asyncio.gather(*(memo.get("k", make) for _ in range(20))) == ["screen"] * 20
    assert made == 1 and memo.misses == 1 and memo.hits == 19

    async def broken() -> str:
        await asyncio.sleep(0.01)
        raise ValueError("forged cursor")

    results = await asyncio.gather(*(memo.get("bad", broken) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results) and "bad" not in memo._entries


async def test_a_cancelled_rendering_leaves_the_waiters_to_make_it() -> None:
    memo: CatalogueMemo[str] = CatalogueMemo(ttl=5)
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    async def quick() -> str:
        return "screen"

    first = asyncio.create_task(memo.get("k", slow))
    await started.wait()
    waiter = asyncio.create_task(memo.get("k", quick))
    await asyncio.sleep(0)
    first.cancel()
    assert await waiter == "screen"
    assert first.cancelled()


async def test_a_known_customers_start_opens_no_session(shop: Harness, monkeypatch: Any) -> None:
    """/start needs only to know the customer exists: the first one registers them (one statement),
    the next ones within the minute open no session at all. A customer the process has not seen
    is registered again, however many times it was done elsewhere."""
    opened: list[int] = []
    factory = shop.shop.dp["session_factory"]
    middleware = next(m for m in shop.shop.dp.message.middleware if type(m).__name__ == "DbSessionMiddleware")
    original = middleware.autocommit_factory

    def counting() -> AsyncSession:
        opened.append(1)
        return original()

    monkeypatch.setattr(middleware, "autocommit_factory", counting)
    with statements(shop.engine) as seen:
        first = await shop.send(A, "/start")
        again = await shop.send(A, "/start")
    assert first.method == again.method == "sendMessage" and again.text == first.text
    assert again.button("Catalogue") == "menu:catalog"  # the main menu, as the first time
    assert len(opened) == 1 and [s for s in seen if "customers" in s and s.startswith("insert")] != []
    assert len(seen) == 1  # the registration, and nothing for the second /start
    async with factory() as session:
        assert await session.get(Customer, A) is not None
