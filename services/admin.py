"""What the admins do from their group: restock, inspect, ship, deliver, cancel (with refunds).

Every order change goes through the state machine with actor "admin:<id>", so each admin action is
an OrderEvent. Each order action first *claims* the order (a compare-and-set write on its row), so a
concurrent payment, expiry or second admin cannot move it between our checks and our transition —
which matters most for /cancel, where a card refund is issued before the state changes.

Each action (restock, ship, mark_delivered, cancel) is one unit of work, the whole of its caller's
transaction, and writes its row of the admins' audit log (services/audit.py) in it: the caller
commits when it returns, and when it raises (refused half-way, after its first writes, or a bad
argument) the action has rolled that transaction back, so nothing it wrote — the audit row
included — can be committed. (Not a savepoint: on SQLite a SAVEPOINT begins the transaction at the
action's first read, and two concurrent actions then fail "database is locked" instead of waiting.)
No aiogram here: the handler renders what these functions return.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.changes import catalogue_written
from db.models import Category, Order, Payment, Product, utcnow
from db.session import execute_dml
from services import audit, buttons, catalog
from services import orders as sm
from services.errors import DomainError, InvalidInput, NotFound
from services.i18n import t
from services.markup import cut
from services.money import format_money
from services.notifications import alert_admins, enqueue, inline_keyboard
from services.zones import get_zone

log = logging.getLogger(__name__)

DHL_WAYBILL = re.compile(r"^\d{10}$")  # DHL Express air waybill: 10 digits
TRACKING = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{2,39}$")  # any courier's reference, safe to show as-is
CARRIER = re.compile(r"^[\w .'()-]{2,40}$")  # no markup characters: it is shown in HTML messages
MAX_RESTOCK = 100_000
CANCELLABLE = (sm.AWAITING_PAYMENT, sm.PROCESSING)
DELIVERABLE = (sm.SHIPPED, sm.IN_TRANSIT)
# The note of a cancel from the alert's Cancel… button (no reason typed): not a reason to show the customer.
ALERT_CANCEL_NOTE = "cancelled from the alert"
# The words admins use for the states (/orders unpaid, "Order HL-… is on the way"); the machine names
# are accepted as arguments too.
STATE_ALIASES = {
    "unpaid": sm.AWAITING_PAYMENT,
    "paid": sm.PROCESSING,
    "on_the_way": sm.IN_TRANSIT,
    "in_transit": sm.IN_TRANSIT,
    "canceled": sm.CANCELLED,
}

P = ParamSpec("P")
R = TypeVar("R")


def unit_of_work(
    action: Callable[Concatenate[AsyncSession, P], Awaitable[R]],
) -> Callable[Concatenate[AsyncSession, P], Awaitable[R]]:
    """The action's writes are committed by its caller only if it returns: any exception rolls the
    session's transaction back before it goes on to the caller."""

    @functools.wraps(action)
    async def run(session: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await action(session, *args, **kwargs)
        except Exception:
            await session.rollback()
            raise

    return run


# --- stock ----------------------------------------------------------------------------------------


@unit_of_work
async def restock(session: AsyncSession, sku: str, qty: int, actor: str, *, name: str = "") -> tuple[Product, int]:
    """Add (or, negative, correct) free stock; never below zero — reserved units are not touched.
    Returns the product and how many "Notify me" customers were queued a back-in-stock message.

    The level before is derived from the single UPDATE … RETURNING, so two concurrent restocks
    cannot both see "was 0" and notify twice (the second waits on the row lock and sees the first)."""
    if qty == 0 or abs(qty) > MAX_RESTOCK:
        raise ValueError("quantity out of range")
    product = await _product_by_sku(session, sku)
    catalogue_written(session)
    new_stock = (
        await session.execute(
            update(Product)
            .where(Product.id == product.id, Product.stock + qty >= 0)
            .values(stock=Product.stock + qty, updated_at=utcnow())
            .returning(Product.stock)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if new_stock is None:
        await session.refresh(product)
        raise InvalidInput(
            "admin.restock.below_zero", sku=product.sku, free=product.stock, reserved=product.reserved, qty=qty
        )
    await session.refresh(product)
    told = 0
    if new_stock - qty <= 0 < new_stock and product.active:
        told = await _tell_watchers(session, product)
    audit.record(
        session,
        actor,
        name,
        "restock",
        f"{qty:+d} → {new_stock} free, {product.reserved} reserved; back-in-stock messages queued: {told}",
        product_id=product.id,
    )
    log.info(
        "admin.restock",
        extra={
            "actor": actor,
            "sku": product.sku,
            "qty": qty,
            "stock": new_stock,
            "reserved": product.reserved,
            "told": told,
        },
    )
    return product, told


async def _tell_watchers(session: AsyncSession, product: Product) -> int:
    """Queue "back in stock" for everyone who pressed Notify me and has no such message on its way,
    linking each watch to its message: the sender ends the watch once the message is sent, so a
    message that never goes out leaves the customer watching (told again at the next restock).
    Customers who blocked the bot are not queued and their watch is dropped, as a 403 would."""
    queued = []
    for customer, watch in await catalog.take_watchers(session, product.id):
        if customer.unreachable:
            await session.delete(watch)
            continue
        lang = customer.language
        queued.append(
            (
                watch,
                enqueue(
                    session,
                    customer.chat_id,
                    t("catalog.back_in_stock", lang, name=product.name, sku=product.sku),
                    kind="back_in_stock",
                    reply_markup=inline_keyboard(
                        [[(t("catalog.open_product", lang), buttons.view_product(product.id))]]
                    ),
                ),
            )
        )
    await session.flush()  # the messages' ids
    for watch, message in queued:
        watch.outbox_id = message.id
    return len(queued)


async def _product_by_sku(session: AsyncSession, sku: str) -> Product:
    product = (
        (await session.execute(select(Product).where(func.upper(Product.sku) == sku.upper())))
        .unique()
        .scalar_one_or_none()
    )
    if product is None:
        raise NotFound("admin.unknown_sku", sku=sku)
    return product


async def stock_report(session: AsyncSession, query: str | None) -> list[Product]:
    """All products (category order, then SKU), or those matching a SKU or a category name/slug."""
    stmt = select(Product).join(Category).order_by(Category.position, Category.id, Product.sku)
    if query:
        q = query.strip()
        stmt = stmt.where(
            or_(
                func.upper(Product.sku) == q.upper(),
                func.lower(Category.slug) == q.lower(),
                func.lower(Category.name).contains(q.lower()),
            )
        )
    return list((await session.execute(stmt)).unique().scalars().all())


# --- orders: queries ------------------------------------------------------------------------------


def state_name(state: str) -> str:
    """A state as admins say it: "unpaid", "paid", "on the way"…"""
    return str(t(f"admin.state.{state}", None))


def parse_state(words: list[str]) -> str:
    """The state an admin typed ("unpaid", "on the way", "on-the-way", "awaiting_payment"…);
    ValueError for anything else."""
    typed = "_".join(words).lower().replace("-", "_")
    state = STATE_ALIASES.get(typed, typed)
    if state not in sm.STATES:
        raise ValueError(typed)
    return state


async def find_order(session: AsyncSession, public_id: str) -> Order:
    try:
        return await sm.get_order(session, public_id)
    except NotFound:
        raise NotFound("admin.order_not_found", order=sm.normalize_public_id(public_id)) from None


async def count_in_state(session: AsyncSession, state: str) -> int:
    return int(
        (await session.execute(select(func.count()).select_from(Order).where(Order.state == state))).scalar_one()
    )


async def order_payments(session: AsyncSession, order_id: int) -> list[Payment]:
    return list(
        (await session.execute(select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)))
        .unique()
        .scalars()
        .all()
    )


async def _claim(session: AsyncSession, order: Order, allowed: tuple[str, ...], refusal: str) -> None:
    """Refuse unless the order is in one of `allowed` states, then hold it: a no-op compare-and-set
    write that takes the row lock (PostgreSQL) / the write lock (SQLite) until our commit."""
    if order.state in allowed:
        result = await execute_dml(
            session,
            update(Order)
            .where(Order.id == order.id, Order.state == order.state)
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False),
        )
        if result.rowcount == 1:
            return
        await session.refresh(order)
    if refusal == "admin.cancel.not_allowed" and order.state == sm.CANCELLED:
        refusal = "admin.cancel.already"
    raise DomainError(refusal, order=order.public_id, state=state_name(order.state))


# --- orders: actions ------------------------------------------------------------------------------


def cancel_refusal(order: Order) -> DomainError | None:
    """Why an admin cannot cancel `order` now, or None when they can."""
    if order.state == sm.CANCELLED:  # not "is cancelled and can't be cancelled"
        return DomainError("admin.cancel.already", order=order.public_id)
    if order.state not in CANCELLABLE:
        return DomainError("admin.cancel.not_allowed", order=order.public_id, state=state_name(order.state))
    return None


@unit_of_work
async def ship(
    session: AsyncSession, public_id: str, tracking: str, carrier: str | None, actor: str, *, name: str = ""
) -> Order:
    """processing → shipped. International (tracked) zones ship with DHL and are then polled;
    Kenyan zones take the courier the admin names, by default the zone's."""
    order = await find_order(session, public_id)
    zone = get_zone(order.zone)
    if zone.tracked:
        if not DHL_WAYBILL.match(tracking):
            raise InvalidInput("admin.ship.bad_waybill", tracking=tracking[:40])
        if carrier and carrier.upper() != "DHL":
            raise InvalidInput("admin.ship.intl_is_dhl", carrier=carrier[:40])
        carrier = "DHL"
    else:
        if not TRACKING.match(tracking):
            raise InvalidInput("admin.ship.bad_tracking", tracking=tracking[:40])
        if carrier and not CARRIER.match(carrier):
            raise InvalidInput("admin.ship.bad_carrier")
        carrier = carrier or zone.carrier
    await _claim(session, order, (sm.PROCESSING,), "admin.ship.not_processing")
    now = utcnow()
    # Before the transition: the customer's "shipped" message shows carrier and tracking number.
    order.carrier, order.tracking_number, order.shipped_at = carrier, tracking, now
    order.tracking_next_check_at = now if zone.tracked else None  # the DHL poller picks it up
    await sm.transition(session, order, sm.SHIPPED, actor, f"{carrier} {tracking}")
    audit.record(session, actor, name, "ship", f"{carrier} {tracking}", order_id=order.id)
    return order


@unit_of_work
async def mark_delivered(session: AsyncSession, public_id: str, actor: str, *, name: str = "") -> Order:
    """shipped/in_transit → delivered. Meant for untracked couriers; allowed for DHL too (the buyer
    may confirm before DHL's scan arrives), noted in the event — the poller only polls shipped and
    in_transit orders, so it simply stops."""
    order = await find_order(session, public_id)
    await _claim(session, order, DELIVERABLE, "admin.delivered.not_shipped")
    tracked = (order.carrier or "").upper() == "DHL"
    note = "confirmed by admin" + (" (DHL-tracked; automatic tracking stopped)" if tracked else "")
    await sm.transition(session, order, sm.DELIVERED, actor, note)
    audit.record(session, actor, name, "delivered", note, order_id=order.id)
    return order


@unit_of_work
async def cancel(
    session: AsyncSession,
    public_id: str,
    reason: str | None,
    actor: str,
    providers: dict[str, Any],
    settings: Settings,
    *,
    name: str = "",
) -> tuple[Order, str, Payment | None]:
    """Cancel an unpaid or paid-but-unshipped order; the transition releases its stock.

    Returns (order, refund outcome, paid payment): outcome is none | refunded | refund_pending |
    manual_reversal_owed. The refund status is set before the transition because the customer's
    "cancelled" message states it, with the admin's `reason` and the shop's contact."""
    order = await find_order(session, public_id)
    refusal = cancel_refusal(order)
    if refusal is not None:
        raise refusal
    await _refuse_open_prompt(session, order)  # before Stripe: a refused cancel leaves the card links be
    await _close_card_links(session, order, providers, settings)  # Stripe first, before any write
    await _claim(session, order, CANCELLABLE, "admin.cancel.not_allowed")
    await _refuse_open_prompt(session, order)  # again with the order held: no prompt starts after this
    paid = await paid_payment(session, order.id)
    outcome = "none"
    if paid is not None:
        outcome, _ = await refund_payment(session, order, paid, providers, settings)
    order.refund_status = None if outcome == "none" else outcome
    note = (reason or "cancelled by admin")[:500]
    told = sm.StatusDetails(
        reason=reason if reason != ALERT_CANCEL_NOTE else None,
        shop_phone=settings.shop_phone,
        shop_whatsapp=settings.shop_whatsapp,
    )
    await sm.transition(
        session, order, sm.CANCELLED, actor, note if outcome == "none" else f"{note}; {outcome}", details=told
    )
    money = f" {format_money(paid.amount, paid.currency)} via {paid.provider}" if paid is not None else ""
    audit.record(session, actor, name, "cancel", f"{note}; refund: {outcome}{money}", order_id=order.id)
    return order, outcome, paid


async def _refuse_open_prompt(session: AsyncSession, order: Order) -> None:
    """A reservation is not released while a prompt for it can still be paid: an unpaid order whose
    M-Pesa prompt may still be answered is not cancelled (the admin tries again in a few minutes)."""
    if order.state == sm.AWAITING_PAYMENT and await sm.mpesa_prompt_open(session, order):
        raise DomainError("admin.cancel.prompt_open", order=order.public_id)


async def _close_card_links(session: AsyncSession, order: Order, providers: dict[str, Any], settings: Settings) -> None:
    """No card link may outlive the order: its open Checkout Sessions are expired at Stripe first
    (one found paid is settled here, and refunded below like any card payment). When that cannot
    be done the cancel is refused, so the admin tries again rather than leaving a payable link."""
    from services.payments import stripe_flow
    from services.payments.common import PaymentNotAllowed
    from services.payments.stripe import StripeFailure

    try:
        await stripe_flow.close_links(session, providers.get("stripe"), order, settings, "order cancelled")
    except StripeFailure as exc:
        log.warning("admin.cancel_link_open", extra={"order": order.public_id, "error": str(exc)[:100]})
        raise DomainError("admin.cancel.link_open", order=order.public_id) from None
    except stripe_flow.PaymentProcessing:
        raise DomainError("admin.cancel.payment_processing", order=order.public_id) from None
    except PaymentNotAllowed:  # the order moved meanwhile (another admin cancelled it, say)
        await session.refresh(order)
        moved = DomainError("admin.cancel.not_allowed", order=order.public_id, state=state_name(order.state))
        raise (cancel_refusal(order) or moved) from None


async def refund_payment(
    session: AsyncSession,
    order: Order,
    payment: Payment,
    providers: dict[str, Any],
    settings: Settings,
    *,
    amount: int | None = None,
    key: str | None = None,
) -> tuple[str, str | None]:
    """Pay the customer back, the one way /cancel and an approved return do it: a card payment
    through Stripe (a failure leaves refund_pending and alerts the admins), an M-Pesa payment as a
    recorded reversal a person owes (there is no reversal API we may call). Returns (outcome,
    Stripe's refund id): outcome is refunded | refund_pending | manual_reversal_owed.

    `amount` (minor units) refunds part of the payment (a partial return), `key` being its Stripe
    idempotency key; the payment then stays `paid` (only part of it came back) and the caller records
    the partial refund. Without it the whole payment is refunded and the payment's state says so."""
    partial = amount is not None and amount < payment.amount
    if payment.provider == "stripe":
        return await _refund_card(session, order, payment, providers, settings, amount if partial else None, key)
    if not partial:
        payment.state = "refund_due"
    log.warning("admin.manual_reversal_owed", extra={"order": order.public_id, "payment": payment.id})
    return "manual_reversal_owed", None


async def paid_payment(session: AsyncSession, order_id: int) -> Payment | None:
    return (
        (
            await session.execute(
                select(Payment).where(Payment.order_id == order_id, Payment.state == "paid").order_by(Payment.id)
            )
        )
        .unique()
        .scalars()
        .first()
    )


async def _refund_card(
    session: AsyncSession,
    order: Order,
    payment: Payment,
    providers: dict[str, Any],
    settings: Settings,
    amount: int | None = None,
    key: str | None = None,
) -> tuple[str, str | None]:
    """Refund through Stripe (in full, or `amount` of it); any failure (not configured, API error)
    leaves a refund to chase, loudly: refund_pending on the order and an alert in the admin group."""
    gateway = providers.get("stripe")
    try:
        if gateway is None:
            raise RuntimeError("Stripe is not configured")
        if amount is None:
            refund_id = await gateway.refund(payment)
        else:
            refund_id = await gateway.refund(payment, amount=amount, idempotency_key=key)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, a person must finish the refund
        if amount is None:  # a partial refund leaves the payment `paid`: the caller records what is owed
            payment.state = "refund_due"
        alert_admins(
            session,
            settings.admin_chat_id,
            t("admin.alert.refund_failed", None, order=order.public_id, error=_short(exc)),
            kind="refund_failed",
        )
        log.error(
            "admin.refund_failed", extra={"order": order.public_id, "payment": payment.id, "error": type(exc).__name__}
        )
        return "refund_pending", None
    if amount is None:
        payment.state, payment.result_desc = "refunded", f"refund {refund_id}"
    log.info("admin.refunded", extra={"order": order.public_id, "payment": payment.id, "refund": refund_id})
    return "refunded", str(refund_id)


def _short(exc: Exception) -> str:
    """The error for the admins' alert, shortened (`t` escapes it)."""
    return cut(f"{type(exc).__name__}: {exc}", 200)
