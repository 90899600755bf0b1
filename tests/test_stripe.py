"""Card payments through Stripe Checkout: the SDK against a Stripe stand-in, signed webhooks over HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select, update

from bot import jobs
from bot.runtime import build_providers
from db.changes import catalogue_written
from db.models import Order, OrderEvent, Outbox, Payment, Product, WebhookEvent, utcnow
from services import orders as sm
from services.payments import stripe_flow
from services.payments.stripe import StripeFailure, StripeGateway, retry_budget
from tests import stripe_standin as st
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness, stripe_harness
from tests.test_payment_offer import drain_outbox, edits_of
from tests.webserver import serve_shop

USER = 8201


@dataclass
class StripeWorld:
    shop: Harness
    stripe: st.StripeStandIn
    base: str

    async def order(self, zone: str = "intl", customer: int = USER, qty: int = 1, stock: int = 5) -> Order:
        pid = await make_product(
            self.shop.session_factory,
            f"CARD-{customer}-{zone}-{qty}-{stock}",
            stock=stock,
            price_kes=13000_00,
            price_usd=100_00,
        )
        return await make_order(self.shop.session_factory, customer, [(pid, qty)], zone=zone)

    async def link(self, order: Order, customer: int = USER):  # type: ignore[no-untyped-def]
        await self.shop.send(customer, "/start")
        return await self.shop.press(customer, f"pay:s:{order.public_id}")

    async def post(self, event: dict, **sign_kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        body, headers = st.signed(event, **sign_kwargs)
        async with httpx.AsyncClient(base_url=self.base) as http:
            return await http.post("/webhooks/stripe", content=body, headers=headers)

    async def count(self, model, *where) -> int:  # type: ignore[no-untyped-def]
        async with self.shop.session_factory() as session:
            return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()

    async def state_of(self, order: Order) -> str:
        async with self.shop.session_factory() as session:
            return (await sm.get_order(session, order.public_id)).state

    async def payments(self) -> list[Payment]:
        async with self.shop.session_factory() as session:
            return list((await session.execute(select(Payment).order_by(Payment.id))).unique().scalars())


@pytest.fixture
async def world(engine, botapi) -> AsyncIterator[StripeWorld]:  # type: ignore[no-untyped-def]
    async with stripe_harness(engine, botapi) as (shop, server):
        assert shop.shop is not None
        async with serve_shop(shop.shop) as base:
            yield StripeWorld(shop, server, base)


@pytest.mark.parametrize("zone,currency,total", [("intl", "usd", 135_00), ("nairobi", "kes", 13300_00)])
async def test_card_payment_end_to_end(world: StripeWorld, zone: str, currency: str, total: int) -> None:
    order = await world.order(zone=zone)
    reply = await world.link(order)
    assert "Stripe's secure page" in reply.text
    url = reply.button("Pay by card")
    session = next(iter(world.stripe.sessions.values()))
    assert url == session["url"] and session["currency"] == currency and session["amount_total"] == total
    assert session["client_reference_id"] == order.public_id and session["metadata"]["order_id"] == order.public_id
    assert [i["price_data"]["product_data"]["name"] for i in session["line_items_sent"]][-1].startswith("Delivery")
    r = await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(session["id"])))
    assert r.status_code == 200
    assert await world.state_of(order) == "processing"
    payment = (await world.payments())[0]
    assert (payment.state, payment.stripe_payment_intent) == ("paid", f"pi_{session['id'][-4:]}")
    assert await world.count(Outbox, Outbox.kind == "order_status") == 1
    assert await world.count(Outbox, Outbox.kind == "new_order") == 1
    async with world.shop.session_factory() as db:
        receipt = (await db.execute(select(Outbox).where(Outbox.kind == "order_status"))).scalar_one().text
    assert "🧾 <b>Receipt</b>\nPaid by: Card\nAmount: <b>" in receipt and " EAT\n" in receipt
    assert "M-Pesa" not in receipt and "Address: " in receipt


async def test_the_link_validity_is_in_the_shops_time_zone(world: StripeWorld) -> None:
    reply = await world.link(await world.order())
    expires = (await world.payments())[0].expires_at
    assert expires is not None
    local = expires.astimezone(ZoneInfo("Africa/Nairobi"))
    assert re.search(rf"The link works until {local:%H:%M} (today|tomorrow)\.", reply.text), reply.text
    assert "UTC" not in reply.text


async def test_asking_twice_reuses_the_open_link(world: StripeWorld) -> None:
    order = await world.order()
    first = await world.link(order)
    second = await world.shop.press(USER, f"pay:s:{order.public_id}")
    assert first.button("Pay by card") == second.button("Pay by card") and world.stripe.creates == 1


async def test_a_new_attempt_expires_the_old_session(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    async with world.shop.session_factory() as session, session.begin():
        payment = (await session.execute(select(Payment))).unique().scalar_one()
        payment.expires_at = utcnow() + timedelta(minutes=1)  # about to lapse: replace it
    await world.shop.press(USER, f"pay:s:{order.public_id}")
    old, new = list(world.stripe.sessions.values())
    assert old["status"] == "expired" and new["status"] == "open"
    assert [p.state for p in await world.payments()] == ["superseded", "pending"]


async def test_signatures_forged_stale_or_missing_are_refused(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    event = world.stripe.event("checkout.session.completed", world.stripe.pay(sid))
    assert (await world.post(event, secret="whsec_forgedforgedforged")).status_code == 400
    assert (await world.post(event, timestamp=int(time.time()) - 301)).status_code == 400
    async with httpx.AsyncClient(base_url=world.base) as http:
        assert (await http.post("/webhooks/stripe", json=event)).status_code == 400
        body, headers = st.signed(event)
        assert (await http.post("/webhooks/stripe", content=body + b" ", headers=headers)).status_code == 400
        assert (
            await http.post(
                "/webhooks/stripe",
                content=b"{bad",
                headers={"Stripe-Signature": st.sign(b"{bad"), "Content-Type": "application/json"},
            )
        ).status_code == 400
        assert (
            await http.post(
                "/webhooks/stripe",
                content=b"x" * 100_000,
                headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
            )
        ).status_code == 413
        assert (
            await http.post("/webhooks/stripe", content=body, headers={**headers, "Content-Type": "text/plain"})
        ).status_code == 415
    assert await world.state_of(order) == "awaiting_payment" and await world.count(WebhookEvent) == 0


async def test_signed_but_odd_events_are_4xx_or_ignored(world: StripeWorld) -> None:
    assert (await world.post({"id": "evt_1", "type": "checkout.session.completed", "data": {}})).status_code == 400
    assert (await world.post({"id": "evt_2", "type": "customer.created", "data": {"object": {}}})).status_code == 200
    assert await world.count(Payment) == 0


@pytest.mark.pg_only
async def test_same_event_ten_times_concurrently_settles_once(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    event = world.stripe.event("checkout.session.completed", world.stripe.pay(sid))
    responses = await asyncio.gather(*(world.post(event) for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert await world.count(Payment, Payment.state == "paid") == 1
    assert await world.count(OrderEvent, OrderEvent.to_state == "processing") == 1
    assert await world.count(Outbox, Outbox.kind == "order_status") == 1


async def test_two_events_for_one_session_settle_once_and_out_of_order_is_harmless(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    paid = world.stripe.pay(sid)
    assert (await world.post(world.stripe.event("checkout.session.async_payment_succeeded", paid))).status_code == 200
    assert (await world.post(world.stripe.event("checkout.session.completed", paid))).status_code == 200
    assert (
        await world.post(
            world.stripe.event("checkout.session.expired", {**paid, "status": "expired", "payment_status": "paid"})
        )
    ).status_code == 200
    assert await world.state_of(order) == "processing"
    assert await world.count(OrderEvent, OrderEvent.to_state == "processing") == 1
    assert await world.count(Outbox, Outbox.kind == "payment_failed") == 0


async def test_async_failure_and_expiry_tell_the_customer(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    session = world.stripe.sessions[sid]
    await world.post(world.stripe.event("checkout.session.completed", session))  # unpaid yet: waits
    assert (await world.payments())[0].state == "pending"
    await world.post(world.stripe.event("checkout.session.async_payment_failed", session))
    assert (await world.payments())[0].state == "failed" and await world.state_of(order) == "awaiting_payment"
    async with world.shop.session_factory() as s:
        msg = (await s.execute(select(Outbox).where(Outbox.kind == "payment_failed"))).scalar_one()
    assert "bank declined" in msg.text


async def test_amount_or_currency_mismatch_is_an_anomaly(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(sid, currency="eur")))
    assert await world.state_of(order) == "awaiting_payment"
    assert (await world.payments())[0].state == "mismatch"
    assert await world.count(Outbox, Outbox.kind == "payment_anomaly") == 1


async def test_late_payment_after_expiry_and_second_payment(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    await sm.expire_due_orders(world.shop.session_factory, now=utcnow() + timedelta(hours=2))
    assert await world.state_of(order) == "expired"
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(sid)))
    assert await world.state_of(order) == "processing"
    # A second session for the same order paid too (e.g. an old tab): refund owed, order untouched.
    async with world.shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        p = Payment(
            order_id=o.id,
            provider="stripe",
            state="pending",
            amount=o.total,
            currency=o.currency,
            stripe_session_id="cs_test_9999",
        )
        session.add(p)
    world.stripe.sessions["cs_test_9999"] = {**world.stripe.sessions[sid], "id": "cs_test_9999"}
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay("cs_test_9999")))
    assert [p.state for p in await world.payments()] == ["paid", "refund_due"]
    async with world.shop.session_factory() as session:
        texts = [
            o.text for o in (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalars()
        ]
    assert any("second payment" in t for t in texts) and any("stock re-reserved" in t for t in texts)


async def test_unknown_session_is_kept_and_alerted(world: StripeWorld) -> None:
    event = {
        "id": "evt_x",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": "cs_test_nope",
                "payment_status": "paid",
                "status": "complete",
                "amount_total": 100,
                "currency": "usd",
                "client_reference_id": "HL-ZZZZZZ",
            }
        },
    }
    assert (await world.post(event)).status_code == 200
    assert await world.count(WebhookEvent, WebhookEvent.status == "anomaly") == 1
    assert await world.count(Outbox, Outbox.kind == "payment_anomaly") == 1


async def test_reconciliation_settles_a_session_whose_webhook_never_came(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    world.stripe.pay(sid)  # paid at Stripe, event lost
    gateway, settings = world.shop.providers["stripe"], world.shop.settings
    assert await stripe_flow.reconcile_due(world.shop.session_factory, gateway, settings) == 0  # not due yet
    later = utcnow() + timedelta(hours=25)
    assert await stripe_flow.reconcile_due(world.shop.session_factory, gateway, settings, later) == 1
    assert await world.state_of(order) == "processing"


async def test_api_failure_offers_try_again_and_refund_works(world: StripeWorld) -> None:
    order = await world.order()
    world.stripe.fail_creates = 3  # the SDK retries twice, then gives up
    reply = await world.link(order)
    assert "couldn't open the card payment page" in reply.text
    failed = reply
    reply = await world.shop.press(USER, reply.button("Try again"))
    await drain_outbox(world.shop)  # the payment screen sent again: "Try again" is gone from the failure
    [moved] = edits_of(world.shop, USER, failed.result["message_id"])
    assert moved.buttons == [] and "payment continues in the message below" in moved.text
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    sid = list(world.stripe.sessions)
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(sid[-1])))
    payment = next(p for p in await world.payments() if p.state == "paid")
    refund_id = await world.shop.providers["stripe"].refund(payment)
    assert refund_id.startswith("re_") and world.stripe.refunds[0]["payment_intent"] == payment.stripe_payment_intent


@pytest.mark.faults
@pytest.mark.pg_only
@pytest.mark.parametrize(
    "event_type,expected",
    [
        ("checkout.session.completed", "paid"),
        ("checkout.session.async_payment_failed", "failed"),
        ("checkout.session.expired", "expired"),
    ],
)
async def test_every_event_replayed_ten_times_concurrently(world: StripeWorld, event_type: str, expected: str) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    session = world.stripe.pay(sid) if expected == "paid" else {**world.stripe.sessions[sid], "status": "expired"}
    event = world.stripe.event(event_type, session)
    replies = await asyncio.gather(*(world.post(event) for _ in range(10)))
    assert [r.status_code for r in replies] == [200] * 10
    assert [p.state for p in await world.payments()] == [expected]
    kinds = ["order_status", "pay_closed", "new_order"] if expected == "paid" else ["payment_failed"]
    async with world.shop.session_factory() as s:
        assert [o.kind for o in (await s.execute(select(Outbox).order_by(Outbox.id))).scalars()] == kinds
    assert await world.count(WebhookEvent, WebhookEvent.status == "processed") == 1


async def test_session_parameters_and_idempotent_create(world: StripeWorld) -> None:
    order = await world.order(qty=2)
    await world.link(order)
    session = next(iter(world.stripe.sessions.values()))
    assert session["customer_email"] == order.email and session["metadata"]["payment_id"].isdigit()
    assert session["success_url"] == f"https://t.me/hacklab_shop_bot?start=paid_{order.public_id}"
    lines = session["line_items_sent"]
    assert [(i["quantity"], i["price_data"]["unit_amount"]) for i in lines] == [("2", "10000"), ("1", "3500")]
    # Stripe's window: at least 30 minutes, at most 24 hours, and never shorter than the reservation.
    assert time.time() + 1800 <= session["expires_at"] <= time.time() + 86400
    # A retry of the same attempt (same Idempotency-Key) gets the same session, not a second one.
    payment = (await world.payments())[0]
    again = await world.shop.providers["stripe"].create_checkout(order, payment, utcnow())
    assert again.id == session["id"] and world.stripe.creates == 1


async def test_return_link_defaults_to_the_bots_own_username(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    server = await st.StripeStandIn().start()
    shop = Harness(
        engine,
        botapi,
        stripe_secret_key=st.SECRET_KEY,
        stripe_webhook_secret=st.WEBHOOK_SECRET,
        stripe_api_base=server.url,
    )
    shop.providers = build_providers(shop.settings)
    await shop.start()
    try:
        world = StripeWorld(shop, server, "")
        order = await world.order(customer=USER + 1)
        reply = await world.link(order, customer=USER + 1)
        assert reply.button("Pay by card")
        session = next(iter(server.sessions.values()))
        assert session["cancel_url"] == f"https://t.me/hacklab_shop_bot?start=cancel_{order.public_id}"
    finally:
        await shop.stop()
        await server.stop()


async def test_expired_link_is_marked_expired_with_a_short_note(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    expired = {**world.stripe.sessions[sid], "status": "expired"}
    assert (await world.post(world.stripe.event("checkout.session.expired", expired))).status_code == 200
    assert (await world.payments())[0].state == "expired" and await world.state_of(order) == "awaiting_payment"
    async with world.shop.session_factory() as s:
        note = (await s.execute(select(Outbox).where(Outbox.kind == "payment_failed"))).scalar_one()
    assert "expired" in note.text and "pay:o:" in str(note.reply_markup)
    # The customer asks again: a fresh session, the expired one is not reused.
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    assert world.stripe.creates == 2 and reply.button("Pay by card") != expired["url"]


async def test_expiry_after_the_order_lapsed_says_nothing(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    await sm.expire_due_orders(world.shop.session_factory, now=utcnow() + timedelta(hours=2))
    before = await world.count(Outbox)
    await world.post(
        world.stripe.event("checkout.session.expired", {**world.stripe.sessions[sid], "status": "expired"})
    )
    assert (await world.payments())[0].state == "expired" and await world.count(Outbox) == before


async def test_superseding_a_session_that_was_paid_settles_it(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    payment = (await world.payments())[0]
    async with world.shop.session_factory() as session, session.begin():
        (await session.get(Payment, payment.id)).expires_at = utcnow()  # type: ignore[union-attr]
    world.stripe.pay(payment.stripe_session_id or "")  # paid, webhook not here yet
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    assert world.stripe.creates == 1 and "has already been paid" in reply.text
    assert await world.state_of(order) == "processing" and (await world.payments())[0].state == "paid"


async def test_delayed_payment_in_progress_blocks_a_second_link(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    payment = (await world.payments())[0]
    async with world.shop.session_factory() as session, session.begin():
        (await session.get(Payment, payment.id)).expires_at = utcnow()  # type: ignore[union-attr]
    world.stripe.sessions[payment.stripe_session_id or ""]["status"] = "complete"  # bank debit, still unpaid
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    assert "still being processed" in reply.text and world.stripe.creates == 1
    assert [p.state for p in await world.payments()] == ["pending"]


async def test_old_session_that_cannot_be_closed_blocks_a_second_link(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    payment = (await world.payments())[0]
    async with world.shop.session_factory() as session, session.begin():
        (await session.get(Payment, payment.id)).expires_at = utcnow()  # type: ignore[union-attr]
    world.stripe.sessions.pop(payment.stripe_session_id or "")  # Stripe cannot find it: expire/retrieve fail
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    assert "couldn't open the card payment page" in reply.text and reply.button("Try again")
    assert world.stripe.creates == 1 and [p.state for p in await world.payments()] == ["pending"]


async def test_orphaned_attempt_is_adopted_by_metadata_and_retired(world: StripeWorld) -> None:
    """A crash between creating the session and storing its id: the event still finds the attempt."""
    order = await world.order()
    async with world.shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        orphan = Payment(
            order_id=o.id,
            provider="stripe",
            state="pending",
            amount=o.total,
            currency=o.currency,
            created_at=utcnow() - timedelta(minutes=5),
        )
        session.add(orphan)
        await session.flush()
        orphan_id = orphan.id
    created = await world.shop.providers["stripe"].create_checkout(
        await _order(world, order.public_id), orphan, utcnow()
    )
    # The customer presses again: the orphan (no link ever shown) is retired, a new link is made.
    await world.link(order)
    assert [p.state for p in await world.payments()] == ["superseded", "pending"] and world.stripe.creates == 2
    # Had the orphan's session been paid after all, its event settles it through the metadata.
    r = await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(created.id)))
    assert r.status_code == 200 and await world.state_of(order) == "processing"
    paid = next(p for p in await world.payments() if p.id == orphan_id)
    assert paid.state == "paid" and paid.stripe_session_id == created.id
    assert await world.count(WebhookEvent, WebhookEvent.status == "anomaly") == 0


async def _order(world: StripeWorld, public_id: str) -> Order:
    async with world.shop.session_factory() as session:
        return await sm.get_order(session, public_id)


async def test_metadata_that_does_not_match_is_an_anomaly(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    other = await world.order(customer=USER + 2)
    payment = (await world.payments())[0]
    event = world.stripe.event(
        "checkout.session.completed",
        {
            "id": "cs_test_stranger",
            "status": "complete",
            "payment_status": "paid",
            "amount_total": 135_00,
            "currency": "usd",
            "metadata": {"order_id": other.public_id, "payment_id": str(payment.id)},
        },
    )
    assert (await world.post(event)).status_code == 200
    assert await world.count(WebhookEvent, WebhookEvent.status == "anomaly") == 1
    assert await world.state_of(order) == "awaiting_payment" and await world.state_of(other) == "awaiting_payment"


async def test_signed_bodies_that_are_not_session_events_are_400(world: StripeWorld) -> None:
    async with httpx.AsyncClient(base_url=world.base) as http:
        for body in (b"[1]", b"null", b'"event"', b"\xff\xfe"):
            r = await http.post(
                "/webhooks/stripe",
                content=body,
                headers={"Stripe-Signature": st.sign(body), "Content-Type": "application/json"},
            )
            assert r.status_code == 400, body
    for odd in ({"amount_total": "13500"}, {"expires_at": 10**30}, {"currency": 5}):
        event = world.stripe.event(
            "checkout.session.completed", {"id": "cs_test_odd", "status": "complete", "payment_status": "paid", **odd}
        )
        assert (await world.post(event)).status_code == 400, odd
    assert await world.count(WebhookEvent) == 0


@pytest.mark.pg_only
async def test_two_quick_presses_open_one_session(world: StripeWorld) -> None:
    order = await world.order()
    await world.shop.send(USER, "/start")
    await asyncio.gather(*(world.shop.press(USER, f"pay:s:{order.public_id}") for _ in range(4)))
    assert world.stripe.creates == 1 and [p.state for p in await world.payments()] == ["pending"]


async def test_late_payment_when_the_stock_is_gone_is_owed_back(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    await sm.expire_due_orders(world.shop.session_factory, now=utcnow() + timedelta(hours=2))
    async with world.shop.session_factory() as session, session.begin():
        await session.execute(update(Product).values(stock=0))  # sold to someone else meanwhile
        catalogue_written(session)  # as the shop's own stock moves do
    assert (
        await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(sid)))
    ).status_code == 200
    assert await world.state_of(order) == "expired"
    payment = (await world.payments())[0]
    assert payment.state == "refund_due" and payment.stripe_payment_intent == f"pi_{sid[-4:]}"
    async with world.shop.session_factory() as session:
        alert = (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalar_one()
    assert "refund owed" in alert.text and order.public_id in alert.text
    # The admin can refund it through the gateway (what /cancel uses).
    assert (await world.shop.providers["stripe"].refund(payment)).startswith("re_")


# --- a payment link never outlives its order ------------------------------------------------------


async def test_the_pay_link_message_loses_its_buttons_when_paid_or_cancelled(world: StripeWorld) -> None:
    paid, cancelled = await world.order(), await world.order(stock=6)
    link = await world.link(paid)
    assert link is not None and link.button("Pay by card").startswith("http")
    sid = next(iter(world.stripe.sessions))
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(sid)))
    await drain_outbox(world.shop)
    [closed] = edits_of(world.shop, USER, link.result["message_id"])
    assert closed.buttons == [] and closed.text.startswith(f"✅ Order <b>{paid.public_id}</b> is paid")
    link = await world.link(cancelled)
    assert link is not None and link.button("Cancel order") == f"pay:x:{cancelled.public_id}"
    assert "nothing was paid" in await admin_cancel(world, cancelled)
    await drain_outbox(world.shop)
    [closed] = edits_of(world.shop, USER, link.result["message_id"])
    assert closed.buttons == [] and "Pay by card" not in str(closed.params)
    assert closed.text == f"❌ Order <b>{cancelled.public_id}</b> is cancelled; its items are back on the shelf."


async def admin_cancel(world: StripeWorld, order: Order) -> str:
    return (await world.shop.send(ADMIN_USER_ID, f"/cancel {order.public_id}", chat_id=ADMIN_CHAT_ID)).text


@pytest.mark.faults
async def test_admin_cancel_expires_the_open_link_at_stripe_first(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    assert "nothing was paid" in await admin_cancel(world, order)
    session = next(iter(world.stripe.sessions.values()))
    assert session["status"] == "expired" and world.stripe.expires == 1
    assert await world.state_of(order) == "cancelled" and [p.state for p in await world.payments()] == ["expired"]
    # The customer's "link expired, try again" note would be wrong here: only the cancel is told.
    assert await world.count(Outbox, Outbox.kind == "payment_failed") == 0


async def test_admin_cancel_is_refused_while_stripe_cannot_close_the_link(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    world.stripe.down = True
    assert "NOT cancelled" in await admin_cancel(world, order)
    assert await world.state_of(order) == "awaiting_payment" and [p.state for p in await world.payments()] == [
        "pending"
    ]
    assert next(iter(world.stripe.sessions.values()))["status"] == "open"
    world.stripe.down = False  # the admin tries again
    assert "nothing was paid" in await admin_cancel(world, order)
    assert next(iter(world.stripe.sessions.values()))["status"] == "expired"
    assert await world.state_of(order) == "cancelled"


async def test_admin_cancel_of_a_link_paid_meanwhile_settles_and_refunds_it(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    world.stripe.pay(sid)  # paid a moment ago; the webhook is not here yet
    assert "refunded through Stripe" in await admin_cancel(world, order)
    assert [r["payment_intent"] for r in world.stripe.refunds] == [f"pi_{sid[-4:]}"]
    payment = (await world.payments())[0]
    assert (payment.state, payment.stripe_payment_intent) == ("refunded", f"pi_{sid[-4:]}")
    assert await world.state_of(order) == "cancelled"
    # The webhook arriving afterwards changes nothing (no revival of the order, no second refund).
    assert (
        await world.post(world.stripe.event("checkout.session.completed", world.stripe.sessions[sid]))
    ).status_code == 200
    assert await world.state_of(order) == "cancelled" and len(world.stripe.refunds) == 1


async def test_customer_cancel_expires_the_link_or_waits_for_stripe(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    world.stripe.down = True
    reply = await world.shop.press(USER, f"pay:xy:{order.public_id}")
    assert "not cancelled yet" in reply.text and await world.state_of(order) == "awaiting_payment"
    world.stripe.down = False
    await world.shop.press(USER, f"pay:xy:{order.public_id}")
    assert await world.state_of(order) == "cancelled"
    assert next(iter(world.stripe.sessions.values()))["status"] == "expired"


@pytest.mark.faults
async def test_a_link_being_created_while_the_order_is_cancelled_is_never_shown(world: StripeWorld) -> None:
    order = await world.order()
    await world.shop.send(USER, "/start")
    world.stripe.create_gate = asyncio.Event()
    press = asyncio.create_task(world.shop.press(USER, f"pay:s:{order.public_id}"))
    await world.stripe.creating.wait()  # Stripe is creating the session right now
    assert "nothing was paid" in await admin_cancel(world, order)
    world.stripe.create_gate.set()
    reply = await press
    assert (
        "Pay by card" not in str(reply.buttons)
        and f"Order {order.public_id} was cancelled, so it can't be paid any more." in reply.text
    )
    session = next(iter(world.stripe.sessions.values()))
    assert session["status"] == "expired" and await world.state_of(order) == "cancelled"
    payment = (await world.payments())[0]
    assert (payment.state, payment.stripe_session_id) == ("expired", session["id"])


async def test_a_link_being_created_while_the_order_expires_is_never_shown(world: StripeWorld) -> None:
    """The expiry job leaves an expired order's attempts pending (a late payment is still settled), so
    the attempt being pending does not mean its order can still be paid."""
    order = await world.order()
    await world.shop.send(USER, "/start")
    world.stripe.create_gate = asyncio.Event()
    press = asyncio.create_task(world.shop.press(USER, f"pay:s:{order.public_id}"))
    await world.stripe.creating.wait()  # Stripe is creating the session right now, slowly
    await _reservation_ran_out(world, order)
    later = utcnow() + stripe_flow.IN_FLIGHT + timedelta(seconds=1)  # the attempt no longer counts as in flight
    assert await sm.expire_due_orders(world.shop.session_factory, now=later) == 1
    world.stripe.create_gate.set()
    reply = await press
    assert (
        "Pay by card" not in str(reply.buttons) and f"Order {order.public_id} expired before it was paid" in reply.text
    )
    session = next(iter(world.stripe.sessions.values()))
    assert session["status"] == "expired" and await world.state_of(order) == "expired"
    payment = (await world.payments())[0]
    assert (payment.checkout_url, payment.stripe_session_id) == (None, session["id"])


async def test_no_card_link_once_the_reservation_ran_out(world: StripeWorld) -> None:
    """Before the expiry job gets to the order: a link made now would be expired by it within seconds."""
    order = await world.order()
    await world.shop.send(USER, "/start")
    await _reservation_ran_out(world, order)
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    assert "can't be paid now: its reservation ran out" in reply.text and "Pay by card" not in str(reply.buttons)
    assert world.stripe.sessions == {} and await world.payments() == []
    assert await world.state_of(order) == "awaiting_payment"


async def test_expiry_job_expires_the_link_at_stripe_before_the_order(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    await _reservation_ran_out(world, order)
    world.stripe.down = True  # the link cannot be closed: the order keeps its stock this cycle
    assert await _expiry_job(world) == 0
    assert await world.state_of(order) == "awaiting_payment" and [p.state for p in await world.payments()] == [
        "pending"
    ]
    world.stripe.down = False
    assert await _expiry_job(world) == 1
    assert next(iter(world.stripe.sessions.values()))["status"] == "expired"
    assert await world.state_of(order) == "expired" and [p.state for p in await world.payments()] == ["expired"]


async def test_expiry_job_settles_a_link_that_was_paid_instead_of_expiring(world: StripeWorld) -> None:
    order = await world.order()
    await world.link(order)
    await _reservation_ran_out(world, order)
    world.stripe.pay(next(iter(world.stripe.sessions)))  # webhook lost
    assert await _expiry_job(world) == 0
    assert await world.state_of(order) == "processing" and [p.state for p in await world.payments()] == ["paid"]


async def _reservation_ran_out(world: StripeWorld, order: Order) -> None:
    async with world.shop.session_factory() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == order.id).values(reserved_until=utcnow() - timedelta(minutes=1))
        )


async def _expiry_job(world: StripeWorld) -> object:
    assert world.shop.shop is not None
    name, _, run = jobs._expiry(world.shop.shop)
    assert name == "reservation-expiry"
    return await run()


async def test_a_stripe_call_ends_before_its_attempt_could_be_replaced(world: StripeWorld) -> None:
    """The shop's gateway gives up on a call (every retry and back-off included) before
    stripe_flow.IN_FLIGHT, after which an attempt without a session counts as a crash orphan."""
    gateway = world.shop.providers["stripe"]
    assert gateway.call_timeout < stripe_flow.IN_FLIGHT.total_seconds()
    assert retry_budget(gateway.request_timeout, gateway.retries) <= gateway.call_timeout
    assert gateway.retries >= 1 and gateway.request_timeout * 2 < stripe_flow.IN_FLIGHT.total_seconds()


async def test_a_hanging_stripe_call_is_cut_off(world: StripeWorld) -> None:
    gateway = StripeGateway(
        st.SECRET_KEY, st.WEBHOOK_SECRET, world.stripe.url, request_timeout=5.0, retries=0, call_timeout=0.2
    )
    world.stripe.create_gate = asyncio.Event()  # never answers
    order = await world.order()
    payment = Payment(id=1, order_id=order.id, provider="stripe", state="pending", amount=1, currency="USD")
    with pytest.raises(StripeFailure):
        await gateway.create_checkout(await _order(world, order.public_id), payment, utcnow())
    world.stripe.create_gate.set()  # let the stand-in's request end before it stops


@pytest.mark.parametrize("about_to_lapse", [False, True])
@pytest.mark.faults
async def test_concurrent_presses_leave_one_payable_session(world: StripeWorld, about_to_lapse: bool) -> None:
    """Presses at once (also while an old link is being replaced) make one session, on SQLite (no
    row locks) as on PostgreSQL. A few orders, so a race the old code lost is lost reliably."""
    await world.shop.send(USER, "/start")
    world.stripe.create_delay = 0.1
    for stock in range(5, 8):
        order = await world.order(stock=stock)
        if about_to_lapse:
            await world.link(order)
            async with world.shop.session_factory() as session, session.begin():
                await session.execute(
                    update(Payment)
                    .where(Payment.order_id == order.id)
                    .values(expires_at=utcnow() + timedelta(minutes=1))
                )
        await asyncio.gather(*(world.shop.press(USER, f"pay:s:{order.public_id}") for _ in range(3)))
        sessions = [s for s in world.stripe.sessions.values() if s["client_reference_id"] == order.public_id]
        assert len(sessions) == 1 + about_to_lapse and [s["status"] for s in sessions].count("open") == 1
        async with world.shop.session_factory() as session:
            states = (await session.execute(select(Payment.state).where(Payment.order_id == order.id))).scalars()
            assert list(states).count("pending") == 1


@pytest.mark.faults
async def test_a_cancel_waiting_on_stripe_holds_no_lock(world: StripeWorld) -> None:
    """The link is expired at Stripe before the cancel writes anything: while Stripe takes its time,
    the order's row (and on SQLite the whole database) stays free for the shop's other writes."""
    order = await world.order()
    await world.link(order)
    world.stripe.expire_gate = asyncio.Event()
    press = asyncio.create_task(world.shop.press(USER, f"pay:xy:{order.public_id}"))
    await asyncio.wait_for(world.stripe.expiring.wait(), 10)  # Stripe is expiring the link right now

    async def other_write() -> None:
        async with world.shop.session_factory() as session, session.begin():
            await session.execute(update(Order).where(Order.public_id == order.public_id).values(updated_at=utcnow()))

    await asyncio.wait_for(other_write(), 10)
    world.stripe.expire_gate.set()
    await press
    assert await world.state_of(order) == "cancelled"
    assert next(iter(world.stripe.sessions.values()))["status"] == "expired"
