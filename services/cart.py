"""The cart, kept in the database per customer so it survives restarts and moves between processes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import lazyload

from db.models import CartItem, Customer, Product
from services.errors import InvalidInput, OutOfStock

MAX_LINE_QTY = 99


@dataclass(frozen=True, slots=True)
class CartLine:
    product: Product
    quantity: int
    seen_price_kes: int
    seen_price_usd: int

    @property
    def price_changed(self) -> bool:
        return (self.seen_price_kes, self.seen_price_usd) != (self.product.price_kes, self.product.price_usd)

    @property
    def available(self) -> bool:
        return self.product.active and self.product.stock >= self.quantity


async def ensure_customer(session: AsyncSession, user_id: int, chat_id: int, first_name: str = "",
                          username: str | None = None, language: str | None = None) -> Customer:
    customer = await session.get(Customer, user_id)
    if customer is None:
        customer = Customer(id=user_id, chat_id=chat_id, first_name=first_name[:128], username=username,
                            language=(language or "en")[:8])
        session.add(customer)
        await session.flush()
    else:
        if customer.chat_id != chat_id and chat_id > 0:
            customer.chat_id = chat_id
        if customer.unreachable:  # they wrote to us, so they unblocked the bot
            customer.unreachable = False
    return customer


async def lines(session: AsyncSession, customer_id: int) -> list[CartLine]:
    rows = (await session.execute(
        select(CartItem).where(CartItem.customer_id == customer_id).order_by(CartItem.added_at, CartItem.product_id)
    )).unique().scalars().all()
    return [CartLine(r.product, r.quantity, r.seen_price_kes, r.seen_price_usd) for r in rows]


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
        session.add(CartItem(customer_id=customer_id, product_id=product.id, quantity=quantity,
                             seen_price_kes=product.price_kes, seen_price_usd=product.price_usd))
    else:
        item.quantity = quantity
    await session.flush()
    return quantity


async def clear(session: AsyncSession, customer_id: int) -> None:
    await session.execute(delete(CartItem).where(CartItem.customer_id == customer_id))


async def quantity_in_cart(session: AsyncSession, customer_id: int, product_id: int) -> int:
    quantity = await session.scalar(select(CartItem.quantity).where(CartItem.customer_id == customer_id,
                                                                    CartItem.product_id == product_id))
    return quantity or 0


async def remove(session: AsyncSession, customer_id: int, product_id: int) -> None:
    await session.execute(delete(CartItem).where(CartItem.customer_id == customer_id,
                                                 CartItem.product_id == product_id))
