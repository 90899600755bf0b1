"""Stock under a storm of concurrent checkouts, on PostgreSQL: no oversell, stock conserved."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.models import CartItem, Order, OrderEvent, Outbox, Product, utcnow
from services import cart as cart_service
from services import orders as order_service
from services.errors import OutOfStock
from services.orders import LimitReached
from tests.factories import make_order, make_product, stock_of

pytestmark = pytest.mark.pg_only


async def _fill_cart(session_factory, customer_id: int, items: list[tuple[int, int]]) -> None:  # type: ignore[no-untyped-def]
    async with session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, customer_id, customer_id)
        for product_id, qty in items:
            product = await session.get(Product, product_id)
            await cart_service.set_quantity(session, customer_id, product, qty)


async def _checkout(session_factory, customer_id: int) -> str:  # type: ignore[no-untyped-def]
    try:
        async with session_factory() as session, session.begin():
            order = await order_service.place_order(
                session,
                customer_id,
                zone_code="nairobi",
                phone="254712345678",
                email="a@example.com",
                address="Plot 1, Ngong Rd",
                reservation_minutes=30,
            )
            return order.public_id
    except OutOfStock:
        return "out_of_stock"


async def test_fifty_concurrent_checkouts_for_five_units(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, "HOT-1", stock=5)
    for customer in range(1, 51):
        await _fill_cart(session_factory, customer, [(pid, 1)])
    results = await asyncio.gather(*(_checkout(session_factory, c) for c in range(1, 51)))
    placed = [r for r in results if r != "out_of_stock"]
    assert len(placed) == 5 and results.count("out_of_stock") == 45
    stock, reserved, sold = await stock_of(session_factory, pid)
    assert (stock, reserved, sold) == (0, 5, 0) and stock + reserved + sold == 5
    async with session_factory() as session:
        assert (await session.execute(select(func.count(Order.id)))).scalar_one() == 5
        # the 45 who lost keep their carts (their transactions rolled back); the 5 winners' carts are gone
        carts = (await session.execute(select(CartItem.customer_id))).scalars().all()
        assert len(carts) == 45 and not set(carts) & {int(c) for c in range(1, 51) if results[c - 1] != "out_of_stock"}


async def test_multi_item_carts_in_opposite_orders_do_not_deadlock(session_factory) -> None:  # type: ignore[no-untyped-def]
    a = await make_product(session_factory, "A-1", stock=10)
    b = await make_product(session_factory, "B-1", stock=10)
    for customer in range(1, 31):
        items = [(a, 1), (b, 1)] if customer % 2 else [(b, 1), (a, 1)]
        await _fill_cart(session_factory, customer, items)
    results = await asyncio.wait_for(asyncio.gather(*(_checkout(session_factory, c) for c in range(1, 31))), 60)
    assert len([r for r in results if r != "out_of_stock"]) == 10
    for pid in (a, b):
        stock, reserved, sold = await stock_of(session_factory, pid)
        assert (stock, reserved, sold) == (0, 10, 0)


async def test_reservation_expiry_run_by_several_workers_at_once_expires_each_order_once(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, "EXP-1", stock=40)
    due = [await make_order(session_factory, c, [(pid, 1)], reservation_minutes=1) for c in range(1, 21)]
    paid = await make_order(session_factory, 99, [(pid, 1)], reservation_minutes=1)
    async with session_factory() as session, session.begin():
        await order_service.transition(
            session, await order_service.get_order(session, paid.public_id), "processing", "system:test"
        )
    later = utcnow() + timedelta(minutes=5)
    counts = await asyncio.gather(*(order_service.expire_due_orders(session_factory, now=later) for _ in range(6)))
    assert sum(counts) == 20
    assert await stock_of(session_factory, pid) == (39, 0, 1)
    async with session_factory() as session:
        expired_events = (
            (
                await session.execute(
                    select(OrderEvent.order_id).where(
                        OrderEvent.to_state == "expired", OrderEvent.actor == "system:expiry"
                    )
                )
            )
            .scalars()
            .all()
        )
        assert len(expired_events) == len(set(expired_events)) == 20
        messages = (
            (await session.execute(select(Outbox.chat_id).where(Outbox.text.contains("expired")))).scalars().all()
        )
        assert sorted(messages) == list(range(1, 21))
        assert (await order_service.get_order(session, paid.public_id)).state == "processing"
        assert {(await order_service.get_order(session, o.public_id)).state for o in due} == {"expired"}
    assert await order_service.expire_due_orders(session_factory, now=later) == 0


async def test_one_customers_checkouts_at_once_stay_within_the_open_orders_limit(session_factory) -> None:  # type: ignore[no-untyped-def]
    """A checkout in flight while the customer refills the cart and confirms again (another web
    process): the second waits at its cart claim for the first to commit, and only then counts the
    customer's unpaid orders, the first's included."""
    first_product = await make_product(session_factory, "LIM-1", stock=50)
    second_product = await make_product(session_factory, "LIM-2", stock=50)
    for _ in range(2):
        await make_order(session_factory, 1, [(first_product, 1)])
    await _fill_cart(session_factory, 1, [(first_product, 1)])
    limits = order_service.Limits(open_orders=3, reserved_units=20)

    async def place(session) -> str:  # type: ignore[no-untyped-def]
        order = await order_service.place_order(
            session,
            1,
            zone_code="nairobi",
            phone="254712345678",
            email="a@example.com",
            address="Plot 1, Ngong Rd",
            reservation_minutes=30,
            limits=limits,
        )
        return order.public_id

    async def refill_and_place() -> str:
        await _fill_cart(session_factory, 1, [(second_product, 1)])
        try:
            async with session_factory() as session, session.begin():
                return await place(session)
        except LimitReached as exc:
            return exc.key

    async with session_factory() as session, session.begin():
        third = await place(session)
        second = asyncio.create_task(refill_and_place())
        await asyncio.sleep(0.3)  # counted before the claim, the second would be placed and committed by now
        assert not second.done()
    assert await asyncio.wait_for(second, 10) == "checkout.limit.open_orders"
    async with session_factory() as session:
        unpaid = (await session.execute(select(Order.public_id).where(Order.state == "awaiting_payment"))).scalars()
        assert (
            third in set(unpaid)
            and (
                await session.execute(select(func.count(Order.id)).where(Order.state == "awaiting_payment"))
            ).scalar_one()
            == 3
        )
    assert await stock_of(session_factory, second_product) == (50, 0, 0)


# --- catalogue import against checkout: the same row locks, in the same order ------------------------


def _row(sku: str, stock: int, price_kes: int = 1000):  # type: ignore[no-untyped-def]
    """A file row matching `make_product`'s product except for `stock` (and `price_kes`, in shillings)."""
    from services.catalog import ProductRow

    return ProductRow(
        sku=sku, category="Test", name=f"Product {sku}", price_kes=price_kes, price_usd="8.00", stock=stock
    )


async def _import(session_factory, rows: list) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    from services import catalog

    async with session_factory() as session, session.begin():
        return await catalog.import_rows(session, rows)


async def _waiting_on_a_lock_or_done(session_factory, task: asyncio.Task, timeout: float = 10) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Until `task` waits on a row lock (or has finished without waiting for one)."""
    from sqlalchemy import text

    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done() and asyncio.get_running_loop().time() < deadline:
        async with session_factory() as session:
            waiting = (
                await session.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.02)


async def test_import_while_a_checkout_holds_the_row_sets_the_level_and_keeps_the_reservation(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, "IMP-1", stock=5)
    await _fill_cart(session_factory, 1, [(pid, 2)])
    async with session_factory() as checkout, checkout.begin():
        await order_service.place_order(
            checkout,
            1,
            zone_code="nairobi",
            phone="254712345678",
            email="a@example.com",
            address="Plot 1, Ngong Rd",
            reservation_minutes=30,
        )
        # The checkout holds the product row (2 reserved, not committed) while the merchant imports "5 free".
        importing = asyncio.create_task(_import(session_factory, [_row("IMP-1", 5)]))
        await _waiting_on_a_lock_or_done(session_factory, importing)
    assert await asyncio.wait_for(importing, 10) == (0, 1)
    # The import waited for the checkout and set the free level over it: 5 free as the file says, and the
    # checkout's 2 reserved kept (before: the import compared with a stale read, wrote nothing, and the
    # level the merchant set was lost: 3 free).
    assert await stock_of(session_factory, pid) == (5, 2, 0)


async def test_import_in_file_order_and_checkout_in_id_order_do_not_deadlock(session_factory) -> None:  # type: ignore[no-untyped-def]
    from services import inventory

    a = await make_product(session_factory, "IMP-A", stock=10)
    b = await make_product(session_factory, "IMP-B", stock=10)
    async with session_factory() as checkout, checkout.begin():
        first = await checkout.get(Product, a)
        await inventory.reserve(checkout, first, 1)  # checkout locks A, then B: product-id order
        importing = asyncio.create_task(
            _import(session_factory, [_row("IMP-B", 7, price_kes=900), _row("IMP-A", 4, price_kes=900)])
        )
        await _waiting_on_a_lock_or_done(session_factory, importing)
        await inventory.reserve(checkout, await checkout.get(Product, b), 1)
    assert await asyncio.wait_for(importing, 10) == (0, 2)
    assert await stock_of(session_factory, a) == (4, 1, 0) and await stock_of(session_factory, b) == (7, 1, 0)


# --- settlement against cancel: one lock order, order row before payment row -------------------------


@pytest.mark.pg_only
async def test_a_settlement_waits_for_a_cancel_holding_the_order_instead_of_deadlocking(session_factory) -> None:  # type: ignore[no-untyped-def]
    """A cancel (or expiry, or link replacement) locks the order, then its payments; a webhook settling
    one of those payments meanwhile must queue behind the order lock, not hold the payment row and
    wait for the order (PostgreSQL would abort one of the two as a deadlock)."""
    from sqlalchemy import text

    from db.models import Payment
    from services.payments import common

    product = await make_product(session_factory, "DL-1", stock=5)
    public_id = (await make_order(session_factory, 1, [(product, 1)])).public_id
    async with session_factory() as session, session.begin():
        order = await order_service.get_order(session, public_id)
        payment_id = (await common.create_attempt(session, order, "stripe")).id

    async def settle() -> str:
        async with session_factory() as session, session.begin():
            payment = await session.get(Payment, payment_id)
            assert payment is not None
            return await common.settle_paid(
                session,
                payment,
                amount=payment.amount,
                currency=payment.currency,
                reference="pi_1",
                raw=None,
                actor="system:stripe",
                admin_chat_id=None,
            )

    async with session_factory() as canceller, canceller.begin():
        await canceller.execute(text("SET LOCAL lock_timeout = '3s'"))
        await order_service.get_order(canceller, public_id, for_update=True)  # the cancel's claim
        webhook = asyncio.create_task(settle())
        await asyncio.sleep(0.3)  # the webhook is now waiting for something
        locked = (
            await canceller.execute(select(Payment.id).where(Payment.id == payment_id).with_for_update())
        ).scalar_one()  # then the cancel's payments
        assert locked == payment_id and not webhook.done()
    assert await asyncio.wait_for(webhook, 10) == "paid"
