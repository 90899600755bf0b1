"""Catalogue scale: services.catalog.category_page latency with 100 and with 100,000 products in the
category (the whole table grows too), first page and a deep page reached by cursor.

Target: latency(100,000) / latency(100) <= 1.5 for both pages (median of SAMPLES calls, each in a fresh
session as a handler would do). EXPLAIN ANALYZE of the deep page's queries is printed to show the
(category_id, active, created_at, id) index carries the keyset pagination.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from bench.common import Result, main, migrated_engine
from db.models import Category, Product
from db.session import make_sessionmaker
from services import catalog

SMALL, LARGE = 100, 100_000
SAMPLES = 300
ROUNDS = 6
PAGE = 6
TARGET_RATIO = 1.5
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def rows(start: int, stop: int, category_id: int) -> list[dict]:
    return [
        {
            "sku": f"SKU-{n:06d}",
            "category_id": category_id,
            "name": f"USB-C cable {n}",
            "description": "",
            "price_kes": 500_00 + n,
            "price_usd": 4_00,
            "stock": n % 7,
            "reserved": 0,
            "sold": 0,
            "active": n % 50 != 0,
            "created_at": EPOCH + timedelta(seconds=n),
            "updated_at": EPOCH,
        }
        for n in range(start, stop)
    ]


async def fill(engine, category_id: int, start: int, stop: int) -> None:  # type: ignore[no-untyped-def]
    """Core executemany inserts in chunks (asyncpg batches them), then VACUUM ANALYZE as autovacuum
    would after a bulk load (visibility map for index-only scans, fresh statistics for the planner)."""
    session_factory = make_sessionmaker(engine)
    for chunk in range(start, stop, 10_000):
        async with session_factory() as session, session.begin():
            await session.execute(insert(Product), rows(chunk, min(chunk + 10_000, stop), category_id))
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE products")


async def new_category(engine) -> int:  # type: ignore[no-untyped-def]
    async with make_sessionmaker(engine)() as session, session.begin():
        cat = Category(slug="cables", name="Cables")
        session.add(cat)
        await session.flush()
        return cat.id


async def deep_cursor(session_factory, category_id: int) -> str:  # type: ignore[no-untyped-def]
    """The cursor of a product in the middle of the category (a customer who paged a long way)."""
    async with session_factory() as session:
        ids = (
            (
                await session.execute(
                    select(Product)
                    .where(Product.category_id == category_id, Product.active.is_(True))
                    .order_by(Product.created_at.desc(), Product.id.desc())
                )
            )
            .unique()
            .scalars()
        )
        products = list(ids)
    return catalog.cursor_of(products[len(products) // 2])


async def sample_ms(session_factory, category_id: int, after: str | None, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        async with session_factory() as session:
            page = await catalog.category_page(session, category_id, after=after, size=PAGE)
        samples.append((time.perf_counter() - began) * 1000)
        assert len(page.products) == PAGE
    return samples


async def explain(engine, session_factory, category_id: int, after: str | None) -> list[str]:  # type: ignore[no-untyped-def]
    """EXPLAIN ANALYZE each statement category_page sends for a deep page, with its real parameters."""
    captured: list[tuple[str, tuple]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        captured.append((statement, parameters))

    from sqlalchemy import event

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    try:
        async with session_factory() as session:
            await catalog.category_page(session, category_id, after=after, size=PAGE)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", keep)
    out: list[str] = []
    async with engine.connect() as conn:
        for statement, parameters in captured:
            plan = (
                (await conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, tuple(parameters)))
                .scalars()
                .all()
            )
            out.append(" ".join(statement.split())[:160] + " ...")
            out.extend("      " + line for line in plan)
    return out


async def run() -> Result:
    """Two databases side by side, one with SMALL and one with LARGE products; their samples are
    taken in alternating rounds so a noisy neighbour slows both alike."""
    async with migrated_engine("sf_bench_cat_s") as small, migrated_engine("sf_bench_cat_l") as large:
        figures: dict[str, object] = {}
        setups = {}
        for label, engine, count in (("small", small, SMALL), ("large", large, LARGE)):
            category_id = await new_category(engine)
            began = time.perf_counter()
            await fill(engine, category_id, 0, count)
            if count == LARGE:
                figures[f"bulk insert of {LARGE:,} products s"] = time.perf_counter() - began
            factory = make_sessionmaker(engine)
            setups[label] = (factory, category_id, await deep_cursor(factory, category_id))
            await sample_ms(factory, category_id, None, 50)  # warm the pool and statement caches
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(ROUNDS):
            for label, (factory, category_id, cursor) in setups.items():
                for page, after in (("first", None), ("deep", cursor)):
                    samples.setdefault((label, page), []).extend(
                        await sample_ms(factory, category_id, after, SAMPLES // ROUNDS)
                    )
        plan = await explain(large, setups["large"][0], setups["large"][1], setups["large"][2])
        plan += await explain(large, setups["large"][0], setups["large"][1], None)
    med = {key: statistics.median(values) for key, values in samples.items()}
    first_ratio = med[("large", "first")] / med[("small", "first")]
    deep_ratio = med[("large", "deep")] / med[("small", "deep")]
    uses_index = (
        any("ix_products_category_active_created" in line for line in plan)
        and not any("Seq Scan on products" in line for line in plan)
        and not any("Rows Removed by Filter" in line for line in plan)
    )
    figures.update(
        {
            f"first page ms, median ({SMALL} / {LARGE:,})": (
                f"{med[('small', 'first')]:.2f} / {med[('large', 'first')]:.2f}"
            ),
            f"deep page ms, median ({SMALL} / {LARGE:,}; middle of the category)": (
                f"{med[('small', 'deep')]:.2f} / {med[('large', 'deep')]:.2f}"
            ),
            "ratio first page": first_ratio,
            "ratio deep page": deep_ratio,
            "index carries the keyset (no seq scan, no filtered rows)": uses_index,
        }
    )
    result = Result(
        "catalogue scale",
        f"latency ratio {LARGE:,}/{SMALL} <= {TARGET_RATIO} (median of {SAMPLES})",
        first_ratio <= TARGET_RATIO and deep_ratio <= TARGET_RATIO and uses_index,
        figures,
    )
    result.notes.append(f"EXPLAIN ANALYZE at {LARGE:,} products, deep page then first page:\n" + "\n".join(plan))
    return result


if __name__ == "__main__":
    main(run)
