"""Domain rules without Telegram: the state machine, totals, zones, phones, money, reservation expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from db.models import OrderEvent, Outbox, utcnow
from services import orders as sm
from services.errors import IllegalTransition
from services.money import Money, format_money, whole_units_up
from services.phones import InvalidPhone, is_kenyan_mobile, mask_phone, normalize_phone
from services.zones import ZONES, get_zone
from tests.factories import make_order, make_product, stock_of

ALL = set(sm.STATES)
LEGAL = {(src, dst) for src, dsts in sm.TRANSITIONS.items() for dst in dsts}


def test_transition_table_is_the_documented_machine() -> None:
    assert {
        ("awaiting_payment", "processing"),
        ("awaiting_payment", "cancelled"),
        ("awaiting_payment", "expired"),
        ("processing", "shipped"),
        ("processing", "cancelled"),
        ("shipped", "in_transit"),
        ("shipped", "delivered"),
        ("in_transit", "delivered"),
        ("expired", "processing"),
        ("cancelled", "processing"),  # late payments only
        ("delivered", "return_requested"),  # returns (services/returns.py)
        ("return_requested", "returned"),  # approved
        ("return_requested", "delivered"),  # rejected
    } == LEGAL


# How to reach each state through legal moves only, so stock is where that state says it is.
PATH_TO = {
    "awaiting_payment": [],
    "processing": ["processing"],
    "shipped": ["processing", "shipped"],
    "in_transit": ["processing", "shipped", "in_transit"],
    "delivered": ["processing", "shipped", "delivered"],
    "cancelled": ["cancelled"],
    "expired": ["expired"],
    "return_requested": ["processing", "shipped", "delivered", "return_requested"],
    "returned": ["processing", "shipped", "delivered", "return_requested", "returned"],
}
# The state machine alone restocks no return: services/returns.approve puts the returned lines back.
UNITS_OUT = {
    "processing",
    "shipped",
    "in_transit",
    "delivered",
    "return_requested",
    "returned",
}  # one unit sold; else back on the shelf


async def order_in(session_factory, state: str, customer_id: int = 1) -> str:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, stock=5)
    public_id = (await make_order(session_factory, customer_id, [(pid, 1)])).public_id
    for step in PATH_TO[state]:
        async with session_factory() as session, session.begin():
            await sm.transition(session, await sm.get_order(session, public_id), step, "setup")
    return public_id


@pytest.mark.parametrize("src,dst", sorted(LEGAL))
async def test_every_legal_transition_moves_stock_and_records_who(session_factory, src: str, dst: str) -> None:  # type: ignore[no-untyped-def]
    public_id = await order_in(session_factory, src, customer_id=51)
    async with session_factory() as session, session.begin():
        event = await sm.transition(session, await sm.get_order(session, public_id), dst, "actor:under-test", "why")
    async with session_factory() as session:
        order = await sm.get_order(session, public_id)
        events = await sm.events_of(session, order.id)
        outbox = (await session.execute(select(Outbox).order_by(Outbox.id))).scalars().all()
    assert order.state == dst and event.id == events[-1].id
    assert (events[-1].from_state, events[-1].to_state, events[-1].actor, events[-1].note) == (
        src,
        dst,
        "actor:under-test",
        "why",
    )
    assert outbox[-1].chat_id == 51 and order.public_id in outbox[-1].text
    assert await stock_of(session_factory, order.items[0].product_id) == ((4, 0, 1) if dst in UNITS_OUT else (5, 0, 0))


@pytest.mark.parametrize("src,dst", sorted((a, b) for a in ALL for b in ALL if (a, b) not in LEGAL))
async def test_illegal_transitions_raise_and_change_nothing(session_factory, src: str, dst: str) -> None:  # type: ignore[no-untyped-def]
    public_id = await order_in(session_factory, src)
    async with session_factory() as session:
        order = await sm.get_order(session, public_id)
        before = (
            len(await sm.events_of(session, order.id)),
            await stock_of(session_factory, order.items[0].product_id),
        )
        with pytest.raises(IllegalTransition):
            await sm.transition(session, order, dst, "test")
        await session.rollback()
    async with session_factory() as session:
        order = await sm.get_order(session, public_id)
        assert order.state == src
        assert (
            len(await sm.events_of(session, order.id)),
            await stock_of(session_factory, order.items[0].product_id),
        ) == before


async def test_happy_path_writes_events_moves_stock_and_queues_messages(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, stock=5)
    order = await make_order(session_factory, 11, [(pid, 2)])
    assert await stock_of(session_factory, pid) == (3, 2, 0)
    for dst, actor in (
        ("processing", "system:mpesa"),
        ("shipped", "admin:1"),
        ("in_transit", "system:dhl"),
        ("delivered", "system:dhl"),
    ):
        async with session_factory() as session, session.begin():
            await sm.transition(session, await sm.get_order(session, order.public_id), dst, actor)
    assert await stock_of(session_factory, pid) == (3, 0, 2)
    async with session_factory() as session:
        events = (await session.execute(select(OrderEvent).order_by(OrderEvent.id))).scalars().all()
        assert [(e.from_state, e.to_state, e.actor) for e in events] == [
            (None, "awaiting_payment", "customer:11"),
            ("awaiting_payment", "processing", "system:mpesa"),
            ("processing", "shipped", "admin:1"),
            ("shipped", "in_transit", "system:dhl"),
            ("in_transit", "delivered", "system:dhl"),
        ]
        assert all(e.created_at is not None for e in events)
        queued = [(o.kind, o.text) for o in (await session.execute(select(Outbox).order_by(Outbox.id))).scalars()]
        texts = [text for kind, text in queued if kind == "order_status"]
        assert len(texts) == 4 and "Payment received" in texts[0] and "delivered" in texts[-1]
        assert [kind for kind, _ in queued][-1] == "review_ask"  # delivered: the buyer is asked to rate


async def test_cancel_and_expire_release_and_paid_cancel_returns_stock(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, stock=5)
    a = await make_order(session_factory, 21, [(pid, 1)])
    b = await make_order(session_factory, 22, [(pid, 1)])
    async with session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, a.public_id), "cancelled", "customer:21")
        await sm.transition(session, await sm.get_order(session, b.public_id), "processing", "system:test")
    assert await stock_of(session_factory, pid) == (4, 0, 1)
    async with session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, b.public_id), "cancelled", "admin:1")
    assert await stock_of(session_factory, pid) == (5, 0, 0)


@pytest.mark.two_sessions
async def test_stale_object_cannot_apply_a_transition_twice(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, stock=5)
    order = await make_order(session_factory, 31, [(pid, 1)])
    async with session_factory() as s1, session_factory() as s2:
        o1 = await sm.get_order(s1, order.public_id)
        o2 = await sm.get_order(s2, order.public_id)
        await sm.transition(s1, o1, "processing", "first")
        await s1.commit()
        with pytest.raises(IllegalTransition):
            await sm.transition(s2, o2, "processing", "second")
    assert await stock_of(session_factory, pid) == (4, 0, 1)


def test_totals_and_zones() -> None:
    class P:  # a product stand-in: totals only read prices
        def __init__(self, kes: int, usd: int) -> None:
            self.price_kes, self.price_usd = kes, usd

    lines = [(P(42000_00, 325_00), 1), (P(3200_00, 24_50), 2)]
    assert sm.compute_totals(lines, get_zone("nairobi")) == sm.Totals("KES", 48400_00, 300_00, 48700_00)
    assert sm.compute_totals(lines, get_zone("kenya")).total == 49000_00
    assert sm.compute_totals(lines, get_zone("intl")) == sm.Totals("USD", 374_00, 35_00, 409_00)
    assert {z.code: (z.currency, z.shipping, z.tracked) for z in ZONES.values()} == {
        "nairobi": ("KES", 300_00, False),
        "kenya": ("KES", 600_00, False),
        "intl": ("USD", 35_00, True),
    }
    with pytest.raises(ValueError, match="unknown shipping zone"):
        get_zone("mars")


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("0712345678", "254712345678"),
        ("0712 345 678", "254712345678"),
        ("+254712345678", "254712345678"),
        ("254712345678", "254712345678"),
        ("0712-345-678", "254712345678"),
        ("0110 123 456", "254110123456"),
        ("+1 415 555 2671", "14155552671"),
        (" +254 (0)712-345 678 ", "254712345678"),
        ("0722.345.678", "254722345678"),
        ("254 110 123 456", "254110123456"),
        ("+254-110-123-456", "254110123456"),
        ("+44 7911 123456", "447911123456"),
    ],
)
def test_phone_normalisation(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw,reason",
    [
        ("", "phone.error.empty"),
        ("hello", "phone.error.unreadable"),
        ("0712", "phone.error.invalid"),
        ("+254 12", "phone.error.invalid"),
        ("07123456789012", "phone.error.invalid"),
        ("   ", "phone.error.empty"),
        ("+999 123 456", "phone.error.unreadable"),
    ],
)
def test_invalid_phones(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as err:
        normalize_phone(raw)
    assert err.value.reason == reason


def test_kenyan_mobiles_and_masking() -> None:
    assert is_kenyan_mobile("254712345678") and is_kenyan_mobile("254110123456")
    assert not is_kenyan_mobile("14155552671") and not is_kenyan_mobile(None)
    assert mask_phone("254712345678") == "2547*****678"


def test_money_is_integer_minor_units() -> None:
    assert format_money(4870000, "KES") == "KES 48,700" and format_money(8650, "USD") == "$86.50"
    assert (Money(100, "KES") + Money(250, "KES")).amount == 350 and (Money(300, "USD") * 3).amount == 900
    with pytest.raises(TypeError):
        Money(1.5, "KES")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different currencies"):
        Money(100, "KES") + Money(100, "USD")
    assert whole_units_up(4870000) == 48700 and whole_units_up(4870001) == 48701


async def test_reservation_expiry_releases_stock_once(session_factory) -> None:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, stock=5)
    due = await make_order(session_factory, 41, [(pid, 2)], reservation_minutes=1)
    fresh = await make_order(session_factory, 42, [(pid, 1)], reservation_minutes=30)
    paid = await make_order(session_factory, 43, [(pid, 1)], reservation_minutes=1)
    async with session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, paid.public_id), "processing", "system:test")
    later = utcnow() + timedelta(minutes=2)
    assert await sm.expire_due_orders(session_factory, now=later) == 1
    assert await sm.expire_due_orders(session_factory, now=later) == 0
    async with session_factory() as session:
        states = {o.public_id: (await sm.get_order(session, o.public_id)).state for o in (due, fresh, paid)}
        assert states == {due.public_id: "expired", fresh.public_id: "awaiting_payment", paid.public_id: "processing"}
        messages = (await session.execute(select(Outbox).where(Outbox.chat_id == 41))).scalars().all()
        assert len(messages) == 1 and "expired" in messages[0].text
    assert await stock_of(session_factory, pid) == (3, 1, 1)
