"""What the admins do from their group: restock, inspect, ship, deliver, cancel (with refunds).
Every order change goes through the state machine with actor "admin:<id>"."""
from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Category, Order, Payment, Product, utcnow
from services import catalog
from services import orders as sm
from services.errors import DomainError, InvalidInput, NotFound
from services.i18n import t
from services.notifications import alert_admins, enqueue, inline_keyboard
from services.zones import get_zone

log = logging.getLogger(__name__)
DHL_WAYBILL = re.compile(r"^\d{10}$")


async def restock(session: AsyncSession, sku: str, qty: int, actor: str) -> tuple[Product, int]:
    """Add (or, negative, correct) free stock; never below zero — reserved units are not touched.
    Returns the product and how many "Notify me" customers were told it is back."""
    product = (await session.execute(select(Product).where(func.upper(Product.sku) == sku.upper()))
               ).unique().scalar_one_or_none()
    if product is None:
        raise NotFound("admin.unknown_sku", sku=sku)
    before = product.stock
    result = await session.execute(
        update(Product).where(Product.id == product.id, Product.stock + qty >= 0)
        .values(stock=Product.stock + qty).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise InvalidInput("admin.restock.below_zero", sku=product.sku, free=before, reserved=product.reserved)
    await session.refresh(product)
    told = 0
    if before <= 0 < product.stock and product.active:
        for customer in await catalog.take_watchers(session, product.id):
            if not customer.unreachable:
                enqueue(session, customer.chat_id, t("catalog.back_in_stock", customer.language, name=product.name,
                                                     sku=product.sku),
                        kind="back_in_stock", reply_markup=inline_keyboard([[(t("catalog.open_product", customer.language),
                                                                              f"cat:v:{product.id}:1")]]))
                told += 1
    log.info("admin.restock", extra={"actor": actor, "sku": product.sku, "qty": qty, "stock": product.stock})
    return product, told


async def stock_report(session: AsyncSession, query: str | None) -> list[Product]:
    stmt = select(Product).join(Category).order_by(Category.position, Product.sku)
    if query:
        stmt = stmt.where(or_(func.upper(Product.sku) == query.upper(), func.lower(Category.name).contains(query.lower())))
    return list((await session.execute(stmt)).unique().scalars().all())


async def ship(session: AsyncSession, public_id: str, tracking: str, carrier: str | None, actor: str) -> Order:
    order = await find_order(session, public_id)
    if order.state != sm.PROCESSING:
        raise DomainError("admin.ship.not_processing", order=order.public_id, state=order.state)
    zone = get_zone(order.zone)
    if zone.tracked:
        if not DHL_WAYBILL.match(tracking):
            raise InvalidInput("admin.ship.bad_waybill", tracking=tracking)
        order.carrier, order.tracking_next_check_at = "DHL", utcnow()
    else:
        order.carrier = carrier or zone.carrier
    order.tracking_number, order.shipped_at = tracking, utcnow()
    await sm.transition(session, order, sm.SHIPPED, actor, f"{order.carrier} {tracking}")
    return order


async def mark_delivered(session: AsyncSession, public_id: str, actor: str) -> Order:
    order = await find_order(session, public_id)
    await sm.transition(session, order, sm.DELIVERED, actor, "confirmed by admin")
    return order


async def cancel(session: AsyncSession, public_id: str, reason: str | None, actor: str, providers: dict[str, Any],
                 settings: Settings) -> tuple[Order, str, Payment | None]:
    """Cancel an unpaid or paid (not yet shipped) order. Returns (order, refund outcome, payment):
    refund outcome is none | refunded | refund_pending | manual_reversal_owed."""
    order = await find_order(session, public_id)
    if not sm.can_transition(order.state, sm.CANCELLED) or order.state in (sm.EXPIRED, sm.CANCELLED):
        raise DomainError("admin.cancel.not_allowed", order=order.public_id, state=order.state)
    paid = (await session.execute(select(Payment).where(Payment.order_id == order.id, Payment.state == "paid")
                                  .order_by(Payment.id))).unique().scalars().first()
    outcome = "none"
    if paid is not None and paid.provider == "stripe":
        outcome = await _refund_card(session, paid, providers, settings)
    elif paid is not None:
        paid.state, outcome = "refund_due", "manual_reversal_owed"
    order.refund_status = outcome
    await sm.transition(session, order, sm.CANCELLED, actor, reason or "cancelled by admin")
    return order, outcome, paid


async def _refund_card(session: AsyncSession, payment: Payment, providers: dict[str, Any], settings: Settings) -> str:
    gateway = providers.get("stripe")
    try:
        if gateway is None:
            raise RuntimeError("Stripe is not configured")
        refund_id = await gateway.refund(payment)
    except Exception as exc:  # noqa: BLE001 - any failure leaves a refund to chase, loudly
        payment.state = "refund_due"
        alert_admins(session, settings.admin_chat_id,
                     t("admin.alert.refund_failed", None, order=payment.order.public_id, error=str(exc)[:200]),
                     kind="refund_failed")
        log.error("admin.refund_failed", extra={"payment": payment.id, "error": type(exc).__name__})
        return "refund_pending"
    payment.state, payment.result_desc = "refunded", f"refund {refund_id}"
    return "refunded"


async def order_payments(session: AsyncSession, order_id: int) -> list[Payment]:
    return list((await session.execute(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id))
                 ).unique().scalars().all())


async def find_order(session: AsyncSession, public_id: str) -> Order:
    try:
        return await sm.get_order(session, public_id)
    except NotFound:
        raise NotFound("admin.order_not_found", order=public_id.upper()) from None
