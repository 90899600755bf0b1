"""Admin commands through the dispatcher, in the admin group: who may, what each does, bad arguments."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Outbox, OrderEvent, Payment, StockWatch
from handlers import admin as admin_handlers
from services import orders as sm
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness

GROUP_ADMIN = 5151
STRANGER = 6161
BUYER = 7171


@pytest.fixture(autouse=True)
def _fresh_member_cache() -> None:
    admin_handlers._member_cache.clear()


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID, chat: int = ADMIN_CHAT_ID) -> str:
    return (await shop.send(user, text, chat_id=chat)).text


async def paid_order(shop: Harness, zone: str = "nairobi", provider: str = "mpesa", stock: int = 5):  # type: ignore[no-untyped-def]
    pid = await make_product(shop.session_factory, f"ADM-{zone}-{provider}", stock=stock)
    order = await make_order(shop.session_factory, BUYER, [(pid, 2)], zone=zone)
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add(Payment(order_id=o.id, provider=provider, state="paid", amount=o.total, currency=o.currency,
                            receipt_number="RLA123XYZ", stripe_payment_intent="pi_1" if provider == "stripe" else None))
        await sm.transition(session, o, sm.PROCESSING, "system:test")
    return order, pid


async def test_only_admins_in_the_admin_group(shop: Harness) -> None:
    await shop.load_demo()
    assert "Refused" not in await admin(shop, "/stock LAP-TP-T480")
    assert "⛔" in await admin(shop, "/stock", user=STRANGER)
    assert "⛔" in await admin(shop, "/restock LAP-TP-T480 5", user=ADMIN_USER_ID, chat=ADMIN_USER_ID)  # private chat
    assert "⛔" in await admin(shop, "/restock LAP-TP-T480 5", user=ADMIN_USER_ID, chat=-100999)  # another group
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    assert "LAP-TP-T480: 13 free" in await admin(shop, "/restock LAP-TP-T480 5", user=GROUP_ADMIN)
    async with shop.session_factory() as session:
        from services import catalog
        assert (await catalog.get_product(session, sku="LAP-TP-T480")).stock == 13  # refused attempts changed nothing


async def test_customer_commands_in_private_still_work(shop: Harness) -> None:
    assert "no orders yet" in (await shop.send(BUYER, "/orders")).text


async def test_restock_corrections_and_back_in_stock(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(BUYER, "/start p_ACC-LOG-MXK")
    await shop.press(BUYER, card.button("Notify me"))
    assert "Refused" in await admin(shop, "/restock ACC-LOG-MXK -1")
    assert "ACC-LOG-MXK: 4 free" in await admin(shop, "/restock acc-log-mxk 4")
    assert "3 free" in await admin(shop, "/restock ACC-LOG-MXK -1")
    async with shop.session_factory() as session:
        msgs = (await session.execute(select(Outbox).where(Outbox.kind == "back_in_stock"))).scalars().all()
        assert len(msgs) == 1 and msgs[0].chat_id == BUYER and "back in stock" in msgs[0].text
        assert (await session.execute(select(StockWatch))).first() is None
    for bad in ("/restock", "/restock ACC-LOG-MXK", "/restock ACC-LOG-MXK many"):
        assert "Usage: /restock" in await admin(shop, bad)
    assert "No product with SKU NOPE" in await admin(shop, "/restock NOPE 1")


async def test_stock_report_flags_low_items(shop: Harness) -> None:
    await shop.load_demo()
    text = await admin(shop, "/stock workstations")
    assert "WS-DL-T5820</code>: 2 · 0 · 0 ⚠️" in text and "WS-LN-P330</code>: 5 · 0 · 0" in text
    assert "LAP-" not in text
    assert "No products match" in await admin(shop, "/stock gpus")


async def test_orders_and_order_detail(shop: Harness) -> None:
    order, _ = await paid_order(shop)
    listing = await admin(shop, "/orders")
    assert order.public_id in listing
    assert "No orders in state shipped" in await admin(shop, "/orders shipped")
    assert "Usage: /orders" in await admin(shop, "/orders paid")
    detail = await admin(shop, f"/order {order.public_id}")
    assert "+254712345678" in detail and "mpesa paid" in detail and "RLA123XYZ" in detail
    assert "awaiting_payment → processing (system:test)" in detail
    assert "No order HL-NOPE00" in await admin(shop, "/order HL-NOPE00")


async def test_ship_kenyan_and_dhl_then_delivered(shop: Harness) -> None:
    local, _ = await paid_order(shop, "kenya")
    intl, _ = await paid_order(shop, "intl", provider="stripe")
    assert "shipped with Wells Fargo" in await admin(shop, f"/ship {local.public_id} WF-889 Wells Fargo")
    assert "not a DHL Express waybill" in await admin(shop, f"/ship {intl.public_id} ABC123")
    assert "shipped with DHL" in await admin(shop, f"/ship {intl.public_id} 1234567890")
    assert "only processing" in await admin(shop, f"/ship {intl.public_id} 1234567890")
    assert "Usage: /ship" in await admin(shop, f"/ship {local.public_id}")
    assert "marked delivered" in await admin(shop, f"/delivered {local.public_id}")
    async with shop.session_factory() as session:
        o = await sm.get_order(session, intl.public_id)
        assert (o.state, o.carrier, o.tracking_number) == ("shipped", "DHL", "1234567890")
        assert o.tracking_next_check_at is not None
        shipped_msg = (await session.execute(select(Outbox).where(Outbox.chat_id == BUYER, Outbox.text.contains("1234567890")))).scalar_one()
        assert "tracking-id=1234567890" in shipped_msg.text
        actors = {e.actor for e in (await session.execute(select(OrderEvent).where(OrderEvent.to_state.in_(("shipped", "delivered"))))).scalars()}
    assert actors == {f"admin:{ADMIN_USER_ID}"}


async def test_cancel_unpaid_and_paid_mpesa(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "UNPAID-1", stock=5)
    unpaid = await make_order(shop.session_factory, BUYER, [(pid, 2)])
    assert "nothing was paid" in await admin(shop, f"/cancel {unpaid.public_id} customer asked")
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)
    order, pid2 = await paid_order(shop)
    text = await admin(shop, f"/cancel {order.public_id}")
    assert "must be reversed manually" in text and "RLA123XYZ" in text
    assert await stock_of(shop.session_factory, pid2) == (5, 0, 0)
    async with shop.session_factory() as session:
        o = await sm.get_order(session, order.public_id)
        p = (await session.execute(select(Payment).where(Payment.order_id == o.id))).unique().scalar_one()
        msg = (await session.execute(select(Outbox).where(Outbox.chat_id == BUYER, Outbox.text.contains("cancelled"),
                                                          Outbox.text.contains(o.public_id)))).scalar_one()
    assert (o.state, o.refund_status, p.state) == ("cancelled", "manual_reversal_owed", "refund_due")
    assert "reversed to your phone" in msg.text
    assert "can't be cancelled" in await admin(shop, f"/cancel {order.public_id}")


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


@pytest.mark.parametrize("fail", [False, True])
async def test_cancel_paid_card_order_refunds(engine, botapi, fail: bool) -> None:  # type: ignore[no-untyped-def]
    stripe = FakeStripe(fail=fail)
    shop = await Harness(engine, botapi, providers={"stripe": stripe}).start()
    order, _ = await paid_order(shop, "intl", provider="stripe")
    text = await admin(shop, f"/cancel {order.public_id}")
    async with shop.session_factory() as session:
        o = await sm.get_order(session, order.public_id)
        p = (await session.execute(select(Payment).where(Payment.order_id == o.id))).unique().scalar_one()
        alerts = (await session.execute(select(Outbox).where(Outbox.kind == "refund_failed"))).scalars().all()
    if fail:
        assert "FAILED" in text and (o.refund_status, p.state) == ("refund_pending", "refund_due") and len(alerts) == 1
    else:
        assert "refunded through Stripe" in text and stripe.refunded == ["pi_1"]
        assert (o.refund_status, p.state) == ("refunded", "refunded") and not alerts
    await shop.stop()


async def test_alert_buttons(shop: Harness) -> None:
    order, _ = await paid_order(shop)
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    view = await shop.press(ADMIN_USER_ID, f"adm:v:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "Payments" in view.text and order.public_id in view.text
    hint = await shop.press(ADMIN_USER_ID, f"adm:s:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    assert f"/ship {order.public_id}" in hint.text
    confirm = await shop.press(ADMIN_USER_ID, f"adm:c:{order.public_id}", chat_id=ADMIN_CHAT_ID, message=alert)
    await shop.press(STRANGER, confirm.button("Yes, cancel it"), chat_id=ADMIN_CHAT_ID, message=confirm)
    assert "⛔" in shop.last_answer.params["text"]
    done = await shop.press(ADMIN_USER_ID, confirm.button("Yes, cancel it"), chat_id=ADMIN_CHAT_ID, message=confirm)
    assert "cancelled" in done.text
