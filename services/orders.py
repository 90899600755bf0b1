"""Orders: the one state machine, checkout (order creation with stock reservation) and expiry.

Every state change goes through `transition`: it checks the move is legal, applies it with a
compare-and-set on the row (so two workers or two duplicate callbacks cannot both apply it, on
PostgreSQL or SQLite), moves stock, writes the order event and queues the customer's message, all in
the caller's transaction.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from sqlalchemy import ColumnElement, Exists, bindparam, delete, distinct, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import CartItem, Customer, Order, OrderEvent, OrderItem, Product, table_of, utcnow
from db.session import execute_dml, read_ahead
from services import buttons, inventory, metrics, promos
from services.errors import DomainError, IllegalTransition, InvalidInput, NotFound, OutOfStock
from services.i18n import t
from services.markup import Markup, cut
from services.money import format_money
from services.notifications import enqueue, inline_keyboard
from services.phones import format_phone
from services.times import receipt_time
from services.zones import Zone, get_zone

log = logging.getLogger(__name__)

AWAITING_PAYMENT = "awaiting_payment"
PROCESSING = "processing"
SHIPPED = "shipped"
IN_TRANSIT = "in_transit"
DELIVERED = "delivered"
CANCELLED = "cancelled"
EXPIRED = "expired"
RETURN_REQUESTED = "return_requested"
RETURNED = "returned"

STATES = (
    AWAITING_PAYMENT,
    PROCESSING,
    SHIPPED,
    IN_TRANSIT,
    DELIVERED,
    CANCELLED,
    EXPIRED,
    RETURN_REQUESTED,
    RETURNED,
)

# from-state -> allowed to-states. Late payments may revive an expired or cancelled order (the
# payments service re-reserves stock first). Returns (services/returns.py): a delivered order's buyer
# asks (delivered -> return_requested); an admin approves (-> returned, final: one approved return per
# order) or rejects, which puts the order back where it was (-> delivered; the return window still
# counts from the first delivery). return_requested -> returned moves no stock by itself: the approval
# restocks the returned lines, which may be some of the order's. Nothing else moves backwards.
TRANSITIONS: dict[str, frozenset[str]] = {
    AWAITING_PAYMENT: frozenset({PROCESSING, CANCELLED, EXPIRED}),
    PROCESSING: frozenset({SHIPPED, CANCELLED}),
    SHIPPED: frozenset({IN_TRANSIT, DELIVERED}),
    IN_TRANSIT: frozenset({DELIVERED}),
    DELIVERED: frozenset({RETURN_REQUESTED}),
    CANCELLED: frozenset({PROCESSING}),
    EXPIRED: frozenset({PROCESSING}),
    RETURN_REQUESTED: frozenset({RETURNED, DELIVERED}),
    RETURNED: frozenset(),
}

PUBLIC_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I
PUBLIC_ID_ATTEMPTS = 5  # 32**6 ids: a second collision in a row means something else is wrong


def new_public_id() -> str:
    """A short random id customers can type (~1e9 of them: collisions are rare, not impossible;
    `place_order` retries with another)."""
    return "HL-" + "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(6))


def normalize_public_id(text: str) -> str:
    text = text.strip().upper()
    return text if text.startswith("HL-") else "HL-" + text


def can_transition(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


@dataclass(frozen=True, slots=True)
class StatusDetails:
    """What the customer's status message says beyond the order itself: how it was paid (the
    receipt, with its time read in the shop's `zone`), or why an admin cancelled it and how to reach
    the shop."""

    paid_with: str | None = None  # "mpesa" / "stripe": the paid message becomes a receipt
    receipt: str | None = None  # the M-Pesa receipt code
    zone: tzinfo | None = None
    reason: str | None = None  # an admin's cancel reason, as typed
    shop_phone: str = ""
    shop_whatsapp: str = ""


async def transition(
    session: AsyncSession,
    order: Order,
    to_state: str,
    actor: str,
    note: str | None = None,
    *,
    notify: bool = True,
    details: StatusDetails | None = None,
) -> OrderEvent:
    """Move `order` to `to_state` or raise IllegalTransition. Stock moves with the state; the
    message that carried the order's pay buttons loses them when it leaves awaiting_payment."""
    from_state = order.state
    if not can_transition(from_state, to_state):
        raise IllegalTransition("error.illegal_transition", order=order.public_id, src=from_state, dst=to_state)
    now = utcnow()
    # The payment message is read back from the row as it is moved: one recorded (under the row's
    # lock) after `order` was loaded is the one whose buttons must come off.
    moved = (
        await execute_dml(
            session,
            update(Order)
            .where(Order.id == order.id, Order.state == from_state)
            .values(state=to_state, updated_at=now)
            .returning(Order.pay_message_id)
            .execution_options(synchronize_session=False),
        )
    ).first()
    if moved is None:  # someone else moved it first
        await session.refresh(order)
        raise IllegalTransition("error.illegal_transition", order=order.public_id, src=order.state, dst=to_state)
    order.state = to_state
    order.pay_message_id = moved.pay_message_id
    order.updated_at = now
    await _move_stock(session, order, from_state, to_state)
    await _move_promo_use(session, order, from_state, to_state)
    event = OrderEvent(order_id=order.id, from_state=from_state, to_state=to_state, actor=actor, note=note)
    session.add(event)
    if notify:
        customer = await session.get(Customer, order.customer_id)
        if customer is not None and not customer.unreachable:
            enqueue(
                session,
                customer.chat_id,
                status_message(order, customer.language, details),
                kind="order_status",
                dedup_key=f"order:{order.id}:{to_state}:{_event_seq(order)}",
                reply_markup=inline_keyboard(
                    [[(t("orders.button.view", customer.language), buttons.view_order(order.public_id))]]
                ),
            )
            if from_state == AWAITING_PAYMENT:
                close_pay_message(session, order, customer.chat_id, customer.language)
            # Asked on the delivery itself, not when a rejected return puts the order back to delivered (its
            # question's dedup key would fail the rejection's commit). Imported here: services.reviews imports
            # services.admin, which imports this module.
            if to_state == DELIVERED and from_state != RETURN_REQUESTED:
                from services.reviews import ask_after_delivery

                await ask_after_delivery(session, order, customer)
    metrics.count_transition(session, from_state, to_state)
    log.info("order.transition", extra={"order": order.public_id, "from": from_state, "to": to_state, "actor": actor})
    return event


def _event_seq(order: Order) -> str:
    # An order revisits a state through a late payment or a rejected return; the timestamp keeps keys unique then.
    return order.updated_at.strftime("%Y%m%d%H%M%S%f")


async def _move_stock(session: AsyncSession, order: Order, from_state: str, to_state: str) -> None:
    items = [(i.product_id, i.quantity) for i in order.items]
    if from_state == AWAITING_PAYMENT and to_state == PROCESSING:
        await inventory.commit_sale(session, items)
    elif from_state == AWAITING_PAYMENT and to_state in (CANCELLED, EXPIRED):
        await inventory.release(session, items)
    elif from_state == PROCESSING and to_state == CANCELLED:
        await inventory.return_sold(session, items)
    elif from_state in (CANCELLED, EXPIRED) and to_state == PROCESSING:
        await inventory.sell_directly(session, items)  # raises OutOfStock when it's gone


async def _move_promo_use(session: AsyncSession, order: Order, from_state: str, to_state: str) -> None:
    """A promo code's use moves with the stock: an order that ends (expired, or cancelled — unpaid,
    or paid and refunded) gives its use back; a late payment reviving it takes one again."""
    if not order.promo_code:
        return
    ended = (CANCELLED, EXPIRED)
    if to_state in ended and from_state not in ended:
        await promos.give_back(session, order.promo_code, order.public_id)
    elif from_state in ended and to_state not in ended:
        await promos.take_again(session, order.promo_code, order.public_id)


def close_pay_message(session: AsyncSession, order: Order, chat_id: int, lang: str) -> None:
    """Queue the edit that takes the pay buttons off the order's payment message (if one was
    recorded): a paid, expired or cancelled order leaves no button in the chat that cannot work."""
    if order.pay_message_id is None:
        return
    enqueue(
        session,
        chat_id,
        pay_closed_text(order, lang),
        kind="pay_closed",
        edit_message_id=order.pay_message_id,
        dedup_key=f"pay_closed:{order.id}",
    )


def pay_closed_text(order: Order, lang: str) -> Markup:
    """What the payment message reads once the order no longer awaits payment."""
    state = order.state if order.state in (PROCESSING, CANCELLED, EXPIRED) else PROCESSING
    return t(f"pay.closed.{state}", lang, order=order.public_id, total=format_money(order.total, order.currency, lang))


def status_message(order: Order, lang: str = "en", details: StatusDetails | None = None) -> str:
    """The customer's message for the order's current state: with `details`, the receipt of a
    payment or an admin's reason for cancelling; a shipped order's lines say only what is known."""
    values: dict[str, object] = {
        "order": order.public_id,
        "total": format_money(order.total, order.currency, lang),
        "carrier": order.carrier or "-",
        # Carrier texts come from DHL's API: `t` escapes them; cut first so a long one cannot
        # push the message past Telegram's limit.
        "event": cut(order.tracking_description or "-", 300),
        "place": cut(order.tracking_place or "-", 200),
        "refund": t(f"refund.{order.refund_status or 'none'}", lang),
    }
    key = f"order.status.{order.state}"
    if order.state == IN_TRANSIT and not order.tracking_place:  # DHL does not always say where
        key = "order.status.in_transit_unplaced"
    parts = [t(key, lang, **values)]
    if order.state == SHIPPED:
        parts += _shipped_lines(order, lang)
    elif order.state == PROCESSING and details is not None and details.paid_with:
        parts.append(receipt_text(order, lang, details))
    elif order.state == CANCELLED and details is not None:
        parts += _cancel_lines(lang, details)
    return str(Markup("\n").join(parts))


def _shipped_lines(order: Order, lang: str) -> list[Markup]:
    lines = []
    if order.tracking_number:
        lines.append(t("order.status.tracking_number", lang, tracking=order.tracking_number))
    link = tracking_link(order)
    if link:
        lines.append(t("order.status.track_link", lang, link=link))
    lines.append(t("orders.delivery", lang, zone=t(f"zone.{order.zone}.short", lang)))
    return lines


def _cancel_lines(lang: str, details: StatusDetails) -> list[Markup]:
    lines = []
    if details.reason:
        lines.append(t("order.status.cancel_reason", lang, reason=cut(details.reason, 300)))
    contact = shop_contact(lang, details.shop_phone, details.shop_whatsapp)
    if contact:
        lines.append(contact)
    return lines


def shop_contact(lang: str, phone: str, whatsapp: str) -> Markup | None:
    """ "Questions? Call … · WhatsApp …" with what the shop configured (None when neither is)."""
    ways = []
    if phone:
        ways.append(t("order.contact.phone", lang, phone=phone))
    if whatsapp:
        ways.append(t("order.contact.whatsapp", lang, whatsapp=whatsapp))
    return t("order.contact", lang, ways=Markup(" · ").join(ways)) if ways else None


def receipt_text(order: Order, lang: str, details: StatusDetails) -> Markup:
    """The receipt part of the paid message: how, how much, when (in the shop's zone, named) and
    where it goes."""
    if details.paid_with != "mpesa":
        paid_with = t("order.receipt.card", lang)
    elif details.receipt:
        paid_with = t("order.receipt.mpesa", lang, code=details.receipt)
    else:  # settled without Daraja's receipt number (it is in the customer's M-Pesa SMS)
        paid_with = t("order.receipt.mpesa_no_code", lang)
    return t(
        "order.receipt",
        lang,
        paid_with=paid_with,
        total=format_money(order.total, order.currency, lang),
        when=receipt_time(order.updated_at, details.zone or UTC, lang),
        zone=t(f"zone.{order.zone}.short", lang),
        address=cut(order.address, 300),
        phone=format_phone(order.phone),
    )


def tracking_link(order: Order) -> str | None:
    if not order.tracking_number:
        return None
    if (order.carrier or "").upper() == "DHL":
        return (
            "https://www.dhl.com/global-en/home/tracking/tracking-express.html"
            f"?submit=1&tracking-id={order.tracking_number}"
        )
    return None


# --- checkout -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    currency: str
    subtotal: int
    shipping: int
    total: int
    discount: int = 0  # a promo code's, minor units: total = subtotal + shipping - discount
    promo_code: str | None = None

    def with_promo(self, applied: promos.Applied) -> Totals:
        """These totals with a promo code's discount (never more than the subtotal: delivery is
        always paid, so the total stays above zero)."""
        discount = max(0, min(applied.discount, self.subtotal))
        total = max(0, self.subtotal + self.shipping - discount)
        return Totals(self.currency, self.subtotal, self.shipping, total, discount, applied.code)


class HasPrices(Protocol):
    """What pricing needs of a product: a Product, a row of `_CART_TO_CLAIM`, a cart line's CartProduct."""

    @property
    def price_kes(self) -> int: ...
    @property
    def price_usd(self) -> int: ...


class Priced(HasPrices, Protocol):
    """What pricing and stock moves need of a product: a Product, or a row of `_CART_TO_CLAIM`."""

    id: int
    sku: str
    name: str


def unit_price(product: HasPrices, currency: str) -> int:
    return product.price_kes if currency == "KES" else product.price_usd


def compute_totals(lines: Sequence[tuple[HasPrices, int]], zone: Zone) -> Totals:
    """The one place totals are computed: lines in the zone's currency plus the zone's shipping."""
    subtotal = sum(unit_price(p, zone.currency) * qty for p, qty in lines)
    return Totals(zone.currency, subtotal, zone.shipping, subtotal + zone.shipping)


# Built once, plain columns (Core, no ORM result processing). The cart as it stands, read without a
# lock by `refuse_early` (where most checkouts of a flash sale end: "sold out"), and the same read
# locking the cart's rows, by which `place_order` claims it. Plain columns instead of ORM objects
# measured 1,200 → 1,570 checkouts/s on the flash-sale bench.
_CART = (
    select(
        Product.id,
        Product.sku,
        Product.name,
        Product.price_kes,
        Product.price_usd,
        Product.stock,
        Product.active,
        CartItem.quantity,
    )
    .join(Product, Product.id == CartItem.product_id)
    .where(CartItem.customer_id == bindparam("customer_id"))
    .order_by(CartItem.product_id)
)
_CART_TO_CLAIM = _CART.with_for_update(of=CartItem)
_CLAIM_CART = delete(table_of(CartItem)).where(table_of(CartItem).c.customer_id == bindparam("customer_id"))
_PLACED_EVENT = insert(table_of(OrderEvent)).values(from_state=None, to_state=AWAITING_PAYMENT, note="order placed")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one customer's unpaid orders may hold at once (MAX_OPEN_ORDERS_PER_CUSTOMER,
    MAX_RESERVED_UNITS_PER_CUSTOMER): without them one account could reserve a shop's whole stock."""

    open_orders: int
    reserved_units: int


class LimitReached(DomainError):
    """The customer's unpaid orders are at the shop's limit; paying one (or its expiry) frees room."""

    key = "checkout.limit.open_orders"


_O, _OI = table_of(Order).c, table_of(OrderItem).c
_UNPAID = (
    select(func.count(distinct(_O.id)), func.coalesce(func.sum(_OI.quantity), 0))
    .select_from(table_of(Order).outerjoin(table_of(OrderItem), _OI.order_id == _O.id))
    .where(_O.customer_id == bindparam("customer_id"), _O.state == AWAITING_PAYMENT)
)


async def place_order(
    session: AsyncSession,
    customer_id: int,
    *,
    zone_code: str,
    phone: str,
    email: str,
    address: str,
    reservation_minutes: int,
    limits: Limits | None = None,
    promo_code: str | None = None,
    lang: str = "en",
) -> Order:
    """Create an order from the customer's cart and reserve its stock, in the caller's transaction.

    Raises OutOfStock (naming the product) when any line cannot be reserved; the caller must roll
    back so the partial reservation disappears with it. The cart is claimed (locked and deleted)
    before any stock moves, so two concurrent checkouts of one cart (a double-pressed Confirm)
    place one order: the other finds the cart gone and raises InvalidInput.

    With `limits` (the chat checkout passes the shop's), raises LimitReached when the customer's
    unpaid orders, with this one, would exceed them. They are counted once the cart is claimed: a
    second checkout of the customer's waits at the claim for the first to commit (on PostgreSQL the
    rows the first claimed stay visible, locked, until it does; a cart refilled meanwhile adds rows
    but not instead of those; on SQLite the claim is a write, which waits for the other writer),
    so it counts the first's order. The cart is judged before the limits, as `refuse_early` judges
    it, so both give the same answer.

    With `promo_code`, one use of it is claimed (services/promos.claim: a conditional UPDATE that
    never passes the code's limit) and its discount taken off the total; PromoRefused (with the
    reason, in `lang`) when it does not apply any more. The claim comes before the stock moves: the
    code's row is then locked before the products', by every checkout alike.
    """
    zone = get_zone(zone_code)
    connection = await session.connection()
    cart = (await connection.execute(_CART_TO_CLAIM, {"customer_id": customer_id})).all()
    _refuse_unplaceable(cart)  # already short as read: answer without writing anything
    lines: list[tuple[Priced, int]] = [(line, line.quantity) for line in cart]
    claimed = await connection.execute(_CLAIM_CART, {"customer_id": customer_id})
    if claimed.rowcount != len(lines):  # another checkout took it first (SQLite has no row locks)
        raise InvalidInput("checkout.cart_changed")
    if limits is not None:  # counted after the claim, so the count is of the customer's previous checkouts
        unpaid, held = (await connection.execute(_UNPAID, {"customer_id": customer_id})).one()
        _refuse_over_limits(limits, unpaid, held, sum(qty for _, qty in lines), reservation_minutes)
    totals = compute_totals(lines, zone)
    if promo_code is not None:
        totals = totals.with_promo(await promos.claim(session, promo_code, totals.currency, totals.subtotal, lang=lang))

    def build(public_id: str) -> Order:
        order = Order(
            public_id=public_id,
            customer_id=customer_id,
            state=AWAITING_PAYMENT,
            currency=totals.currency,
            subtotal=totals.subtotal,
            shipping=totals.shipping,
            total=totals.total,
            discount=totals.discount,
            promo_code=totals.promo_code,
            zone=zone.code,
            phone=phone,
            email=email,
            address=address,
            carrier=zone.carrier,
            reserved_until=utcnow() + timedelta(minutes=reservation_minutes),
        )
        order.items = [
            OrderItem(product_id=p.id, sku=p.sku, name=p.name, unit_price=unit_price(p, zone.currency), quantity=q)
            for p, q in lines
        ]
        return order

    order = await _insert_with_free_id(session, build)
    await connection.execute(_PLACED_EVENT, {"order_id": order.id, "actor": f"customer:{customer_id}"})
    # Stock last: the conditional UPDATE decides who gets the units and locks the product row until
    # COMMIT, so doing it after the inserts keeps a hot item's lock short in a flash sale.
    for product, qty in lines:  # product-id order everywhere: no lock-order deadlocks
        await inventory.reserve(session, product, qty)
    metrics.count_transition(session, None, AWAITING_PAYMENT)
    log.info("order.placed", extra={"order": order.public_id, "total": order.total, "currency": order.currency})
    return order


class QuoteChanged(Exception):
    """The cart or its prices changed after the customer was quoted: they confirmed another amount."""


async def checkout(
    session: AsyncSession,
    customer_id: int,
    *,
    quoted: tuple[str | None, int | None],
    zone_code: str,
    phone: str,
    email: str,
    address: str,
    reservation_minutes: int,
    limits: Limits | None = None,
    promo_code: str | None = None,
    lang: str = "en",
    on_placed: Callable[[AsyncSession, Order], Awaitable[None]] | None = None,
) -> Order:
    """The chat checkout's Confirm, one unit of work: the order placed from the cart, its stock
    reserved and all of it committed before this returns (the customer is told it exists only then).
    `on_placed` writes what must exist exactly when the order does (the admins' alert about an
    order no one can pay online), in the same transaction.

    A cart that cannot be placed is refused before any transaction (`refuse_early`). When the order
    would cost other than `quoted` (currency, total), raises QuoteChanged; that and every refusal
    (DomainError, promos.PromoRefused among them) write nothing of the order: it is placed in a
    savepoint, so the session's earlier work in this update (registering the customer) is kept and
    committed with the update."""
    await refuse_early(session, customer_id)
    async with session.begin_nested():
        order = await place_order(
            session,
            customer_id,
            zone_code=zone_code,
            phone=phone,
            email=email,
            address=address,
            reservation_minutes=reservation_minutes,
            limits=limits,
            promo_code=promo_code,
            lang=lang,
        )
        if (order.currency, order.total) != quoted:
            raise QuoteChanged  # rolls the savepoint back: nothing reserved, the cart as it was
        if on_placed is not None:
            await on_placed(session, order)
    await session.commit()
    return order


async def order_apart(
    session_factory: async_sessionmaker[AsyncSession], public_id: str, customer_id: int
) -> tuple[Order, Customer | None]:
    """The customer's order (NotFound if it is not theirs) and the customer, read in a short session
    of their own: for a caller about to wait on a payment provider, which must hold no pooled
    connection meanwhile (the payment flows open their own)."""
    async with session_factory() as session:
        order = await get_order(session, public_id, customer_id=customer_id)
        customer = await session.get(Customer, customer_id)
    return order, customer


def _refuse_over_limits(limits: Limits, unpaid: int, held: int, units: int, reservation_minutes: int) -> None:
    if unpaid >= limits.open_orders:
        raise LimitReached("checkout.limit.open_orders", n=unpaid, minutes=reservation_minutes)
    if held + units > limits.reserved_units:
        if held:
            raise LimitReached("checkout.limit.units_held", max=limits.reserved_units, held=held, total=held + units)
        raise LimitReached("checkout.limit.units", max=limits.reserved_units, n=units)


async def _insert_with_free_id(session: AsyncSession, build: Callable[[str], Order]) -> Order:
    """Insert the order `build` makes, under a new public id while the one drawn is taken: each try
    in a savepoint, so a collision costs that try and not the customer's checkout."""
    for attempt in range(1, PUBLIC_ID_ATTEMPTS + 1):
        order = build(new_public_id())
        try:
            async with session.begin_nested():
                session.add(order)
                await session.flush()
            return order
        except IntegrityError as exc:
            if "public_id" not in str(exc.orig) or attempt == PUBLIC_ID_ATTEMPTS:
                raise
            log.warning("order.public_id_collision", extra={"attempt": attempt})
    raise AssertionError("unreachable")


async def refuse_early(session: AsyncSession, customer_id: int) -> None:
    """Raise what `place_order` would for a cart that is empty, gone or short as it stands now, read
    before the session's transaction begins (no lock, no BEGIN/ROLLBACK: one statement on an
    autocommit connection, db.session.read_ahead). In a flash sale all but a few checkouts end
    here, and this read costs about a third of what refusing them inside a transaction does. A cart
    that passes is checked again by `place_order` under its locks, so this can only answer sooner, never wrongly: stock
    that runs out after the read is caught there, and so are the per-customer limits (which
    `place_order` judges after the cart, so a cart refused here is refused for the same reason there)."""
    rows = await read_ahead(session, _CART, {"customer_id": customer_id})
    _refuse_unplaceable(rows)


class _CartRow(Protocol):
    id: int
    name: str
    stock: int
    active: bool
    quantity: int


def _refuse_unplaceable(cart: Sequence[_CartRow]) -> None:
    if not cart:
        raise InvalidInput("cart.empty")
    for line in cart:
        if not line.active:
            raise OutOfStock("error.product_gone", name=line.name)
        if line.stock < line.quantity:
            inventory.raise_short(line, line.stock)


# --- queries --------------------------------------------------------------------------------------


async def get_order(
    session: AsyncSession, public_id: str, *, customer_id: int | None = None, for_update: bool = False
) -> Order:
    """The order by public id; with `customer_id`, only if it is that customer's (else NotFound)."""
    stmt = select(Order).where(Order.public_id == normalize_public_id(public_id))
    if customer_id is not None:
        stmt = stmt.where(Order.customer_id == customer_id)
    if for_update:
        stmt = stmt.with_for_update(of=Order)
    order = (await session.execute(stmt)).unique().scalar_one_or_none()
    if order is None:
        raise NotFound("orders.not_found", order=public_id.strip().upper())
    return order


async def customer_orders(session: AsyncSession, customer_id: int, limit: int = 10) -> list[Order]:
    stmt = (
        select(Order)
        .where(Order.customer_id == customer_id)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).unique().scalars().all())


async def orders_in_state(session: AsyncSession, state: str, limit: int = 20) -> list[Order]:
    stmt = select(Order).where(Order.state == state).order_by(Order.created_at, Order.id).limit(limit)
    return list((await session.execute(stmt)).unique().scalars().all())


async def events_of(session: AsyncSession, order_id: int) -> list[OrderEvent]:
    stmt = select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
    return list((await session.execute(stmt)).scalars().all())


# --- reservation expiry (scheduled) ---------------------------------------------------------------


async def expire_due_orders(
    session_factory: async_sessionmaker[AsyncSession], now: datetime | None = None, batch: int = 100
) -> int:
    """Expire unpaid orders whose reservation ran out, releasing their stock; one order per
    transaction so a failure on one does not hold back the rest. Safe with several workers:
    rows are claimed with SKIP LOCKED on PostgreSQL and the state change is a compare-and-set.

    A reservation is not released while the order can still be paid: an order with a payable
    attempt (`_payable_attempt`) waits for a later cycle. The worker's job first closes card links
    at Stripe (payments.stripe_flow.close_lapsed_links); M-Pesa prompts end by themselves."""
    now = now or datetime.now(UTC)
    due = (Order.state == AWAITING_PAYMENT, Order.reserved_until <= now, ~_payable_attempt(now))
    expired = 0
    async with session_factory() as session:
        ids = (
            (await session.execute(select(Order.id).where(*due).order_by(Order.reserved_until).limit(batch)))
            .scalars()
            .all()
        )
    for order_id in ids:
        async with session_factory() as session, session.begin():
            order = (
                (
                    await session.execute(
                        select(Order).where(Order.id == order_id, *due).with_for_update(skip_locked=True, of=Order)
                    )
                )
                .unique()
                .scalar_one_or_none()
            )
            if order is None:
                continue
            # The same conditions as a compare-and-set write: on SQLite the read above is no lock,
            # and a prompt or link may have started since.
            claimed = await execute_dml(
                session,
                update(Order)
                .where(Order.id == order_id, *due)
                .values(updated_at=utcnow())
                .execution_options(synchronize_session=False),
            )
            if claimed.rowcount != 1:
                continue
            try:
                await transition(session, order, EXPIRED, "system:expiry", "reservation ran out")
            except DomainError:
                continue
            from services.payments.common import expire_pending_attempts  # avoid import cycle

            await expire_pending_attempts(session, order)
            metrics.on_commit(session, metrics.RESERVATION_EXPIRIES)
            expired += 1
    return expired


def _payable_attempt(now: datetime) -> Exists:
    """An attempt of the order that may still turn into money: an M-Pesa prompt without a final
    answer younger than its final timeout (reconciliation settles it by then), or a card session
    not closed at Stripe whose expiry (plus a grace for clock skew) has not passed, or one still
    being created."""
    from sqlalchemy import and_, exists, or_

    from db.models import Payment
    from services.payments.stripe_flow import IN_FLIGHT, RECONCILE_GRACE  # here: stripe_flow imports this module

    return exists().where(
        Payment.order_id == Order.id,
        Payment.state == "pending",
        or_(
            _answerable_prompt(now),
            and_(
                Payment.provider == "stripe",
                or_(
                    Payment.expires_at > now - RECONCILE_GRACE,
                    and_(Payment.expires_at.is_(None), Payment.created_at > now - IN_FLIGHT),
                ),
            ),
        ),
    )


def _answerable_prompt(now: datetime) -> ColumnElement[bool]:
    """The M-Pesa half of `_payable_attempt`: a pending prompt younger than its final timeout."""
    from sqlalchemy import and_

    from db.models import Payment
    from services.payments.mpesa_flow import FINAL_TIMEOUT

    return and_(Payment.provider == "mpesa", Payment.created_at > now - FINAL_TIMEOUT)


async def mpesa_prompt_open(session: AsyncSession, order: Order) -> bool:
    """Whether an M-Pesa prompt for the order may still be answered (the condition under which
    `expire_due_orders` keeps its reservation): a cancel must not release stock the customer may be
    paying for this minute. Callers ask with the order claimed, so no prompt starts after the answer."""
    from sqlalchemy import exists

    from db.models import Payment

    return bool(
        (
            await session.execute(
                select(
                    exists().where(
                        Payment.order_id == order.id, Payment.state == "pending", _answerable_prompt(utcnow())
                    )
                )
            )
        ).scalar()
    )
