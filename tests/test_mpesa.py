"""M-Pesa STK push end to end: the bot, our webhook server and a Daraja stand-in over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from bot.runtime import build_providers
from db.models import Order, OrderEvent, Outbox, Payment, WebhookEvent, utcnow
from services import orders as sm
from services.payments import mpesa_flow
from tests import daraja_standin as dj
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, Harness
from tests.test_payment_offer import drain_outbox, edits_of, expire
from tests.webserver import free_port, serve_shop

USER = 8101


@dataclass
class MpesaWorld:
    shop: Harness
    daraja: dj.DarajaStandIn
    base: str  # our webhook server

    @property
    def callback_url(self) -> str:
        return f"{self.base}/webhooks/mpesa/{dj.CALLBACK_TOKEN}"

    async def order(self, qty: int = 1, stock: int = 5, phone: str = "254712345678", customer: int = USER) -> Order:
        pid = await make_product(
            self.shop.session_factory, f"SKU-{customer}-{qty}-{stock}", stock=stock, price_kes=2500_00
        )
        return await make_order(self.shop.session_factory, customer, [(pid, qty)], phone=phone)

    async def pay(self, order: Order, customer: int = USER):  # type: ignore[no-untyped-def]
        await self.shop.send(customer, "/orders")
        reply = await self.shop.press(customer, f"pay:m:{order.public_id}")
        await self.daraja.settle()
        return reply

    async def count(self, model, *where) -> int:  # type: ignore[no-untyped-def]
        async with self.shop.session_factory() as session:
            return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()

    async def state_of(self, order: Order) -> str:
        async with self.shop.session_factory() as session:
            return (await sm.get_order(session, order.public_id)).state

    async def payment(self) -> Payment:
        async with self.shop.session_factory() as session:
            return (await session.execute(select(Payment).order_by(Payment.id.desc()))).unique().scalars().first()


@asynccontextmanager
async def open_world(engine, botapi, **overrides: Any) -> AsyncIterator[MpesaWorld]:  # type: ignore[no-untyped-def]
    """The bot (built from settings as in production), our webhook server and a Daraja stand-in."""
    daraja = await dj.DarajaStandIn().start()
    port = free_port()
    settings: dict[str, Any] = {
        "public_base_url": f"http://127.0.0.1:{port}",
        "mpesa_base_url": daraja.url,
        "mpesa_consumer_key": dj.CONSUMER_KEY,
        "mpesa_consumer_secret": dj.CONSUMER_SECRET,
        "mpesa_shortcode": dj.SHORTCODE,
        "mpesa_passkey": dj.PASSKEY,
        "mpesa_callback_token": dj.CALLBACK_TOKEN,
        "mpesa_query_after_seconds": 60,
    }
    shop = Harness(engine, botapi, **(settings | overrides))
    shop.providers = build_providers(shop.settings)
    assert "mpesa" in shop.providers
    await shop.start()
    assert shop.shop is not None
    try:
        async with serve_shop(shop.shop, port) as base:
            yield MpesaWorld(shop, daraja, base)
            await daraja.settle()
    finally:
        await shop.providers["mpesa"].aclose()
        await shop.stop()
        await daraja.stop()


@pytest.fixture
async def world(engine, botapi) -> AsyncIterator[MpesaWorld]:  # type: ignore[no-untyped-def]
    async with open_world(engine, botapi) as w:
        yield w


async def test_paid_by_mpesa_end_to_end(world: MpesaWorld) -> None:
    order = await world.order(qty=2)
    reply = await world.pay(order)
    assert "Check your phone (2547*****678)" in reply.text and "KES 5,300" in reply.text
    assert reply.button("Check payment status") == f"pay:mq:{order.public_id}"
    push = world.daraja.pushes[0]
    assert push.body["Amount"] == 5300 and push.body["AccountReference"] == order.public_id
    assert push.body["CallBackURL"] == world.callback_url and push.callbacks_sent == [200]
    assert (push.body["TransactionType"], push.body["PartyB"]) == ("CustomerPayBillOnline", dj.SHORTCODE)
    assert world.daraja.errors == []  # password recipe, Nairobi timestamp, lengths: all as Daraja wants
    assert reply.button("Cancel order") == f"pay:x:{order.public_id}"
    assert await world.state_of(order) == "processing"
    payment = await world.payment()
    assert (payment.state, payment.amount, payment.currency) == ("paid", 5300_00, "KES")
    assert payment.receipt_number and payment.receipt_number.startswith("RLA")
    async with world.shop.session_factory() as session:
        outbox = (await session.execute(select(Outbox).order_by(Outbox.id))).scalars().all()
    assert [o.kind for o in outbox] == ["order_status", "pay_closed", "new_order"]
    assert "Payment received" in outbox[0].text and outbox[2].chat_id == ADMIN_CHAT_ID
    # "Check your phone" offered to pay: its buttons come off
    assert (outbox[1].edit_message_id, outbox[1].reply_markup) == (reply.result["message_id"], None)
    assert [b["callback_data"] for b in outbox[2].reply_markup["inline_keyboard"][0]] == [
        f"adm:v:{order.public_id}",
        f"adm:s:{order.public_id}",
        f"adm:c:{order.public_id}",
    ]
    await world.shop.press(USER, reply.button("Check payment status"), message=reply)
    assert "has been received" in world.shop.last_answer.params["text"]


@pytest.mark.parametrize(
    "code,reason",
    [
        (1032, "cancelled on the phone"),
        (2001, "PIN was wrong"),
        (1, "enough balance"),
        (1037, "couldn't reach your phone"),
        (1019, "timed out"),
        (1001, "another M-Pesa transaction"),
        (1025, "couldn't show the prompt"),
        (4242, "declined"),
    ],
)
async def test_each_failure_code_is_explained_with_try_again(world: MpesaWorld, code: int, reason: str) -> None:
    world.daraja.plan = dj.Plan(result_code=code)
    order = await world.order()
    await world.pay(order)
    assert await world.state_of(order) == "awaiting_payment"
    payment = await world.payment()
    assert (payment.state, payment.result_code) == ("failed", str(code))
    async with world.shop.session_factory() as session:
        msg = (await session.execute(select(Outbox).where(Outbox.kind == "payment_failed"))).scalar_one()
    assert (
        reason in msg.text and msg.reply_markup["inline_keyboard"][0][0]["callback_data"] == f"pay:mr:{order.public_id}"
    )
    world.daraja.plan = dj.Plan()
    await world.shop.press(USER, f"pay:m:{order.public_id}")  # try again: a new prompt, then paid
    await world.daraja.settle()
    assert await world.state_of(order) == "processing" and len(world.daraja.pushes) == 2


async def test_try_again_prompts_the_same_number_and_another_number_can_be_used(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(result_code=1032)
    order = await world.order(phone="254712345678")
    await world.pay(order)
    async with world.shop.session_factory() as session:
        failed = (await session.execute(select(Outbox).where(Outbox.kind == "payment_failed"))).scalar_one()
    assert [[(b["text"], b["callback_data"]) for b in row] for row in failed.reply_markup["inline_keyboard"]] == [
        [("🔁 Try again", f"pay:mr:{order.public_id}")],
        [("📱 Use another number", f"pay:mn:{order.public_id}")],
    ]
    again = await world.shop.press(USER, f"pay:mr:{order.public_id}")  # straight to the prompt: no screen between
    assert again is not None and "Check your phone (2547*****678)" in again.text
    assert [p.body["PartyA"] for p in world.daraja.pushes] == ["254712345678", "254712345678"]
    await world.daraja.settle()
    ask = await world.shop.press(USER, f"pay:mn:{order.public_id}")
    assert ask is not None and "Which Safaricom number should we send the M-Pesa prompt to instead?" in ask.text
    assert "Kenyan mobile number" in (await world.shop.send(USER, "+44 7911 123456")).text
    world.daraja.plan = dj.Plan()
    prompted = await world.shop.send(USER, "0722 000 111")
    assert "Check your phone (2547*****111)" in prompted.text
    assert world.daraja.pushes[-1].body["PartyA"] == "254722000111"
    await world.daraja.settle()
    assert await world.state_of(order) == "processing"
    async with world.shop.session_factory() as session:
        paid = (await session.execute(select(Outbox).where(Outbox.kind == "order_status"))).scalar_one()
    assert "M-Pesa receipt: <code>RLA" in paid.text and "Phone: +254 712 345 678" in paid.text


async def test_failure_after_success_is_ignored(world: MpesaWorld) -> None:
    order = await world.order()
    await world.pay(order)
    push = world.daraja.pushes[0]
    async with httpx.AsyncClient() as http:
        r = await http.post(world.callback_url, json=world.daraja.callback_body(push, result_code=1032))
    assert r.status_code == 200 and r.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert await world.state_of(order) == "processing" and (await world.payment()).state == "paid"
    assert await world.count(Outbox, Outbox.kind == "payment_failed") == 0


@pytest.mark.pg_only
async def test_ten_concurrent_duplicate_callbacks_settle_once(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(copies=10)
    order = await world.order()
    await world.pay(order)
    assert world.daraja.pushes[0].callbacks_sent == [200] * 10
    assert await world.count(Payment, Payment.state == "paid") == 1
    assert await world.count(OrderEvent, OrderEvent.to_state == "processing") == 1
    assert await world.count(Outbox, Outbox.kind == "order_status") == 1
    assert await world.count(Outbox, Outbox.kind == "new_order") == 1
    assert await world.count(WebhookEvent, WebhookEvent.provider == "mpesa") == 1


async def test_missing_callback_is_settled_by_the_query(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1)
    order = await world.order()
    await world.pay(order)
    assert await world.state_of(order) == "awaiting_payment"
    client, settings = world.shop.providers["mpesa"], world.shop.settings
    now = utcnow() + timedelta(seconds=61)
    assert await mpesa_flow.reconcile_due(world.shop.session_factory, client, settings, now) == 0  # "processing"
    payment = await world.payment()
    assert payment.state == "pending" and payment.query_attempts == 1
    later = payment.next_check_at + timedelta(seconds=1)
    assert await mpesa_flow.reconcile_due(world.shop.session_factory, client, settings, later) == 1
    assert await world.state_of(order) == "processing"


async def test_query_that_never_finishes_times_out(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1000)
    order = await world.order()
    await world.pay(order)
    client, settings = world.shop.providers["mpesa"], world.shop.settings
    await mpesa_flow.reconcile_due(world.shop.session_factory, client, settings, utcnow() + timedelta(seconds=61))
    await mpesa_flow.reconcile_due(world.shop.session_factory, client, settings, utcnow() + timedelta(minutes=6))
    payment = await world.payment()
    assert (payment.state, payment.result_code) == ("failed", "timeout")
    assert await world.state_of(order) == "awaiting_payment"


@pytest.mark.parametrize(
    "path,kwargs,status",
    [
        ("/webhooks/mpesa/wrong-token", {"json": {"Body": {}}}, 404),
        (
            f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}",
            {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        (f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", {"content": b"a=b", "headers": {"Content-Type": "text/plain"}}, 415),
        (f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", {"json": {"Body": {"stkCallback": {"ResultCode": 0}}}}, 400),
        (f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", {"json": [1, 2, 3]}, 400),
        (
            f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}",
            {"json": {"Body": {"stkCallback": {"CheckoutRequestID": "x", "ResultCode": "zero"}}}},
            400,
        ),
        (
            f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}",
            {"content": b"{" + b" " * 100_000 + b"}", "headers": {"Content-Type": "application/json"}},
            413,
        ),
    ],
)
async def test_bad_requests_get_4xx_and_change_nothing(world: MpesaWorld, path: str, kwargs: dict, status: int) -> None:
    async with httpx.AsyncClient(base_url=world.base) as http:
        r = await http.post(path, **kwargs)
    assert r.status_code == status
    assert await world.count(WebhookEvent) == 0 and await world.count(Payment) == 0


async def test_unknown_checkout_id_is_kept_and_alerted(world: MpesaWorld) -> None:
    body = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "m",
                "CheckoutRequestID": "ws_CO_unknown",
                "ResultCode": 0,
                "ResultDesc": "ok",
                "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 10}]},
            }
        }
    }
    async with httpx.AsyncClient() as http:
        for _ in range(2):
            assert (await http.post(world.callback_url, json=body)).status_code == 200
    async with world.shop.session_factory() as session:
        events = (await session.execute(select(WebhookEvent).order_by(WebhookEvent.id))).scalars().all()
        alerts = (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalars().all()
    assert [e.status for e in events] == ["processed", "anomaly"]
    assert len(alerts) == 1 and "unknown CheckoutRequestID ws_CO_unknown" in alerts[0].text


async def test_amount_mismatch_is_an_anomaly_not_a_payment(world: MpesaWorld) -> None:
    """A success callback whose Amount is not the attempt's never settles it, whatever the query says;
    the attempt stays pending and reconciliation settles it from the query (which confirms the push we
    made, for the amount we asked)."""
    world.daraja.plan = dj.Plan(amount_override=1)
    order = await world.order()
    await world.pay(order)
    assert await world.state_of(order) == "awaiting_payment"
    assert (await world.payment()).state == "pending" and world.daraja.pushes[0].queries == 0
    async with world.shop.session_factory() as session:
        alert = (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalar_one()
    assert "amount mismatch" in alert.text and order.public_id in alert.text and "KES 1," in alert.text
    await mpesa_flow.reconcile_due(world.shop.session_factory, world.shop.providers["mpesa"], world.shop.settings)
    assert await world.state_of(order) == "processing" and (await world.payment()).amount == order.total


async def test_late_payment_after_expiry_re_reserves_or_is_marked_for_refund(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order(qty=2, stock=3)
    await world.pay(order)
    await sm.expire_due_orders(world.shop.session_factory, now=utcnow() + timedelta(hours=1))
    assert await world.state_of(order) == "expired"
    async with httpx.AsyncClient() as http:
        await http.post(world.callback_url, json=world.daraja.callback_body(world.daraja.pushes[0], result_code=0))
    assert await world.state_of(order) == "processing"
    pid = order.items[0].product_id
    assert await stock_of(world.shop.session_factory, pid) == (1, 0, 2)
    # Second case: the stock is gone by the time the money arrives.
    other = await world.order(qty=3, stock=3, customer=USER + 1)
    await world.shop.send(USER + 1, "/start")
    await world.shop.press(USER + 1, f"pay:m:{other.public_id}")
    await sm.expire_due_orders(world.shop.session_factory, now=utcnow() + timedelta(hours=1))
    rival = await make_order(world.shop.session_factory, USER + 2, [(other.items[0].product_id, 1)])
    async with httpx.AsyncClient() as http:
        await http.post(world.callback_url, json=world.daraja.callback_body(world.daraja.pushes[1], result_code=0))
    assert await world.state_of(other) == "expired" and rival.state == "awaiting_payment"
    assert (await world.payment()).state == "refund_due"
    async with world.shop.session_factory() as session:
        alerts = [
            o.text for o in (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalars()
        ]
    assert any("stock re-reserved" in a for a in alerts) and any("refund owed" in a for a in alerts)


async def test_token_refreshed_once_on_401(world: MpesaWorld) -> None:
    first = await world.order(customer=USER)
    await world.pay(first)
    world.daraja.expire_tokens()
    second = await world.order(customer=USER + 5)
    await world.shop.send(USER + 5, "/start")
    await world.shop.press(USER + 5, f"pay:m:{second.public_id}")
    await world.daraja.settle()
    assert world.daraja.tokens_issued == 2 and await world.state_of(second) == "processing"


async def test_non_kenyan_number_is_asked_again(world: MpesaWorld) -> None:
    order = await world.order(phone="447911123456")
    await world.shop.send(USER, "/start")
    ask = await world.shop.press(USER, f"pay:m:{order.public_id}")
    assert "Which Safaricom number" in ask.text
    assert "Kenyan mobile" in (await world.shop.send(USER, "+44 7911 123456")).text
    assert "doesn't work" in (await world.shop.send(USER, "12")).text
    reply = await world.shop.send(USER, "0722 000 111")
    await world.daraja.settle()
    assert "Check your phone (2547*****111)" in reply.text and world.daraja.pushes[0].body["PartyA"] == "254722000111"
    assert await world.state_of(order) == "processing"


async def test_no_second_prompt_while_one_is_live(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    await world.pay(order)
    again = await world.shop.press(USER, f"pay:m:{order.public_id}")
    assert "already on your phone" in again.text and len(world.daraja.pushes) == 1


async def test_cancel_waits_while_the_prompt_can_still_be_answered(world: MpesaWorld) -> None:
    """Cancel order while the prompt is on the phone would release stock the customer may be paying for."""
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order(qty=2, stock=5)
    await world.pay(order)
    await world.shop.press(USER, f"pay:xy:{order.public_id}")  # Yes, cancel it
    assert "M-Pesa prompt is still open on your phone" in world.shop.last_answer.params["text"]
    assert await world.state_of(order) == "awaiting_payment"
    async with world.shop.session_factory() as session:
        product_id = (await sm.get_order(session, order.public_id)).items[0].product_id
    assert await stock_of(world.shop.session_factory, product_id) == (3, 2, 0)  # still reserved

    await _age(world, int(mpesa_flow.FINAL_TIMEOUT.total_seconds()))  # unanswered past its final timeout
    await world.shop.press(USER, f"pay:xy:{order.public_id}")  # Yes, cancel it
    assert "cancelled" in world.shop.last_answer.params["text"] and await world.state_of(order) == "cancelled"
    assert await stock_of(world.shop.session_factory, product_id) == (5, 0, 0)


async def test_no_prompt_once_the_reservation_ran_out(world: MpesaWorld) -> None:
    """Before the expiry job gets to the order: a prompt sent now would hold its stock past the reservation."""
    order = await world.order()
    async with world.shop.session_factory() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == order.id).values(reserved_until=utcnow() - timedelta(minutes=1))
        )
    reply = await world.pay(order)
    assert "can't be paid now: its reservation ran out" in reply.text and "Check your phone" not in reply.text
    assert world.daraja.pushes == [] and await world.count(Payment) == 0
    assert await world.state_of(order) == "awaiting_payment"


async def test_daraja_refusal_is_a_friendly_retry(world: MpesaWorld) -> None:
    world.daraja.push_error = (
        500,
        {
            "requestId": "x",
            "errorCode": "500.001.1001",
            "errorMessage": "A transaction is already in process for the subscriber",
        },
    )
    order = await world.order()
    reply = await world.pay(order)
    assert "couldn't send the payment prompt" in reply.text and reply.button("Try again") == f"pay:mr:{order.public_id}"
    assert (await world.payment()).state == "failed"


async def test_the_prompts_message_and_the_offer_before_it_lose_their_buttons_on_expiry(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)  # the prompt is never answered
    order, shop = await world.order(), world.shop
    await shop.send(USER, "/start")
    offer = await shop.press(USER, f"pay:o:{order.public_id}")
    prompt = await shop.press(USER, offer.button("M-Pesa"), message=offer)
    assert prompt is not None and prompt.method == "sendMessage" and "Check your phone" in prompt.text
    await drain_outbox(shop)
    [moved] = edits_of(shop, USER, offer.result["message_id"])
    assert moved.text == f"⬇ Order <b>{order.public_id}</b>: payment continues in the message below."
    assert moved.buttons == []
    await expire(shop, order, later=mpesa_flow.FINAL_TIMEOUT * 2)  # past the prompt's last chance
    await drain_outbox(shop)
    [closed] = edits_of(shop, USER, prompt.result["message_id"])
    assert closed.buttons == [] and "Check payment status" not in str(closed.params)
    assert closed.text == (
        f"⌛ Order <b>{order.public_id}</b> wasn't paid in time, so it expired and its items went back on the shelf."
    )
    assert len(edits_of(shop, USER, offer.result["message_id"])) == 1


async def test_a_failed_push_message_loses_try_again_once_a_prompt_is_sent(world: MpesaWorld) -> None:
    world.daraja.push_error = (500, {"requestId": "x", "errorCode": "500.001.1001", "errorMessage": "Busy"})
    order = await world.order()
    failed = await world.pay(order)
    assert "couldn't send the payment prompt" in failed.text
    world.daraja.push_error = None
    prompt = await world.shop.press(USER, failed.button("Try again"), message=failed)
    assert prompt is not None and "Check your phone" in prompt.text
    await drain_outbox(world.shop)
    [moved] = edits_of(world.shop, USER, failed.result["message_id"])
    assert moved.buttons == [] and "payment continues in the message below" in moved.text
    await world.daraja.settle()  # paid: the prompt's message loses its buttons
    await drain_outbox(world.shop)
    [closed] = edits_of(world.shop, USER, prompt.result["message_id"])
    assert closed.buttons == [] and closed.text.startswith(f"✅ Order <b>{order.public_id}</b> is paid")


async def test_others_cannot_pay_or_query_my_order(world: MpesaWorld) -> None:
    order = await world.order()
    await world.shop.send(USER + 9, "/start")
    await world.shop.press(USER + 9, f"pay:m:{order.public_id}")
    assert "can't find an order" in world.shop.last_answer.params["text"] and world.daraja.pushes == []


async def paid_push_whose_ids_were_lost(world: MpesaWorld) -> tuple[Order, Payment]:
    """An order whose push Daraja accepted, with the attempt left as a crash leaves it: no ids stored."""
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    await world.pay(order)
    async with world.shop.session_factory() as session, session.begin():
        payment = (await session.execute(select(Payment))).unique().scalar_one()
        payment.checkout_request_id = payment.merchant_request_id = None
    return order, payment


async def success_callback(world: MpesaWorld) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(world.callback_url, json=world.daraja.callback_body(world.daraja.pushes[0], result_code=0))
    assert r.status_code == 200


async def test_attempt_orphaned_by_a_crash_is_adopted_by_its_callback(world: MpesaWorld) -> None:
    """The process died after Daraja accepted the push but before the CheckoutRequestID was stored."""
    order, _ = await paid_push_whose_ids_were_lost(world)
    await success_callback(world)
    assert await world.state_of(order) == "processing"
    payment = await world.payment()
    assert payment.state == "paid" and payment.checkout_request_id == world.daraja.pushes[0].checkout_id


async def test_callback_adopts_the_oldest_orphan_when_a_retry_left_a_second(world: MpesaWorld) -> None:
    """The shop died after Daraja accepted the first push; after the restart the customer's retried
    press started a second attempt whose push is still in flight when the first push's success
    callback arrives. Both attempts lack ids and match phone and amount: the money must not be lost."""
    order, first = await paid_push_whose_ids_were_lost(world)
    async with world.shop.session_factory() as session, session.begin():
        await session.execute(
            update(Payment).where(Payment.id == first.id).values(created_at=utcnow() - timedelta(seconds=70))
        )  # past the in-flight window
        second = Payment(
            order_id=first.order_id,
            provider="mpesa",
            state="pending",
            amount=first.amount,
            currency=first.currency,
            phone=first.phone,
            created_at=utcnow(),
        )
        session.add(second)
    await success_callback(world)
    assert await world.state_of(order) == "processing"
    async with world.shop.session_factory() as session:
        adopted, other = await session.get(Payment, first.id), await session.get(Payment, second.id)
        assert adopted.state == "paid" and adopted.checkout_request_id == world.daraja.pushes[0].checkout_id
        assert other.state == "pending" and other.checkout_request_id is None


@pytest.mark.faults
@pytest.mark.pg_only
@pytest.mark.parametrize("code", [0, 1032])
async def test_every_callback_replayed_ten_times_concurrently(world: MpesaWorld, code: int) -> None:
    world.daraja.plan = dj.Plan(no_show=True, result_code=code)  # the query agrees with the callback
    order = await world.order()
    await world.pay(order)
    body = world.daraja.callback_body(world.daraja.pushes[0], result_code=code)
    async with httpx.AsyncClient() as http:
        replies = await asyncio.gather(*(http.post(world.callback_url, json=body) for _ in range(10)))
    assert [r.status_code for r in replies] == [200] * 10
    kinds = ["order_status", "pay_closed", "new_order"] if code == 0 else ["payment_failed"]
    async with world.shop.session_factory() as session:
        sent = [o.kind for o in (await session.execute(select(Outbox).order_by(Outbox.id))).scalars()]
    assert sent == kinds
    assert await world.count(OrderEvent, OrderEvent.to_state == "processing") == (1 if code == 0 else 0)
    assert (await world.payment()).state == ("paid" if code == 0 else "failed")


# --- added coverage: on-demand status, the scheduled job, back-off, buy-goods, suspect callbacks, junk ---


async def _age(world: MpesaWorld, seconds: int) -> None:
    """Pretend every attempt was created `seconds` ago (and is due for its check)."""
    async with world.shop.session_factory() as session, session.begin():
        for p in (await session.execute(select(Payment))).unique().scalars():
            p.created_at = p.created_at - timedelta(seconds=seconds)
            p.next_check_at = utcnow()


async def test_check_status_button_settles_a_missing_callback_on_demand(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    reply = await world.pay(order)
    assert (await world.payment()).state == "pending"
    await world.shop.press(USER, reply.button("Check payment status"), message=reply)
    assert "has been received" in world.shop.last_answer.params["text"]
    assert await world.state_of(order) == "processing" and world.daraja.pushes[0].queries == 1
    assert await world.count(Outbox, Outbox.kind == "order_status", Outbox.chat_id == USER) == 1
    assert await world.count(Outbox, Outbox.kind == "new_order", Outbox.chat_id == ADMIN_CHAT_ID) == 1


async def test_check_status_while_still_processing_says_waiting(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=5)
    order = await world.order()
    reply = await world.pay(order)
    await world.shop.press(USER, reply.button("Check payment status"), message=reply)
    assert "still waiting" in world.shop.last_answer.params["text"]
    assert (await world.payment()).state == "pending" and await world.state_of(order) == "awaiting_payment"
    await world.shop.press(USER, reply.button("Check payment status"), message=reply)  # hammered: no new query
    assert "still waiting" in world.shop.last_answer.params["text"] and world.daraja.pushes[0].queries == 1


async def test_scheduled_reconcile_job_settles_a_missing_callback(world: MpesaWorld) -> None:
    from services.payments.mpesa_reconcile import job_factories

    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    await world.pay(order)
    (factory,) = job_factories()
    name, interval, run = factory(world.shop.shop)
    assert name == "mpesa-reconcile" and 15 <= interval <= 30
    await run()  # not due yet: the callback still has time
    assert world.daraja.pushes[0].queries == 0 and (await world.payment()).state == "pending"
    await _age(world, 61)
    await run()
    assert await world.state_of(order) == "processing" and world.daraja.pushes[0].queries == 1
    await run()  # settled attempts are never queried again
    assert world.daraja.pushes[0].queries == 1


async def test_query_back_off_grows_and_the_final_timeout_fails_the_attempt(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1000)
    order = await world.order()
    await world.pay(order)
    client, settings, factory = world.shop.providers["mpesa"], world.shop.settings, world.shop.session_factory
    created = (await world.payment()).created_at
    checks = []
    now = created + timedelta(seconds=61)
    while now < created + mpesa_flow.FINAL_TIMEOUT:
        assert await mpesa_flow.reconcile_due(factory, client, settings, now) == 0
        payment = await world.payment()
        assert payment.state == "pending" and payment.query_attempts == len(checks) + 1
        checks.append(payment.next_check_at - now)
        now = payment.next_check_at
    assert checks[:3] == [timedelta(seconds=15), timedelta(seconds=30), timedelta(seconds=60)]  # exponential
    assert now == created + mpesa_flow.FINAL_TIMEOUT  # capped so the timeout fires on time
    assert await mpesa_flow.reconcile_due(factory, client, settings, now) == 1
    payment = await world.payment()
    assert (payment.state, payment.result_code) == ("failed", "timeout")
    assert world.daraja.pushes[0].queries == len(checks) + 1
    async with factory() as session:
        msg = (await session.execute(select(Outbox).where(Outbox.kind == "payment_failed"))).scalar_one()
    assert (
        "timed out" in msg.text
        and msg.reply_markup["inline_keyboard"][0][0]["callback_data"] == f"pay:mr:{order.public_id}"
    )
    assert await world.state_of(order) == "awaiting_payment"


async def test_buy_goods_sends_the_till_as_party_b(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    async with open_world(engine, botapi, mpesa_transaction_type="CustomerBuyGoodsOnline", mpesa_party_b="600100") as w:
        w.daraja.till = "600100"
        order = await w.order()
        await w.pay(order)
        body = w.daraja.pushes[0].body
        assert (body["TransactionType"], body["PartyB"], body["BusinessShortCode"]) == (
            "CustomerBuyGoodsOnline",
            "600100",
            dj.SHORTCODE,
        )
        assert w.daraja.errors == [] and await w.state_of(order) == "processing"


async def test_oauth_token_is_cached_between_calls(world: MpesaWorld) -> None:
    for n in range(3):
        order = await world.order(customer=USER + 20 + n)
        await world.shop.send(USER + 20 + n, "/start")
        await world.shop.press(USER + 20 + n, f"pay:m:{order.public_id}")
    await world.daraja.settle()
    assert world.daraja.oauth_calls == 1 and len(world.daraja.pushes) == 3


async def test_success_from_another_phone_is_held_for_the_query(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    await world.pay(order)
    body = world.daraja.callback_body(world.daraja.pushes[0], result_code=0)
    for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == "PhoneNumber":
            item["Value"] = 254799999999
    async with httpx.AsyncClient() as http:
        assert (await http.post(world.callback_url, json=body)).status_code == 200
    assert (await world.payment()).state == "pending" and await world.state_of(order) == "awaiting_payment"
    async with world.shop.session_factory() as session:
        alert = (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalar_one()
    assert "2547*****999" in alert.text and "254799999999" not in alert.text
    # The STK query is due at once and decides.
    await mpesa_flow.reconcile_due(world.shop.session_factory, world.shop.providers["mpesa"], world.shop.settings)
    assert await world.state_of(order) == "processing"


async def test_amount_is_compared_in_the_whole_shillings_we_charged(world: MpesaWorld) -> None:
    pid = await make_product(world.shop.session_factory, "SKU-CENTS", stock=5, price_kes=999_50)
    order = await make_order(world.shop.session_factory, USER, [(pid, 1)])
    assert order.total % 100 == 50
    await world.pay(order)
    assert world.daraja.pushes[0].body["Amount"] == -(-order.total // 100)  # rounded up, never under
    assert await world.state_of(order) == "processing" and (await world.payment()).state == "paid"


def _stk(**cb: Any) -> dict[str, Any]:
    return {"Body": {"stkCallback": cb}}


@pytest.mark.parametrize(
    "body",
    [
        _stk(CheckoutRequestID="ws_CO_1", ResultCode="9" * 40),
        _stk(CheckoutRequestID="ws_CO_" + "9" * 200, ResultCode=0),
        _stk(CheckoutRequestID={"a": 1}, ResultCode=0),
        _stk(CheckoutRequestID="ws_CO_1", ResultCode=True),
        _stk(CheckoutRequestID="ws_CO_1", ResultCode=0.5),
        _stk(CheckoutRequestID="ws_CO_1", ResultCode=0, CallbackMetadata={"Item": 3}),
        _stk(
            CheckoutRequestID="ws_CO_1",
            ResultCode=0,
            CallbackMetadata={"Item": [{"Name": "Amount", "Value": {"x": 1}}]},
        ),
        _stk(
            MerchantRequestID="m" * 5000,
            CheckoutRequestID="ws_CO_2",
            ResultCode=0,
            CallbackMetadata={
                "Item": [{"Name": "Amount", "Value": 2600}, {"Name": "PhoneNumber", "Value": 254712345678}]
            },
        ),
        {"Body": [1]},
        {"Body": {"stkCallback": "x"}},
        {"Body": {"stkCallback": {"CheckoutRequestID": "a\u0000b", "ResultCode": 0}}},
    ],
)
async def test_junk_fields_never_get_a_5xx_nor_move_money(world: MpesaWorld, body: dict[str, Any]) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    async with world.shop.session_factory() as session, session.begin():  # an orphaned attempt to tempt adoption
        await session.execute(
            Payment.__table__.insert().values(
                order_id=order.id,
                provider="mpesa",
                state="pending",
                amount=order.total,
                currency="KES",
                phone="254712345678",
                query_attempts=0,
                created_at=utcnow() - timedelta(minutes=2),
                updated_at=utcnow(),
            )
        )
    async with httpx.AsyncClient() as http:
        r = await http.post(world.callback_url, json=body)
    assert 200 <= r.status_code < 500
    assert await world.state_of(order) == "awaiting_payment"
    assert await world.count(Payment, Payment.state != "pending") == 0
    assert await world.count(Outbox, Outbox.kind.in_(["order_status", "new_order", "payment_failed"])) == 0


async def test_new_prompt_after_a_stale_one_failed_supersedes_it_quietly(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, result_code=1037)  # the query says: unreachable
    order = await world.order()
    await world.pay(order)
    await _age(world, 100)
    world.daraja.plan = dj.Plan()
    reply = await world.shop.press(USER, f"pay:m:{order.public_id}")
    await world.daraja.settle()
    assert "Check your phone" in reply.text and len(world.daraja.pushes) == 2
    assert world.daraja.pushes[0].queries == 1
    async with world.shop.session_factory() as session:
        states = [p.state for p in (await session.execute(select(Payment).order_by(Payment.id))).unique().scalars()]
    assert states == ["superseded", "paid"] and await world.state_of(order) == "processing"
    assert await world.count(Outbox, Outbox.kind == "payment_failed") == 0


async def test_no_new_prompt_while_daraja_still_processes_the_old_one(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=10)
    order = await world.order()
    await world.pay(order)
    await _age(world, 100)
    again = await world.shop.press(USER, f"pay:m:{order.public_id}")
    assert "already on your phone" in again.text and again.button("Check payment status")
    assert len(world.daraja.pushes) == 1 and (await world.payment()).state == "pending"


async def test_stale_prompt_that_was_paid_is_settled_not_charged_twice(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, result_code=0)
    order = await world.order()
    await world.pay(order)
    await _age(world, 100)
    again = await world.shop.press(USER, f"pay:m:{order.public_id}")
    assert len(world.daraja.pushes) == 1 and await world.state_of(order) == "processing"
    assert "Check your phone" not in again.text
    assert await world.count(Payment) == 1 and (await world.payment()).state == "paid"


async def test_orphan_adopted_even_with_an_overlong_merchant_request_id(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    await world.pay(order)
    async with world.shop.session_factory() as session, session.begin():
        payment = (await session.execute(select(Payment))).unique().scalar_one()
        payment.checkout_request_id = payment.merchant_request_id = None
    body = world.daraja.callback_body(world.daraja.pushes[0], result_code=0)
    body["Body"]["stkCallback"]["MerchantRequestID"] = "m" * 5000
    async with httpx.AsyncClient() as http:
        assert (await http.post(world.callback_url, json=body)).status_code == 200
    payment = await world.payment()
    assert payment.state == "paid" and payment.merchant_request_id == "m" * 64
    assert await world.state_of(order) == "processing"


# --- a callback is a hint, never proof: the STK query decides ---------------------------------------


async def post_callback(world: MpesaWorld, code: int, push: int = 0, **kwargs: Any) -> httpx.Response:
    body = world.daraja.callback_body(world.daraja.pushes[push], result_code=code)
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(world.callback_url, json=body, **kwargs)


async def anomalies(world: MpesaWorld) -> list[str]:
    async with world.shop.session_factory() as session:
        return [
            o.text
            for o in (
                await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly").order_by(Outbox.id))
            ).scalars()
        ]


@pytest.mark.faults
async def test_forged_success_while_the_customer_has_not_paid_moves_nothing(world: MpesaWorld) -> None:
    """The URL leaked: a success callback arrives while the prompt is still on the customer's phone."""
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1000)
    order = await world.order()
    await world.pay(order)
    assert (await post_callback(world, 0)).status_code == 200
    payment = await world.payment()
    assert (payment.state, await world.state_of(order)) == ("pending", "awaiting_payment")
    assert world.daraja.pushes[0].queries == 1  # asked at once, and told "being processed"
    assert timedelta(seconds=10) < payment.next_check_at - utcnow() <= timedelta(seconds=mpesa_flow.BACKOFF_BASE)
    assert await world.count(Outbox, Outbox.chat_id == USER) == 0
    assert await world.count(WebhookEvent, WebhookEvent.event_type == "stk_callback") == 1  # kept, though


@pytest.mark.faults
async def test_forged_success_for_a_prompt_the_customer_cancelled_is_not_paid(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, result_code=1032)
    order = await world.order()
    await world.pay(order)
    assert (await post_callback(world, 0)).status_code == 200
    payment = await world.payment()
    assert (payment.state, payment.result_code) == ("failed", "1032")  # as the query says
    assert await world.state_of(order) == "awaiting_payment"
    assert any("callback said ResultCode 0, the STK query says 1032" in a for a in await anomalies(world))


@pytest.mark.parametrize("outage", ["http_500", "timeout"])
@pytest.mark.faults
async def test_query_unavailable_leaves_it_pending_until_reconciliation(world: MpesaWorld, outage: str) -> None:
    world.daraja.plan = dj.Plan(no_show=True)  # paid on the phone; Daraja's callback is ours to post
    order = await world.order()
    await world.pay(order)
    if outage == "http_500":
        world.daraja.query_error = (503, {"errorCode": "503.001.01", "errorMessage": "Service Unavailable"})
    else:
        world.daraja.query_delay = mpesa_flow.CALLBACK_QUERY_SECONDS + 2
    started = asyncio.get_running_loop().time()
    assert (await post_callback(world, 0)).status_code == 200
    assert asyncio.get_running_loop().time() - started < mpesa_flow.CALLBACK_QUERY_SECONDS + 1.5  # answered in time
    payment = await world.payment()
    assert (payment.state, await world.state_of(order)) == ("pending", "awaiting_payment")
    assert payment.next_check_at <= utcnow()  # due for reconciliation now
    world.daraja.query_error, world.daraja.query_delay = None, 0.0
    assert (
        await mpesa_flow.reconcile_due(world.shop.session_factory, world.shop.providers["mpesa"], world.shop.settings)
        == 1
    )
    assert await world.state_of(order) == "processing" and (await world.payment()).state == "paid"


@pytest.mark.parametrize("finished", ["failed", "superseded", "expired"])
@pytest.mark.faults
async def test_success_callback_never_revives_a_finished_attempt(world: MpesaWorld, finished: str) -> None:
    world.daraja.plan = dj.Plan(no_show=True)  # even were the query to say "paid"
    order = await world.order()
    await world.pay(order)
    async with world.shop.session_factory() as session, session.begin():
        await session.execute(update(Payment).values(state=finished))
    assert (await post_callback(world, 0)).status_code == 200
    assert (await world.payment()).state == finished and await world.state_of(order) == "awaiting_payment"
    assert await world.count(OrderEvent, OrderEvent.to_state == "processing") == 0
    (alert,) = await anomalies(world)
    assert f"already {finished}; not revived" in alert and order.public_id in alert
    assert world.daraja.pushes[0].queries == 0


@pytest.mark.faults
async def test_real_failure_then_forged_success_is_an_anomaly(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(result_code=2001)  # Daraja calls back: wrong PIN
    order = await world.order()
    await world.pay(order)
    assert (await world.payment()).state == "failed"
    assert (await post_callback(world, 0)).status_code == 200
    assert (await world.payment()).state == "failed" and await world.state_of(order) == "awaiting_payment"
    assert any("not revived" in a for a in await anomalies(world))


@pytest.mark.parametrize("query_says", ["paid", "processing"])
@pytest.mark.faults
async def test_forged_failure_does_not_fail_the_attempt(world: MpesaWorld, query_says: str) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1000 if query_says == "processing" else 0)
    order = await world.order()
    await world.pay(order)
    assert (await post_callback(world, 1032)).status_code == 200
    assert await world.count(Outbox, Outbox.kind == "payment_failed") == 0  # the customer is not told "failed"
    assert (await world.payment()).state == ("paid" if query_says == "paid" else "pending")
    assert await world.state_of(order) == ("processing" if query_says == "paid" else "awaiting_payment")


@pytest.mark.faults
async def test_a_flood_of_callbacks_queries_daraja_a_few_times_only(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1000)
    order = await world.order()
    await world.pay(order)
    for code in range(1, 9):
        assert (await post_callback(world, code)).status_code == 200
    assert world.daraja.pushes[0].queries == mpesa_flow.CALLBACK_QUERIES_PER_ATTEMPT
    assert (await world.payment()).state == "pending" and await world.state_of(order) == "awaiting_payment"


@pytest.mark.faults
async def test_forged_callback_cannot_hijack_an_orphaned_attempt(world: MpesaWorld) -> None:
    """Phone and amount of a callback are the sender's word: an invented CheckoutRequestID with the
    orphan's phone and amount is not adopted (the query does not confirm it); the real one still is."""
    order, _orphan = await paid_push_whose_ids_were_lost(world)
    forged = world.daraja.callback_body(world.daraja.pushes[0], result_code=0)
    forged["Body"]["stkCallback"]["CheckoutRequestID"] = "ws_CO_forged_000001"
    async with httpx.AsyncClient() as http:
        assert (await http.post(world.callback_url, json=forged)).status_code == 200
    payment = await world.payment()
    assert (payment.state, payment.checkout_request_id) == ("pending", None)
    assert await world.state_of(order) == "awaiting_payment"
    assert any("ws_CO_forged_000001" in a and "not adopted" in a for a in await anomalies(world))
    await success_callback(world)  # Daraja's own callback: confirmed by the query, adopted, paid
    payment = await world.payment()
    assert (payment.state, payment.checkout_request_id) == ("paid", world.daraja.pushes[0].checkout_id)
    assert await world.state_of(order) == "processing"


async def test_orphan_hint_left_unresolved_by_a_crash_is_taken_up_by_the_retry(world: MpesaWorld) -> None:
    """We died after storing an orphan's callback, before its query: Daraja's retry is a duplicate
    of a stored event, yet the adoption must still happen (else the money is lost)."""
    order, _ = await paid_push_whose_ids_were_lost(world)
    async with world.shop.session_factory() as session, session.begin():
        session.add(
            WebhookEvent(
                provider="mpesa",
                event_id=f"{world.daraja.pushes[0].checkout_id}:0",
                event_type="stk_callback",
                status=mpesa_flow.UNRESOLVED,
                payload={},
            )
        )
    await success_callback(world)
    assert await world.state_of(order) == "processing" and (await world.payment()).state == "paid"
    await success_callback(world)  # now a plain duplicate
    assert world.daraja.pushes[0].queries == 1


# --- who may call: MPESA_ALLOWED_NETWORKS, TRUSTED_PROXIES, CLIENT_IP_HEADER ---------------------------


@pytest.mark.parametrize(
    "networks,proxies,forwarded,status",
    [
        ("10.0.0.0/8", "", None, 403),  # the peer (127.0.0.1) is outside
        ("198.51.100.0/24", "", "198.51.100.7", 403),  # a header from a peer that is no proxy of ours: ignored
        ("127.0.0.0/8, 198.51.100.0/24", "", None, 200),
        ("198.51.100.0/24", "127.0.0.1/32", "198.51.100.7", 200),  # through our proxy
        ("198.51.100.0/24", "127.0.0.1/32,10.0.0.0/8", "203.0.113.5, 198.51.100.7, 10.1.2.3", 200),
        ("198.51.100.0/24", "127.0.0.1/32", "198.51.100.7, 203.0.113.5", 403),  # the client prepended a lie
        ("198.51.100.0/24", "127.0.0.1/32", "not-an-address", 403),
    ],
)
@pytest.mark.faults
async def test_allowed_networks_and_trusted_proxies(
    engine,
    botapi,
    networks: str,
    proxies: str,  # type: ignore[no-untyped-def]
    forwarded: str | None,
    status: int,
) -> None:
    async with open_world(engine, botapi, mpesa_allowed_networks=networks, trusted_proxies=proxies) as w:
        w.daraja.plan = dj.Plan(no_show=True)
        order = await w.order()
        await w.pay(order)
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        r = await post_callback(w, 0, headers=headers)
        assert r.status_code == status
        assert await w.count(WebhookEvent) == (0 if status == 403 else 1)
        assert await w.state_of(order) == ("awaiting_payment" if status == 403 else "processing")


async def test_client_address_header_name_is_configurable(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    async with open_world(
        engine,
        botapi,
        mpesa_allowed_networks="198.51.100.0/24",
        trusted_proxies="127.0.0.1",
        client_ip_header="X-Real-IP",
    ) as w:
        w.daraja.plan = dj.Plan(no_show=True)
        order = await w.order()
        await w.pay(order)
        assert (await post_callback(w, 0, headers={"X-Forwarded-For": "198.51.100.7"})).status_code == 403
        assert (await post_callback(w, 0, headers={"X-Real-IP": "198.51.100.7"})).status_code == 200


# --- no flooding a stranger's phone with prompts ------------------------------------------------------


@pytest.mark.faults
async def test_prompts_to_one_phone_are_limited_across_customers(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    async with open_world(engine, botapi, mpesa_prompts_per_phone_per_hour=2) as w:
        w.daraja.plan = dj.Plan(result_code=1032)  # each prompt is declined on the phone
        mine = await w.order(phone="254711000222")
        await w.pay(mine)
        await w.shop.press(USER, f"pay:m:{mine.public_id}")  # try again: the second prompt
        await w.daraja.settle()
        other = USER + 40  # another customer types the same number
        theirs = await w.order(customer=other, phone="254711000222")
        await w.shop.send(other, "/start")
        reply = await w.shop.press(other, f"pay:m:{theirs.public_id}")
        assert "too many M-Pesa prompts" in reply.text and "254711000222" not in reply.text
        assert len(w.daraja.pushes) == 2 and await w.count(Payment) == 2
        reply = await w.shop.send(other, "0722 000 333")  # another number works
        await w.daraja.settle()
        assert "Check your phone (2547*****333)" in reply.text and len(w.daraja.pushes) == 3


@pytest.mark.faults
async def test_query_outage_past_the_final_timeout_keeps_a_paid_attempt_pending(world: MpesaWorld) -> None:
    """Daraja's query unreachable for longer than FINAL_TIMEOUT proves nothing about the payment: the
    attempt stays pending (a paid customer's order is not turned into an admin anomaly) and settles
    when the query answers; only after QUERY_GIVE_UP is it closed, with the admins asked to check."""
    world.daraja.plan = dj.Plan(no_show=True)  # the customer paid; no callback reaches us
    order = await world.order()
    await world.pay(order)
    client, settings, factory = world.shop.providers["mpesa"], world.shop.settings, world.shop.session_factory
    created = (await world.payment()).created_at
    world.daraja.query_error = (503, {"errorCode": "503.001.01", "errorMessage": "Service Unavailable"})
    for minutes in (1, 4, 10):
        assert await mpesa_flow.reconcile_due(factory, client, settings, created + timedelta(minutes=minutes)) == 0
        assert (await world.payment()).state == "pending"
    world.daraja.query_error = None
    assert await mpesa_flow.reconcile_due(factory, client, settings, created + timedelta(minutes=20)) == 1
    assert (await world.payment()).state == "paid" and await world.state_of(order) == "processing"


async def test_query_outage_for_a_day_closes_the_attempt_and_tells_the_admins(world: MpesaWorld) -> None:
    world.daraja.plan = dj.Plan(no_show=True)
    order = await world.order()
    await world.pay(order)
    client, settings, factory = world.shop.providers["mpesa"], world.shop.settings, world.shop.session_factory
    created = (await world.payment()).created_at
    world.daraja.query_error = (503, {"errorCode": "503.001.01", "errorMessage": "Service Unavailable"})
    await mpesa_flow.reconcile_due(factory, client, settings, created + mpesa_flow.QUERY_GIVE_UP - timedelta(minutes=1))
    assert (await world.payment()).state == "pending"
    await mpesa_flow.reconcile_due(factory, client, settings, created + mpesa_flow.QUERY_GIVE_UP + timedelta(minutes=1))
    payment = await world.payment()
    assert (payment.state, payment.result_code) == ("failed", "unconfirmed")
    assert any("could not be reached" in a and order.public_id in a for a in await anomalies(world))


@pytest.mark.faults
async def test_a_push_whose_answer_is_lost_stays_pending_and_its_payment_is_not_lost(world: MpesaWorld) -> None:
    """Daraja accepted the push (the prompt is on the phone) but its answer never reached us: the
    attempt is not failed, the customer is told to check the phone, a second prompt is not sent at
    once, and the callback of the payment is adopted (the query confirming it) — the order is paid."""
    world.daraja.plan = dj.Plan(delay=4.0)  # the customer pays; Daraja calls back a few seconds later
    world.daraja.push_hang = 2.0
    world.shop.providers["mpesa"].http.timeout = httpx.Timeout(0.5)  # our client gives up first
    order = await world.order()
    await world.shop.send(USER, "/orders")
    reply = await world.shop.press(USER, f"pay:m:{order.public_id}")  # not world.pay: it awaits the callback
    assert "didn't confirm the payment prompt" in reply.text and "Try again" not in str(reply.buttons)
    payment = await world.payment()
    assert (payment.state, payment.checkout_request_id) == ("pending", None)
    again = await world.shop.press(USER, f"pay:m:{order.public_id}")
    assert "already on your phone" in again.text and len(world.daraja.pushes) == 1
    await world.daraja.settle()
    assert await world.state_of(order) == "processing"
    assert (await world.payment()).checkout_request_id == world.daraja.pushes[0].checkout_id


@pytest.mark.faults
async def test_a_result_code_of_non_ascii_digits_is_a_400_not_a_500(world: MpesaWorld) -> None:
    body = {"Body": {"stkCallback": {"MerchantRequestID": "m", "CheckoutRequestID": "ws_CO_x", "ResultCode": "²"}}}
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(world.callback_url, json=body)).status_code == 400


@pytest.mark.faults
async def test_a_flood_of_invented_ids_alerts_the_admins_a_few_times_only(world: MpesaWorld) -> None:
    """Anyone holding the URL can invent CheckoutRequestIDs: each is kept, but the admin group hears of
    the first few in a window, so its messages about real orders are not queued behind a flood."""
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(12):
            body = {
                "Body": {
                    "stkCallback": {
                        "MerchantRequestID": "m",
                        "CheckoutRequestID": f"ws_CO_forged{n}",
                        "ResultCode": 1032,
                        "ResultDesc": "Request cancelled by user",
                    }
                }
            }
            assert (await http.post(world.callback_url, json=body)).status_code == 200
    assert len(await anomalies(world)) == mpesa_flow.UNKNOWN_ALERTS_PER_WINDOW
    assert await world.count(WebhookEvent, WebhookEvent.event_type == "unknown_attempt") == 12


async def test_a_success_called_back_while_the_query_still_says_processing_is_not_failed(world: MpesaWorld) -> None:
    """Daraja called back "paid" (amount right) but its query keeps answering "being processed": at
    FINAL_TIMEOUT the attempt is not failed (the payer is not told it failed); it waits like an outage
    and is settled once the query answers."""
    world.daraja.plan = dj.Plan(no_show=True, query_processing_times=1000)
    order = await world.order()
    await world.pay(order)
    assert (await post_callback(world, 0)).status_code == 200
    client, settings, factory = world.shop.providers["mpesa"], world.shop.settings, world.shop.session_factory
    created = (await world.payment()).created_at
    for minutes in (2, 4, 8):
        await mpesa_flow.reconcile_due(factory, client, settings, created + timedelta(minutes=minutes))
        assert (await world.payment()).state == "pending"
    assert await world.count(Outbox, Outbox.kind == "payment_failed") == 0
    world.daraja.pushes[0].plan = dj.Plan(no_show=True)
    assert await mpesa_flow.reconcile_due(factory, client, settings, created + timedelta(minutes=20)) == 1
    assert await world.state_of(order) == "processing"
