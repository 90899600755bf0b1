"""My orders and /track: the customer's own orders only, with state, carrier and tracking."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from bot import jobs
from db.models import Order, Outbox, Payment, utcnow
from services import orders as sm
from services.payments.mpesa_flow import FINAL_TIMEOUT
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
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


async def dhl_event(
    shop: Harness, description: str, place: str | None, when: datetime | None, *, to_state: str = "shipped"
) -> tuple[Order, str]:
    """An International order shipped with DHL (waybill 1234567890), its latest carrier event as
    given, then moved to `to_state`; returns it with the customer's status message at that point."""
    pid = await make_product(shop.session_factory, stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 1)], zone="intl")
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, "processing", "system:test")
        o.carrier, o.tracking_number = "DHL", "1234567890"
        await sm.transition(session, o, "shipped", "admin:1")
        o.tracking_description, o.tracking_place, o.tracking_time = description, place, when
        if to_state != "shipped":
            await sm.transition(session, o, to_state, "system:dhl")
        return order, sm.status_message(o)


async def test_track_shows_carrier_tracking_and_latest_event(shop: Harness) -> None:
    order, _ = await dhl_event(shop, "Arrived at facility", "NAIROBI - KENYA", utcnow())
    reply = await shop.send(USER, f"/track {order.public_id.lower()}")
    assert "Status: <b>Shipped</b>" in reply.text and "DHL" in reply.text and "1234567890" in reply.text
    assert "tracking-id=1234567890" in reply.text and "Arrived at facility — NAIROBI - KENYA" in reply.text


async def test_an_event_without_a_place_leaves_the_place_out(shop: Harness) -> None:
    order, status = await dhl_event(shop, "Shipment picked up", None, None, to_state="in_transit")
    assert status == f"📍 Order <b>{order.public_id}</b> is on its way: Shipment picked up."
    reply = await shop.send(USER, f"/track {order.public_id}")
    assert "📍 Latest: Shipment picked up (" in reply.text and "-" not in reply.text.split("Latest:")[1]


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


async def test_reservation_is_kept_while_an_mpesa_prompt_can_still_be_answered(shop: Harness) -> None:
    """The expiry job leaves an order whose STK prompt may still be answered (pending, younger than
    mpesa_flow.FINAL_TIMEOUT) for a later cycle; reconciliation gives the prompt a final answer by then."""
    pid = await make_product(shop.session_factory, "EXP-MPESA", stock=3)
    order = await make_order(shop.session_factory, USER, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Order).values(reserved_until=utcnow() - timedelta(minutes=1)))
        prompt = Payment(
            order_id=order.id,
            provider="mpesa",
            state="pending",
            amount=order.total,
            currency="KES",
            phone="254712345678",
            checkout_request_id="ws_CO_1",
        )  # as start_stk leaves it
        session.add(prompt)
    assert shop.shop is not None
    _, _, expiry_job = jobs._expiry(shop.shop)
    assert await expiry_job() == 0
    assert await stock_of(shop.session_factory, pid) == (2, 1, 0)
    assert await sm.expire_due_orders(shop.session_factory, now=utcnow() + FINAL_TIMEOUT + timedelta(seconds=1)) == 1
    assert await stock_of(shop.session_factory, pid) == (3, 0, 0)


async def test_a_prompt_with_a_final_answer_does_not_hold_the_reservation(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "EXP-MPESA-2", stock=3)
    order = await make_order(shop.session_factory, USER, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Order).values(reserved_until=utcnow() - timedelta(minutes=1)))
        session.add(
            Payment(
                order_id=order.id,
                provider="mpesa",
                state="failed",
                amount=order.total,
                currency="KES",
                phone="254712345678",
                checkout_request_id="ws_CO_2",
                result_code="1032",
            )
        )
    assert await sm.expire_due_orders(shop.session_factory) == 1


async def _status_texts(shop: Harness, order: Order) -> list[str]:
    async with shop.session_factory() as session:
        rows = await session.execute(
            select(Outbox.text).where(Outbox.chat_id == USER, Outbox.kind == "order_status").order_by(Outbox.id)
        )
        return list(rows.scalars().all())


async def _paid(shop: Harness, zone: str) -> Order:
    pid = await make_product(shop.session_factory, f"ST-{zone}", stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 1)], zone=zone)
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, order.public_id), "processing", "system:test")
    return order


async def test_shipped_message_says_only_what_is_known(shop: Harness) -> None:
    local, dhl = await _paid(shop, "kenya"), await _paid(shop, "intl")
    await shop.send(ADMIN_USER_ID, f"/ship {local.public_id} G4S-12345", chat_id=ADMIN_CHAT_ID)
    await shop.send(ADMIN_USER_ID, f"/ship {dhl.public_id} 1234567890", chat_id=ADMIN_CHAT_ID)
    local_text, dhl_text = [t for t in await _status_texts(shop, local) if "has shipped" in t]
    assert f"Order <b>{local.public_id}</b> has shipped with G4S." in local_text
    assert "Tracking number: <code>G4S-12345</code>" in local_text and "Track it" not in local_text
    assert "-\n" not in local_text + "\n" and "Delivery: Rest of Kenya (3–5 days, G4S / Wells Fargo)" in local_text
    assert "Track it: https://www.dhl.com/" in dhl_text and "tracking-id=1234567890" in dhl_text
    assert_telegram_html(local_text)
    async with shop.session_factory() as session:
        order = await sm.get_order(session, local.public_id)
    order.tracking_number = None
    bare = sm.status_message(order)
    assert "Tracking number" not in bare and "Track it" not in bare and ": -" not in bare


async def test_admin_cancel_reason_reaches_the_customer_with_the_shops_contact(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, shop_phone="0700 111 222", shop_whatsapp="+254 700 111 222").start()
    order = await _paid(shop, "nairobi")
    reply = await shop.send(ADMIN_USER_ID, f"/cancel {order.public_id} Out of stock <sorry>", chat_id=ADMIN_CHAT_ID)
    assert "cancelled" in reply.text
    [text] = [t for t in await _status_texts(shop, order) if "has been cancelled" in t]
    assert "Reason: Out of stock &lt;sorry&gt;" in text
    assert "Questions? Call 0700 111 222 · WhatsApp +254 700 111 222" in text
    assert_telegram_html(text)
    await shop.stop()


async def test_cancel_from_the_alert_button_gives_no_made_up_reason(shop: Harness) -> None:
    order = await _paid(shop, "nairobi")
    await shop.send(ADMIN_USER_ID, "/start", chat_id=ADMIN_CHAT_ID)
    await shop.press(ADMIN_USER_ID, f"adm:cc:{order.public_id}", chat_id=ADMIN_CHAT_ID)
    [text] = [t for t in await _status_texts(shop, order) if "has been cancelled" in t]
    assert "Reason" not in text and "Questions?" not in text  # no contact configured: no empty line


async def test_an_mpesa_payment_without_a_receipt_code_is_not_called_a_card(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, "processing", "system:test")
        text = sm.status_message(o, "en", sm.StatusDetails(paid_with="mpesa", receipt=None))
    assert "Paid by: M-Pesa (the receipt code is in your M-Pesa SMS)" in text and "Card" not in text
