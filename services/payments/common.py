"""Settlement logic shared by M-Pesa and Stripe: the only code that turns money into order progress.

Rules it keeps:
- a payment row moves to `paid` once, with a compare-and-set, so duplicate or concurrent callbacks
  settle once, move the order once and notify once;
- amounts and currencies are checked against the attempt before anything moves;
- anomalies (unknown attempt, mismatch, late payment, double payment) are stored as webhook events and
  posted to the admin group; none vanishes and none advances an order wrongly.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Customer, Order, Payment, Product, WebhookEvent, utcnow
from db.session import execute_dml
from services import buttons, metrics
from services import orders as order_sm
from services.errors import DomainError, OutOfStock
from services.i18n import t
from services.markup import Markup, cut
from services.money import format_money
from services.notifications import alert_admins, enqueue, inline_keyboard

log = logging.getLogger(__name__)

PENDING, PAID, FAILED, SUPERSEDED, EXPIRED = "pending", "paid", "failed", "superseded", "expired"
REFUND_DUE, REFUNDED, MISMATCH = "refund_due", "refunded", "mismatch"
# A *proven* success may still settle these (settle_paid): a signed Stripe event, or Daraja's STK
# query answering ResultCode 0 (the attempt may have timed out here meanwhile). An M-Pesa callback
# proves nothing: mpesa_flow only queries on behalf of a callback for a PENDING attempt and reports a
# success callback for a finished one as an anomaly (never revived by the callback alone).
UNSETTLED = (PENDING, FAILED, SUPERSEDED, EXPIRED)


class PaymentNotAllowed(DomainError):
    key = "pay.error.paid"


PAID_STATES = frozenset(order_sm.STATES) - {order_sm.AWAITING_PAYMENT, order_sm.CANCELLED, order_sm.EXPIRED}


def state_group(state: str) -> str:
    """cancelled | expired | paid: what a customer is told about an order that awaits no payment."""
    return "paid" if state in PAID_STATES else state


def not_payable(order_id: str, state: str) -> PaymentNotAllowed:
    """The refusal of a payment for an order in `state` (not awaiting payment), as a person says it."""
    return PaymentNotAllowed(f"pay.error.{state_group(state)}", order=order_id)


async def record_event(
    session: AsyncSession,
    provider: str,
    event_id: str,
    event_type: str,
    payload: dict[str, Any] | None,
    *,
    status: str = "processed",
    detail: str | None = None,
    payment_id: int | None = None,
) -> WebhookEvent | None:
    """Store a provider event once. Returns None when this event id was already stored (a duplicate),
    so the caller can answer 2xx without acting again. Uses a savepoint so the caller's transaction
    survives the unique-key collision."""
    row = WebhookEvent(
        provider=provider,
        event_id=event_id[:128],
        event_type=event_type[:64],
        status=status,
        detail=detail,
        payload=payload,
        payment_id=payment_id,
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        return None
    return row


async def record_anomaly(
    session: AsyncSession,
    admin_chat_id: int | None,
    *,
    provider: str,
    event_id: str,
    event_type: str,
    detail: str,
    payload: dict[str, Any] | None,
    payment: Payment | None = None,
) -> None:
    """Keep an anomaly and tell the admins. Stored under its own id so a duplicate stays one row."""
    stored = await record_event(
        session,
        provider,
        f"anomaly:{event_id}",
        event_type,
        payload,
        status="anomaly",
        detail=detail,
        payment_id=payment.id if payment else None,
    )
    log.warning("payment.anomaly", extra={"provider": provider, "event": event_id, "detail": detail})
    if stored is not None:
        order_ref = payment.order.public_id if payment is not None else "-"
        alert_admins(
            session,
            admin_chat_id,
            t("admin.alert.payment_anomaly", None, provider=provider, order=order_ref, detail=detail),
            kind="payment_anomaly",
        )


async def create_attempt(session: AsyncSession, order: Order, provider: str, **fields: Any) -> Payment:
    """A new pending attempt for an order that is awaiting payment, in the caller's transaction."""
    if order.state != order_sm.AWAITING_PAYMENT:
        raise not_payable(order.public_id, order.state)
    payment = Payment(
        order_id=order.id, provider=provider, state=PENDING, amount=order.total, currency=order.currency, **fields
    )
    session.add(payment)
    await session.flush()
    return payment


async def pending_attempts(session: AsyncSession, order_id: int, provider: str | None = None) -> list[Payment]:
    stmt = select(Payment).where(Payment.order_id == order_id, Payment.state == PENDING)
    if provider:
        stmt = stmt.where(Payment.provider == provider)
    return list((await session.execute(stmt.order_by(Payment.id))).unique().scalars().all())


@metrics.counts_payment_outcome
async def settle_paid(
    session: AsyncSession,
    payment: Payment,
    *,
    amount: int,
    currency: str,
    reference: str | None,
    raw: dict[str, Any] | None,
    actor: str,
    admin_chat_id: int | None,
    low_stock_threshold: int = 3,
    zone: tzinfo | None = None,
) -> str:
    """Apply a confirmed payment. Returns what happened: paid | late_paid | duplicate | mismatch |
    refund_due. The caller commits. The customer's paid message is the receipt (its time in `zone`).

    The order's row is locked before the payment's is written: every path that touches both (cancel,
    expiry, link replacement) takes them in that order, so none can deadlock with a settlement."""
    order = await order_sm.get_order(session, payment.order.public_id, for_update=True)
    if amount != payment.amount or currency.upper() != payment.currency:
        detail = (
            f"amount mismatch: expected {format_money(payment.amount, payment.currency)}, "
            f"got {amount} {currency.upper()} (minor units)"
        )
        await session.execute(
            update(Payment)
            .where(Payment.id == payment.id, Payment.state.in_(UNSETTLED))
            .values(state=MISMATCH, raw_callback=raw, receipt_number=reference, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        await record_anomaly(
            session,
            admin_chat_id,
            provider=payment.provider,
            event_id=f"mismatch:{payment.id}",
            event_type="amount_mismatch",
            detail=detail,
            payload=raw,
            payment=payment,
        )
        return MISMATCH
    claimed = await execute_dml(
        session,
        update(Payment)
        .where(Payment.id == payment.id, Payment.state.in_(UNSETTLED))
        .values(state=PAID, receipt_number=reference, raw_callback=raw, result_code="0", updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if claimed.rowcount != 1:
        return "duplicate"
    payment.state = PAID
    receipt = order_sm.StatusDetails(paid_with=payment.provider, receipt=reference, zone=zone)
    if order.state == order_sm.AWAITING_PAYMENT:
        await order_sm.transition(
            session,
            order,
            order_sm.PROCESSING,
            actor,
            f"paid via {payment.provider} {reference or ''}".strip(),
            details=receipt,
        )
        await _announce_paid_order(session, order, payment, admin_chat_id, low_stock_threshold)
        return PAID
    if order.state in (order_sm.EXPIRED, order_sm.CANCELLED):
        return await _late_payment(session, order, payment, actor, admin_chat_id, low_stock_threshold, receipt)
    # Already paid through another attempt: this is a second charge.
    await _mark_refund_due(
        session, payment, admin_chat_id, raw, f"second payment for order {order.public_id} (already {order.state})"
    )
    return REFUND_DUE


async def _late_payment(
    session: AsyncSession,
    order: Order,
    payment: Payment,
    actor: str,
    admin_chat_id: int | None,
    low_stock_threshold: int,
    receipt: order_sm.StatusDetails,
) -> str:
    was = order.state
    try:
        async with session.begin_nested():
            await order_sm.transition(
                session,
                order,
                order_sm.PROCESSING,
                actor,
                f"late payment via {payment.provider}; stock re-reserved",
                details=receipt,
            )
    except OutOfStock:
        await session.refresh(order)
        await _mark_refund_due(
            session,
            payment,
            admin_chat_id,
            payment.raw_callback,
            f"payment arrived after order {order.public_id} was {was}; stock is gone",
        )
        return REFUND_DUE
    await record_anomaly(
        session,
        admin_chat_id,
        provider=payment.provider,
        event_id=f"late:{payment.id}",
        event_type="late_payment",
        payload=payment.raw_callback,
        payment=payment,
        detail=f"payment arrived after order {order.public_id} was {was}; stock re-reserved, order proceeds",
    )
    await _announce_paid_order(session, order, payment, admin_chat_id, low_stock_threshold)
    return "late_paid"


async def _mark_refund_due(
    session: AsyncSession, payment: Payment, admin_chat_id: int | None, raw: dict[str, Any] | None, detail: str
) -> None:
    await session.execute(
        update(Payment)
        .where(Payment.id == payment.id)
        .values(state=REFUND_DUE, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    payment.state = REFUND_DUE
    await record_anomaly(
        session,
        admin_chat_id,
        provider=payment.provider,
        event_id=f"refund_due:{payment.id}",
        event_type="refund_due",
        detail=detail + " — refund owed",
        payload=raw,
        payment=payment,
    )


async def _announce_paid_order(
    session: AsyncSession, order: Order, payment: Payment, admin_chat_id: int | None, low_stock_threshold: int
) -> None:
    """The admin group hears of every paid order (with action buttons) and of stock running low."""
    customer = await session.get(Customer, order.customer_id)
    items = Markup("\n").join(t("admin.alert.new_order_item", None, qty=i.quantity, name=i.name) for i in order.items)
    alert_admins(
        session,
        admin_chat_id,
        t(
            "admin.alert.new_order",
            None,
            order=order.public_id,
            total=format_money(order.total, order.currency),
            provider=payment.provider,
            items=items,
            zone=order.zone,
            customer=cut(customer.first_name, 64) if customer else str(order.customer_id),
        ),
        kind="new_order",
        dedup_key=f"new_order:{order.id}",
        # The callback data handlers.admin.AdminButton packs and parses ("adm:<action>:<ORDER_ID>").
        reply_markup=inline_keyboard(
            [
                [
                    ("View", f"adm:v:{order.public_id}"),
                    ("Ship…", f"adm:s:{order.public_id}"),
                    ("Cancel…", f"adm:c:{order.public_id}"),
                ]
            ]
        ),
    )
    ids = [i.product_id for i in order.items]
    low = (
        (await session.execute(select(Product).where(Product.id.in_(ids), Product.stock < low_stock_threshold)))
        .unique()
        .scalars()
        .all()
    )
    for product in low:
        alert_admins(
            session,
            admin_chat_id,
            t("admin.alert.low_stock", None, sku=product.sku, name=product.name, stock=product.stock),
            kind="low_stock",
        )


@metrics.counts_payment_outcome
async def settle_failed(
    session: AsyncSession,
    payment: Payment,
    *,
    code: str,
    desc: str | None,
    reason_key: str,
    raw: dict[str, Any] | None,
    state: str = FAILED,
) -> str:
    """A failed attempt (cancelled on the phone, wrong PIN, …; `state` EXPIRED for a lapsed link).
    Returns `state` | duplicate. The customer is told why, with a Try again button, while the order
    can still be paid."""
    claimed = await execute_dml(
        session,
        update(Payment)
        .where(Payment.id == payment.id, Payment.state == PENDING)
        .values(
            state=state, result_code=str(code), result_desc=(desc or "")[:500], raw_callback=raw, updated_at=utcnow()
        )
        .execution_options(synchronize_session=False),
    )
    if claimed.rowcount != 1:
        return "duplicate"
    payment.state = state
    order = payment.order
    await session.refresh(order, ["state"])
    customer = await session.get(Customer, order.customer_id)
    if order.state == order_sm.AWAITING_PAYMENT and customer is not None and not customer.unreachable:
        lang = customer.language
        enqueue(
            session,
            customer.chat_id,
            t("pay.failed", lang, order=order.public_id, reason=t(reason_key, lang)),
            kind="payment_failed",
            dedup_key=f"payment_failed:{payment.id}",
            reply_markup=inline_keyboard(_try_again(payment, order.public_id, lang)),
        )
    return state


def _try_again(payment: Payment, public_id: str, lang: str) -> list[list[tuple[str, str]]]:
    """After a failed M-Pesa prompt: prompt the same number again at once, or another number;
    after a card failure: the payment methods again."""
    if payment.provider == "mpesa":
        return [
            [(t("pay.button.try_again", lang), buttons.retry_mpesa(public_id))],
            [(t("mpesa.button.other_number", lang), buttons.other_mpesa_number(public_id))],
        ]
    return [[(t("pay.button.try_again", lang), buttons.offer_payment(public_id))]]


async def claim_due_attempts(
    session_factory: async_sessionmaker[AsyncSession],
    provider: str,
    now: datetime,
    hold: timedelta,
    *conditions: Any,
    batch: int = 50,
) -> list[int]:
    """Pending attempts of `provider` whose next check is due, each claimed by moving its next check
    forward with a compare-and-set, so two workers never check the same attempt in one cycle."""
    async with session_factory() as session:
        due = (
            await session.execute(
                select(Payment.id, Payment.next_check_at)
                .where(
                    Payment.provider == provider, Payment.state == PENDING, Payment.next_check_at <= now, *conditions
                )
                .order_by(Payment.next_check_at)
                .limit(batch)
            )
        ).all()
    claimed: list[int] = []
    for payment_id, next_check in due:
        async with session_factory() as session, session.begin():
            result = await execute_dml(
                session,
                update(Payment)
                .where(Payment.id == payment_id, Payment.next_check_at == next_check)
                .values(next_check_at=now + hold)
                .execution_options(synchronize_session=False),
            )
        if result.rowcount == 1:
            claimed.append(payment_id)
    return claimed


async def expire_pending_attempts(session: AsyncSession, order: Order) -> None:
    """Called when an unpaid order expires. Pending attempts stay pending on purpose: a late success
    is still settled (as a late payment) by the callback or the reconciliation job."""
    return None
