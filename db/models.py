"""The schema. Every row that must survive a crash lives here: stock, orders, payments, outbox.

Money columns are integers in minor units; the currency sits beside them. Stock is split in three
columns (`stock` free to sell, `reserved` held by unpaid orders, `sold`) so that their sum is a
conserved quantity that tests can check after any storm of concurrent checkouts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The model's Table, for Core statements over it (declarative types `__table__` as any FromClause)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a Table")
    return table


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on PostgreSQL and SQLite alike (SQLite drops the tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # Telegram user id
    chat_id: Mapped[int] = mapped_column(BigInteger)
    first_name: Mapped[str] = mapped_column(String(128), default="")
    username: Mapped[str | None] = mapped_column(String(64))
    # The language we talk to them in: the Telegram client's at first contact, or their own choice
    # (/language) once `language_chosen`; the outbox's messages use it.
    language: Mapped[str] = mapped_column(String(8), default="en")
    language_chosen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    phone: Mapped[str | None] = mapped_column(String(16))  # 2547XXXXXXXX form
    email: Mapped[str | None] = mapped_column(String(254))
    unreachable: Mapped[bool] = mapped_column(Boolean, default=False)  # blocked the bot (403)
    # /stop_news: no broadcasts (order updates still come); /start_news undoes it
    news_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer, default=0)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="ck_products_stock_nonneg"),
        CheckConstraint("reserved >= 0", name="ck_products_reserved_nonneg"),
        CheckConstraint("sold >= 0", name="ck_products_sold_nonneg"),
        Index("ix_products_category_active_created", "category_id", "active", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price_kes: Mapped[int] = mapped_column(BigInteger)  # minor units (cents)
    price_usd: Mapped[int] = mapped_column(BigInteger)  # minor units (cents)
    stock: Mapped[int] = mapped_column(Integer, default=0)  # free to sell
    reserved: Mapped[int] = mapped_column(Integer, default=0)  # held by unpaid orders
    sold: Mapped[int] = mapped_column(Integer, default=0)
    photo_url: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)
    # The visible reviews' stars, summed and counted (services/reviews.py keeps them in the transaction
    # of each review change), so a card shows its average without a query of its own.
    rating_sum: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rating_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    category: Mapped[Category] = relationship(lazy="joined")


class CartItem(Base):
    __tablename__ = "cart_items"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    # Prices seen when the line was added, so the cart can show a price change since then.
    seen_price_kes: Mapped[int] = mapped_column(BigInteger)
    seen_price_usd: Mapped[int] = mapped_column(BigInteger)
    added_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)

    product: Mapped[Product] = relationship(lazy="joined")


class StockWatch(Base):
    """A customer who pressed "Notify me" on an out-of-stock product."""

    __tablename__ = "stock_watches"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    # The back-in-stock message queued for this watch at a restock. The sender ends the watch when
    # that message is sent; while it is pending no other is queued; if it died, the next restock tells again.
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"), index=True)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_customer_created", "customer_id", "created_at"),
        Index("ix_orders_state_created", "state", "created_at"),
        Index("ix_orders_tracking_due", "carrier", "state", "tracking_next_check_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    state: Mapped[str] = mapped_column(String(24), default="awaiting_payment")
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)
    shipping: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    zone: Mapped[str] = mapped_column(String(24))
    phone: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(String(254))
    address: Mapped[str] = mapped_column(Text)
    reserved_until: Mapped[datetime] = mapped_column(TZDateTime())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)
    # Fulfilment
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    refund_status: Mapped[str | None] = mapped_column(String(32))  # none/refunded/manual_reversal_owed
    # Latest tracking event (DHL), shown by /track
    tracking_status: Mapped[str | None] = mapped_column(String(24))
    tracking_description: Mapped[str | None] = mapped_column(Text)
    tracking_place: Mapped[str | None] = mapped_column(String(200))
    tracking_time: Mapped[datetime | None] = mapped_column(TZDateTime())
    tracking_checked_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    tracking_next_check_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    tracking_misses: Mapped[int] = mapped_column(Integer, default=0)  # consecutive 404s
    shipped_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    # Promo code (services/promos.py): the code as entered (upper case) and its discount, in minor
    # units of `currency`; total = subtotal + shipping - discount.
    promo_code: Mapped[str | None] = mapped_column(String(20))
    discount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The customer's message that carries this order's pay buttons (M-Pesa, card, Cancel): when the
    # order leaves awaiting_payment, that message is edited so no stale pay button stays in the chat.
    pay_message_id: Mapped[int | None] = mapped_column(BigInteger)

    items: Mapped[list[OrderItem]] = relationship(back_populates="order", lazy="selectin", order_by="OrderItem.id")
    customer: Mapped[Customer] = relationship(lazy="joined")


class ApiBudget(Base):
    """Calls spent today on a rate-limited external API (DHL: ~250 a day), shared by every worker,
    and the pause a 429 `Retry-After` asked for. One row per API; `day` is the UTC date it counts."""

    __tablename__ = "api_budgets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), default="")  # YYYY-MM-DD (UTC)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    paused_until: Mapped[datetime | None] = mapped_column(TZDateTime())


class OrderItem(Base):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    unit_price: Mapped[int] = mapped_column(BigInteger)  # in the order's currency, minor units
    quantity: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="items")


class OrderEvent(Base):
    """Every state transition (and admin action) with time and actor: the order's audit trail."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str | None] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(64))  # "customer:123", "admin:456", "system:expiry", ...
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Payment(Base):
    """One payment attempt with one provider. Written before the customer is asked to pay."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("checkout_request_id", name="uq_payments_checkout_request_id"),
        UniqueConstraint("stripe_session_id", name="uq_payments_stripe_session_id"),
        Index("ix_payments_state_next_check", "state", "next_check_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))  # mpesa / stripe
    # pending -> paid | failed | superseded | expired ; paid -> refund_due | refunded
    state: Mapped[str] = mapped_column(String(16), default="pending")
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    currency: Mapped[str] = mapped_column(String(3))
    phone: Mapped[str | None] = mapped_column(String(16))
    merchant_request_id: Mapped[str | None] = mapped_column(String(64))
    checkout_request_id: Mapped[str | None] = mapped_column(String(64))
    stripe_session_id: Mapped[str | None] = mapped_column(String(128))
    stripe_payment_intent: Mapped[str | None] = mapped_column(String(128))
    checkout_url: Mapped[str | None] = mapped_column(Text)
    result_code: Mapped[str | None] = mapped_column(String(32))
    result_desc: Mapped[str | None] = mapped_column(Text)
    receipt_number: Mapped[str | None] = mapped_column(String(64))
    raw_callback: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    query_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_check_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)

    order: Mapped[Order] = relationship(lazy="joined")


class WebhookEvent(Base):
    """Inbox of provider callbacks: dedup by provider event id, and nothing odd ever vanishes.

    status: processed | duplicate | anomaly | ignored
    """

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="processed")
    detail: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    received_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Broadcast(Base):
    """A message the admins send to every customer who wants news (/broadcast in the admin group).

    draft (previewed, awaiting Confirm) -> sending (one outbox row per recipient, written with the
    state change) -> done (every row sent, failed or dropped because the customer blocked the bot);
    draft -> cancelled. The counts are kept by the outbox sender in the commit that settles each
    row; `reported` is how many of them the progress message in the admin group shows."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_by: Mapped[int] = mapped_column(BigInteger)  # the admin's Telegram user id
    chat_id: Mapped[int] = mapped_column(BigInteger)  # the admin group, where the progress is shown
    html: Mapped[str] = mapped_column(Text)  # the admin's text or caption, Telegram HTML
    photo: Mapped[str | None] = mapped_column(String(256))  # Telegram file_id of the photo, if any
    state: Mapped[str] = mapped_column(String(16), default="draft")
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    blocked: Mapped[int] = mapped_column(Integer, default=0)
    reported: Mapped[int] = mapped_column(Integer, default=0)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class Outbox(Base):
    """A message the system must send on its own, written in the transaction that caused it.

    `priority`: lower goes first (order updates and admin alerts 0, broadcasts after them), so a big
    broadcast never delays an order update. A row is a text message, a photo with `text` as its
    caption (`photo`), or an edit of the bot's message `edit_message_id` in the chat."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_due", "state", "next_attempt_at", "id"),
        Index("ix_outbox_state_priority", "state", "priority", "id"),
        UniqueConstraint("dedup_key", name="uq_outbox_dedup_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))  # order_status / admin_alert / back_in_stock / ...
    text: Mapped[str] = mapped_column(Text)
    reply_markup: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dedup_key: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending / sent / dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    photo: Mapped[str | None] = mapped_column(String(256))
    edit_message_id: Mapped[int | None] = mapped_column(BigInteger)
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="SET NULL"), index=True)


class PromoCode(Base):
    """A discount code the admins create (/promo add): a percentage of the subtotal, or a fixed
    amount in one currency (`amount` minor units of `currency`). `used` counts the orders holding a
    use (claimed at Confirm, given back when the order expires or is cancelled); it never exceeds
    `uses_limit` (NULL: unlimited). `ends_at` is the first moment it no longer applies (the start of
    the day after its last day, in the shop's zone), NULL: no end."""

    __tablename__ = "promo_codes"
    __table_args__ = (
        UniqueConstraint("code", name="uq_promo_codes_code"),
        CheckConstraint("used >= 0", name="ck_promo_codes_used_nonnegative"),
        CheckConstraint("uses_limit IS NULL OR used <= uses_limit", name="ck_promo_codes_used_within_limit"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(20))  # upper case
    percent: Mapped[int | None] = mapped_column(Integer)  # 1..90, or NULL for a fixed amount
    amount: Mapped[int | None] = mapped_column(BigInteger)  # minor units of `currency`, fixed codes
    currency: Mapped[str | None] = mapped_column(String(3))  # fixed codes only
    min_amount: Mapped[int | None] = mapped_column(BigInteger)  # minimum subtotal, minor units of min_currency
    min_currency: Mapped[str | None] = mapped_column(String(3))
    ends_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    uses_limit: Mapped[int | None] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_by: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class AuditEntry(Base):
    """One thing an admin changed (restock, ship, delivered, cancel): who, when, what. Written by
    services/admin.py in the transaction of the change itself, so an action that rolls back leaves none."""

    __tablename__ = "admin_actions"
    __table_args__ = (Index("ix_admin_actions_order_id_id", "order_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    admin_id: Mapped[int] = mapped_column(BigInteger)  # Telegram user id
    admin_name: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(32))  # restock / ship / delivered / cancel
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    detail: Mapped[str] = mapped_column(Text, default="")


class ReturnRequest(Base):
    """A buyer's request to return some or all of a delivered order (services/returns.py).

    requested -> approved (the order returned, the lines restocked, the refund made or owed) |
    rejected (the order back to delivered). The decision is a compare-and-set on `state`, so two
    admins (or a double tap) decide once. `refund_amount` is what the lines cost (plus shipping when
    the whole order comes back), in the order's currency; `refund_status` is how it was paid back:
    refunded / refund_pending / manual_reversal_owed / none."""

    __tablename__ = "return_requests"
    __table_args__ = (Index("ix_return_requests_order_id", "order_id"), Index("ix_return_requests_state", "state"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="requested")
    reason: Mapped[str] = mapped_column(Text, default="")
    whole_order: Mapped[bool] = mapped_column(Boolean, default=False)
    currency: Mapped[str] = mapped_column(String(3))
    refund_amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    refund_status: Mapped[str | None] = mapped_column(String(32))
    refund_reference: Mapped[str | None] = mapped_column(String(128))  # Stripe's refund id
    decided_by: Mapped[int | None] = mapped_column(BigInteger)  # the admin's Telegram user id
    decision_note: Mapped[str | None] = mapped_column(Text)  # the rejection's reason
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(TZDateTime())

    lines: Mapped[list[ReturnLine]] = relationship(
        back_populates="request", lazy="selectin", order_by="ReturnLine.id", cascade="all, delete-orphan"
    )


class ReturnLine(Base):
    """One order line of a return request and how many of its units come back."""

    __tablename__ = "return_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="ck_return_lines_quantity_positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("return_requests.id", ondelete="CASCADE"), index=True)
    order_item_id: Mapped[int] = mapped_column(ForeignKey("order_items.id", ondelete="CASCADE"))
    quantity: Mapped[int] = mapped_column(Integer)

    request: Mapped[ReturnRequest] = relationship(back_populates="lines")
    item: Mapped[OrderItem] = relationship(lazy="joined")


class Review(Base):
    """A buyer's stars (1-5) and optional comment on a product, one per buyer and product (rating again
    replaces the stars, a new comment the old one). `order_id`: the delivered order that made them a
    buyer of it. Hidden by an admin (/review hide): not shown, not counted in the product's average."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("product_id", "customer_id", name="uq_reviews_product_customer"),
        CheckConstraint("stars BETWEEN 1 AND 5", name="ck_reviews_stars_range"),
        Index("ix_reviews_product_hidden_updated", "product_id", "hidden", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    stars: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class SupportMessage(Base):
    """A customer's message relayed to the admin group ("Talk to us", or free text outside a flow):
    `admin_message_id` is the relayed copy in the admin group, so an admin's reply to it reaches
    `customer_id`'s chat. Message ids are numbered per chat: the group's id is part of the key, so
    after the group changes (a new ADMIN_CHAT_ID, a migration to a supergroup) an old id cannot
    send a reply to the wrong customer."""

    __tablename__ = "support_messages"
    __table_args__ = (UniqueConstraint("admin_chat_id", "admin_message_id", name="uq_support_messages_admin_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    admin_chat_id: Mapped[int] = mapped_column(BigInteger)
    admin_message_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
