"""The cart, kept in the database per customer so it survives restarts and moves between processes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, Insert, Select, bindparam, case, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import lazyload

from db.models import CartItem, Customer, Product, TZDateTime, table_of, utcnow
from db.session import dialect_name, insert_with_conflicts
from services.errors import InvalidInput, OutOfStock

MAX_LINE_QTY = 99


@dataclass(frozen=True, slots=True)
class CartProduct:
    """What a cart line shows and checks of its product, read with the line (no ORM object to build)."""

    id: int
    name: str
    price_kes: int
    price_usd: int
    stock: int
    active: bool


@dataclass(frozen=True, slots=True)
class CartLine:
    product: CartProduct
    quantity: int
    seen_price_kes: int
    seen_price_usd: int

    @property
    def price_changed(self) -> bool:
        return (self.seen_price_kes, self.seen_price_usd) != (self.product.price_kes, self.product.price_usd)

    @property
    def available(self) -> bool:
        return self.product.active and self.product.stock >= self.quantity


async def ensure_customer(
    session: AsyncSession,
    user_id: int,
    chat_id: int,
    first_name: str = "",
    username: str | None = None,
    language: str | None = None,
) -> Customer:
    customer = await session.get(Customer, user_id)
    if customer is None:
        customer = Customer(
            id=user_id, chat_id=chat_id, first_name=first_name[:128], username=username, language=(language or "en")[:8]
        )
        session.add(customer)
        await session.flush()
    else:
        if customer.chat_id != chat_id and chat_id > 0:
            customer.chat_id = chat_id
        if customer.unreachable:  # they wrote to us, so they unblocked the bot
            customer.unreachable = False
    return customer


# The cart's own statements are built once, in Core over the tables (no ORM entities to load):
# building a statement costs more CPU than running it (the cart screen, the card and Add to cart
# run them on every press).
_ITEMS, _PRODUCTS = table_of(CartItem), table_of(Product)
_LINES = (
    select(
        _PRODUCTS.c.id,
        _PRODUCTS.c.name,
        _PRODUCTS.c.price_kes,
        _PRODUCTS.c.price_usd,
        _PRODUCTS.c.stock,
        _PRODUCTS.c.active,
        _ITEMS.c.quantity,
        _ITEMS.c.seen_price_kes,
        _ITEMS.c.seen_price_usd,
    )
    .select_from(_ITEMS.join(_PRODUCTS, _PRODUCTS.c.id == _ITEMS.c.product_id))
    .where(_ITEMS.c.customer_id == bindparam("customer_id"))
    .order_by(_ITEMS.c.added_at, _ITEMS.c.product_id)
)
_QUANTITY = select(_ITEMS.c.quantity).where(
    _ITEMS.c.customer_id == bindparam("customer_id"), _ITEMS.c.product_id == bindparam("product_id")
)


async def register_customer(
    session: AsyncSession,
    user_id: int,
    chat_id: int,
    first_name: str = "",
    username: str | None = None,
    language: str | None = None,
) -> str | None:
    """`ensure_customer` for callers that need only to know the customer exists: one statement
    (an upsert that writes nothing for a returning customer whose chat is unchanged), so a handler
    flagged to run without a transaction pays one round trip for it. Returns the language the
    customer chose (/language), None when they never did: what the upsert wrote, or for a returning
    customer it left alone, read by a second statement."""
    row = (
        await session.execute(
            _register(dialect_name(session)),
            {
                "id": user_id,
                "chat_id": chat_id,
                "first_name": first_name[:128],
                "username": username,
                "language": (language or "en")[:8],
                "unreachable": False,
                "created_at": utcnow(),
            },
        )
    ).first()
    if row is None:  # a returning customer with nothing to update: the upsert returned no row
        row = (await session.execute(_CHOSEN_LANGUAGE, {"id": user_id})).first()
    return row.language if row is not None and row.language_chosen else None


@functools.cache
def _register(dialect: str) -> Insert:
    customers = table_of(Customer)
    insert = insert_with_conflicts(dialect)(customers)
    moved = customers.c.chat_id != insert.excluded.chat_id
    # A chat id <= 0 is not a private chat: keep the one we have, as ensure_customer does.
    return insert.on_conflict_do_update(
        index_elements=[customers.c.id],
        set_={
            "chat_id": case((insert.excluded.chat_id > 0, insert.excluded.chat_id), else_=customers.c.chat_id),
            "unreachable": False,
        },
        where=(moved & (insert.excluded.chat_id > 0)) | customers.c.unreachable.is_(True),
    ).returning(customers.c.language, customers.c.language_chosen)


_CUSTOMERS = table_of(Customer)
_CHOSEN_LANGUAGE = select(_CUSTOMERS.c.language, _CUSTOMERS.c.language_chosen).where(_CUSTOMERS.c.id == bindparam("id"))


async def lines(session: AsyncSession, customer_id: int) -> list[CartLine]:
    rows = (await session.execute(_LINES, {"customer_id": customer_id})).all()
    return [CartLine(CartProduct(*row[:6]), *row[6:]) for row in rows]


async def set_quantity(session: AsyncSession, customer_id: int, product: Product, quantity: int) -> int:
    """Set a line's quantity, capped by stock; 0 removes it. Returns the quantity now in the cart."""
    return await _set(session, customer_id, product, await _item(session, customer_id, product.id), quantity)


class Added(NamedTuple):
    before: int  # in the cart before
    now: int  # in the cart now (less than before + asked when stock or the line limit capped it)


async def add(session: AsyncSession, customer_id: int, product: Product, quantity: int) -> Added:
    """Add to a line, capped like `set_quantity` (which raises OutOfStock when none can be added)."""
    item = await _item(session, customer_id, product.id)
    before = item.quantity if item is not None else 0
    return Added(before, await _set(session, customer_id, product, item, before + quantity))


async def try_add(session: AsyncSession, customer_id: int, product_id: int, quantity: int) -> Added | None:
    """Add to a line in one statement, capped by the live stock and the line limit like `add`:
    an upsert that reads the product as it writes, so it needs no transaction around it. None when
    nothing was added because the product is gone or sold out: `add` then tells which.
    On PostgreSQL the line's quantity before is read by the same statement (a data-modifying CTE
    sees the table as it was): one round trip, against five for `add` in a transaction. SQLite reads
    it just ahead of the write, so two presses at the same instant may both say "added" there."""
    values = {"customer_id": customer_id, "product_id": product_id, "quantity": quantity, "now": utcnow()}
    dialect = dialect_name(session)
    if dialect == "postgresql":
        before, now = (await session.execute(_add_reading_before(), values)).one()
    else:
        before = await quantity_in_cart(session, customer_id, product_id)
        now = (await session.execute(_upsert(dialect), values)).scalar_one_or_none()
    return None if now is None else Added(before or 0, now)


@functools.cache
def _add_reading_before() -> Select[int | None, int | None]:
    added = _upsert("postgresql").cte("added")
    return select(_QUANTITY.scalar_subquery().label("before"), select(added.c.quantity).scalar_subquery().label("now"))


@functools.cache
def _upsert(dialect: str) -> Insert:
    pg = dialect == "postgresql"
    least = func.least if pg else func.min  # SQLite's many-argument min() is LEAST
    items, products = _ITEMS, _PRODUCTS
    product_id: BindParameter[Any] = bindparam("product_id")
    quantity: BindParameter[Any] = bindparam("quantity")
    live_stock = select(products.c.stock).where(products.c.id == product_id).scalar_subquery()
    source = select(
        bindparam("customer_id"),
        products.c.id,
        least(quantity, products.c.stock, MAX_LINE_QTY),
        products.c.price_kes,
        products.c.price_usd,
        bindparam("now", type_=TZDateTime()),
    ).where(products.c.id == product_id, products.c.active.is_(True), products.c.stock > 0)
    upsert = insert_with_conflicts(dialect)(items).from_select(
        ["customer_id", "product_id", "quantity", "seen_price_kes", "seen_price_usd", "added_at"], source
    )
    return upsert.on_conflict_do_update(
        index_elements=[items.c.customer_id, items.c.product_id],
        set_={"quantity": least(items.c.quantity + quantity, live_stock, MAX_LINE_QTY)},
    ).returning(items.c.quantity)


async def _item(session: AsyncSession, customer_id: int, product_id: int) -> CartItem | None:
    """The line without its product (the caller has that already), so no join is paid for."""
    return await session.get(CartItem, (customer_id, product_id), options=[lazyload(CartItem.product)])


async def _set(session: AsyncSession, customer_id: int, product: Product, item: CartItem | None, quantity: int) -> int:
    if quantity < 0:
        raise InvalidInput("cart.error.quantity")
    if not product.active:
        raise OutOfStock("error.product_gone", name=product.name)
    if quantity == 0:
        if item is not None:
            await session.delete(item)
        return 0
    if product.stock <= 0:
        if item is None or quantity > item.quantity:
            raise OutOfStock("error.out_of_stock", name=product.name)
        item.quantity = quantity  # fewer of a sold-out item is allowed; the cart still flags the line
        await session.flush()
        return quantity
    quantity = min(quantity, product.stock, MAX_LINE_QTY)
    if item is None:
        session.add(
            CartItem(
                customer_id=customer_id,
                product_id=product.id,
                quantity=quantity,
                seen_price_kes=product.price_kes,
                seen_price_usd=product.price_usd,
            )
        )
    else:
        item.quantity = quantity
    await session.flush()
    return quantity


async def clear(session: AsyncSession, customer_id: int) -> None:
    await session.execute(delete(CartItem).where(CartItem.customer_id == customer_id))


async def quantity_in_cart(session: AsyncSession, customer_id: int, product_id: int) -> int:
    quantity = (await session.execute(_QUANTITY, {"customer_id": customer_id, "product_id": product_id})).scalar()
    return quantity or 0


async def remove(session: AsyncSession, customer_id: int, product_id: int) -> None:
    await session.execute(
        delete(CartItem).where(CartItem.customer_id == customer_id, CartItem.product_id == product_id)
    )
