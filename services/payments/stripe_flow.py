"""Card payments for orders through Stripe Checkout.

One open session per order at a time: asking again reuses the open link, and a replaced session is
expired at Stripe first (or settled, if it turns out it was paid), so a customer cannot pay twice
through us. Webhook events are stored once by event id and applied once by session id.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.models import Payment, utcnow
from services import orders as order_service
from services.payments import common
from services.payments.stripe import CheckoutSession, StripeFailure, StripeGateway

log = logging.getLogger(__name__)
PROVIDER = "stripe"
REUSE_MARGIN = timedelta(minutes=5)  # an open link that expires sooner than this is replaced
RECONCILE_GRACE = timedelta(minutes=2)

HANDLED = ("checkout.session.completed", "checkout.session.async_payment_succeeded",
           "checkout.session.async_payment_failed", "checkout.session.expired")


class BadEvent(ValueError):
    """Signed by Stripe but not shaped like a Checkout Session event: 400."""


async def start_card_payment(session_factory: async_sessionmaker[AsyncSession], gateway: StripeGateway,
                             order_id: str, customer_id: int, settings: Settings) -> Payment:
    """A payable link for the order: the open one if still good, otherwise a new session."""
    now = utcnow()
    async with session_factory() as session, session.begin():
        order = await _awaiting(session, order_id, customer_id)
        pending = await common.pending_attempts(session, order.id, PROVIDER)
    for old in pending:
        if old.checkout_url and old.expires_at and old.expires_at > now + REUSE_MARGIN:
            return old
        if old.stripe_session_id:
            await _supersede(session_factory, gateway, old, settings)
    async with session_factory() as session, session.begin():
        order = await _awaiting(session, order_id, customer_id)
        payment = await common.create_attempt(session, order, PROVIDER)
    try:
        checkout = await gateway.create_checkout(order, payment, now)
    except StripeFailure:
        async with session_factory() as session, session.begin():
            await session.execute(update(Payment).where(Payment.id == payment.id)
                                  .values(state=common.FAILED, result_code="api_error"))
        raise
    async with session_factory() as session, session.begin():
        await session.execute(update(Payment).where(Payment.id == payment.id).values(
            stripe_session_id=checkout.id, checkout_url=checkout.url, expires_at=checkout.expires_at,
            next_check_at=(checkout.expires_at or now) + RECONCILE_GRACE))
    payment.stripe_session_id, payment.checkout_url, payment.expires_at = checkout.id, checkout.url, checkout.expires_at
    log.info("stripe.session_created", extra={"order": order_id, "payment": payment.id})
    return payment


async def _awaiting(session: AsyncSession, order_id: str, customer_id: int):  # type: ignore[no-untyped-def]
    order = await order_service.get_order(session, order_id, customer_id=customer_id)
    if order.state != order_service.AWAITING_PAYMENT:
        raise common.PaymentNotAllowed("pay.error.not_awaiting", order=order.public_id,
                                       state=order.state.replace("_", " "))
    return order


async def _supersede(session_factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, old: Payment,
                     settings: Settings) -> None:
    """Close the old session at Stripe; if it was paid meanwhile, settle it instead."""
    try:
        closed = await gateway.expire(old.stripe_session_id or "")
    except StripeFailure:
        closed = await gateway.retrieve(old.stripe_session_id or "")
    if closed.payment_status == "paid":
        await apply_session(session_factory, old.id, closed, settings, raw={"superseded": closed.id})
        return
    async with session_factory() as session, session.begin():
        await session.execute(update(Payment).where(Payment.id == old.id, Payment.state == common.PENDING)
                              .values(state=common.SUPERSEDED))


async def apply_session(session_factory: async_sessionmaker[AsyncSession], payment_id: int,
                        checkout: CheckoutSession, settings: Settings, raw: dict[str, Any] | None) -> str:
    """Settle an attempt from what Stripe says its session is now."""
    async with session_factory() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return await _apply(session, payment, checkout, settings, raw)


async def _apply(session: AsyncSession, payment: Payment, checkout: CheckoutSession, settings: Settings,
                 raw: dict[str, Any] | None, *, failed: bool = False) -> str:
    if checkout.payment_intent and not payment.stripe_payment_intent:
        payment.stripe_payment_intent = checkout.payment_intent
    if checkout.payment_status == "paid":
        return await common.settle_paid(
            session, payment, amount=int(checkout.amount_total or 0), currency=checkout.currency or "",
            reference=checkout.payment_intent, raw=raw, actor="system:stripe", admin_chat_id=settings.admin_chat_id,
            low_stock_threshold=settings.low_stock_threshold)
    if failed or checkout.status == "expired":
        code = "async_failed" if failed else "expired"
        return await common.settle_failed(session, payment, code=code, desc=checkout.status, raw=raw,
                                          reason_key=f"stripe.reason.{code}")
    return "waiting"


def _session_of(event: dict[str, Any]) -> tuple[str, str, CheckoutSession, dict[str, Any]]:
    try:
        event_id, event_type = str(event["id"]), str(event["type"])
        obj = event["data"]["object"]
        if not isinstance(obj, dict) or not str(obj.get("id", "")).startswith("cs_"):
            raise KeyError("object")
    except (KeyError, TypeError):
        raise BadEvent("not a Checkout Session event") from None
    return event_id, event_type, CheckoutSession.from_api(obj), obj


async def handle_event(session_factory: async_sessionmaker[AsyncSession], event: dict[str, Any],
                       settings: Settings) -> str:
    """Apply one verified webhook event. Returns the outcome; raises BadEvent for odd shapes."""
    if str(event.get("type", "")) not in HANDLED:
        async with session_factory() as session, session.begin():
            await common.record_event(session, PROVIDER, str(event.get("id", "?")), str(event.get("type", "?")),
                                      None, status="ignored")
        return "ignored"
    event_id, event_type, checkout, obj = _session_of(event)
    async with session_factory() as session, session.begin():
        stored = await common.record_event(session, PROVIDER, event_id, event_type, event)
        if stored is None:
            return "duplicate"
        payment = (await session.execute(select(Payment).where(Payment.stripe_session_id == checkout.id))
                   ).unique().scalar_one_or_none()
        if payment is None:
            await common.record_anomaly(session, settings.admin_chat_id, provider=PROVIDER,
                                        event_id=f"unknown:{checkout.id}", event_type=event_type, payload=event,
                                        detail=f"{event_type} for unknown session {checkout.id} "
                                               f"(order ref {obj.get('client_reference_id')})")
            return "unknown"
        stored.payment_id = payment.id
        return await _apply(session, payment, checkout, settings, event,
                            failed=event_type.endswith("async_payment_failed"))


async def reconcile_due(session_factory: async_sessionmaker[AsyncSession], gateway: StripeGateway,
                        settings: Settings, now: datetime | None = None, batch: int = 50) -> int:
    """Sessions still pending past their expiry: ask Stripe how they ended (webhook lost)."""
    now = now or utcnow()
    settled = 0
    for payment_id in await common.claim_due_attempts(session_factory, PROVIDER, now, timedelta(minutes=5),
                                                      Payment.stripe_session_id.is_not(None), batch=batch):
        async with session_factory() as session:
            session_id = (await session.get(Payment, payment_id)).stripe_session_id  # type: ignore[union-attr]
        try:
            checkout = await gateway.retrieve(session_id or "")
            if checkout.status == "open":
                checkout = await gateway.expire(session_id or "")
        except StripeFailure:
            continue
        outcome = await apply_session(session_factory, payment_id, checkout, settings, raw={"reconciled": checkout.id})
        settled += outcome not in ("waiting", "duplicate")
    return settled
