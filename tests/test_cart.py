"""The cart as a customer sees it: lines, subtotals, changes, caps, price changes, long carts."""
from __future__ import annotations

from sqlalchemy import select, update

from db.models import CartItem, Category, Product
from services import cart as cart_service
from services import catalog
from tests.harness import Harness

USER = 7101


async def _add(shop: Harness, sku: str, qty: int) -> None:
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
        product = await catalog.get_product(session, sku=sku)
        await cart_service.add(session, USER, product, qty)


async def test_empty_cart_points_to_the_catalogue(shop: Harness) -> None:
    reply = await shop.send(USER, "/cart")
    assert "empty" in reply.text and reply.button("Catalogue") == "menu:catalog"


async def test_cart_lines_subtotals_and_changes(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "LAP-TP-T480", 1)
    await _add(shop, "ACC-LEN-65W", 2)
    screen = await shop.send(USER, "/cart")
    assert "Lenovo ThinkPad T480" in screen.text and "KES 42,000" in screen.text
    assert "Subtotal: <b>KES 48,400</b> · <b>$374</b>" in screen.text
    screen = await shop.press(USER, screen.buttons[2][1])  # "+" on line 1
    assert "Subtotal: <b>KES 90,400</b>" in screen.text
    screen = await shop.press(USER, [d for label, d in screen.buttons if label == "✖"][1])  # remove line 2
    assert "65 W" not in screen.text and "Subtotal: <b>KES 84,000</b>" in screen.text
    screen = await shop.press(USER, screen.button("Clear"))
    assert "empty" in screen.text
    async with shop.session_factory() as session:
        assert (await session.execute(select(CartItem))).scalars().all() == []


async def test_quantities_are_capped_by_stock(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "WS-DL-T5820", 5)  # only 2 in stock
    screen = await shop.send(USER, "/cart")
    assert "2 × = KES 290,000" in screen.text
    await shop.press(USER, screen.buttons[2][1])  # "+"
    assert "Only 2" in shop.last_answer.params["text"]


async def test_price_change_since_adding_is_shown(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "NET-TPL-SG108E", 1)
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.sku == "NET-TPL-SG108E").values(price_kes=5900_00))
    screen = await shop.send(USER, "/cart")
    assert "price changed since you added it: KES 5,200 → KES 5,900" in screen.text


async def test_long_carts_paginate_within_telegram_limits(shop: Harness) -> None:
    async with shop.session_factory() as session, session.begin():
        cat = Category(slug="many", name="Many")
        session.add(cat)
        await session.flush()
        for i in range(30):
            session.add(Product(sku=f"LONG-{i}", category_id=cat.id, name=f"Very long product name number {i} " * 3,
                                description="x", price_kes=1000_00, price_usd=8_00, stock=5))
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER)
        for p in (await session.execute(select(Product))).unique().scalars():
            await cart_service.add(session, USER, p, 1)
    screen = await shop.send(USER, "/cart")
    assert "Page 1 of 4" in screen.text and len(screen.text) <= 4096
    assert "Subtotal: <b>KES 30,000</b>" in screen.text
    last = await shop.press(USER, screen.button("▶"))
    last = await shop.press(USER, last.button("▶"))
    last = await shop.press(USER, last.button("▶"))
    assert "Page 4 of 4" in last.text and "▶" not in [label for label, _ in last.buttons]


async def test_stale_cart_button(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "ACC-LEN-65W", 1)
    screen = await shop.send(USER, "/cart")
    await shop.press(USER, screen.button("Clear"))
    await shop.press(USER, screen.buttons[2][1], message=screen)  # "+" on a line that is gone
    assert shop.last_answer.params["text"] == "That item is no longer in your cart."
