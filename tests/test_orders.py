"""My orders and /track: the customer's own orders only, with state, carrier and tracking."""
from __future__ import annotations

from db.models import utcnow
from services import orders as sm
from tests.factories import make_order, make_product
from tests.harness import Harness

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
