"""Times in the shop's zone (SHOP_TIMEZONE), written as a person would: the formatter with a fixed
`now`, then what customers and admins read through the bot."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Order
from services.times import admin_time, customer_date, customer_time
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
from tests.standins import BotAPIStandIn

NAIROBI = ZoneInfo("Africa/Nairobi")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2025, 12, 2, 12, 0, tzinfo=UTC)  # 15:00 in Nairobi, 13:00 in Berlin
USER = 7601


def at(hour: int, minute: int, day: int = 2, month: int = 12, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- the formatter -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when, en, sw",
    [
        (at(14, 45), "17:45 today", "leo saa 17:45"),
        (at(6, 10, day=3), "09:10 tomorrow", "kesho saa 09:10"),
        (at(20, 30, day=1), "23:30 yesterday", "jana saa 23:30"),
        (at(6, 10, day=4), "4 Dec, 09:10", "4 Des, saa 09:10"),
        (at(6, 10, day=28, month=11), "28 Nov, 09:10", "28 Nov, saa 09:10"),
        (at(6, 10, day=4, year=2024), "4 Dec 2024, 09:10", "4 Des 2024, saa 09:10"),
    ],
)
def test_customer_time_is_nairobi_time_relative_to_today_there(when: datetime, en: str, sw: str) -> None:
    assert customer_time(when, NAIROBI, "en", NOW) == en
    assert customer_time(when, NAIROBI, "sw", NOW) == sw


def test_across_midnight_the_day_is_nairobis_not_utcs() -> None:
    # 22:30 UTC on the 2nd is 01:30 on the 3rd in Nairobi: "tomorrow" there, though the same UTC day.
    assert customer_time(at(22, 30), NAIROBI, "en", NOW) == "01:30 tomorrow"
    # And at 22:30 UTC (01:30 in Nairobi, the 3rd), 20:00 UTC on the 2nd was yesterday evening there.
    assert customer_time(at(20, 0), NAIROBI, "en", at(22, 30)) == "23:00 yesterday"
    assert customer_time(at(23, 0), NAIROBI, "en", at(22, 30)) == "02:00 today"
    assert customer_date(at(21, 30), NAIROBI, "en", NOW) == "tomorrow"
    assert customer_date(at(20, 30), NAIROBI, "en", NOW) == "today"


def test_another_zone_follows_its_own_clock_and_summer_time() -> None:
    assert customer_time(at(14, 45), BERLIN, "en", NOW) == "15:45 today"
    assert customer_time(at(22, 30), BERLIN, "en", NOW) == "23:30 today"  # still the 2nd in Berlin
    summer = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)
    assert customer_time(summer + timedelta(hours=1), BERLIN, "en", summer) == "12:00 today"  # CEST, +2


def test_customer_dates_in_lists() -> None:
    assert [customer_date(at(9, 0, day=d), NAIROBI, "en", NOW) for d in (1, 2, 3)] == ["yesterday", "today", "tomorrow"]
    assert customer_date(at(9, 0, day=25, month=11), NAIROBI, "en", NOW) == "25 Nov"
    assert customer_date(at(9, 0, day=25, month=11), NAIROBI, "sw", NOW) == "25 Nov"
    assert customer_date(at(9, 0, day=25, month=8), NAIROBI, "sw", NOW) == "25 Ago"
    assert customer_date(at(9, 0, year=2024), NAIROBI, "en", NOW) == "2 Dec 2024"
    assert [customer_date(at(9, 0, day=d), NAIROBI, "sw", NOW) for d in (1, 2, 3)] == ["jana", "leo", "kesho"]


def test_a_language_without_a_time_catalogue_reads_english_words() -> None:
    assert customer_time(at(14, 45), NAIROBI, "fr", NOW) == "17:45 today"


def test_admin_time_names_the_zone() -> None:
    assert admin_time(at(14, 45), NAIROBI, NOW) == "2 Dec 17:45 EAT"
    assert admin_time(at(22, 30), NAIROBI, NOW) == "3 Dec 01:30 EAT"
    assert admin_time(at(14, 45), BERLIN, NOW) == "2 Dec 15:45 CET"
    assert admin_time(at(14, 45, year=2024), NAIROBI, NOW) == "2 Dec 2024 17:45 EAT"


def test_a_naive_timestamp_is_read_as_utc() -> None:
    assert customer_time(at(14, 45).replace(tzinfo=None), NAIROBI, "en", NOW) == "17:45 today"


# --- through the bot --------------------------------------------------------------------------------


def tomorrow_at(zone: ZoneInfo, hour: int, minute: int) -> datetime:
    """Tomorrow in `zone` at hour:minute there, as the UTC moment the database stores."""
    local_tomorrow = datetime.now(zone).date() + timedelta(days=1)
    return datetime.combine(local_tomorrow, time(hour, minute), tzinfo=zone).astimezone(UTC)


async def order_reserved_until(shop: Harness, moment: datetime) -> Order:
    pid = await make_product(shop.session_factory, stock=5)
    order = await make_order(shop.session_factory, USER, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Order).where(Order.id == order.id).values(reserved_until=moment))
    return order


async def test_a_customer_reads_the_reservation_deadline_in_nairobi_time(shop: Harness) -> None:
    order = await order_reserved_until(shop, tomorrow_at(NAIROBI, 9, 10))  # 06:10 UTC
    detail = await shop.send(USER, f"/track {order.public_id}")
    assert "reserved for you until 09:10 tomorrow — pay before then" in detail.text
    assert "UTC" not in detail.text and "06:10" not in detail.text
    offer = await shop.press(USER, detail.button("Pay now"))
    assert "reserved until 09:10 tomorrow" in offer.text and "UTC" not in offer.text
    assert "Last updated: " in detail.text and re.search(r"Last updated: \d\d:\d\d today", detail.text)
    listing = await shop.send(USER, "/orders")
    assert f"{order.public_id}</b> — Awaiting payment — KES 1,300 — today" in listing.text


async def test_the_deadline_right_after_checkout_is_in_nairobi_time(shop: Harness) -> None:
    from tests.test_checkout import USER as BUYER
    from tests.test_checkout import fill_cart, go_to_phone

    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    await shop.share_contact(BUYER, "+254712345678")
    await shop.send(BUYER, "wanjiru@example.com")
    summary = await shop.send(BUYER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    offer = await shop.press(BUYER, summary.button("Confirm"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    local = order.reserved_until.astimezone(NAIROBI)
    assert re.search(rf"reserved until {local:%H:%M} (today|tomorrow)[.;]", offer.text), offer.text
    assert "UTC" not in offer.text


async def test_another_shop_zone_is_used_for_customers_and_admins(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    shop = await Harness(engine, botapi, shop_timezone="Europe/Berlin").start()
    try:
        deadline = tomorrow_at(BERLIN, 9, 10)
        order = await order_reserved_until(shop, deadline)
        detail = await shop.send(USER, f"/track {order.public_id}")
        assert "reserved for you until 09:10 tomorrow" in detail.text
        listing = (await shop.send(ADMIN_USER_ID, "/orders awaiting_payment", chat_id=ADMIN_CHAT_ID)).text
        created = order.created_at.astimezone(BERLIN)
        assert re.search(rf"{created.day} {created:%b} {created:%H:%M} CES?T", listing), listing
    finally:
        await shop.stop()


async def test_admin_lists_and_detail_name_the_zone(shop: Harness) -> None:
    order = await order_reserved_until(shop, tomorrow_at(NAIROBI, 9, 10))
    today_local = datetime.now(NAIROBI).date()
    created = datetime.combine(today_local, time(0, 5), tzinfo=NAIROBI).astimezone(UTC)  # 21:05 UTC the day before
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Order).where(Order.id == order.id).values(created_at=created))
    listing = (await shop.send(ADMIN_USER_ID, "/orders awaiting_payment", chat_id=ADMIN_CHAT_ID)).text
    assert f"{today_local.day} {today_local:%b} 00:05 EAT" in listing
    detail = (await shop.send(ADMIN_USER_ID, f"/order {order.public_id}", chat_id=ADMIN_CHAT_ID)).text
    assert re.search(r"• \d{1,2} \w{3} \d\d:\d\d EAT placed → unpaid", detail), detail
