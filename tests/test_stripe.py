"""Card payments through Stripe Checkout: the SDK against a Stripe stand-in, signed webhooks over HTTP."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from bot.runtime import build_providers
from db.models import Order, OrderEvent, Outbox, Payment, WebhookEvent, utcnow
from services import orders as sm
from services.payments import stripe_flow
from tests import stripe_standin as st
from tests.factories import make_order, make_product
from tests.harness import Harness
from tests.webserver import serve_shop

USER = 8201


@dataclass
class StripeWorld:
    shop: Harness
    stripe: st.StripeStandIn
    base: str

    async def order(self, zone: str = "intl", customer: int = USER, qty: int = 1, stock: int = 5) -> Order:
        pid = await make_product(self.shop.session_factory, f"CARD-{customer}-{zone}-{qty}-{stock}", stock=stock,
                                 price_kes=13000_00, price_usd=100_00)
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
    server = await st.StripeStandIn().start()
    shop = Harness(engine, botapi, stripe_secret_key=st.SECRET_KEY, stripe_webhook_secret=st.WEBHOOK_SECRET,
                   stripe_api_base=server.url, shop_return_url="https://t.me/hacklab_shop_bot")
    shop.providers = build_providers(shop.settings)
    await shop.start()
    assert shop.shop is not None
    async with serve_shop(shop.shop) as base:
        yield StripeWorld(shop, server, base)
    await shop.stop()
    await server.stop()


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
        assert (await http.post("/webhooks/stripe", content=b"{bad", headers={
            "Stripe-Signature": st.sign(b"{bad"), "Content-Type": "application/json"})).status_code == 400
        assert (await http.post("/webhooks/stripe", content=b"x" * 100_000, headers={
            "Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"})).status_code == 413
        assert (await http.post("/webhooks/stripe", content=body, headers={**headers, "Content-Type": "text/plain"})
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
    assert (await world.post(world.stripe.event("checkout.session.expired", {**paid, "status": "expired",
                                                                              "payment_status": "paid"}))).status_code == 200
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
        p = Payment(order_id=o.id, provider="stripe", state="pending", amount=o.total, currency=o.currency,
                    stripe_session_id="cs_test_9999")
        session.add(p)
    world.stripe.sessions["cs_test_9999"] = {**world.stripe.sessions[sid], "id": "cs_test_9999"}
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay("cs_test_9999")))
    assert [p.state for p in await world.payments()] == ["paid", "refund_due"]
    async with world.shop.session_factory() as session:
        texts = [o.text for o in (await session.execute(select(Outbox).where(Outbox.kind == "payment_anomaly"))).scalars()]
    assert any("second payment" in t for t in texts) and any("stock re-reserved" in t for t in texts)


async def test_unknown_session_is_kept_and_alerted(world: StripeWorld) -> None:
    event = {"id": "evt_x", "type": "checkout.session.completed", "data": {"object": {
        "id": "cs_test_nope", "payment_status": "paid", "status": "complete", "amount_total": 100, "currency": "usd",
        "client_reference_id": "HL-ZZZZZZ"}}}
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
    reply = await world.shop.press(USER, reply.button("Try again"))
    reply = await world.shop.press(USER, f"pay:s:{order.public_id}")
    sid = [s for s in world.stripe.sessions]
    await world.post(world.stripe.event("checkout.session.completed", world.stripe.pay(sid[-1])))
    payment = [p for p in await world.payments() if p.state == "paid"][0]
    refund_id = await world.shop.providers["stripe"].refund(payment)
    assert refund_id.startswith("re_") and world.stripe.refunds[0]["payment_intent"] == payment.stripe_payment_intent


@pytest.mark.faults
@pytest.mark.pg_only
@pytest.mark.parametrize("event_type,expected", [
    ("checkout.session.completed", "paid"), ("checkout.session.async_payment_failed", "failed"),
    ("checkout.session.expired", "failed")])
async def test_every_event_replayed_ten_times_concurrently(world: StripeWorld, event_type: str, expected: str) -> None:
    order = await world.order()
    await world.link(order)
    sid = next(iter(world.stripe.sessions))
    session = world.stripe.pay(sid) if expected == "paid" else {**world.stripe.sessions[sid], "status": "expired"}
    event = world.stripe.event(event_type, session)
    replies = await asyncio.gather(*(world.post(event) for _ in range(10)))
    assert [r.status_code for r in replies] == [200] * 10
    assert [p.state for p in await world.payments()] == [expected]
    kinds = ["order_status", "new_order"] if expected == "paid" else ["payment_failed"]
    async with world.shop.session_factory() as s:
        assert [o.kind for o in (await s.execute(select(Outbox).order_by(Outbox.id))).scalars()] == kinds
    assert await world.count(WebhookEvent, WebhookEvent.status == "processed") == 1
