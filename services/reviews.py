"""Reviews: after delivery the buyer rates each product of the order (1-5 stars) and may comment.

- The question is queued by the order state machine (`services.orders.transition`) in the
  transaction that moves the order to delivered — the only way an order gets there (admin /delivered
  or DHL), and a compare-and-set that succeeds once — as one outbox row per order with a dedup key.
  Products the customer has reviewed already (from an earlier order) are left out of it.
- One review per buyer and product (unique constraint). Rating again replaces the stars; a new
  comment replaces the old one. Only a customer with a delivered order holding the product may rate
  it: checked here on every press, never taken from the button.
- The product keeps the visible reviews' `rating_sum` and `rating_count`, changed by one UPDATE in
  the transaction of each review change (and marked a catalogue write, `db.changes`), so a card shows
  "★ 4.6 (23 reviews)" from the product row it reads anyway, and a change shows at once in this
  process and within CATALOG_CACHE_SECONDS in the others.
- Admins hide (and show again) a review with /review hide|show ID: a hidden review is not listed
  and not counted; the change is written to the audit log in its transaction. Each new comment is
  posted to the admin group with the review's id.

No aiogram here; texts are `t` keys (values escaped), comments are stored as typed and escaped when shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.changes import catalogue_written
from db.models import Customer, Order, OrderItem, Product, Review, utcnow
from db.session import dialect_name, execute_dml, insert_with_conflicts
from services import audit, buttons
from services.admin import unit_of_work
from services.errors import DomainError, InvalidInput, NotFound
from services.i18n import counted, plain, t
from services.markup import Markup, cut
from services.notifications import alert_admins, enqueue, inline_keyboard

log = logging.getLogger(__name__)

DELIVERED = "delivered"  # services.orders.DELIVERED (that module imports this one)
MAX_COMMENT = 500
MAX_ASKED = 10  # products in one question: two keyboard rows each, within Telegram's 100 buttons
LATEST = 5


# --- the question after delivery ---------------------------------------------------------------------


async def ask_after_delivery(session: AsyncSession, order: Order, customer: Customer) -> None:
    """Queue the question "how was it? rate each product" for an order that just became delivered, in
    the transition's transaction. Once per order (the dedup key; the transition to delivered happens
    once), and about the products the customer has not reviewed yet."""
    seen: dict[int, str] = {}
    for item in order.items:
        seen.setdefault(item.product_id, item.name)
    if not seen:
        return
    reviewed = set(
        (
            await session.execute(
                select(Review.product_id).where(Review.customer_id == customer.id, Review.product_id.in_(seen))
            )
        ).scalars()
    )
    products = [(pid, name) for pid, name in seen.items() if pid not in reviewed][:MAX_ASKED]
    if not products:
        return
    lang = customer.language
    rows: list[list[tuple[str, str]]] = []
    for product_id, name in products:
        rows.append([(cut(name, 60), buttons.view_product(product_id))])
        rows.append([(plain("reviews.button.stars", lang, n=n), buttons.rate(product_id, n)) for n in range(1, 6)])
    enqueue(
        session,
        customer.chat_id,
        t("reviews.ask", lang, order=order.public_id),
        kind="review_ask",
        dedup_key=f"review_ask:{order.id}",
        reply_markup=inline_keyboard(rows),
    )


# --- rating and commenting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rated:
    review_id: int
    product_name: str
    stars: int
    has_comment: bool


async def _delivered_order_with(session: AsyncSession, customer_id: int, product_id: int) -> int | None:
    """The customer's latest delivered order holding the product (its id), if any."""
    return (
        await session.execute(
            select(Order.id)
            .where(
                Order.customer_id == customer_id,
                Order.state == DELIVERED,
                exists().where(OrderItem.order_id == Order.id, OrderItem.product_id == product_id),
            )
            .order_by(Order.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def _adjust(session: AsyncSession, product_id: int, stars: int, count: int) -> None:
    """Add to the product's visible-rating aggregate (one atomic UPDATE: no lost update), last in the
    transaction so the product row is held briefly."""
    if stars == 0 and count == 0:
        return
    catalogue_written(session)
    await execute_dml(
        session,
        update(Product)
        .where(Product.id == product_id)
        .values(
            rating_sum=Product.rating_sum + stars,
            rating_count=Product.rating_count + count,
            updated_at=Product.updated_at,  # a review is no edit of the product
        )
        .execution_options(synchronize_session=False),
    )


async def rate(session: AsyncSession, customer_id: int, product_id: int, stars: int) -> Rated:
    """Give the product `stars` (1-5) as this customer, creating the review or replacing its stars.
    Raises DomainError("reviews.not_a_buyer") unless the customer has a delivered order holding it."""
    if not 1 <= stars <= 5:
        raise InvalidInput("reviews.not_a_buyer")
    order_id = await _delivered_order_with(session, customer_id, product_id)
    name = (await session.execute(select(Product.name).where(Product.id == product_id))).scalar_one_or_none()
    if order_id is None or name is None:
        log.warning("reviews.refused", extra={"customer": customer_id, "product": product_id})
        raise DomainError("reviews.not_a_buyer")
    now = utcnow()
    insert = insert_with_conflicts(dialect_name(session))
    # The write first: it takes the row (PostgreSQL) or the database's write lock (SQLite) before the
    # read below, so two presses at once cannot both count a new review or lose a change of stars.
    created = (
        await session.execute(
            insert(Review)
            .values(
                product_id=product_id,
                customer_id=customer_id,
                order_id=order_id,
                stars=stars,
                hidden=False,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["product_id", "customer_id"])
            .returning(Review.id)
        )
    ).scalar_one_or_none()
    if created is not None:
        await _adjust(session, product_id, stars, 1)
        log.info("reviews.rated", extra={"review": created, "product": product_id, "stars": stars})
        return Rated(created, name, stars, False)
    row = (
        await session.execute(
            select(Review.id, Review.stars, Review.hidden, Review.comment)
            .where(Review.product_id == product_id, Review.customer_id == customer_id)
            .with_for_update()
        )
    ).one()
    if row.stars != stars:
        await execute_dml(
            session,
            update(Review)
            .where(Review.id == row.id)
            .values(stars=stars, order_id=order_id, updated_at=now)
            .execution_options(synchronize_session=False),
        )
        if not row.hidden:
            await _adjust(session, product_id, stars - row.stars, 0)
    log.info("reviews.rated", extra={"review": row.id, "product": product_id, "stars": stars})
    return Rated(row.id, name, stars, bool(row.comment))


def clean_comment(text: str | None) -> str:
    """The comment as it will be stored, or InvalidInput: text, not empty, at most MAX_COMMENT
    characters (longer is refused, not cut: the customer shortens it), no control characters."""
    value = "".join(ch for ch in (text or "") if ch in "\n\t" or ord(ch) >= 32).strip()
    if not value:
        raise InvalidInput("reviews.comment_not_text")
    if len(value) > MAX_COMMENT:
        raise InvalidInput("reviews.comment_too_long", n=len(value), max=MAX_COMMENT)
    return value


@dataclass(frozen=True, slots=True)
class Commented:
    review_id: int
    product_name: str
    comment: str


async def comment(
    session: AsyncSession, customer: Customer, product_id: int, text: str | None, admin_chat_id: int | None
) -> Commented:
    """Set (or replace) the comment of the customer's review of the product, and tell the admin group
    (with the review's id, to hide it if need be). A review exists only for a buyer: rating comes first."""
    value = clean_comment(text)
    row = (
        await session.execute(
            update(Review)
            .where(Review.product_id == product_id, Review.customer_id == customer.id)
            .values(comment=value, updated_at=utcnow())
            .returning(Review.id, Review.stars)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if row is None:
        raise DomainError("reviews.rate_first")
    product = (await session.execute(select(Product.name, Product.sku).where(Product.id == product_id))).one()
    catalogue_written(session)  # the product's latest reviews (its Reviews screen) changed
    alert_admins(
        session,
        admin_chat_id,
        t(
            "admin.reviews.new_comment",
            None,
            id=row.id,
            product=cut(product.name, 100),
            sku=product.sku,
            stars=row.stars,
            first_name=cut(customer.first_name or "-", 64),
            comment=value,
        ),
        kind="review_comment",
    )
    log.info("reviews.commented", extra={"review": row.id, "product": product_id, "length": len(value)})
    return Commented(row.id, product.name, value)


# --- showing ------------------------------------------------------------------------------------------


def average_tenths(rating_sum: int, rating_count: int) -> int:
    """The average in tenths of a star, rounded half up (exact: integers only)."""
    return (rating_sum * 20 + rating_count) // (2 * rating_count)


def rating_line(product: Product, lang: str) -> Markup | None:
    """ "★ 4.6 (23 reviews)" for a card, None while the product has no visible review."""
    n = product.rating_count
    if n <= 0:
        return None
    tenths = average_tenths(product.rating_sum, n)
    avg = f"{tenths // 10}.{tenths % 10}"
    return counted("reviews.card.rating", n, lang, avg=avg)


@dataclass(frozen=True, slots=True)
class Shown:
    first_name: str
    stars: int
    comment: str | None
    at: datetime


async def latest(session: AsyncSession, product_id: int, limit: int = LATEST) -> list[Shown]:
    """The product's newest visible reviews (newest change first), with the reviewer's first name."""
    rows = await session.execute(
        select(Customer.first_name, Review.stars, Review.comment, Review.updated_at)
        .join(Customer, Customer.id == Review.customer_id)
        .where(Review.product_id == product_id, Review.hidden.is_(False))
        .order_by(Review.updated_at.desc(), Review.id.desc())
        .limit(limit)
    )
    return [Shown(name, stars, comment, at) for name, stars, comment, at in rows.all()]


def stars_text(stars: int) -> str:
    return "★" * stars + "☆" * (5 - stars)


# --- the admins: hide and show --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moderated:
    review_id: int
    stars: int
    sku: str
    rating_sum: int
    rating_count: int


@unit_of_work
async def set_hidden(session: AsyncSession, review_id: int, hidden: bool, actor: str, *, name: str = "") -> Moderated:
    """Hide (or show again) a review, moving its stars out of (into) the product's average, with the
    audit entry, in the caller's transaction. A compare-and-set on `hidden`, so two admins hiding at
    once take the stars out once; refused (nothing written) when there is no such review or it is
    already so."""
    changed = (
        await session.execute(
            update(Review)
            .where(Review.id == review_id, Review.hidden.is_not(hidden))
            .values(hidden=hidden)
            .returning(Review.product_id, Review.stars, Review.customer_id)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if changed is None:
        current = (await session.execute(select(Review.hidden).where(Review.id == review_id))).scalar_one_or_none()
        if current is None:
            raise NotFound("admin.reviews.not_found", id=review_id)
        raise DomainError("admin.reviews.already_hidden" if hidden else "admin.reviews.already_shown", id=review_id)
    await _adjust(session, changed.product_id, -changed.stars if hidden else changed.stars, -1 if hidden else 1)
    product = (
        await session.execute(
            select(Product.sku, Product.rating_sum, Product.rating_count).where(Product.id == changed.product_id)
        )
    ).one()
    action = "review_hide" if hidden else "review_show"
    audit.record(
        session,
        actor,
        name,
        action,
        f"review {review_id}: {changed.stars}★ by customer {changed.customer_id}",
        product_id=changed.product_id,
    )
    log.info("reviews.moderated", extra={"review": review_id, "action": action, "actor": actor})
    return Moderated(review_id, changed.stars, product.sku, product.rating_sum, product.rating_count)


def parse_review_id(text: str) -> int:
    """A review id as an admin types it ("12" or "#12"); ValueError otherwise (the usage is shown)."""
    raw = text.strip().lstrip("#")
    if not raw.isdigit() or len(raw) > 9:
        raise ValueError(text)
    return int(raw)
