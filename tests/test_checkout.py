"""Checkout as the customer goes through it: zone, phone, email, address, summary, confirm."""
from __future__ import annotations

from sqlalchemy import select

from db.models import CartItem, Customer, Order, OrderEvent, Product
from services import cart as cart_service
from services import catalog
from tests.harness import Harness

USER = 7201


async def fill_cart(shop: Harness, *items: tuple[str, int]) -> None:
    await shop.load_demo()
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
        for sku, qty in items:
            await cart_service.add(session, USER, await catalog.get_product(session, sku=sku), qty)


async def go_to_phone(shop: Harness, zone: str = "Nairobi") -> None:
    cart = await shop.send(USER, "/cart")
    zones = await shop.press(USER, cart.button("Checkout"))
    assert "where should we deliver" in zones.text
    assert [label for label, _ in zones.buttons][:3] == [
        "Nairobi Metro · 24 h · KES 300", "Rest of Kenya · 3–5 days · KES 600", "International · 3–7 days · $35"]
    ask = await shop.press(USER, zones.button(zone))
    assert "phone number" in ask.text and ask.buttons[0] == ("📱 Share my phone", "contact")


async def test_full_checkout_places_order_and_reserves_stock(shop: Harness) -> None:
    await fill_cart(shop, ("LAP-TP-T480", 1), ("ACC-LEN-65W", 2))
    await go_to_phone(shop)
    email_q = await shop.share_contact(USER, "+254712345678")
    assert "email" in email_q.text
    addr_q = await shop.send(USER, "wanjiru@example.com")
    assert "delivery address" in addr_q.text
    summary = await shop.send(USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    assert "Please confirm your order" in summary.text
    assert "• 1 × Lenovo ThinkPad T480" in summary.text and "Subtotal: KES 48,400" in summary.text
    assert "Delivery: KES 300" in summary.text and "Total: KES 48,700" in summary.text
    assert "+254712345678" in summary.text
    offer = await shop.press(USER, summary.button("Confirm"))
    assert "is placed: KES 48,700" in offer.text
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
        assert order.state == "awaiting_payment" and order.public_id in offer.text
        assert (order.currency, order.subtotal, order.shipping, order.total) == ("KES", 48400_00, 300_00, 48700_00)
        assert sorted((i.sku, i.unit_price, i.quantity) for i in order.items) == [
            ("ACC-LEN-65W", 3200_00, 2), ("LAP-TP-T480", 42000_00, 1)]
        t480 = await catalog.get_product(session, sku="LAP-TP-T480")
        assert (t480.stock, t480.reserved, t480.sold) == (7, 1, 0)
        assert (await session.execute(select(CartItem))).scalars().all() == []
        events = (await session.execute(select(OrderEvent))).scalars().all()
        assert [(e.from_state, e.to_state, e.actor) for e in events] == [(None, "awaiting_payment", f"customer:{USER}")]
        customer = await session.get(Customer, USER)
        assert (customer.phone, customer.email) == ("254712345678", "wanjiru@example.com")
    again = await shop.press(USER, "chk:ok", message=summary)
    assert "already finished" in shop.last_answer.params["text"]
    async with shop.session_factory() as session:
        assert len((await session.execute(select(Order))).unique().scalars().all()) == 1


async def test_international_orders_are_priced_in_usd(shop: Harness) -> None:
    await fill_cart(shop, ("STO-SS-870-1T", 2))
    await go_to_phone(shop, "International")
    await shop.send(USER, "+44 7911 123456")
    await shop.send(USER, "buyer@example.co.uk")
    summary = await shop.send(USER, "221B Baker Street, London NW1 6XE, United Kingdom")
    assert "Subtotal: $173" in summary.text and "Delivery: $35" in summary.text and "Total: $208" in summary.text
    await shop.press(USER, summary.button("Confirm"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert (order.currency, order.total, order.zone, order.carrier, order.phone) == (
        "USD", 208_00, "intl", "DHL", "447911123456")


async def test_bad_inputs_are_reasked_with_the_reason(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    assert "isn't a phone number" in (await shop.send(USER, "call me maybe")).text
    assert "isn't a valid number" in (await shop.send(USER, "0712")).text
    assert "your own" in (await shop.share_contact(USER, "+254700000001", contact_user_id=999)).text
    await shop.send(USER, "0712 345 678")
    assert "doesn't look right" in (await shop.send(USER, "not-an-email")).text
    await shop.send(USER, "a@example.com")
    assert "too short" in (await shop.send(USER, "Nbi")).text
    assert "under 500" in (await shop.send(USER, "x" * 600)).text
    assert "Please confirm" in (await shop.send(USER, "Plot 12, Ngong Road, Nairobi")).text


async def test_cancel_at_every_step_keeps_the_cart(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    for steps in ([], ["zone"], ["zone", "phone"], ["zone", "phone", "email"]):
        cart = await shop.send(USER, "/cart")
        zones = await shop.press(USER, cart.button("Checkout"))
        if "zone" in steps:
            await shop.press(USER, zones.button("Nairobi"))
        if "phone" in steps:
            await shop.send(USER, "0712345678")
        if "email" in steps:
            await shop.send(USER, "a@example.com")
        if steps:
            reply = await shop.send(USER, "/cancel")
        else:
            reply = await shop.press(USER, zones.button("Cancel"))
        assert "cart is just as you left it" in reply.text
        assert "I didn't get that" in (await shop.send(USER, "hello")).text  # out of the flow
    async with shop.session_factory() as session:
        assert len((await session.execute(select(CartItem))).scalars().all()) == 1
        assert (await session.execute(select(Order))).first() is None


async def test_sold_out_between_cart_and_confirm(shop: Harness) -> None:
    await fill_cart(shop, ("WS-DL-T5820", 2))
    await go_to_phone(shop)
    await shop.send(USER, "0712345678")
    await shop.send(USER, "a@example.com")
    summary = await shop.send(USER, "Plot 12, Ngong Road, Nairobi")
    async with shop.session_factory() as session, session.begin():
        product = await catalog.get_product(session, sku="WS-DL-T5820")
        product.stock = 1
    reply = await shop.press(USER, summary.button("Confirm"))
    assert "not placed" in reply.text and "only 1 × Dell Precision T5820" in reply.text
    async with shop.session_factory() as session:
        assert (await session.execute(select(Order))).first() is None
        product = await catalog.get_product(session, sku="WS-DL-T5820")
        assert (product.stock, product.reserved) == (1, 0)
        assert len((await session.execute(select(CartItem))).scalars().all()) == 1


async def test_empty_cart_cannot_check_out(shop: Harness) -> None:
    await shop.send(USER, "/start")
    await shop.press(USER, "chk:start")
    assert "empty" in shop.last_answer.params["text"]
