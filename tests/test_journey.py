"""The whole first visit, as a customer taps it: /start → category → product → cart → checkout → order."""

from __future__ import annotations

from sqlalchemy import select

from db.models import Order
from services import catalog
from tests.harness import Harness

USER = 7401


async def test_start_to_placed_order(shop: Harness) -> None:
    await shop.load_demo()
    screen = await shop.send(USER, "/start")
    screen = await shop.press(USER, screen.button("Catalogue"))
    screen = await shop.press(USER, screen.button("Networking"))
    screen = await shop.press(USER, screen.button("UniFi U6 Lite"))
    assert "💰 KES 19,800\n" in screen.text and "$" not in screen.text
    screen = await shop.press(USER, screen.button("+"))
    await shop.press(USER, screen.button("Add 2 to cart"))
    screen = await shop.press(USER, screen.button("Cart"))
    assert "2 × KES 19,800 = KES 39,600" in screen.text
    screen = await shop.press(USER, screen.button("Checkout"))
    screen = await shop.press(USER, screen.button("Rest of Kenya"))
    await shop.share_contact(USER, "+254 712 345 678")
    await shop.send(USER, "wanjiru@example.com")
    screen = await shop.send(USER, "Milimani Rd, Nakuru Town, Nakuru")
    assert "Total: KES 40,200" in screen.text
    screen = await shop.press(USER, screen.button("Confirm"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
        product = await catalog.get_product(session, sku="NET-UBNT-U6LITE")
    assert order.public_id in screen.text and order.state == "awaiting_payment"
    assert [(i.sku, i.unit_price, i.quantity) for i in order.items] == [("NET-UBNT-U6LITE", 19800_00, 2)]
    assert (product.stock, product.reserved) == (8, 2)
    assert order.phone == "254712345678" and order.zone == "kenya" and order.total == 40200_00
    screen = await shop.send(USER, f"/track {order.public_id}")
    assert "Awaiting payment" in screen.text and "Rest of Kenya" in screen.text
    assert "empty" in (await shop.send(USER, "/cart")).text  # the cart became the order
    screen = await shop.press(USER, (await shop.send(USER, "/start")).button("My orders"))
    assert order.public_id in screen.text and "KES 40,200" in screen.text
