"""Stock moves. Each is one conditional UPDATE, so it is atomic without application locks:
`stock` (free) → `reserved` (unpaid orders) → `sold`. Their sum changes only by restocking.

The statements are built once, on the table, and run on the session's connection: building an ORM
`update(Product)` per call and running it through the ORM's DML layer was a large share of placing
an order (flash-sale profile, bench/RESULTS.md), for a statement that touches no loaded object."""

from __future__ import annotations

from typing import NoReturn, Protocol

from sqlalchemy import Integer, Update, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.changes import catalogue_written
from db.models import Product, table_of
from services.errors import OutOfStock


class StockItem(Protocol):
    """A Product, or any row carrying its id and name."""

    id: int
    name: str


_PRODUCTS = table_of(Product)
_P = _PRODUCTS.c
_ID, _QTY = bindparam("product_id", type_=Integer), bindparam("qty", type_=Integer)


def _move(source: str, target: str, *, only_if_free: bool = False) -> Update:
    """`UPDATE products SET <source> = <source> - :qty, <target> = <target> + :qty WHERE id = :product_id`,
    with `AND stock >= :qty` when the units come out of free stock and must be there."""
    stmt = update(_PRODUCTS).where(_P.id == _ID)
    if only_if_free:
        stmt = stmt.where(_P.stock >= _QTY)
    return stmt.values({source: _P[source] - _QTY, target: _P[target] + _QTY})


_RESERVE = _move("stock", "reserved", only_if_free=True).where(_P.active.is_(True))
_RELEASE = _move("reserved", "stock")
_COMMIT_SALE = _move("reserved", "sold")
_RETURN_SOLD = _move("sold", "stock")
_SELL_DIRECTLY = _move("stock", "sold", only_if_free=True)
_STOCK_LEFT = select(_P.stock).where(_P.id == _ID)


async def _run(session: AsyncSession, stmt: Update, product_id: int, qty: int) -> int:
    connection = await session.connection()
    return (await connection.execute(stmt, {"product_id": product_id, "qty": qty})).rowcount


async def reserve(session: AsyncSession, product: StockItem, qty: int) -> None:
    catalogue_written(session)
    if await _run(session, _RESERVE, product.id, qty) != 1:
        connection = await session.connection()
        left = (await connection.execute(_STOCK_LEFT, {"product_id": product.id})).scalar_one_or_none()
        raise_short(product, left or 0)


def raise_short(product: StockItem, left: int) -> NoReturn:
    if left > 0:
        raise OutOfStock("error.not_enough_stock", name=product.name, n=left)
    raise OutOfStock("error.out_of_stock", name=product.name)


async def release(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    catalogue_written(session)
    for product_id, qty in sorted(items):
        await _run(session, _RELEASE, product_id, qty)


async def commit_sale(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    """Reserved to sold: free stock, the figure customers see, does not move (so no catalogue write)."""
    for product_id, qty in sorted(items):
        await _run(session, _COMMIT_SALE, product_id, qty)


async def return_sold(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    catalogue_written(session)
    for product_id, qty in sorted(items):
        await _run(session, _RETURN_SOLD, product_id, qty)


async def sell_directly(session: AsyncSession, items: list[tuple[int, int]]) -> None:
    """A late payment for a lapsed order: take the units straight from free stock, if still there."""
    catalogue_written(session)
    for product_id, qty in sorted(items):
        if await _run(session, _SELL_DIRECTLY, product_id, qty) != 1:
            raise OutOfStock("error.out_of_stock", name=str(product_id))
