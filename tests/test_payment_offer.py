"""Which ways to pay the customer is offered, what happens when none fits (the admin group is told;
manual Paybill instructions when the shop has a Paybill), cancelling with a confirmation, and the
pay buttons taken off once the order stops awaiting payment."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from sqlalchemy import select, update

from bot.runtime import Shop
from bot.serve import announce_start
from db.models import Customer, Order, Outbox, utcnow
from services import orders as sm
from services.outbox_sender import BotApiTransport, Limits, drain_once
from services.payments import pay_message
from tests import test_checkout
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, TEST_TOKEN, Harness
from tests.standins import Call
from tests.test_checkout import fill_cart, go_to_phone

USER = 8301


class Configured:  # stands in for a provider client: only its presence matters for the offer
    async def aclose(self) -> None:
        return None


def configured(*names: str) -> dict[str, Configured]:
    return {name: Configured() for name in names}


async def _order(shop: Harness, zone: str = "nairobi", sku: str = "OFF-1") -> Order:
    pid = await make_product(shop.session_factory, f"{sku}-{zone}", stock=3)
    return await make_order(shop.session_factory, USER, [(pid, 1)], zone=zone)


async def _offer(shop: Harness, zone: str) -> tuple[list[str], str]:
    order = await _order(shop, zone)
    await shop.send(USER, "/start")
    reply = await shop.press(USER, f"pay:o:{order.public_id}")
    assert reply is not None
    return [label for label, _ in reply.buttons], reply.text


async def drain_outbox(shop: Harness) -> None:
    """Send everything queued to the Bot API stand-in, as the outbox sender does."""
    transport = BotApiTransport(shop.botapi.url, TEST_TOKEN)
    while await drain_once(shop.session_factory, transport, Limits()):
        pass
    await transport.aclose()


def edits_of(shop: Harness, chat_id: int, message_id: int) -> list[Call]:
    """The editMessageText calls made to one message, in order."""
    return [c for c in shop.botapi.sent(chat_id, "editMessageText") if c.params["message_id"] == message_id]


async def expire(shop: Harness, order: Order, later: timedelta = timedelta(0)) -> None:
    """The order's reservation runs out and the expiry job runs (`later` than now: past open prompts)."""
    async with shop.session_factory() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == order.id).values(reserved_until=utcnow() - timedelta(minutes=1))
        )
    assert await sm.expire_due_orders(shop.session_factory, now=utcnow() + later) == 1


async def _admin_rows(shop: Harness, kind: str) -> list[Outbox]:
    async with shop.session_factory() as session:
        rows = await session.execute(select(Outbox).where(Outbox.chat_id == ADMIN_CHAT_ID, Outbox.kind == kind))
        return list(rows.scalars().all())


async def test_mpesa_for_kes_card_for_both(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, providers=configured("mpesa", "stripe")).start()
    labels, _ = await _offer(shop, "nairobi")
    assert labels == ["📱 M-Pesa", "💳 Card (Stripe)", "✖ Cancel order"]
    labels, _ = await _offer(shop, "intl")
    assert labels == ["💳 Card (Stripe)", "✖ Cancel order"]
    assert await _admin_rows(shop, "unpayable") == []  # payable orders are no news for the admins
    await shop.stop()


async def test_no_provider_tells_customer_and_posts_the_order_to_admins(shop: Harness) -> None:
    order = await _order(shop)
    await shop.send(USER, "/start")
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Customer).where(Customer.id == USER).values(first_name="Ann <b>Kamau</b> & Co"))
    reply = await shop.press(USER, f"pay:o:{order.public_id}")
    assert reply is not None and [label for label, _ in reply.buttons] == ["✖ Cancel order"]
    assert "online payment isn't available right now, so we've sent your order to the shop" in reply.text
    await shop.press(USER, f"pay:o:{order.public_id}")  # offered again: the admins are told once
    [alert] = await _admin_rows(shop, "unpayable")
    assert f"Order <b>{order.public_id}</b> can't be paid online" in alert.text
    assert "1 × Product" in alert.text and "Total: <b>KES 1,300</b>" in alert.text
    assert "Customer: Ann &lt;b&gt;Kamau&lt;/b&gt; &amp; Co, phone +254 712 345 678" in alert.text
    assert "/paid" not in alert.text  # no Paybill: the shop arranges payment with the customer
    assert isinstance(shop.shop, Shop)
    await announce_start(shop.shop)
    [warning] = await _admin_rows(shop, "admin_alert")
    assert "No payment provider is configured" in warning.text


async def test_international_order_with_only_mpesa_reaches_the_admins(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, providers=configured("mpesa"), mpesa_manual_paybill="123456").start()
    labels, text = await _offer(shop, "intl")
    assert labels == ["✖ Cancel order"] and "we've sent your order to the shop" in text
    assert "Paybill" not in text  # M-Pesa by hand is for KES orders only
    [alert] = await _admin_rows(shop, "unpayable")
    assert "$" in alert.text and "the shop will contact them" in alert.text
    await shop.stop()


async def test_manual_paybill_instructions_for_customer_and_admins(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(
        engine, botapi, mpesa_manual_paybill="123456", mpesa_manual_account_prefix="SHOP", shop_phone="0700 111 222"
    ).start()
    order = await _order(shop)
    await shop.send(USER, "/start")
    reply = await shop.press(USER, f"pay:o:{order.public_id}")
    assert reply is not None
    assert (
        "Pay with M-Pesa: Lipa na M-Pesa → Paybill → Business no. <b>123456</b> → "
        f"Account no. <b>SHOP{order.public_id}</b> → amount <b>KES 1,300</b>"
    ) in reply.text
    assert "Questions? Call 0700 111 222" in reply.text and "online payment isn't available" not in reply.text
    [alert] = await _admin_rows(shop, "unpayable")
    assert f"Business no. 123456 → Account no. SHOP{order.public_id} → amount KES 1,300" in alert.text
    await shop.stop()


async def test_cancel_asks_first_and_keep_shows_the_payment_screen(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, providers=configured("mpesa")).start()
    pid = await make_product(shop.session_factory, "CXL-1", stock=3)
    order = await make_order(shop.session_factory, USER, [(pid, 2)])
    await shop.send(USER, "/start")
    offer = await shop.press(USER, f"pay:o:{order.public_id}")
    assert offer is not None and offer.button("Cancel order") == f"pay:x:{order.public_id}"
    ask = await shop.press(USER, offer.button("Cancel order"), message=offer)
    assert ask is not None and ask.method == "editMessageText"
    assert ask.text == f"Cancel order <b>{order.public_id}</b>? This can't be undone."
    assert [label for label, _ in ask.buttons] == ["Yes, cancel it", "Keep order"]
    assert await stock_of(shop.session_factory, pid) == (1, 2, 0)  # one tap cancelled nothing
    kept = await shop.press(USER, ask.button("Keep order"), message=ask)
    assert kept is not None and "How would you like to pay?" in kept.text
    assert [label for label, _ in kept.buttons] == ["📱 M-Pesa", "✖ Cancel order"]
    ask = await shop.press(USER, kept.button("Cancel order"), message=kept)
    assert ask is not None
    done = await shop.press(USER, ask.button("Yes, cancel it"), message=ask)
    assert "cancelled and its items are back on the shelf" in shop.last_answer.params["text"]
    assert done is not None and "is cancelled" in done.text and done.buttons == []
    assert await stock_of(shop.session_factory, pid) == (3, 0, 0)
    await shop.press(USER, f"pay:x:{order.public_id}", message=offer)
    assert shop.last_answer.params["text"] == f"Order {order.public_id} is already cancelled."
    await shop.stop()


async def test_cancel_refusals_read_as_a_person_writes(shop: Harness) -> None:
    paid, lapsed = await _order(shop, sku="PAID"), await _order(shop, sku="LAPSED")
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, paid.public_id), sm.PROCESSING, "system:test")
        await sm.transition(session, await sm.get_order(session, lapsed.public_id), sm.EXPIRED, "system:test")
    await shop.send(USER, "/start")
    await shop.press(USER, f"pay:x:{paid.public_id}")
    assert shop.last_answer.params["text"] == (
        f"Order {paid.public_id} has been paid, so it can't be cancelled here — message us to arrange a return."
    )
    await shop.press(USER, f"pay:xy:{lapsed.public_id}")
    assert (
        shop.last_answer.params["text"]
        == f"Order {lapsed.public_id} has already expired, so there's nothing to cancel."
    )
    await shop.press(USER, f"pay:o:{lapsed.public_id}")
    assert "expired before it was paid, so it can't be paid any more" in shop.last_answer.params["text"]


async def test_an_expired_orders_payment_message_loses_its_buttons(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, providers=configured("mpesa")).start()
    order = await _order(shop)
    await shop.send(USER, "/start")
    offer = await shop.press(USER, f"pay:o:{order.public_id}")
    assert offer is not None and offer.button("M-Pesa") == f"pay:m:{order.public_id}"
    message_id = offer.result["message_id"]
    async with shop.session_factory() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == order.id).values(reserved_until=utcnow() - timedelta(minutes=1))
        )
    assert await sm.expire_due_orders(shop.session_factory) == 1
    await drain_outbox(shop)
    [edit] = edits_of(shop, USER, message_id)
    assert edit.buttons == [] and "M-Pesa" not in str(edit.params)
    assert edit.text == (
        f"⌛ Order <b>{order.public_id}</b> wasn't paid in time, so it expired and its items went back on the shelf."
    )
    await shop.stop()


async def test_checkout_records_the_payment_message_and_tells_the_admins(shop: Harness) -> None:
    """The payment screen sent at Confirm is the one most customers see: its id is kept (so its buttons
    can be taken off later) and, with no way to pay online, the order goes to the admin group at once."""
    await fill_cart(shop, ("LAP-TP-T480", 1))
    await go_to_phone(shop)
    await shop.share_contact(test_checkout.USER, "+254712345678")
    await shop.send(test_checkout.USER, "wanjiru@example.com")
    summary = await shop.send(test_checkout.USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    offer = await shop.press(test_checkout.USER, summary.button("Confirm"))
    assert offer is not None and offer.method == "sendMessage"
    assert "we've sent your order to the shop" in offer.text
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert order.pay_message_id == offer.result["message_id"]
    [alert] = await _admin_rows(shop, "unpayable")
    assert f"Order <b>{order.public_id}</b> can't be paid online" in alert.text
    assert "1 × Lenovo ThinkPad T480" in alert.text and "+254 712 345 678" in alert.text


async def test_a_payment_screen_sent_again_takes_the_buttons_off_the_one_before(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    """ "Pay now" from the order list sends a new payment screen: the older one stops offering to pay
    at once, so the chat holds one live screen per order, and that one loses its buttons on expiry."""
    shop = await Harness(engine, botapi, providers=configured("mpesa")).start()
    order = await _order(shop)
    await shop.send(USER, "/start")
    first = await shop.press(USER, f"pay:o:{order.public_id}")
    second = await shop.press(USER, f"pay:o:{order.public_id}", message=first)
    assert first is not None and second is not None and second.method == "sendMessage"
    old, new = first.result["message_id"], second.result["message_id"]
    assert old != new
    await drain_outbox(shop)
    [moved] = edits_of(shop, USER, old)
    assert moved.text == f"⬇ Order <b>{order.public_id}</b>: payment continues in the message below."
    assert moved.buttons == [] and edits_of(shop, USER, new) == []
    await expire(shop, order)
    await drain_outbox(shop)
    [closed] = edits_of(shop, USER, new)
    assert closed.buttons == [] and "wasn't paid in time" in closed.text
    assert len(edits_of(shop, USER, old)) == 1
    await shop.stop()


async def test_a_message_recorded_after_the_order_moved_loses_its_buttons_at_once(shop: Harness) -> None:
    """The order expired while its pay message was on its way: recording it queues its closing edit."""
    order = await _order(shop)
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, order.public_id), sm.EXPIRED, "system:test")
    assert not await pay_message.record_pay_message_apart(shop.session_factory, order.public_id, USER, 4242, "sw")
    async with shop.session_factory() as session:
        [edit] = (await session.execute(select(Outbox).where(Outbox.edit_message_id == 4242))).scalars().all()
        assert (await sm.get_order(session, order.public_id)).pay_message_id is None
    assert edit.reply_markup is None and f"Oda <b>{order.public_id}</b> haikulipiwa kwa wakati" in edit.text


async def test_a_state_change_closes_the_message_recorded_after_the_order_was_read(shop: Harness) -> None:
    """The expiry read the order before a new pay message was recorded: the one it closes is the new one."""
    order = await _order(shop)
    async with shop.session_factory() as session:
        stale = await sm.get_order(session, order.public_id)
        await session.commit()  # the read's transaction ends (SQLite would not let it write after another's)
        assert await pay_message.record_pay_message_apart(shop.session_factory, order.public_id, USER, 5151, "en")
        await sm.transition(session, stale, sm.EXPIRED, "system:test")
        await session.commit()
    async with shop.session_factory() as session:
        [edit] = (await session.execute(select(Outbox).where(Outbox.kind == "pay_closed"))).scalars().all()
    assert edit.edit_message_id == 5151 and "wasn't paid in time" in edit.text


async def test_the_admins_hear_of_an_unpayable_order_even_when_its_payment_screen_cannot_be_sent(
    shop: Harness,
) -> None:
    """The alert is written with the order itself, not after the screen: a customer who blocked the
    bot a moment after Confirm (or a crash between the two) leaves no order the shop never hears of."""
    await fill_cart(shop, ("LAP-TP-T480", 1))
    await go_to_phone(shop)
    await shop.share_contact(test_checkout.USER, "+254712345678")
    await shop.send(test_checkout.USER, "wanjiru@example.com")
    summary = await shop.send(test_checkout.USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")

    async def blocked(method, params):  # type: ignore[no-untyped-def]
        if method == "sendMessage" and params.get("chat_id") == test_checkout.USER:
            return web.json_response(
                {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, status=403
            )
        return None

    shop.botapi.responder = blocked
    await shop.press(test_checkout.USER, summary.button("Confirm"), message=summary)
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert order.state == "awaiting_payment" and order.pay_message_id is None
    [alert] = await _admin_rows(shop, "unpayable")
    assert f"Order <b>{order.public_id}</b> can't be paid online" in alert.text
