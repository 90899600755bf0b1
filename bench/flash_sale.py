"""Flash sale: 500 customers, each with 1 unit in the cart, check out at once for a product with 20
units, on PostgreSQL, as the Confirm handler does it: services.orders.refuse_early (the cart read
without a transaction: sold out is answered there) and then place_order in a transaction.

Target: exactly 20 orders, 0 oversold, stock + reserved + sold conserved, p99 checkout latency under
250 ms. Latency is measured from the moment the customer presses "pay" (all 500 at once) to the
committed answer, so it includes waiting for one of the pool's connections: the engine is the
production one (`db.session.make_engine` defaults: a fixed pool of 20), with a semaphore of the
pool's size in front of it so the time spent queueing can be told from the time spent served.

The sale hits a process that has been taking orders: before it, WARM_UP checkouts of another product
(some placed, some sold out) run through every pooled connection, so each has the checkout's
statements prepared, as a running shop's connections have. A connection's first use of a statement
costs a round trip to prepare it and asyncpg's set-up of its codecs; on a process that has just
started, 20 connections pay that for each checkout statement inside the sale (p99 ~40 ms higher
here, bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import distinct, func, insert, select

from bench.common import Result, main, migrated_engine, percentile
from bot.config import Settings
from bot.speedups import settle_heap
from db.models import CartItem, Category, Customer, OrderItem, Product
from db.session import make_sessionmaker
from services import orders as order_service
from services.errors import OutOfStock

BUYERS = 500
UNITS = 20
POOL = 20
WARM_UP = 3 * POOL  # checkouts before the sale, for POOL units: the first POOL placed, the rest sold out
TARGET_P99_MS = 250.0
# The shop's default per-customer limits, checked as the Confirm handler has them checked (each buyer
# holds one unit and no other order, so none is refused for them: the bench pays for the count).
LIMITS = order_service.Limits(
    Settings.model_fields["max_open_orders_per_customer"].default,
    Settings.model_fields["max_reserved_units_per_customer"].default,
)


async def seed(session_factory, sku: str, units: int, first_customer: int, buyers: int) -> int:  # type: ignore[no-untyped-def]
    """One product with `units` units and `buyers` customers with one unit of it in their carts."""
    async with session_factory() as session, session.begin():
        cat = Category(slug=sku.lower(), name=f"Sale {sku}")
        session.add(cat)
        await session.flush()
        product = Product(
            sku=sku,
            category_id=cat.id,
            name="Raspberry Pi 5 (8 GB)",
            description="",
            price_kes=12_000_00,
            price_usd=95_00,
            stock=units,
        )
        session.add(product)
        await session.flush()
        await session.execute(
            insert(Customer),
            [
                {"id": first_customer + n, "chat_id": first_customer + n, "first_name": f"Buyer {n}", "language": "en"}
                for n in range(buyers)
            ],
        )
        await session.execute(
            insert(CartItem),
            [
                {
                    "customer_id": first_customer + n,
                    "product_id": product.id,
                    "quantity": 1,
                    "seen_price_kes": product.price_kes,
                    "seen_price_usd": product.price_usd,
                }
                for n in range(buyers)
            ],
        )
        return product.id


async def sale(session_factory, first_customer: int, buyers: int) -> tuple[list[tuple[str, float, float]], float]:  # type: ignore[no-untyped-def]
    """`buyers` checkouts pressed at once, through a gate of the pool's size: (results, wall seconds)."""
    gate, start = asyncio.Semaphore(POOL), asyncio.Event()
    tasks = [asyncio.create_task(checkout(session_factory, gate, first_customer + n, start)) for n in range(buyers)]
    await asyncio.sleep(0.05)
    wall = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    return results, time.perf_counter() - wall


async def checkout(
    session_factory,
    gate: asyncio.Semaphore,
    customer_id: int,  # type: ignore[no-untyped-def]
    start: asyncio.Event,
) -> tuple[str, float, float]:
    """(public id or "out_of_stock", latency ms from the press, service ms once a connection is free)."""
    await start.wait()
    began = time.perf_counter()
    async with gate:
        served = time.perf_counter()
        try:
            async with session_factory() as session:
                await order_service.refuse_early(session, customer_id)  # as the Confirm handler does
                async with session.begin():
                    order = await order_service.place_order(
                        session,
                        customer_id,
                        zone_code="nairobi",
                        phone="254712345678",
                        email="buyer@example.com",
                        address="Plot 1, Ngong Rd, Nairobi",
                        reservation_minutes=30,
                        limits=LIMITS,
                    )
                outcome = order.public_id
        except OutOfStock:
            outcome = "out_of_stock"
    done = time.perf_counter()
    return outcome, (done - began) * 1000, (done - served) * 1000


async def run() -> Result:
    async with migrated_engine("sf_bench_flash") as engine:
        assert engine.pool.size() == POOL and engine.pool._max_overflow == 0, "bench out of step with make_engine"
        session_factory = make_sessionmaker(engine)
        await seed(session_factory, "WARM-1", POOL, 90_000, WARM_UP)
        product_id = await seed(session_factory, "FLASH-1", UNITS, 10_000, BUYERS)
        warm, _ = await sale(
            session_factory, 90_000, WARM_UP
        )  # the pool's statement caches, as a running process has them
        warm_placed = sum(o != "out_of_stock" for o, _, _ in warm)
        settle_heap()  # as `storefront web` does once it has started
        results, wall = await sale(session_factory, 10_000, BUYERS)

        latencies = [ms for _, ms, _ in results]
        service = [ms for _, _, ms in results]
        placed = [o for o, _, _ in results if o != "out_of_stock"]
        async with session_factory() as session:
            orders = (
                await session.execute(
                    select(func.count(distinct(OrderItem.order_id))).where(OrderItem.product_id == product_id)
                )
            ).scalar_one()
            p = await session.get(Product, product_id)
            stock, reserved, sold = p.stock, p.reserved, p.sold
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    oversold = max(0, orders - UNITS)
    conserved = stock + reserved + sold == UNITS
    passed = orders == UNITS and len(placed) == UNITS and oversold == 0 and conserved and p99 < TARGET_P99_MS
    return Result(
        "flash sale",
        f"exactly {UNITS} orders, 0 oversold, stock conserved, p99 < {TARGET_P99_MS:.0f} ms",
        passed,
        {
            "warm-up before the sale": f"{warm_placed} placed, {WARM_UP - warm_placed} sold out (another product)",
            "checkouts": BUYERS,
            "units": UNITS,
            "orders placed": orders,
            "answered out of stock": BUYERS - len(placed),
            "oversold": oversold,
            "stock/reserved/sold": f"{stock}/{reserved}/{sold} (sum {stock + reserved + sold})",
            "p50 latency ms": p50,
            "p99 latency ms": p99,
            "max latency ms": max(latencies),
            "service ms p50/p99 (after the queue)": f"{percentile(service, 50):.1f} / {percentile(service, 99):.1f}",
            "wall time s": wall,
            "checkouts/s": BUYERS / wall,
            "pool": f"{POOL} connections + semaphore {POOL}",
        },
    )


if __name__ == "__main__":
    main(run)
