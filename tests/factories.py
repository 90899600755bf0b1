"""Test data through the real services: customers, products, orders placed as checkout places them."""

from __future__ import annotations

from db.models import Category, Order, Product
from services import cart as cart_service
from services import orders as order_service


async def make_product(
    session_factory,
    sku: str = "SKU-1",
    *,
    stock: int = 10,
    price_kes: int = 1000_00,  # type: ignore[no-untyped-def]
    price_usd: int = 8_00,
    category: str = "Test",
) -> int:
    from sqlalchemy import select

    async with session_factory() as session, session.begin():
        cat = (await session.execute(select(Category).where(Category.name == category))).scalar_one_or_none()
        if cat is None:
            cat = Category(slug=category.lower(), name=category)
            session.add(cat)
            await session.flush()
        product = Product(
            sku=sku,
            category_id=cat.id,
            name=f"Product {sku}",
            description="",
            price_kes=price_kes,
            price_usd=price_usd,
            stock=stock,
        )
        session.add(product)
        await session.flush()
        return product.id


async def make_order(
    session_factory,
    customer_id: int,
    items: list[tuple[int, int]],
    *,  # type: ignore[no-untyped-def]
    zone: str = "nairobi",
    phone: str = "254712345678",
    reservation_minutes: int = 30,
    promo_code: str | None = None,
) -> Order:
    """Fill the customer's cart with (product_id, qty) and place the order (with a promo code's
    use claimed, when given), committed."""
    async with session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, customer_id, customer_id, "Test")
        for product_id, qty in items:
            product = await session.get(Product, product_id)
            await cart_service.set_quantity(session, customer_id, product, qty)
        order = await order_service.place_order(
            session,
            customer_id,
            zone_code=zone,
            phone=phone,
            email="buyer@example.com",
            address="Plot 1, Ngong Rd, Nairobi",
            reservation_minutes=reservation_minutes,
            promo_code=promo_code,
        )
    return order


async def stock_of(session_factory, product_id: int) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        p = await session.get(Product, product_id)
        return p.stock, p.reserved, p.sold
