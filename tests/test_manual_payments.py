"""M-Pesa paid by hand: an admin's `/paid <order> <receipt> <amount>` in the admin group settles the order
through the state machine, once, and the customer gets their receipt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db.models import Order, Outbox, Payment, utcnow
from services import orders as sm
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness

USER, STRANGER = 8501, 8502
CODE = "RLA4B7C9XZ"


@pytest.fixture
async def paybill_shop(engine, botapi):  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, mpesa_manual_paybill="123456", mpesa_manual_account_prefix="HL").start()
    yield shop
    await shop.stop()


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID, chat: int = ADMIN_CHAT_ID) -> str:
    return (await shop.send(user, text, chat_id=chat)).text


async def offered(shop: Harness, sku: str = "MAN-1") -> Order:
    """An order the customer was shown the payment screen of (no way to pay online)."""
    pid = await make_product(shop.session_factory, sku, stock=3)
    order = await make_order(shop.session_factory, USER, [(pid, 1)])
    await shop.send(USER, "/start")
    await shop.press(USER, f"pay:o:{order.public_id}")
    return order


async def prompted(shop: Harness, order: Order, state: str, **fields: str) -> None:
    """An M-Pesa prompt for the order, in `state` (with Daraja's receipt number when it was paid)."""
    async with shop.session_factory() as session, session.begin():
        session.add(
            Payment(
                order_id=order.id,
                provider="mpesa",
                state=state,
                amount=order.total,
                currency="KES",
                phone=order.phone,
                checkout_request_id=f"ws_CO_{order.public_id}",
                **fields,
            )
        )


async def outbox(shop: Harness, kind: str, chat: int = USER) -> list[Outbox]:
    async with shop.session_factory() as session:
        rows = await session.execute(select(Outbox).where(Outbox.kind == kind, Outbox.chat_id == chat))
        return list(rows.scalars().all())


async def test_paid_settles_the_order_and_sends_the_customer_a_receipt(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    reply = await admin(shop, f"/paid {order.public_id.lower()} {CODE.lower()} Ksh1,300.00")
    assert reply == f"✅ {order.public_id} marked paid with M-Pesa {CODE}; the customer has their receipt."
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "processing"
        payment = (await session.execute(select(Payment))).unique().scalar_one()
    assert (payment.state, payment.receipt_number, payment.amount) == ("paid", CODE, order.total)
    [status] = await outbox(shop, "order_status")
    assert "Payment received for order" in status.text and f"M-Pesa receipt: <code>{CODE}</code>" in status.text
    assert "Amount: <b>KES 1,300</b>" in status.text and " EAT\n" in status.text
    assert "Delivery: Nairobi Metro (within 24 hours, local courier)" in status.text
    assert "Address: Plot 1, Ngong Rd, Nairobi" in status.text and "Phone: +254 712 345 678" in status.text
    [closed] = await outbox(shop, "pay_closed")
    assert closed.edit_message_id is not None and f"Order <b>{order.public_id}</b> is paid" in closed.text
    assert len(await outbox(shop, "new_order", ADMIN_CHAT_ID)) == 1  # with its Ship… button, as any paid order


async def test_paid_twice_is_one_payment_and_a_code_pays_one_order(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order, other = await offered(shop, "MAN-A"), await offered(shop, "MAN-B")
    await admin(shop, f"/paid {order.public_id} {CODE} 1300")
    again = await admin(shop, f"/paid {order.public_id} {CODE} 1300")
    assert again == f"{order.public_id} was already marked paid with M-Pesa {CODE}; nothing changed."
    reused = await admin(shop, f"/paid {other.public_id} {CODE} 1300")
    assert (
        reused == f"Receipt {CODE} already paid order {order.public_id}: one code pays one order. Nothing was recorded."
    )
    second = await admin(shop, f"/paid {order.public_id} QWE1234567 1300")
    assert second == f"Order {order.public_id} is paid, not waiting for payment. Nothing was recorded."
    async with shop.session_factory() as session:
        assert (await session.execute(select(func.count()).select_from(Payment))).scalar_one() == 1
    assert len(await outbox(shop, "order_status")) == 1


async def test_paid_checks_its_arguments(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    assert "Usage: /paid ORDER_ID RECEIPT_CODE AMOUNT" in await admin(shop, "/paid")
    assert "doesn't look like an M-Pesa receipt code" in await admin(shop, f"/paid {order.public_id} RLA-12 1300")
    assert "doesn't look like" in await admin(shop, f"/paid {order.public_id} <b>XYZ</b> 1300")
    assert "There's no order HL-NOSUCH" in await admin(shop, f"/paid HL-NOSUCH {CODE} 1300")
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "awaiting_payment"


async def test_only_admins_in_the_group_may_mark_paid(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    assert "⛔" in await admin(shop, f"/paid {order.public_id} {CODE} 1300", user=STRANGER)
    assert "⛔" in await admin(shop, f"/paid {order.public_id} {CODE} 1300", user=USER, chat=USER)  # the customer
    assert "⛔" in await admin(shop, f"/paid {order.public_id} {CODE} 1300", chat=ADMIN_USER_ID)  # admin, in private
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "awaiting_payment"


async def test_money_after_expiry_revives_the_order(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    async with shop.session_factory() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == order.id).values(reserved_until=utcnow() - timedelta(minutes=1))
        )
    assert await sm.expire_due_orders(shop.session_factory) == 1
    reply = await admin(shop, f"/paid {order.public_id} {CODE} 1300")
    assert reply.startswith(f"✅ {order.public_id} had lapsed; marked paid with M-Pesa {CODE}")
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "processing"
    pid = order.items[0].product_id
    assert await stock_of(shop.session_factory, pid) == (2, 0, 1)
    receipts = [o for o in await outbox(shop, "order_status") if "M-Pesa receipt" in o.text]
    assert len(receipts) == 1


async def test_the_amount_must_be_the_orders_total_in_shillings(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    short = await admin(shop, f"/paid {order.public_id} {CODE} 1,000")
    assert short == (
        f"Order {order.public_id} costs KES 1,300, but KES 1,000 was received. Nothing was recorded: "
        "ask the customer for the rest, or cancel the order and reverse the money."
    )
    assert "isn't an amount" in await admin(shop, f"/paid {order.public_id} {CODE} lots")
    pid = await make_product(shop.session_factory, "MAN-USD", stock=3)
    abroad = await make_order(shop.session_factory, USER, [(pid, 1)], zone="intl")
    assert "isn't priced in shillings" in await admin(shop, f"/paid {abroad.public_id} {CODE} 1300")
    async with shop.session_factory() as session:
        assert (await session.execute(select(func.count()).select_from(Payment))).scalar_one() == 0
        assert (await sm.get_order(session, order.public_id)).state == "awaiting_payment"


async def test_a_code_received_from_a_prompt_cannot_pay_another_order(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order, other = await offered(shop, "MAN-P"), await offered(shop, "MAN-Q")
    await prompted(shop, order, "paid", receipt_number=CODE)  # order paid by an STK prompt
    reused = await admin(shop, f"/paid {other.public_id} {CODE} 1300")
    assert (
        reused == f"Receipt {CODE} already paid order {order.public_id}: one code pays one order. Nothing was recorded."
    )
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, other.public_id)).state == "awaiting_payment"


async def test_a_refunded_order_is_not_paid_again_by_hand(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    await admin(shop, f"/paid {order.public_id} {CODE} 1300")
    assert "cancelled" in await admin(shop, f"/cancel {order.public_id} customer changed their mind")
    again = await admin(shop, f"/paid {order.public_id} QWE1234567 1300")
    assert again == f"Order {order.public_id} is cancelled, not waiting for payment. Nothing was recorded."
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "cancelled"
        assert (await session.execute(select(func.count()).select_from(Payment))).scalar_one() == 1


@pytest.mark.faults
async def test_paid_asks_telegram_afresh_whether_the_sender_is_still_an_admin(paybill_shop: Harness) -> None:
    shop, group_admin = paybill_shop, 5151
    order = await offered(shop)
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, group_admin)] = "administrator"
    assert "⛔" not in await admin(shop, "/stock", user=group_admin)  # an admin: cached for 5 minutes
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, group_admin)] = "member"  # demoted a moment later
    assert "⛔" in await admin(shop, f"/paid {order.public_id} {CODE} 1300", user=group_admin)
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "awaiting_payment"


async def test_not_while_an_mpesa_prompt_for_the_order_can_still_be_paid(paybill_shop: Harness) -> None:
    shop = paybill_shop
    order = await offered(shop)
    await prompted(shop, order, "pending")
    refused = await admin(shop, f"/paid {order.public_id} {CODE} 1300")
    assert refused.startswith(f"An M-Pesa prompt for order {order.public_id} is still open")
    async with shop.session_factory() as session:
        assert (await sm.get_order(session, order.public_id)).state == "awaiting_payment"
