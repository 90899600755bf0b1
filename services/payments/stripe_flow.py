"""Card payments for orders through Stripe Checkout.

One open session per order at a time: asking again reuses the open link, and a replaced session is
expired at Stripe first (or settled, if it turns out it was paid), so a customer cannot pay twice
through us. No link outlives its order either: a cancel (`close_links`) and the reservation expiry
(`close_lapsed_links`) expire the order's open sessions at Stripe first. Webhook events are stored
once by event id and applied once by session id.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.models import Order, Payment, utcnow
from db.session import execute_dml
from services import metrics
from services import orders as order_service
from services.errors import DomainError
from services.payments import common
from services.payments.stripe import CheckoutSession, StripeFailure, StripeGateway

log = logging.getLogger(__name__)
PROVIDER = "stripe"
REUSE_MARGIN = timedelta(minutes=5)  # an open link that expires sooner than this is replaced
RECONCILE_GRACE = timedelta(minutes=2)
IN_FLIGHT = timedelta(seconds=30)  # an attempt without a session younger than this is still being created

HANDLED = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
)


class BadEvent(ValueError):
    """Signed by Stripe but not shaped like a Checkout Session event: 400."""


class LinkInProgress(DomainError):
    """Another press is creating this order's link right now; it will appear in the chat."""

    key = "stripe.in_progress"


class PaymentProcessing(DomainError):
    """The previous session completed with a delayed method (bank debit): its outcome is pending,
    so a second link would risk a double charge."""

    key = "stripe.processing"


async def start_card_payment(
    session_factory: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    order_id: str,
    customer_id: int,
    settings: Settings,
    return_url: str | None = None,
) -> Payment:
    """A payable link for the order: the open one if still good, otherwise a new session.

    One payable link per order, on SQLite as on PostgreSQL: each pass first claims the order with a
    compare-and-set write (held to commit), so two presses, a cancel or an expiry are serialised
    before anyone reads the attempts; the attempt row is written before Stripe is called, only when
    no other attempt is pending; and its session is stored only if the attempt is still pending
    (a cancel or expiry may have closed it meanwhile: the new session is then expired at once)."""
    now = utcnow()
    for _ in range(3):
        async with session_factory() as session, session.begin():
            order = await _awaiting(session, order_id, customer_id)
            pending = await _pending(session, order.id)
            reusable = await _pick_pending(session, pending, now)
            if reusable is not None:
                return reusable
            stale = [p for p in pending if p.stripe_session_id and p.state == common.PENDING]
            if not stale:
                payment = await common.create_attempt(session, order, PROVIDER)
                break
        for old in stale:
            await _supersede(session_factory, gateway, old, settings)
    else:
        raise LinkInProgress(order=order_id)
    try:
        checkout = await gateway.create_checkout(order, payment, now, return_url=return_url)
    except StripeFailure:
        async with session_factory() as session, session.begin():
            await session.execute(
                update(Payment)
                .where(Payment.id == payment.id, Payment.state == common.PENDING)
                .values(state=common.FAILED, result_code="api_error")
            )
        metrics.PAYMENTS.labels("stripe", "refused").inc()
        raise
    await _store_session(session_factory, gateway, order.public_id, payment, checkout, now)
    payment.stripe_session_id, payment.checkout_url, payment.expires_at = checkout.id, checkout.url, checkout.expires_at
    log.info("stripe.session_created", extra={"order": order_id, "payment": payment.id})
    return payment


async def _store_session(
    session_factory: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    order_id: str,
    payment: Payment,
    checkout: CheckoutSession,
    now: datetime,
) -> None:
    """Keep the new session on its attempt if the order is still awaiting payment and the attempt
    still pending (compare-and-sets: the order's first, which holds its row until commit, so an
    expiry or cancel committing meanwhile is seen — a plain EXISTS would read PostgreSQL's snapshot).
    If either ended meanwhile (an expired order keeps its attempts pending), nobody has seen the
    link: it is expired at Stripe and the customer is told why; its id is kept so a late event
    still finds it."""
    async with session_factory() as session, session.begin():
        held = await execute_dml(
            session,
            update(Order)
            .where(Order.id == payment.order_id, Order.state == order_service.AWAITING_PAYMENT)
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False),
        )
        stored = (
            held.rowcount == 1
            and (
                await execute_dml(
                    session,
                    update(Payment)
                    .where(Payment.id == payment.id, Payment.state == common.PENDING)
                    .values(
                        stripe_session_id=checkout.id,
                        checkout_url=checkout.url,
                        expires_at=checkout.expires_at,
                        next_check_at=(checkout.expires_at or now) + RECONCILE_GRACE,
                    )
                    .execution_options(synchronize_session=False),
                )
            ).rowcount
            == 1
        )
        if stored:
            return
        await session.execute(
            update(Payment)
            .where(Payment.id == payment.id, Payment.stripe_session_id.is_(None))
            .values(stripe_session_id=checkout.id)
            .execution_options(synchronize_session=False)
        )
        state = (await session.execute(select(Order.state).where(Order.id == payment.order_id))).scalar_one()
    log.warning("stripe.session_unwanted", extra={"payment": payment.id, "order_state": state})
    try:
        await gateway.expire(checkout.id)
    except StripeFailure:
        log.warning("stripe.unwanted_session_left_open", extra={"payment": payment.id})
    if state != order_service.AWAITING_PAYMENT:
        raise common.not_payable(order_id, state)
    raise StripeFailure("the attempt was closed while its session was being created")


async def _pending(session: AsyncSession, order_id: int, *, lock: bool = False) -> list[Payment]:
    """The order's pending card attempts, re-read (not the session's cached copies): another
    transaction may have just stored a session id or closed one. With `lock`, their rows are held
    too (PostgreSQL), so a webhook settling one waits for us rather than deadlocking with our claim."""
    stmt = (
        select(Payment)
        .where(Payment.order_id == order_id, Payment.provider == PROVIDER, Payment.state == common.PENDING)
        .order_by(Payment.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update(of=Payment)
    return list((await session.execute(stmt)).unique().scalars().all())


async def _pick_pending(session: AsyncSession, pending: list[Payment], now: datetime) -> Payment | None:
    """Among pending attempts: the open link to reuse (returned), one still being created (raises
    LinkInProgress), orphans of a crash between create and store (retired with a compare-and-set:
    nobody ever got their link, and a late event for them is adopted via metadata); the rest are
    left to supersede. The caller holds the order's claim."""
    for old in pending:
        if old.stripe_session_id is None:
            if now - old.created_at < IN_FLIGHT:
                raise LinkInProgress(order=old.order.public_id)
            await _retire_orphan(session, old, common.SUPERSEDED, "orphan")
        elif old.checkout_url and old.expires_at and old.expires_at > now + REUSE_MARGIN:
            return old
    return None


async def _retire_orphan(session: AsyncSession, payment: Payment, state: str, code: str) -> bool:
    """pending → `state` for an attempt that never stored a session, only if it still has none."""
    retired = await execute_dml(
        session,
        update(Payment)
        .where(Payment.id == payment.id, Payment.state == common.PENDING, Payment.stripe_session_id.is_(None))
        .values(state=state, result_code=code, updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if retired.rowcount == 1:
        payment.state = state
        return True
    await session.refresh(payment)
    return False


async def _awaiting(session: AsyncSession, order_id: str, customer_id: int) -> Order:
    """The customer's order, claimed by a compare-and-set write (the row lock on PostgreSQL, the
    write lock on SQLite, until commit), if it is still awaiting payment and its reservation has not
    run out: the expiry job would otherwise expire it (closing the link) while the customer pays."""
    order = await order_service.get_order(session, order_id, customer_id=customer_id)
    if order.state == order_service.AWAITING_PAYMENT and await _claim(session, order):
        if order.reserved_until > utcnow():
            return order
        raise common.PaymentNotAllowed("pay.error.reservation_ran_out", order=order.public_id)
    raise common.not_payable(order.public_id, order.state)


async def _claim(session: AsyncSession, order: Order) -> bool:
    """Hold the order in the state we read it in (a no-op compare-and-set write); False (and the
    order refreshed) when it moved meanwhile."""
    claimed = await execute_dml(
        session,
        update(Order)
        .where(Order.id == order.id, Order.state == order.state)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if claimed.rowcount == 1:
        return True
    await session.refresh(order)
    return False


async def _supersede(
    session_factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, old: Payment, settings: Settings
) -> None:
    """Close the old session at Stripe; if it was paid meanwhile, settle it instead. Raises when the
    old session cannot be shown closed (it stays pending; the customer may try again)."""
    closed = await _close_at_stripe(gateway, old.stripe_session_id or "")
    if closed.payment_status == "paid":
        await apply_session(session_factory, old.id, closed, settings, raw={"superseded": closed.id})
        return
    _require_closed(closed, old)
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Payment).where(Payment.id == old.id, Payment.state == common.PENDING).values(state=common.SUPERSEDED)
        )


async def _close_at_stripe(gateway: StripeGateway | None, session_id: str) -> CheckoutSession:
    """Expire the session at Stripe; Stripe refuses one that is no longer open, and then how it
    ended is looked up. Raises StripeFailure when Stripe cannot tell us either way."""
    if gateway is None:
        raise StripeFailure("Stripe is not configured")
    try:
        return await gateway.expire(session_id)
    except StripeFailure:
        return await gateway.retrieve(session_id)


def _lapsed(payment: Payment, now: datetime) -> bool:
    """Past its session's own expiry (and a grace for clock skew): Stripe no longer takes payment on
    it. How it ended is the reconciliation job's to find out."""
    return payment.expires_at is not None and payment.expires_at <= now - RECONCILE_GRACE


def _require_closed(checkout: CheckoutSession, payment: Payment) -> None:
    """An unpaid session is closed only once Stripe says it expired: `complete` but unpaid is a
    delayed method (bank debit) whose outcome is pending, anything else may still be paid."""
    if checkout.status == "complete":
        raise PaymentProcessing(order=payment.order.public_id)
    if checkout.status != "expired":
        raise StripeFailure(f"session {checkout.id} is still {checkout.status}")


async def _record_closed(
    session: AsyncSession, payment: Payment, checkout: CheckoutSession, settings: Settings, why: str
) -> str:
    """Write what closing found, in the caller's transaction: paid → settled like any payment (an
    order still awaiting payment moves on; the caller decides what then); expired → the attempt is
    closed quietly (the order's own message follows), with a compare-and-set."""
    if checkout.payment_status == "paid":
        return await _apply(session, payment, checkout, settings, raw={"closed": checkout.id, "why": why})
    closed = await execute_dml(
        session,
        update(Payment)
        .where(Payment.id == payment.id, Payment.state == common.PENDING)
        .values(state=common.EXPIRED, result_code="closed", result_desc=why, updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if closed.rowcount != 1:
        return "duplicate"  # its expiry event (or the reconciliation) got there first
    payment.state = common.EXPIRED
    return "closed"


async def close_links(
    session: AsyncSession, gateway: StripeGateway | None, order: Order, settings: Settings, why: str
) -> None:
    """Before an order ends (cancelled): no card link of it may stay payable. Every open session is
    expired at Stripe first, from a plain read and before the caller's transaction writes anything, so
    no lock (on SQLite: the whole database's write lock) is held while Stripe answers; expiring a
    link of an order that then stays unpaid is harmless (the customer asks for a new one). Then, in
    the caller's transaction, the order is claimed (held until commit, so no new link can start), its
    pending attempts are re-read under lock, and the outcomes are written: a session found paid is
    settled (the order moves on as paid, and the caller's refund path sees it), the rest closed. An
    attempt still creating its session is closed too; its creator then expires the new session
    (`_store_session`). A session stored between the calls and the claim refuses the cancel (try again).

    Raises StripeFailure when Stripe cannot be reached (or is not configured) and a session may
    still be open, PaymentProcessing for a delayed payment in progress, PaymentNotAllowed when the
    order moved meanwhile. The caller then refuses the cancel and rolls back."""
    pending = await _pending(session, order.id)
    if gateway is None:  # Stripe no longer configured: only sessions past their own expiry count as closed
        pending = [p for p in pending if not _lapsed(p, utcnow())]
    found = [(p, await _close_at_stripe(gateway, p.stripe_session_id)) for p in pending if p.stripe_session_id]
    for payment, checkout in found:
        if checkout.payment_status != "paid":
            _require_closed(checkout, payment)
    if not await _claim(session, order):
        raise common.not_payable(order.public_id, order.state)
    locked = await _pending(session, order.id, lock=True)
    for payment in [p for p in locked if p.stripe_session_id is None]:
        if not await _retire_orphan(session, payment, common.EXPIRED, "closed"):
            locked = await _pending(session, order.id, lock=True)  # its session was stored just now
    seen = {p.id for p, _ in found}
    if gateway is not None and any(p.stripe_session_id and p.id not in seen for p in locked):
        raise StripeFailure(f"a card link of order {order.public_id} was created meanwhile")
    for payment, checkout in found:
        outcome = await _record_closed(session, payment, checkout, settings, why)
        log.info("stripe.link_closed", extra={"order": order.public_id, "payment": payment.id, "outcome": outcome})


async def cancel_unpaid(
    session: AsyncSession, gateway: StripeGateway | None, order: Order, settings: Settings, actor: str
) -> str:
    """The customer's cancel of their unpaid order, one unit of work. Returns:
    - "prompt_open": refused, an M-Pesa prompt for the order may still be paid (a reservation is not
      released while it can be); asked before the card links are closed, so those stay open, and
      again with the order claimed, so a prompt sent meanwhile is seen (what closing the card links
      found is committed then);
    - "moved": a card payment was found paid while its links were closed (committed; the order moved on);
    - "cancelled": committed.
    When the card links cannot all be closed (`close_links`: StripeFailure, a DomainError), nothing
    is written, the transaction is rolled back and the exception raised."""
    if await order_service.mpesa_prompt_open(session, order):
        return "prompt_open"
    try:  # no card link may outlive its order: closed at Stripe first, or the cancel waits
        await close_links(session, gateway, order, settings, "order cancelled by the customer")
    except (DomainError, StripeFailure):
        await session.rollback()
        raise
    if order.state != order_service.AWAITING_PAYMENT:
        outcome = "moved"
    elif await order_service.mpesa_prompt_open(session, order):
        outcome = "prompt_open"
    else:
        await order_service.transition(
            session, order, order_service.CANCELLED, actor, "cancelled by the customer before paying"
        )
        outcome = "cancelled"
    await session.commit()
    return outcome


async def close_lapsed_links(
    session_factory: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    settings: Settings,
    now: datetime | None = None,
    batch: int = 50,
) -> int:
    """Before the reservation-expiry job releases stock: expire at Stripe the open sessions of
    orders whose reservation ran out, so none can be paid after its order expired (a session lives
    at least 30 minutes, often past the reservation). Claim (read), call out, write (compare-and-set):
    no lock is held across a call. A session that cannot be closed now (Stripe unreachable, a
    delayed payment in progress, a session still being created) stays pending, and
    orders.expire_due_orders leaves its order for a later cycle. Sessions already past their own
    expiry are not payable any more; `reconcile_due` learns how they ended. Returns how many were closed."""
    now = now or utcnow()
    async with session_factory() as session:
        rows = (
            await session.execute(
                select(Payment.id, Payment.stripe_session_id, Payment.created_at)
                .join(Order, Order.id == Payment.order_id)
                .where(
                    Payment.provider == PROVIDER,
                    Payment.state == common.PENDING,
                    or_(Payment.expires_at.is_(None), Payment.expires_at > now - RECONCILE_GRACE),
                    Order.state == order_service.AWAITING_PAYMENT,
                    Order.reserved_until <= now,
                )
                .order_by(Payment.id)
                .limit(batch)
            )
        ).all()
    closed = 0
    for payment_id, session_id, created_at in rows:
        if session_id is None:
            if now - created_at >= IN_FLIGHT:  # a crash orphan: nobody ever got its link
                async with session_factory() as session, session.begin():
                    payment = await session.get(Payment, payment_id)
                    if payment is not None and await _retire_orphan(session, payment, common.EXPIRED, "closed"):
                        closed += 1
            continue
        try:
            checkout = await _close_at_stripe(gateway, session_id)
        except StripeFailure:
            log.warning("stripe.close_failed", extra={"payment": payment_id})
            continue
        if checkout.payment_status != "paid" and checkout.status != "expired":
            continue
        async with session_factory() as session, session.begin():
            payment = await session.get(Payment, payment_id)
            assert payment is not None
            outcome = await _record_closed(session, payment, checkout, settings, "reservation ran out")
        closed += 1
        log.info("stripe.link_closed", extra={"payment": payment_id, "outcome": outcome})
    return closed


async def apply_session(
    session_factory: async_sessionmaker[AsyncSession],
    payment_id: int,
    checkout: CheckoutSession,
    settings: Settings,
    raw: dict[str, Any] | None,
) -> str:
    """Settle an attempt from what Stripe says its session is now."""
    async with session_factory() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return await _apply(session, payment, checkout, settings, raw)


async def _apply(
    session: AsyncSession,
    payment: Payment,
    checkout: CheckoutSession,
    settings: Settings,
    raw: dict[str, Any] | None,
    *,
    failed: bool = False,
) -> str:
    if checkout.payment_intent and not payment.stripe_payment_intent:
        payment.stripe_payment_intent = checkout.payment_intent
    if checkout.payment_status == "paid":
        return await common.settle_paid(
            session,
            payment,
            amount=int(checkout.amount_total or 0),
            currency=checkout.currency or "",
            reference=checkout.payment_intent,
            raw=raw,
            actor="system:stripe",
            admin_chat_id=settings.admin_chat_id,
            low_stock_threshold=settings.low_stock_threshold,
            zone=settings.shop_zone,
        )
    if failed:
        return await common.settle_failed(
            session,
            payment,
            code="async_failed",
            desc=checkout.status,
            raw=raw,
            reason_key="stripe.reason.async_failed",
        )
    if checkout.status == "expired":
        return await common.settle_failed(
            session,
            payment,
            code="expired",
            desc=checkout.status,
            raw=raw,
            reason_key="stripe.reason.expired",
            state=common.EXPIRED,
        )
    return "waiting"


def _session_of(event: dict[str, Any]) -> tuple[str, str, CheckoutSession, dict[str, Any]]:
    try:
        event_id, event_type = str(event["id"]), str(event["type"])
        obj = event["data"]["object"]
        if not isinstance(obj, dict) or not str(obj.get("id", "")).startswith("cs_"):
            raise KeyError("object")
        for field, kinds in (("amount_total", int), ("currency", str), ("expires_at", int)):
            value = obj.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise TypeError(field)
        checkout = CheckoutSession.from_api(obj)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        raise BadEvent("not a Checkout Session event") from None
    return event_id, event_type, checkout, obj


async def handle_event(
    session_factory: async_sessionmaker[AsyncSession], event: dict[str, Any], settings: Settings
) -> str:
    """Apply one verified webhook event. Returns the outcome; raises BadEvent for odd shapes."""
    if str(event.get("type", "")) not in HANDLED:
        async with session_factory() as session, session.begin():
            await common.record_event(
                session, PROVIDER, str(event.get("id", "?")), str(event.get("type", "?")), None, status="ignored"
            )
        return "ignored"
    event_id, event_type, checkout, obj = _session_of(event)
    async with session_factory() as session, session.begin():
        stored = await common.record_event(session, PROVIDER, event_id, event_type, event)
        if stored is None:
            return "duplicate"
        payment = (
            await session.execute(select(Payment).where(Payment.stripe_session_id == checkout.id))
        ).unique().scalar_one_or_none() or await _adopt(session, checkout.id, obj)
        if payment is None:
            await common.record_anomaly(
                session,
                settings.admin_chat_id,
                provider=PROVIDER,
                event_id=f"unknown:{checkout.id}",
                event_type=event_type,
                payload=event,
                detail=f"{event_type} for unknown session {checkout.id} (order ref {obj.get('client_reference_id')})",
            )
            return "unknown"
        stored.payment_id = payment.id
        return await _apply(
            session, payment, checkout, settings, event, failed=event_type.endswith("async_payment_failed")
        )


async def _adopt(session: AsyncSession, session_id: str, obj: dict[str, Any]) -> Payment | None:
    """An attempt whose session id was never stored (crash between create and store), recognised by
    the metadata we sent: payment id and order id must both match. Otherwise None (an anomaly)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not str(metadata.get("payment_id", "")).isdigit():
        return None
    payment = await session.get(Payment, int(metadata["payment_id"]))
    if (
        payment is None
        or payment.provider != PROVIDER
        or payment.stripe_session_id is not None
        or payment.order.public_id != metadata.get("order_id")
    ):
        return None
    claimed = await execute_dml(
        session,
        update(Payment)
        .where(Payment.id == payment.id, Payment.stripe_session_id.is_(None))
        .values(stripe_session_id=session_id)
        .execution_options(synchronize_session=False),
    )
    if claimed.rowcount != 1:
        return None
    payment.stripe_session_id = session_id
    log.info("stripe.session_adopted", extra={"payment": payment.id})
    return payment


async def reconcile_due(
    session_factory: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    settings: Settings,
    now: datetime | None = None,
    batch: int = 50,
) -> int:
    """Sessions still pending past their expiry: ask Stripe how they ended (webhook lost)."""
    now = now or utcnow()
    settled = 0
    for payment_id in await common.claim_due_attempts(
        session_factory, PROVIDER, now, timedelta(minutes=5), Payment.stripe_session_id.is_not(None), batch=batch
    ):
        async with session_factory() as session:
            session_id = (await session.get(Payment, payment_id)).stripe_session_id  # type: ignore[union-attr]  # the attempt claimed just now by its id
        try:
            checkout = await gateway.retrieve(session_id or "")
            if checkout.status == "open":
                checkout = await gateway.expire(session_id or "")
        except StripeFailure:
            continue
        outcome = await apply_session(session_factory, payment_id, checkout, settings, raw={"reconciled": checkout.id})
        settled += outcome not in ("waiting", "duplicate")
    return settled
