"""Promo codes: the admins' /promo, a customer's code at checkout, the discounted amounts the payment
providers are asked for, uses given back when an order ends, and the use limit under a storm."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from db.models import AuditEntry, Order, Product, PromoCode, utcnow
from services import cart as cart_service
from services import orders as order_service
from services import promos
from tests import stripe_standin as st
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness, stripe_harness
from tests.standins import visible_text
from tests.test_checkout import USER, fill_cart, go_to_phone
from tests.test_mpesa import open_world
from tests.webserver import serve_shop

STRANGER = 6262


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID, chat: int = ADMIN_CHAT_ID) -> str:
    return visible_text((await shop.send(user, text, chat_id=chat)).text or "")


async def code_row(shop: Harness, code: str) -> PromoCode:
    async with shop.session_factory() as session:
        return (await session.execute(select(PromoCode).where(PromoCode.code == code))).scalar_one()


async def to_summary(shop: Harness, zone: str = "Nairobi"):  # type: ignore[no-untyped-def]
    await go_to_phone(shop, zone)
    await shop.send(USER, "+254712345678" if zone != "International" else "+44 7911 123456")
    await shop.send(USER, "wanjiru@example.com")
    summary = await shop.send(USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    assert "Please confirm your order" in summary.text
    return summary


async def enter_code(shop: Harness, summary, code: str):  # type: ignore[no-untyped-def]
    ask = await shop.press(USER, summary.button("Promo code"), message=summary)
    assert "Type your promo code" in ask.text
    return await shop.send(USER, code)


async def orders(shop: Harness) -> list[Order]:
    async with shop.session_factory() as session:
        return list((await session.execute(select(Order).order_by(Order.id))).unique().scalars())


# --- the admins ----------------------------------------------------------------------------------------


async def test_admin_adds_lists_and_switches_off_codes_with_audit(shop: Harness) -> None:
    reply = await admin(shop, "/promo add save10 10% min KES 5000 until 2099-12-31 uses 100")
    assert "Promo code SAVE10: 10% off · min KES 5,000 · until 2099-12-31 · uses 100" in reply
    reply = await admin(shop, "/promo add FLAT-500 KES 500")
    assert "FLAT-500: KES 500 off · min — · until — · uses ∞" in reply
    reply = await admin(shop, "/promo add usd_5 USD 4.99 uses 3")
    assert "USD_5: $4.99 off" in reply
    row = await code_row(shop, "SAVE10")
    assert (row.percent, row.amount, row.min_amount, row.min_currency, row.uses_limit, row.used, row.active) == (
        10,
        None,
        5000_00,
        "KES",
        100,
        0,
        True,
    )
    # the last day is in the shop's zone (Nairobi, UTC+3): it ends at midnight there, 21:00 UTC
    assert row.ends_at is not None and row.ends_at.isoformat() == "2099-12-31T21:00:00+00:00"
    assert (await code_row(shop, "USD_5")).amount == 499
    listing = await admin(shop, "/promo list")
    assert "Promo codes" in listing and "Africa/Nairobi" in listing
    assert "SAVE10 · 10% · min KES 5,000 · until 2099-12-31 · 0/100 · active" in listing
    assert "FLAT-500 · KES 500 · min — · until — · 0/∞ · active" in listing
    off = await admin(shop, "/promo off Save10")
    assert "SAVE10 is off (0 used)" in off
    assert "SAVE10 · 10% · min KES 5,000 · until 2099-12-31 · 0/100 · off" in await admin(shop, "/promo list")
    assert "There is no promo code NOPE" in await admin(shop, "/promo off nope")
    async with shop.session_factory() as session:
        entries = (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
    assert [(e.action, e.admin_id) for e in entries] == [
        ("promo_add", ADMIN_USER_ID),
        ("promo_add", ADMIN_USER_ID),
        ("promo_add", ADMIN_USER_ID),
        ("promo_off", ADMIN_USER_ID),
    ]
    assert entries[0].detail == "SAVE10 10% min KES 5,000 until 2099-12-31 uses 100"


@pytest.mark.parametrize(
    "args,reason",
    [
        ("add", "Usage:"),
        ("add AB 10%", "“AB” is not a valid code"),
        ("add BAD!CODE 10%", "not a valid code"),
        ("add CODE1 95%", "“95%” is not a valid percentage: a whole number from 1% to 90%"),
        ("add CODE1 0%", "not a valid percentage"),
        ("add CODE1 12.5%", "not a valid percentage"),
        ("add CODE1 EUR 5", "“EUR” is not a currency we take (KES, USD)"),
        ("add CODE1 KES -5", "not a valid amount"),
        ("add CODE1 KES 5.001", "not a valid amount"),
        ("add CODE1 KES 0", "not a valid amount"),
        ("add CODE1 10% max KES 5", "Unknown option “max”"),
        ("add CODE1 10% uses 3 uses 4", "“uses” is given twice"),
        ("add CODE1 10% min KES", "“min” needs its value"),
        ("add CODE1 USD 5 min KES 5000", "A USD code's minimum must be in USD too"),
        ("add CODE1 10% until 31-12-2099", "is not a date"),
        ("add CODE1 10% until 2020-01-01", "2020-01-01 is already past"),
        ("add CODE1 10% uses 0", "not a valid number of uses"),
        ("add CODE1 10% uses many", "not a valid number of uses"),
        ("frobnicate", "Usage:"),
        ("off", "Usage:"),
        ("list extra", "Usage:"),
    ],
)
async def test_admin_parse_errors_are_named_with_the_usage(shop: Harness, args: str, reason: str) -> None:
    reply = await admin(shop, f"/promo {args}")
    assert reason in reply and "/promo add CODE 10%" in reply
    async with shop.session_factory() as session:
        assert (await session.execute(select(PromoCode))).first() is None
        assert (await session.execute(select(AuditEntry))).first() is None


async def test_a_code_cannot_be_created_twice_in_any_case(shop: Harness) -> None:
    await admin(shop, "/promo add SAVE10 10%")
    assert "The code SAVE10 exists already" in await admin(shop, "/promo add save10 KES 5")
    async with shop.session_factory() as session:
        assert len((await session.execute(select(AuditEntry))).scalars().all()) == 1


async def test_non_admins_cannot_use_promo(shop: Harness) -> None:
    refusal = await admin(shop, "/restock X 1", user=STRANGER)  # the admin commands' refusal
    assert await admin(shop, "/promo add FREE 90%", user=STRANGER) == refusal  # in the group, not an admin
    assert (await shop.send(STRANGER, "/promo add FREE 90%")).text == refusal  # in a private chat
    assert (await shop.send(ADMIN_USER_ID, "/promo add FREE 90%")).text == refusal  # an admin, outside the group
    async with shop.session_factory() as session:
        assert (await session.execute(select(PromoCode))).first() is None


# --- a customer's code at checkout -------------------------------------------------------------------------


async def create_code(shop: Harness, spec_args: str, *, last_day_offset: int | None = None) -> None:
    """A code as /promo add makes it; `last_day_offset` days from today in the shop's zone (a past
    last day cannot be typed, so an ended code is created here directly)."""
    zone = shop.settings.shop_zone
    today = promos.shop_today(zone)
    spec = promos.parse_add(spec_args.split(), today)
    if last_day_offset is not None:
        spec = dataclasses.replace(spec, last_day=today + timedelta(days=last_day_offset))
    async with shop.session_factory() as session, session.begin():
        await promos.create(session, spec, zone, "system:test")


async def test_percent_code_discounts_the_subtotal_and_the_order_keeps_it(shop: Harness) -> None:
    await create_code(shop, "SAVE10 10% uses 5")
    await fill_cart(shop, ("LAP-TP-T480", 1), ("ACC-LEN-65W", 2))
    summary = await to_summary(shop)
    assert summary.button("Promo code") == "chk:pc" and "Promo code SAVE" not in summary.text
    applied = await enter_code(shop, summary, " save10 ")
    assert "Code SAVE10 applied: KES 4,840 off." in visible_text(applied.text)
    assert "Subtotal: KES 48,400" in applied.text and "Delivery: KES 300" in applied.text
    assert "Promo code SAVE10: −KES 4,840" in applied.text and "Total: KES 43,860" in applied.text
    assert applied.button("Remove code SAVE10") == "chk:pr"
    offer = await shop.press(USER, applied.button("Confirm"), message=applied)
    assert "is placed: KES 43,860" in offer.text
    [order] = await orders(shop)
    assert (order.subtotal, order.shipping, order.discount, order.total, order.promo_code) == (
        48400_00,
        300_00,
        4840_00,
        43860_00,
        "SAVE10",
    )
    assert (await code_row(shop, "SAVE10")).used == 1


async def test_percent_rounds_down_to_whole_minor_units(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "ODD-1", stock=5, price_kes=1234_55)
    await create_code(shop, "P15 15%")
    order = await make_order(shop.session_factory, USER, [(pid, 1)], promo_code="p15")
    # 15% of 123455 minor units is 18518.25: 18518 off
    assert (order.discount, order.total) == (18518, 123455 + 300_00 - 18518)


async def test_fixed_code_in_the_orders_currency_and_not_in_another(shop: Harness) -> None:
    await create_code(shop, "KES500 KES 500")
    await create_code(shop, "USD5 USD 5")
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    summary = await to_summary(shop)
    wrong = await enter_code(shop, summary, "usd5")
    assert "The code USD5 is only for orders paid in USD. The summary below is without it." in wrong.text
    assert "Total: KES 3,500" in wrong.text and "Promo code USD5" not in wrong.text
    assert wrong.button("Promo code") == "chk:pc"
    right = await enter_code(shop, wrong, "kes500")
    assert "Promo code KES500: −KES 500" in right.text and "Total: KES 3,000" in right.text
    removed = await shop.press(USER, right.button("Remove code"), message=right)
    assert "The promo code was removed." in removed.text and "Total: KES 3,500" in removed.text
    await shop.press(USER, removed.button("Confirm"), message=removed)
    [order] = await orders(shop)
    assert (order.total, order.discount, order.promo_code) == (3500_00, 0, None)
    assert (await code_row(shop, "KES500")).used == 0


async def test_a_fixed_code_never_takes_more_than_the_subtotal(shop: Harness) -> None:
    await create_code(shop, "BIG KES 10000")
    await fill_cart(shop, ("ACC-LEN-65W", 1))  # KES 3,200
    summary = await enter_code(shop, await to_summary(shop), "BIG")
    assert "Promo code BIG: −KES 3,200" in summary.text and "Total: KES 300" in summary.text  # delivery is paid
    await shop.press(USER, summary.button("Confirm"), message=summary)
    [order] = await orders(shop)
    assert (order.discount, order.total) == (3200_00, 300_00)


async def test_unknown_expired_used_up_and_minimum_not_met_are_told(shop: Harness) -> None:
    await create_code(shop, "OLD 10%", last_day_offset=-1)  # its last day was yesterday, in Nairobi
    await create_code(shop, "TODAY 10%", last_day_offset=0)  # still good all of today
    await create_code(shop, "MIN 10% min KES 5000")
    await create_code(shop, "ONCE 10% uses 1")
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(PromoCode).where(PromoCode.code == "ONCE").values(used=1))
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    summary = await to_summary(shop)
    for code, reason in [
        ("NOSUCH", "There is no promo code NOSUCH."),
        ("x!", "That doesn't look like a promo code"),
        ("old", "The code OLD has expired."),
        ("once", "The code ONCE has been used up."),
        ("min", "The code MIN needs an order of at least KES 5,000 before delivery (yours is KES 3,200)."),
    ]:
        summary = await enter_code(shop, summary, code)
        assert reason in summary.text and "Total: KES 3,500" in summary.text, code
    summary = await enter_code(shop, summary, "today")
    assert "Total: KES 3,180" in summary.text


async def test_swahili_customer_reads_the_reason_in_swahili(shop: Harness) -> None:
    await create_code(shop, "MIN 10% min KES 5000")
    shop.language_codes[USER] = "sw"
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    cart = await shop.send(USER, "/cart")
    zones = await shop.press(USER, cart.button("Kamilisha oda"))
    await shop.press(USER, zones.buttons[0][1])
    await shop.send(USER, "+254712345678")
    await shop.send(USER, "wanjiru@example.com")
    summary = await shop.send(USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    await shop.press(USER, summary.button("Msimbo wa punguzo"), message=summary)
    reply = await shop.send(USER, "min")
    assert "Msimbo MIN unahitaji oda ya angalau KES 5,000" in reply.text
    assert "Muhtasari ulio hapa chini hauna punguzo hilo." in reply.text


async def test_code_switched_off_between_summary_and_confirm_places_nothing(shop: Harness) -> None:
    await create_code(shop, "SAVE10 10%")
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    summary = await enter_code(shop, await to_summary(shop), "SAVE10")
    assert "Total: KES 3,180" in summary.text
    await admin(shop, "/promo off SAVE10")
    again = await shop.press(USER, summary.button("Confirm"), message=summary)
    assert "The code SAVE10 is no longer valid. Nothing was ordered yet" in again.text
    assert "Total: KES 3,500" in again.text and "Promo code SAVE10" not in again.text
    assert await orders(shop) == []
    await shop.press(USER, again.button("Confirm"), message=again)  # the customer decides: full price
    [order] = await orders(shop)
    assert (order.total, order.promo_code) == (3500_00, None)


async def test_code_that_ended_between_summary_and_confirm_places_nothing(shop: Harness) -> None:
    await create_code(shop, "SAVE10 10%")
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    summary = await enter_code(shop, await to_summary(shop), "SAVE10")
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(PromoCode).values(ends_at=utcnow() - timedelta(seconds=1)))
    again = await shop.press(USER, summary.button("Confirm"), message=summary)
    assert "The code SAVE10 has expired. Nothing was ordered yet" in again.text
    assert await orders(shop) == []
    async with shop.session_factory() as session:
        assert len(await cart_service.lines(session, USER)) == 1  # the cart as it was


async def test_expiry_and_unpaid_cancel_give_the_use_back(shop: Harness) -> None:
    await create_code(shop, "TWO 10% uses 2")
    pid = await make_product(shop.session_factory, "PROMO-EXP", stock=10)
    first = await make_order(shop.session_factory, USER, [(pid, 1)], promo_code="two")
    second = await make_order(shop.session_factory, USER + 1, [(pid, 1)], promo_code="TWO")
    assert (first.promo_code, first.discount) == ("TWO", 100_00)
    assert (await code_row(shop, "TWO")).used == 2
    with pytest.raises(promos.PromoRefused) as refused:
        await make_order(shop.session_factory, USER + 2, [(pid, 1)], promo_code="TWO")
    assert refused.value.key == "promo.error.used_up"
    assert await order_service.expire_due_orders(shop.session_factory, now=utcnow() + timedelta(minutes=31)) == 2
    assert (await code_row(shop, "TWO")).used == 0
    third = await make_order(shop.session_factory, USER + 2, [(pid, 1)], promo_code="TWO")
    assert (await code_row(shop, "TWO")).used == 1
    async with shop.session_factory() as session, session.begin():  # the customer cancels it unpaid
        order = await order_service.get_order(session, third.public_id)
        await order_service.transition(session, order, order_service.CANCELLED, f"customer:{USER + 2}")
    assert (await code_row(shop, "TWO")).used == 0
    assert second.total == 1000_00 + 300_00 - 100_00


# --- the amounts the payment providers are asked for --------------------------------------------------------


async def test_mpesa_stk_push_asks_for_the_discounted_amount(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    async with open_world(engine, botapi) as world:
        shop = world.shop
        await create_code(shop, "MPESA15 15%")
        pid = await make_product(shop.session_factory, "MP-PROMO", stock=5, price_kes=2499_99)
        order = await make_order(shop.session_factory, USER, [(pid, 2)], promo_code="MPESA15")
        # subtotal 4,999.98; 15% = 749.997 → 749.99 off; total 4,999.98 + 300 − 749.99 = 4,549.99
        assert (order.subtotal, order.discount, order.total) == (499998, 74999, 454999)
        reply = await world.pay(order, customer=USER)
        assert "KES 4,549.99" in reply.text
        push = world.daraja.pushes[0]
        assert push.body["Amount"] == 4550  # whole shillings, rounded up
        payment = await world.payment()
        assert (payment.state, payment.amount) == ("paid", 454999)
        assert await world.state_of(order) == "processing"


@pytest.fixture
async def stripe_shop(engine, botapi) -> AsyncIterator[tuple[Harness, st.StripeStandIn]]:  # type: ignore[no-untyped-def]
    async with stripe_harness(engine, botapi) as (shop, server):
        assert shop.shop is not None
        async with serve_shop(shop.shop):
            yield shop, server


async def test_stripe_link_is_for_the_discounted_amount(stripe_shop) -> None:  # type: ignore[no-untyped-def]
    shop, stripe = stripe_shop
    await create_code(shop, "USD20 USD 20")
    pid = await make_product(shop.session_factory, "CARD-PROMO", stock=5, price_kes=13000_00, price_usd=100_00)
    order = await make_order(shop.session_factory, USER, [(pid, 1)], zone="intl", promo_code="usd20")
    assert (order.subtotal, order.shipping, order.discount, order.total) == (100_00, 35_00, 20_00, 115_00)
    await shop.send(USER, "/start")
    reply = await shop.press(USER, f"pay:s:{order.public_id}")
    assert "Stripe's secure page" in reply.text
    session = next(iter(stripe.sessions.values()))
    assert session["amount_total"] == 115_00 and session["currency"] == "usd"
    [line] = session["line_items_sent"]
    assert line["price_data"]["product_data"]["name"] == f"Order {order.public_id} (promo code USD20)"


# --- the use limit under concurrent checkouts (PostgreSQL) ----------------------------------------------------


@pytest.mark.pg_only
async def test_concurrent_checkouts_never_pass_the_use_limit(session_factory) -> None:  # type: ignore[no-untyped-def]
    zone = ZoneInfo("Africa/Nairobi")
    async with session_factory() as session, session.begin():
        await promos.create(
            session, promos.parse_add(["RUSH", "20%", "uses", "3"], promos.shop_today(zone)), zone, "system:test"
        )
    pid = await make_product(session_factory, "RUSH-1", stock=100, price_kes=1000_00)
    customers = range(1, 21)
    for customer in customers:
        async with session_factory() as session, session.begin():
            await cart_service.ensure_customer(session, customer, customer)
            await cart_service.set_quantity(session, customer, await session.get(Product, pid), 1)
    quoted = ("KES", 1000_00 + 300_00 - 200_00)

    async def confirm(customer: int) -> str:
        async with session_factory() as session:
            try:
                order = await order_service.checkout(
                    session,
                    customer,
                    quoted=quoted,
                    zone_code="nairobi",
                    phone="254712345678",
                    email="a@example.com",
                    address="Plot 1, Ngong Rd",
                    reservation_minutes=30,
                    promo_code="rush",
                )
            except promos.PromoRefused as exc:
                await session.commit()
                return exc.key
            return order.public_id

    results = await asyncio.wait_for(asyncio.gather(*(confirm(c) for c in customers)), 60)
    placed = [r for r in results if r.startswith("HL-")]
    assert len(placed) == 3 and results.count("promo.error.used_up") == 17
    async with session_factory() as session:
        rows = (await session.execute(select(Order))).unique().scalars().all()
        promo = (await session.execute(select(PromoCode))).scalar_one()
    assert sorted(o.public_id for o in rows) == sorted(placed)
    assert all((o.promo_code, o.discount, o.total) == ("RUSH", 200_00, 1100_00) for o in rows)
    assert promo.used == 3
