"""Stock moves. Each is one conditional UPDATE, so it is atomic without application locks:
`stock` (free) → `reserved` (unpaid orders) → `sold`. Their sum changes only by restocking."""
from __future__ import annotations

from typing import NoReturn, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.changes import catalogue_written
from db.models import Product
from services.errors import OutOfStock


class StockItem(Protocol):
    """A Product, or any row carrying its id and name."""
    id: int
    name: str


async def reserve(session: AsyncSession, product: StockItem, qty: int) -> None:
    catalogue_written(session)
    result = await session.execute(
        update(Product).where(Product.id == product.id, Product.stock >= qty, Product.active.is_(True))
        .values(stock=Product.stock - qty, reserved=Product.reserved + qty)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        left = (await session.execute(select(Product.stock).where(Product.id == product.id))).scalar_one_or_none()
        raise_short(product, left or 0)


def raise_short(product: StockItem, left: int) -> NoReturn:
    if left > 0:
        raise OutOfStock("error.not_enough_stock", name=product.name, n=left)
    raise OutOfStock("error.out_of_stock", name=product.name)


async def release(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    catalogue_written(session)
    for product_id, qty in sorted(items):
        await session.execute(
            update(Product).where(Product.id == product_id)
            .values(stock=Product.stock + qty, reserved=Product.reserved - qty)
            .execution_options(synchronize_session=False)
        )


async def commit_sale(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    """Reserved to sold: free stock, the figure customers see, does not move (so no catalogue write)."""
    for product_id, qty in sorted(items):
        await session.execute(
            update(Product).where(Product.id == product_id)
            .values(reserved=Product.reserved - qty, sold=Product.sold + qty)
            .execution_options(synchronize_session=False)
        )


async def return_sold(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    catalogue_written(session)
    for product_id, qty in sorted(items):
        await session.execute(
            update(Product).where(Product.id == product_id)
            .values(stock=Product.stock + qty, sold=Product.sold - qty)
            .execution_options(synchronize_session=False)
        )


async def sell_directly(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    """A late payment for a lapsed order: take the units straight from free stock, if still there."""
    catalogue_written(session)
    for product_id, qty in sorted(items):
        result = await session.execute(
            update(Product).where(Product.id == product_id, Product.stock >= qty)
            .values(stock=Product.stock - qty, sold=Product.sold + qty)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise OutOfStock("error.out_of_stock", name=str(product_id))
