"""My orders and /track: the customer's own orders only, with state, carrier and tracking."""
from __future__ import annotations

from sqlalchemy import select

from db.models import Outbox, utcnow
from services import orders as sm
from tests.factories import make_order, make_product
from tests.harness import Harness
from tests.test_checkout import assert_telegram_html

USER, OTHER = 7301, 7302


async def test_my_orders_lists_and_opens_orders(shop: Harness) -> None:
    assert "no orders yet" in (await shop.send(USER, "/orders")).text
    pid = await make_product(shop.session_factory, stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 2)])
    listing = await shop.send(USER, "/orders")
    assert order.public_id in listing.text and "Awaiting payment" in listing.text and "KES 2,300" in listing.text
    detail = await shop.press(USER, listing.button(order.public_id))
    assert "2 × Product SKU-1" in detail.text and "reserved for you until" in detail.text
    assert detail.button("Pay now") == f"pay:o:{order.public_id}"


async def test_track_shows_carrier_tracking_and_latest_event(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 1)], zone="intl")
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, "processing", "system:test")
        o.carrier, o.tracking_number = "DHL", "1234567890"
        await sm.transition(session, o, "shipped", "admin:1")
        o.tracking_description, o.tracking_place, o.tracking_time = "Arrived at facility", "NAIROBI - KENYA", utcnow()
    reply = await shop.send(USER, f"/track {order.public_id.lower()}")
    assert "Status: <b>Shipped</b>" in reply.text and "DHL" in reply.text and "1234567890" in reply.text
    assert "tracking-id=1234567890" in reply.text and "Arrived at facility — NAIROBI - KENYA" in reply.text


async def test_track_refuses_other_customers_orders_and_bad_arguments(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, stock=5)
    theirs = await make_order(shop.session_factory, OTHER, [(pid, 1)])
    reply = await shop.send(USER, f"/track {theirs.public_id}")
    assert "can't find an order" in reply.text and "Product" not in reply.text
    assert "Usage: /track" in (await shop.send(USER, "/track")).text
    await shop.send(USER, "/start")
    await shop.press(USER, f"ord:v:{theirs.public_id}")
    assert "can't find an order" in shop.last_answer.params["text"]


async def test_my_orders_button_and_detail_without_tracking(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, stock=5)
    first = await make_order(shop.session_factory, USER, [(pid, 1)], zone="kenya")
    second = await make_order(shop.session_factory, USER, [(pid, 1)], zone="intl")
    menu = await shop.send(USER, "/start")
    listing = await shop.press(USER, menu.button("My orders"))
    assert listing.text.index(second.public_id) < listing.text.index(first.public_id)  # newest first
    assert "$43" in listing.text and "KES 1,600" in listing.text
    detail = await shop.send(USER, f"/track {first.public_id}")
    assert "Status: <b>Awaiting payment</b>" in detail.text and "Delivery: Rest of Kenya (3–5 days, G4S" in detail.text
    assert "Last updated:" in detail.text and "tracking number" not in detail.text
    assert_telegram_html(detail.text)


async def test_status_message_button_opens_the_order(shop: Harness) -> None:
    """The outbox's status messages carry a View order button (ord:v:<id>)."""
    pid = await make_product(shop.session_factory, stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, order.public_id), "processing", "system:test")
        queued = (await session.execute(select(Outbox).where(Outbox.chat_id == USER))).scalars().one()
    data = queued.reply_markup["inline_keyboard"][0][0]["callback_data"]
    await shop.send(USER, "/start")
    detail = await shop.press(USER, data)
    assert f"Order <b>{order.public_id}</b>" in detail.text and "Status: <b>Processing</b>" in detail.text
    assert "preparing your order" in detail.text and "Pay now" not in str(detail.buttons)


async def test_track_escapes_what_the_customer_typed(shop: Harness) -> None:
    reply = await shop.send(USER, "/track <script>&")
    assert "can't find an order" in reply.text and "&lt;SCRIPT&gt;&amp;" in reply.text
    assert_telegram_html(reply.text)
    assert len((await shop.send(USER, "/track " + "X" * 3000)).text) < 300
