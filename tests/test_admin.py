"""Admin commands through the dispatcher, in the admin group: who may, what each does, bad arguments,
and the buttons on the new-paid-order alert."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from sqlalchemy import select

from db.models import Customer, Outbox, Payment, StockWatch
from handlers import admin as admin_handlers
from services import catalog
from services import orders as sm
from services.payments import mpesa_flow
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
from tests.standins import BotAPIStandIn, visible_text

GROUP_ADMIN = 5151
STRANGER = 6161
BUYER = 7171
ACTOR = f"admin:{ADMIN_USER_ID}"


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID, chat: int = ADMIN_CHAT_ID) -> str:
    return (await shop.send(user, text, chat_id=chat)).text


async def paid_order(
    shop: Harness,
    zone: str = "nairobi",
    provider: str = "mpesa",
    stock: int = 5,  # type: ignore[no-untyped-def]
    sku: str | None = None,
):
    pid = await make_product(shop.session_factory, sku or f"ADM-{zone}-{provider}", stock=stock)
    order = await make_order(shop.session_factory, BUYER, [(pid, 2)], zone=zone)
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add(
            Payment(
                order_id=o.id,
                provider=provider,
                state="paid",
                amount=o.total,
                currency=o.currency,
                receipt_number="RLA123XYZ",
                stripe_payment_intent="pi_1" if provider == "stripe" else None,
            )
        )
        await sm.transition(session, o, sm.PROCESSING, "system:test")
    return order, pid


async def load(shop: Harness, public_id: str):  # type: ignore[no-untyped-def]
    """The order, its payments and its events, fresh from the database."""
    async with shop.session_factory() as session:
        o = await sm.get_order(session, public_id)
        payments = (await session.execute(select(Payment).where(Payment.order_id == o.id))).unique().scalars().all()
        events = await sm.events_of(session, o.id)
    return o, list(payments), events


async def outbox(shop: Harness, **where) -> list[Outbox]:  # type: ignore[no-untyped-def]
    async with shop.session_factory() as session:
        stmt = select(Outbox).order_by(Outbox.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(Outbox, column) == value)
        return list((await session.execute(stmt)).scalars().all())


# --- who may ---------------------------------------------------------------------------------------


async def test_admin_by_id_and_by_group_role_others_refused(shop: Harness, caplog: pytest.LogCaptureFixture) -> None:
    await shop.load_demo()
    assert "LAP-TP-T480</code>: 8" in await admin(shop, "/stock LAP-TP-T480")  # listed in ADMIN_USER_IDS
    caplog.set_level(logging.WARNING, logger="handlers.admin")
    assert "⛔" in await admin(shop, "/restock LAP-TP-T480 5", user=STRANGER)  # group member, not admin
    assert "⛔" in await admin(shop, "/restock LAP-TP-T480 5", user=ADMIN_USER_ID, chat=ADMIN_USER_ID)  # private
    assert "⛔" in await admin(shop, "/restock LAP-TP-T480 5", user=ADMIN_USER_ID, chat=-100999)  # another group
    assert "⛔" in await admin(shop, "/stock", user=BUYER, chat=BUYER)  # a customer trying
    refused = [r for r in caplog.records if r.getMessage() == "admin.refused"]
    assert [(r.user_id, r.chat_id) for r in refused] == [  # type: ignore[attr-defined]
        (STRANGER, ADMIN_CHAT_ID),
        (ADMIN_USER_ID, ADMIN_USER_ID),
        (ADMIN_USER_ID, -100999),
        (BUYER, BUYER),
    ]
    async with shop.session_factory() as session:
        assert (await catalog.get_product(session, sku="LAP-TP-T480")).stock == 8  # nothing changed

    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN + 1)] = "creator"
    assert "LAP-TP-T480: 13 free" in await admin(shop, "/restock LAP-TP-T480 5", user=GROUP_ADMIN)
    assert "14 free" in await admin(shop, "/restock LAP-TP-T480 1", user=GROUP_ADMIN + 1)
    assert "15 free" in await admin(shop, "/restock LAP-TP-T480 1", user=GROUP_ADMIN)
    lookups = [c for c in shop.botapi.calls if c.method == "getChatMember" and c.params["user_id"] == GROUP_ADMIN]
    assert len(lookups) == 1  # cached: asked Telegram once for two commands
    # A demoted admin stays an admin until the cache entry runs out (5 minutes), then is refused.
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "member"
    key = (ADMIN_CHAT_ID, GROUP_ADMIN)
    admin_handlers._member_cache[key] = (time.monotonic() - admin_handlers.CACHE_SECONDS - 1, True)
    assert "⛔" in await admin(shop, "/restock LAP-TP-T480 1", user=GROUP_ADMIN)


def member_lookups(shop: Harness, user_id: int) -> int:
    return len([c for c in shop.botapi.calls if c.method == "getChatMember" and c.params["user_id"] == user_id])


@pytest.mark.faults
async def test_cancel_rechecks_admin_rights_past_the_cache(shop: Harness) -> None:
    order, pid = await paid_order(shop)
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    assert "⛔" not in await admin(shop, "/stock", user=GROUP_ADMIN)  # an admin: cached for 5 minutes
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "member"  # demoted a moment later
    assert "⛔" in await admin(shop, f"/cancel {order.public_id}", user=GROUP_ADMIN)
    o, payments, _ = await load(shop, order.public_id)
    assert (o.state, o.refund_status, payments[0].state) == ("processing", None, "paid")  # untouched
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)
    assert member_lookups(shop, GROUP_ADMIN) == 2  # asked again for the cancel, not served from the cache
    assert "⛔" in await admin(shop, "/stock", user=GROUP_ADMIN)  # and the cache now says so too
    assert "must be reversed manually" in await admin(shop, f"/cancel {order.public_id}")  # ADMIN_USER_IDS
    assert member_lookups(shop, ADMIN_USER_ID) == 0


@pytest.mark.faults
async def test_cancel_button_rechecks_admin_rights_past_the_cache(shop: Harness) -> None:
    order, pid = await paid_order(shop)
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    confirm = await shop.press(GROUP_ADMIN, f"adm:c:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "Cancel order" in confirm.text
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "member"
    await shop.press(GROUP_ADMIN, confirm.button("Yes, cancel it"), chat_id=ADMIN_CHAT_ID, message=confirm)
    assert "⛔" in shop.last_answer.params.get("text", "")
    assert (await load(shop, order.public_id))[0].state == "processing"
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)


async def test_customer_commands_in_private_still_work(shop: Harness) -> None:
    assert "no orders yet" in (await shop.send(BUYER, "/orders")).text


async def test_telegram_down_means_refused_not_cached(engine, botapi: BotAPIStandIn) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    async def fail_member(method: str, params: dict) -> web.Response | None:  # type: ignore[type-arg]
        return (
            web.json_response({"ok": False, "error_code": 500, "description": "boom"}, status=500)
            if method == "getChatMember"
            else None
        )

    shop = await Harness(engine, botapi).start()
    botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    botapi.responder = fail_member
    assert "⛔" in await admin(shop, "/stock", user=GROUP_ADMIN)
    botapi.responder = None
    assert "⛔" not in await admin(shop, "/stock", user=GROUP_ADMIN)
    await shop.stop()


# --- stock -----------------------------------------------------------------------------------------


async def test_restock_corrections_and_back_in_stock(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(BUYER, "/start p_ACC-LOG-MXK")
    await shop.press(BUYER, card.button("Notify me"))
    card = await shop.send(BUYER + 1, "/start p_ACC-LOG-MXK")
    await shop.press(BUYER + 1, card.button("Notify me"))
    async with shop.session_factory() as session, session.begin():
        (await session.get(Customer, BUYER + 1)).unreachable = True  # blocked the bot: not queued
    text = await admin(shop, "/restock ACC-LOG-MXK -1")
    assert "Refused" in text and "0 free" in text
    assert "ACC-LOG-MXK: 4 free" in await admin(shop, "/restock acc-log-mxk 4")
    assert "3 free" in await admin(shop, "/restock ACC-LOG-MXK -1")
    assert "5 free" in await admin(shop, "/restock ACC-LOG-MXK +2")  # already in stock: nobody told again
    msgs = await outbox(shop, kind="back_in_stock")
    assert len(msgs) == 1 and msgs[0].chat_id == BUYER and "back in stock" in msgs[0].text
    assert msgs[0].reply_markup["inline_keyboard"][0][0]["callback_data"].startswith("cat:v:")
    async with shop.session_factory() as session:  # kept until its message is sent; the unreachable one dropped
        watches = (await session.execute(select(StockWatch))).scalars().all()
    assert [(w.customer_id, w.outbox_id) for w in watches] == [(BUYER, msgs[0].id)]
    for bad in (
        "/restock",
        "/restock ACC-LOG-MXK",
        "/restock ACC-LOG-MXK many",
        "/restock ACC-LOG-MXK 0",
        "/restock ACC-LOG-MXK 1 2",
        "/restock ACC-LOG-MXK 99999999999",
    ):
        assert "Usage: /restock" in await admin(shop, bad), bad
    assert "No product with SKU NOPE" in await admin(shop, "/restock NOPE 1")


async def watches_of(shop: Harness) -> dict[int, int | None]:
    async with shop.session_factory() as session:
        return {w.customer_id: w.outbox_id for w in (await session.execute(select(StockWatch))).scalars()}


async def test_a_watch_ends_only_when_its_back_in_stock_message_is_sent(shop: Harness, botapi: BotAPIStandIn) -> None:
    from services.outbox_sender import BotApiTransport, Limits, drain_lanes
    from tests.harness import TEST_TOKEN
    from tests.limited_botapi import TelegramLimits

    await shop.load_demo()
    for buyer in (BUYER, BUYER + 1, BUYER + 2):
        card = await shop.send(buyer, "/start p_ACC-LOG-MXK")
        await shop.press(buyer, card.button("Notify me"))
    assert "queued: 3" in await admin(shop, "/restock ACC-LOG-MXK 2")
    first = {m.chat_id: m.id for m in await outbox(shop, kind="back_in_stock")}
    assert await watches_of(shop) == first and len(first) == 3  # queued, not yet told: still watching
    await admin(shop, "/restock ACC-LOG-MXK -2")
    assert "queued: 0" in await admin(shop, "/restock ACC-LOG-MXK 2")  # back again before the messages went:
    assert len(await outbox(shop, kind="back_in_stock")) == 3  # nobody is queued a second one

    limits = TelegramLimits(botapi)
    limits.failing[BUYER + 1] = 1_000  # 5xx until the sender gives up
    limits.blocked.add(BUYER + 2)
    transport = BotApiTransport(botapi.url, TEST_TOKEN)

    async def send_all() -> None:
        await asyncio.wait_for(
            drain_lanes(
                shop.session_factory,
                transport,
                Limits(max_attempts=2, backoff_first=0.05),
                until_empty=True,
                idle_seconds=0.05,
            ),
            30,
        )

    try:
        await send_all()
        assert [c.text for c in botapi.sent(BUYER, "sendMessage") if "back in stock" in c.text] != []
        # Told: the watch is over. Never told (dead message): still watching. Blocked the bot: dropped.
        assert await watches_of(shop) == {BUYER + 1: first[BUYER + 1]}
        await admin(shop, "/restock ACC-LOG-MXK -2")
        assert "queued: 1" in await admin(shop, "/restock ACC-LOG-MXK 2")  # told at the next restock
        again = (await outbox(shop, kind="back_in_stock"))[-1]
        assert again.chat_id == BUYER + 1 and await watches_of(shop) == {BUYER + 1: again.id}
        limits.failing.clear()
        await send_all()
    finally:
        await transport.aclose()
    assert await watches_of(shop) == {}
    told = [c.chat_id for c in botapi.sent(method="sendMessage") if "back in stock" in c.text]
    assert sorted(told) == [BUYER, BUYER + 1]  # once each


async def test_concurrent_restocks_queue_one_message_per_watcher(shop: Harness) -> None:
    from services import admin as admin_service

    await shop.load_demo()
    card = await shop.send(BUYER, "/start p_ACC-LOG-MXK")
    await shop.press(BUYER, card.button("Notify me"))

    async def restock() -> int:
        async with shop.session_factory() as session, session.begin():
            return (await admin_service.restock(session, "ACC-LOG-MXK", 3, ACTOR))[1]

    assert sorted(await asyncio.gather(restock(), restock())) == [0, 1]
    assert [m.chat_id for m in await outbox(shop, kind="back_in_stock")] == [BUYER]


async def test_restock_never_touches_reserved_units(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "RSV-1", stock=3)
    await make_order(shop.session_factory, BUYER, [(pid, 2)])  # 1 free, 2 reserved
    text = await admin(shop, "/restock RSV-1 -2")
    assert "Refused" in text and "2 more are reserved" in text
    assert await stock_of(shop.session_factory, pid) == (1, 2, 0)
    assert "RSV-1: 0 free · 2 reserved · 0 sold" in await admin(shop, "/restock RSV-1 -1")
    assert await stock_of(shop.session_factory, pid) == (0, 2, 0)


async def test_stock_report_flags_low_items(shop: Harness) -> None:
    await shop.load_demo()
    text = await admin(shop, "/stock workstations")
    assert "WS-DL-T5820</code>: 2 · 0 · 0 ⚠️" in text and "WS-LN-P330</code>: 5 · 0 · 0" in text
    assert "LAP-" not in text
    assert "No products match" in await admin(shop, "/stock gpus")
    everything = await admin(shop, "/stock")
    assert "LAP-TP-T480" in everything and "WS-DL-T5820" in everything


async def test_stock_report_stays_under_telegram_limit(shop: Harness) -> None:
    for n in range(90):
        await make_product(shop.session_factory, f"LONG-SKU-{n:03d}-" + "X" * 40, stock=n % 5, category="Bulk")
    text = await admin(shop, "/stock bulk")
    assert len(text) <= 4096 and "LONG-SKU-000" in text and "more (narrow it down" in text
    assert text.count("<code>") == text.count("</code>")  # whole lines only: no tag cut in half


# --- orders ----------------------------------------------------------------------------------------


async def test_orders_and_order_detail(shop: Harness) -> None:
    order, _ = await paid_order(shop)
    second, _ = await paid_order(shop, sku="ADM-2")
    listing = await admin(shop, "/orders")
    assert "<b>2 orders</b> — paid" in listing
    assert listing.index(order.public_id) < listing.index(second.public_id)  # oldest first
    assert "No orders are shipped." in await admin(shop, "/orders shipped")
    unpaid = await make_order(shop.session_factory, BUYER, [(await make_product(shop.session_factory, "U-1"), 1)])
    assert unpaid.public_id in await admin(shop, "/orders awaiting_payment")
    for bad in ("/orders unpayed", "/orders processing shipped"):
        text = await admin(shop, bad)
        assert "Usage: /orders" in text and "unpaid, paid (the default: to ship), shipped, on the way" in text
    detail = await admin(shop, f"/order {order.public_id.lower()}")
    assert "+254712345678" in detail and "buyer@example.com" in detail and "Plot 1, Ngong Rd" in detail
    assert "zone nairobi" in detail and "2 × Product ADM-nairobi-mpesa" in detail
    assert "mpesa paid KES" in detail and "RLA123XYZ" in detail
    assert "EAT placed → unpaid (customer:7171): order placed" in detail
    assert "EAT unpaid → paid (system:test)" in detail and "∅" not in detail
    assert "No order HL-NOPE00" in await admin(shop, "/order HL-NOPE00")
    assert "Usage: /order " in await admin(shop, "/order")
    assert "Usage: /order " in await admin(shop, f"/order {order.public_id} extra")


# --- shipping and delivery -------------------------------------------------------------------------


async def test_ship_kenyan_default_and_named_courier(shop: Harness) -> None:
    kenya, _ = await paid_order(shop, "kenya")
    nairobi, _ = await paid_order(shop, "nairobi")
    assert "shipped with G4S, tracking G4S-889" in await admin(shop, f"/ship {kenya.public_id} G4S-889")
    assert "shipped with Wells Fargo" in await admin(shop, f"/ship {nairobi.public_id} WF-889 Wells Fargo")
    o, _, events = await load(shop, kenya.public_id)
    assert (o.state, o.carrier, o.tracking_number, o.tracking_next_check_at) == ("shipped", "G4S", "G4S-889", None)
    assert o.shipped_at is not None
    assert (events[-1].actor, events[-1].to_state, events[-1].note) == (ACTOR, "shipped", "G4S G4S-889")
    shipped = [m for m in await outbox(shop, chat_id=BUYER) if "G4S-889" in m.text]
    assert len(shipped) == 1 and "G4S" in shipped[0].text  # the customer's message names courier and number


async def test_ship_refusals(shop: Harness) -> None:
    local, _ = await paid_order(shop, "kenya")
    intl, _ = await paid_order(shop, "intl", provider="stripe")
    unpaid = await make_order(shop.session_factory, BUYER, [(await make_product(shop.session_factory, "U-2"), 1)])
    assert "not a DHL Express waybill" in await admin(shop, f"/ship {intl.public_id} ABC123")
    assert "not a DHL Express waybill" in await admin(shop, f"/ship {intl.public_id} 12345678901")
    assert "ship with DHL" in await admin(shop, f"/ship {intl.public_id} 1234567890 G4S")
    assert "doesn't look like a tracking number" in await admin(shop, f"/ship {local.public_id} <b>x</b>")
    assert "carrier name may have" in await admin(shop, f"/ship {local.public_id} AB-1 <i>evil</i>")
    assert "is unpaid; only paid orders" in await admin(shop, f"/ship {unpaid.public_id} AB-1")
    assert "No order HL-NOPE00" in await admin(shop, "/ship HL-NOPE00 AB-1")
    for bad in ("/ship", f"/ship {local.public_id}"):
        assert "Usage: /ship" in await admin(shop, bad)
    for public_id in (local.public_id, intl.public_id):
        o, _, _ = await load(shop, public_id)
        assert (o.state, o.tracking_number, o.shipped_at) == ("processing", None, None)  # refusals changed nothing


async def test_ship_dhl_then_delivered(shop: Harness) -> None:
    intl, _ = await paid_order(shop, "intl", provider="stripe")
    local, _ = await paid_order(shop, "kenya")
    text = await admin(shop, f"/ship {intl.public_id} 1234567890")
    assert "shipped with DHL" in text and "automatic" in text
    assert "is shipped; only paid orders" in await admin(shop, f"/ship {intl.public_id} 1234567890")
    o, _, _ = await load(shop, intl.public_id)
    assert (o.state, o.carrier, o.tracking_number) == ("shipped", "DHL", "1234567890")
    assert o.tracking_next_check_at is not None and o.shipped_at is not None  # the poller will pick it up
    shipped_msg = [m for m in await outbox(shop, chat_id=BUYER) if "1234567890" in m.text]
    assert len(shipped_msg) == 1 and "tracking-id=1234567890" in shipped_msg[0].text

    assert "only shipped or on-the-way" in await admin(shop, f"/delivered {local.public_id}")  # still processing
    await admin(shop, f"/ship {local.public_id} G4S-1")
    assert "marked delivered. The customer" in await admin(shop, f"/delivered {local.public_id}")
    assert "automatic tracking stops" in await admin(shop, f"/delivered {intl.public_id}")
    for bad in ("/delivered", f"/delivered {local.public_id} now"):
        assert "Usage: /delivered" in await admin(shop, bad)
    o, _, events = await load(shop, intl.public_id)
    assert o.state == "delivered" and "DHL-tracked" in events[-1].note and events[-1].actor == ACTOR
    o, _, events = await load(shop, local.public_id)
    assert o.state == "delivered" and [e.actor for e in events[-2:]] == [ACTOR, ACTOR]
    assert any("delivered" in m.text.lower() and local.public_id in m.text for m in await outbox(shop, chat_id=BUYER))


# --- cancelling ------------------------------------------------------------------------------------


async def test_cancel_unpaid_and_paid_mpesa(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "UNPAID-1", stock=5)
    unpaid = await make_order(shop.session_factory, BUYER, [(pid, 2)])
    assert await stock_of(shop.session_factory, pid) == (3, 2, 0)
    assert "nothing was paid" in await admin(shop, f"/cancel {unpaid.public_id} customer asked")
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)  # reservation released
    o, _, events = await load(shop, unpaid.public_id)
    assert (o.state, events[-1].actor, events[-1].note) == ("cancelled", ACTOR, "customer asked")

    order, pid2 = await paid_order(shop)
    assert await stock_of(shop.session_factory, pid2) == (3, 0, 2)
    text = await admin(shop, f"/cancel {order.public_id}")
    assert "must be reversed manually" in text and "RLA123XYZ" in text
    assert await stock_of(shop.session_factory, pid2) == (5, 0, 0)  # sold units back on the shelf
    o, payments, _ = await load(shop, order.public_id)
    assert (o.state, o.refund_status, payments[0].state) == ("cancelled", "manual_reversal_owed", "refund_due")
    msg = [m for m in await outbox(shop, chat_id=BUYER) if "cancelled" in m.text and o.public_id in m.text]
    assert len(msg) == 1 and "reversed to your phone" in msg[0].text
    assert await admin(shop, f"/cancel {order.public_id}") == f"Order {order.public_id} is already cancelled."
    assert "Usage: /cancel" in await admin(shop, "/cancel")


async def test_unpaid_order_is_not_cancelled_while_its_mpesa_prompt_can_be_answered(shop: Harness) -> None:
    """The reservation is not released while the customer may be entering their PIN (/cancel and the
    confirmed Cancel… button alike); once the prompt's final timeout has passed, the cancel goes through."""
    pid = await make_product(shop.session_factory, "PROMPT-1", stock=5)
    order = await make_order(shop.session_factory, BUYER, [(pid, 2)])
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add(
            Payment(
                order_id=o.id,
                provider="mpesa",
                state="pending",
                amount=o.total,
                currency=o.currency,
                phone="254712345678",
                checkout_request_id="ws_CO_live",
            )
        )
    text = await admin(shop, f"/cancel {order.public_id} customer asked")
    assert "NOT cancelled" in text and "M-Pesa prompt" in text
    confirm = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    confirm = await shop.press(ADMIN_USER_ID, f"adm:c:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=confirm)
    done = await shop.press(ADMIN_USER_ID, confirm.button("Yes, cancel it"), chat_id=ADMIN_CHAT_ID, message=confirm)
    assert "NOT cancelled" in done.text and "M-Pesa prompt" in done.text
    assert (await load(shop, order.public_id))[0].state == "awaiting_payment"
    assert await stock_of(shop.session_factory, pid) == (3, 2, 0)  # still reserved

    async with shop.session_factory() as session, session.begin():  # the prompt's final timeout passes
        payment = (await session.execute(select(Payment))).unique().scalar_one()
        payment.created_at -= mpesa_flow.FINAL_TIMEOUT
    assert "nothing was paid" in await admin(shop, f"/cancel {order.public_id}")
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)


async def test_shipped_order_cannot_be_cancelled(shop: Harness) -> None:
    order, pid = await paid_order(shop, "kenya")
    await admin(shop, f"/ship {order.public_id} G4S-2")
    assert "is shipped, so it can't be cancelled" in await admin(shop, f"/cancel {order.public_id}")
    o, payments, _ = await load(shop, order.public_id)
    assert (o.state, o.refund_status, payments[0].state) == ("shipped", None, "paid")
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)


class FakeStripe:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.refunded = fail, []

    async def refund(self, payment: Payment) -> str:
        if self.fail:
            raise RuntimeError("card_declined")
        self.refunded.append(payment.stripe_payment_intent)
        return "re_1"

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("stripe", ["ok", "fails", "not_configured"])
async def test_cancel_paid_card_order_refunds(engine, botapi, stripe: str) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeStripe(fail=stripe == "fails")
    shop = await Harness(engine, botapi, providers={"stripe": gateway} if stripe != "not_configured" else {}).start()
    order, pid = await paid_order(shop, "intl", provider="stripe")
    text = await admin(shop, f"/cancel {order.public_id} out of stock")
    o, payments, events = await load(shop, order.public_id)
    alerts = await outbox(shop, kind="refund_failed")
    customer_msg = [m for m in await outbox(shop, chat_id=BUYER) if "cancelled" in m.text]
    assert o.state == "cancelled" and await stock_of(shop.session_factory, pid) == (5, 0, 0)
    assert events[-1].actor == ACTOR and events[-1].note.startswith("out of stock")
    if stripe == "ok":
        assert "refunded through Stripe" in text and gateway.refunded == ["pi_1"]
        assert (o.refund_status, payments[0].state) == ("refunded", "refunded") and not alerts
        assert "card payment has been refunded" in customer_msg[0].text
    else:
        assert "FAILED" in text and (o.refund_status, payments[0].state) == ("refund_pending", "refund_due")
        assert len(alerts) == 1 and alerts[0].chat_id == ADMIN_CHAT_ID and o.public_id in alerts[0].text
        assert "refund is being processed" in customer_msg[0].text
    await shop.stop()


# --- buttons on the new-paid-order alert -----------------------------------------------------------


async def test_alert_buttons_view_and_cancel(shop: Harness) -> None:
    order, pid = await paid_order(shop)
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    view = await shop.press(ADMIN_USER_ID, f"adm:v:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "Payments" in view.text and order.public_id in view.text and "RLA123XYZ" in view.text
    assert shop.last_answer is not None
    missing = await shop.press(ADMIN_USER_ID, "adm:v:HL-NOPE22", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "No order HL-NOPE22" in missing.text

    confirm = await shop.press(ADMIN_USER_ID, f"adm:c:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "Cancel order" in confirm.text and "(paid, KES" in confirm.text
    await shop.press(STRANGER, confirm.button("Yes, cancel it"), chat_id=ADMIN_CHAT_ID, message=confirm)
    assert "⛔" in shop.last_answer.params["text"]
    assert (await load(shop, order.public_id))[0].state == "processing"  # the stranger changed nothing
    done = await shop.press(ADMIN_USER_ID, confirm.button("Yes, cancel it"), chat_id=ADMIN_CHAT_ID, message=confirm)
    assert done.method == "editMessageText" and "must be reversed manually" in done.text and not done.buttons
    o, _, events = await load(shop, order.public_id)
    assert o.state == "cancelled" and events[-1].actor == ACTOR
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)
    again = await shop.press(ADMIN_USER_ID, f"adm:c:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert f"Order {order.public_id} is already cancelled." in again.text


async def test_alert_button_refused_outside_the_group(shop: Harness) -> None:
    order, _ = await paid_order(shop)
    msg = await shop.send(ADMIN_USER_ID, "/help")  # any message in the admin's private chat
    await shop.press(ADMIN_USER_ID, f"adm:cc:{order.public_id}", message=msg)
    assert "⛔" in shop.last_answer.params["text"]
    assert (await load(shop, order.public_id))[0].state == "processing"


async def reply_to(shop: Harness, user_id: int, prompt_id: int, text: str) -> None:
    msg = shop._message(user_id, ADMIN_CHAT_ID, text=text)
    msg["reply_to_message"] = {
        "message_id": prompt_id,
        "date": int(time.time()),
        "chat": {"id": ADMIN_CHAT_ID, "type": "supergroup", "title": "Shop admins"},
        "from": BotAPIStandIn.BOT_USER,
        "text": "Ship",
    }
    await shop.feed({"message": msg})


async def test_ship_button_asks_for_the_tracking_number(shop: Harness) -> None:
    intl, _ = await paid_order(shop, "intl", provider="stripe")
    kenya, _ = await paid_order(shop, "kenya")
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)

    prompt = await shop.press(ADMIN_USER_ID, f"adm:s:{intl.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert f"/ship {intl.public_id} TRACKING_NUMBER" in prompt.text and "10-digit DHL" in prompt.text
    assert prompt.params["reply_markup"]["force_reply"] is True
    prompt_id = prompt.result["message_id"]
    await reply_to(shop, STRANGER, prompt_id, "1234567890")  # someone else's reply is not taken
    await reply_to(shop, ADMIN_USER_ID, prompt_id, "12345")  # bad waybill: refused, nothing changes
    assert "not a DHL Express waybill" in shop.botapi.last(ADMIN_CHAT_ID).text
    assert (await load(shop, intl.public_id))[0].state == "processing"

    prompt = await shop.press(ADMIN_USER_ID, f"adm:s:{intl.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    await reply_to(shop, ADMIN_USER_ID, prompt.result["message_id"], "1234567890")
    assert "shipped with DHL" in shop.botapi.last(ADMIN_CHAT_ID).text
    o, _, events = await load(shop, intl.public_id)
    assert (o.state, o.carrier, o.tracking_number, events[-1].actor) == ("shipped", "DHL", "1234567890", ACTOR)

    prompt = await shop.press(ADMIN_USER_ID, f"adm:s:{kenya.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "default: G4S" in prompt.text
    await reply_to(shop, ADMIN_USER_ID, prompt.result["message_id"] + 1000, "G4S-77")  # not a reply to the prompt
    assert (await load(shop, kenya.public_id))[0].state == "processing"
    await reply_to(shop, ADMIN_USER_ID, prompt.result["message_id"], "SND-77 Sendy Express")
    assert "shipped with Sendy Express, tracking SND-77" in shop.botapi.last(ADMIN_CHAT_ID).text

    already = await shop.press(ADMIN_USER_ID, f"adm:s:{kenya.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "is shipped; only paid orders" in already.text


class SlowStripe(FakeStripe):
    async def refund(self, payment: Payment) -> str:
        import asyncio

        await asyncio.sleep(0.2)  # the other admin's /cancel arrives while Stripe is answering
        return await super().refund(payment)


@pytest.mark.pg_only
async def test_two_admins_cancelling_at_once_refund_once(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    gateway = SlowStripe()
    shop = await Harness(engine, botapi, providers={"stripe": gateway}).start()
    order, pid = await paid_order(shop, "intl", provider="stripe")
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    await asyncio.gather(
        shop.send(ADMIN_USER_ID, f"/cancel {order.public_id}", chat_id=ADMIN_CHAT_ID),
        shop.send(GROUP_ADMIN, f"/cancel {order.public_id}", chat_id=ADMIN_CHAT_ID),
    )
    replies = [c.text for c in shop.botapi.sent(ADMIN_CHAT_ID, "sendMessage")]
    assert sum("refunded through Stripe" in r for r in replies) == 1
    assert sum(f"Order {order.public_id} is already cancelled." in r for r in replies) == 1, replies
    assert gateway.refunded == ["pi_1"]  # one refund, not two
    o, payments, events = await load(shop, order.public_id)
    assert (o.state, o.refund_status, payments[0].state) == ("cancelled", "refunded", "refunded")
    assert [e.to_state for e in events].count("cancelled") == 1
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)
    await shop.stop()


async def test_long_order_detail_fits_one_message(shop: Harness) -> None:
    from db.models import OrderEvent

    pids = [await make_product(shop.session_factory, f"BIG-{n:02d}-" + "Y" * 50, stock=3) for n in range(30)]
    order = await make_order(shop.session_factory, BUYER, [(pid, 1) for pid in pids])
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add_all(
            OrderEvent(
                order_id=o.id,
                from_state="awaiting_payment",
                to_state="awaiting_payment",
                actor="system:test",
                note=f"note {n} " + "z" * 60,
            )
            for n in range(80)
        )
    detail = await admin(shop, f"/order {order.public_id}")
    assert len(visible_text(detail)) <= 4096 and detail.count("<code>") == detail.count("</code>")  # as Telegram counts
    assert "BIG-00-" in detail and "more" in detail  # the first items, then how many were left out
    assert "note 79" in detail and "earlier events not shown: " in detail  # the newest events are kept
    assert "Subtotal" in detail and "+254712345678" in detail


async def test_echoed_input_is_escaped(shop: Harness) -> None:
    order, _ = await paid_order(shop, "intl", provider="stripe")
    assert "No product with SKU &lt;b&gt;" in await admin(shop, "/restock <b> 1")
    assert "not a DHL Express waybill" in (text := await admin(shop, f"/ship {order.public_id} <i>1</i>"))
    assert "<i>" not in text
    assert "not “&lt;x&gt;”" in await admin(shop, f"/ship {order.public_id} 1234567890 <x>")


# --- parsing: aiogram's Command and the AdminButton callback data ------------------------------------


def said_in(shop: Harness, chat_id: int, since: int) -> list[str]:
    return [c.text for c in shop.botapi.calls[since:] if c.method == "sendMessage" and c.chat_id == chat_id]


async def test_commands_addressed_to_us_work_and_another_bots_are_not_ours(shop: Harness) -> None:
    await shop.load_demo()
    assert "LAP-TP-T480: 13 free" in await admin(shop, "/restock@hacklab_shop_bot LAP-TP-T480 5")
    assert "14 free" in await admin(shop, "/RESTOCK@Hacklab_Shop_Bot   LAP-TP-T480  1")  # any case, any spacing
    assert "Usage: /restock" in await admin(shop, "/restock@hacklab_shop_bot LAP-TP-T480")
    assert "Usage: /restock" in await admin(shop, "/restock LAP-TP-T480 many")
    assert "⛔" in await admin(shop, "/restock@hacklab_shop_bot LAP-TP-T480 5", user=STRANGER)
    before = len(shop.botapi.calls)
    for text in (
        "/restock@some_other_bot LAP-TP-T480 5",
        "/cancel@some_other_bot HL-ABC123",
        "/weather@some_other_bot",
    ):
        await shop.send(ADMIN_USER_ID, text, chat_id=ADMIN_CHAT_ID)
        await shop.send(STRANGER, text, chat_id=ADMIN_CHAT_ID)
    assert said_in(shop, ADMIN_CHAT_ID, before) == []  # another bot's commands: not ours to answer or refuse
    async with shop.session_factory() as session:
        assert (await catalog.get_product(session, sku="LAP-TP-T480")).stock == 14


async def test_an_unknown_command_in_the_admin_group_lists_the_admin_commands(shop: Harness) -> None:
    for text in ("/restok LAP-TP-T480 5", "/help_admin", "/foo@hacklab_shop_bot"):
        reply = visible_text(await admin(shop, text))
        assert reply.startswith("Admin commands")
        assert "/restock <SKU> <QTY>" in reply and "/cancel <ORDER_ID> [reason]" in reply
    before = len(shop.botapi.calls)
    await shop.send(STRANGER, "/restok LAP-TP-T480 5", chat_id=ADMIN_CHAT_ID)  # not an admin: no answer, as
    assert said_in(shop, ADMIN_CHAT_ID, before) == []  # to any group member's unknown command
    assert "I didn't get that" in await admin(shop, "/restok", chat=ADMIN_USER_ID)  # private: the customer help
    assert visible_text(await admin(shop, "/help")).startswith("Admin commands")  # /help there is the admins'
    assert "⛔" in await admin(shop, "/help", user=STRANGER)  # a member who is not an admin: refused, as /orders


async def test_a_non_admins_admin_commands_are_refused_as_before(
    shop: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    order, _ = await paid_order(shop)
    caplog.set_level(logging.WARNING, logger="handlers.admin")
    commands = [
        "/restock ADM-nairobi-mpesa 5",
        "/stock",
        "/orders",
        f"/order {order.public_id}",
        f"/ship {order.public_id} G4S-1",
        f"/delivered {order.public_id}",
        f"/cancel {order.public_id}",
    ]
    for text in commands:
        assert (
            await admin(shop, text, user=STRANGER) == "⛔ Admin commands work only for shop admins in the admin group."
        )
    for text in commands[:-2] + commands[-1:]:  # in private, only /orders and /cancel are the customer's
        reply = await admin(shop, text, user=BUYER, chat=BUYER)
        assert ("⛔" in reply) is (text.split()[0] not in ("/orders", "/cancel")), text
    refused = [(r.command, r.user_id) for r in caplog.records if r.getMessage() == "admin.refused"]  # type: ignore[attr-defined]
    assert refused == [(c.split()[0][1:], STRANGER) for c in commands] + [
        (c.split()[0][1:], BUYER) for c in commands[:-2] if c.split()[0] != "/orders"
    ]
    o, payments, _ = await load(shop, order.public_id)
    assert (o.state, o.tracking_number, payments[0].state) == ("processing", None, "paid")


async def test_admin_buttons_keep_their_callback_data(shop: Harness) -> None:
    """Alerts already in the admin group carry "adm:<action>:<ORDER_ID>": the factory packs the same
    strings, and presses of those strings, on an old message, still work."""
    from handlers.admin import AdminAction, AdminButton

    for action, code in (
        (AdminAction.VIEW, "v"),
        (AdminAction.SHIP, "s"),
        (AdminAction.CANCEL, "c"),
        (AdminAction.CONFIRM_CANCEL, "cc"),
    ):
        button = AdminButton(action=action, order="HL-ABC123")
        assert button.pack() == f"adm:{code}:HL-ABC123" and AdminButton.unpack(button.pack()) == button

    order, pid = await paid_order(shop)
    old = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)  # stands for an alert sent long ago
    assert (
        order.public_id
        in (await shop.press(ADMIN_USER_ID, f"adm:v:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=old)).text
    )
    prompt = await shop.press(ADMIN_USER_ID, f"adm:s:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=old)
    assert prompt.params["reply_markup"]["force_reply"] is True
    confirm = await shop.press(ADMIN_USER_ID, f"adm:c:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=old)
    assert confirm.button("Yes, cancel it") == f"adm:cc:{order.public_id}"
    done = await shop.press(ADMIN_USER_ID, f"adm:cc:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=confirm)
    assert done.method == "editMessageText" and "must be reversed manually" in done.text
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)

    for forged in ("adm:x:HL-ABC123", "adm:v", "adm:v:HL-ABC123:1", "adm:V:HL-ABC123"):  # not admin buttons
        await shop.press(ADMIN_USER_ID, forged, chat_id=ADMIN_CHAT_ID, message=old)
        assert shop.last_answer.params["text"].startswith("Let's talk in private"), forged  # a group's answer


@pytest.mark.faults
async def test_an_action_refused_after_its_first_writes_leaves_nothing_written(
    shop: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/cancel writes the refund status and the payment's state, /ship the carrier and tracking
    number, before the transition; when the transition is refused (the order moved meanwhile), the
    admin reads the refusal and none of those writes is committed with the update."""
    from services.errors import IllegalTransition

    order, pid = await paid_order(shop)
    before, _, _ = await load(shop, order.public_id)

    async def moved_meanwhile(session, o, to_state, actor, note=None, **_):  # type: ignore[no-untyped-def]
        raise IllegalTransition("error.illegal_transition", order=o.public_id, src="expired", dst=to_state)

    monkeypatch.setattr(sm, "transition", moved_meanwhile)
    assert "can't go from expired to cancelled" in await admin(shop, f"/cancel {order.public_id}")
    assert "can't go from expired to shipped" in await admin(shop, f"/ship {order.public_id} G4S-1")
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    done = await shop.press(ADMIN_USER_ID, f"adm:cc:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "can't go from expired to cancelled" in done.text
    o, payments, _ = await load(shop, order.public_id)
    assert (o.state, o.refund_status, o.carrier, o.tracking_number, o.shipped_at) == (
        "processing",
        None,
        before.carrier,
        None,
        None,
    )
    assert [p.state for p in payments] == ["paid"] and o.updated_at == before.updated_at  # not even the claim
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)


# --- states as people say them, help with examples ---------------------------------------------------


async def test_orders_take_the_states_people_say_and_rows_show_who(shop: Harness) -> None:
    paid, _ = await paid_order(shop)
    unpaid = await make_order(shop.session_factory, BUYER + 1, [(await make_product(shop.session_factory, "W-1"), 1)])
    listing = await admin(shop, "/orders unpaid")
    assert "<b>1 order</b> — unpaid" in listing and "1 orders" not in listing
    row = next(line for line in listing.splitlines() if unpaid.public_id in line)
    assert "· 1 item ·" in row and "Test +254712345678" in row and re.search(r"placed \d{1,2} \w{3} \d\d:\d\d EAT", row)
    assert listing == await admin(shop, "/orders awaiting_payment")  # the machine name still works
    paid_listing = await admin(shop, "/orders paid")
    assert paid.public_id in paid_listing and "· 2 items ·" in paid_listing and unpaid.public_id not in paid_listing
    await admin(shop, f"/ship {paid.public_id} SND-1")
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, paid.public_id), sm.IN_TRANSIT, "system:test")
    for typed in ("/orders on the way", "/orders on-the-way", "/orders in_transit"):
        assert "<b>1 order</b> — on the way" in await admin(shop, typed)
    assert "No orders are delivered." in await admin(shop, "/orders delivered")
    detail = await admin(shop, f"/order {paid.public_id}")
    assert f"<b>{paid.public_id}</b> — on the way" in detail and "shipped → on the way (system:test)" in detail
    assert "is on the way; only paid orders can be shipped" in await admin(shop, f"/ship {paid.public_id} SND-2")


async def test_order_detail_leaves_out_what_is_not_there(shop: Harness) -> None:
    unpaid = await make_order(shop.session_factory, BUYER, [(await make_product(shop.session_factory, "N-1"), 1)])
    detail = visible_text(await admin(shop, f"/order {unpaid.public_id}"))
    assert "🚚 not shipped — carrier: Local courier\n" in detail and "refund" not in detail
    assert " - " not in detail and "∅" not in detail and "(@" not in detail  # no username: no "@-"
    order, _ = await paid_order(shop)
    await admin(shop, f"/cancel {order.public_id} changed mind")
    detail = visible_text(await admin(shop, f"/order {order.public_id}"))
    assert "🚚 not shipped — carrier: Local courier · M-Pesa reversal owed\n" in detail
    shipped, _ = await paid_order(shop, sku="N-2")
    await admin(shop, f"/ship {shipped.public_id} SND-9 Sendy")
    assert "🚚 Sendy SND-9\n" in visible_text(await admin(shop, f"/order {shipped.public_id}"))


async def test_admin_help_lists_every_command_with_an_example(shop: Harness) -> None:
    reply = visible_text(await admin(shop, "/help"))
    examples = re.findall(r"^   (/\w+)", reply, flags=re.MULTILINE)
    assert examples == [
        "/orders",
        "/order",
        "/ship",
        "/delivered",
        "/cancel",
        "/paid",
        "/restock",
        "/stock",
        "/report",
        "/export",
        "/audit",
        "/promo",
        "/broadcast",
        "/review",
    ]
    assert "/orders unpaid" in reply and "/restock LAP-TP-T480 5" in reply and "reply to one to answer" in reply
    assert (await admin(shop, "/help@hacklab_shop_bot")) == (await admin(shop, "/help"))
