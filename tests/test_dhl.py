"""The DHL poller against a stand-in serving realistic Unified Tracking answers, 404s and 429s."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.config import Settings
from db.models import Order, Outbox, utcnow
from services import orders as sm
from services.dhl import DhlClient, poll_cycle
from tests import dhl_standin as ds
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID


@pytest.fixture
async def dhl() -> AsyncIterator[ds.DhlStandIn]:
    server = await ds.DhlStandIn().start()
    yield server
    await server.stop()


def settings_for(dhl: ds.DhlStandIn, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(_env_file=None, dhl_api_key=kw.pop("key", ds.API_KEY), dhl_api_url=f"{dhl.url}/track/shipments",  # type: ignore[call-arg]
                    dhl_poll_seconds=kw.pop("poll", 900), dhl_min_interval_seconds=0, admin_chat_id=ADMIN_CHAT_ID,
                    dhl_daily_budget=kw.pop("daily", 100_000), **kw)


async def shipped(session_factory, waybill: str, customer: int = 9001, days_ago: int = 0) -> str:  # type: ignore[no-untyped-def]
    pid = await make_product(session_factory, f"DHL-{waybill}", stock=3)
    order = await make_order(session_factory, customer, [(pid, 1)], zone="intl")
    async with session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, sm.PROCESSING, "system:test")
        o.carrier, o.tracking_number = "DHL", waybill
        o.shipped_at = utcnow() - timedelta(days=days_ago)
        o.tracking_next_check_at = utcnow() - timedelta(seconds=1)
        await sm.transition(session, o, sm.SHIPPED, "admin:1")
    return order.public_id


async def order_of(session_factory, public_id: str) -> Order:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return await sm.get_order(session, public_id)


async def customer_updates(session_factory, public_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return [o.text for o in (await session.execute(
            select(Outbox).where(Outbox.kind == "order_status", Outbox.text.contains(public_id)).order_by(Outbox.id)))
            .scalars()]


async def test_shipment_lifecycle_notifies_once_per_change(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = DhlClient.from_settings(settings)
    pid = await shipped(session_factory, "1234567890")
    dhl.shipments["1234567890"] = ds.PRE_TRANSIT
    later = utcnow()
    await poll_cycle(session_factory, client, settings, later)
    order = await order_of(session_factory, pid)
    assert order.state == "shipped" and order.tracking_description == "Shipment information received"
    steps = [ds.IN_TRANSIT[1:], ds.IN_TRANSIT[1:], ds.IN_TRANSIT, ds.DELIVERED]
    for events in steps:
        later += timedelta(seconds=901)
        dhl.shipments["1234567890"] = events
        await poll_cycle(session_factory, client, settings, later)
    order = await order_of(session_factory, pid)
    assert order.state == "delivered" and order.tracking_place == "LONDON - UNITED KINGDOM"
    texts = await customer_updates(session_factory, pid)
    assert len(texts) == 5  # processing, shipped, in transit, a new transit event (the repeat was silent), delivered
    assert "Departed Facility in NAIROBI - KENYA (NAIROBI - KENYA)" in texts[2]
    assert "Arrived at DHL Sort Facility (LEIPZIG - GERMANY)" in texts[3] and "delivered" in texts[4]
    calls = len(dhl.calls)
    await poll_cycle(session_factory, client, settings, later + timedelta(days=1))
    assert len(dhl.calls) == calls  # delivered: never polled again
    await client.aclose()


async def test_not_found_backs_off_per_shipment(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = DhlClient.from_settings(settings)
    pid = await shipped(session_factory, "5550001111")
    now = utcnow()
    await poll_cycle(session_factory, client, settings, now)
    first = await order_of(session_factory, pid)
    assert first.tracking_misses == 1 and first.tracking_next_check_at >= now + timedelta(seconds=1800)
    await poll_cycle(session_factory, client, settings, now + timedelta(seconds=901))
    assert len(dhl.calls) == 1  # backing off: not due after one cycle
    await poll_cycle(session_factory, client, settings, now + timedelta(seconds=1801))
    assert (await order_of(session_factory, pid)).tracking_misses == 2
    await client.aclose()


async def test_429_stops_the_cycle_and_honours_retry_after(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    dhl.per_second = 2
    settings = settings_for(dhl)
    client = DhlClient(settings.dhl_api_url, ds.API_KEY, min_interval=0)  # a client that bursts meets the 429
    for n in range(5):
        waybill = f"70000000{n:02d}"
        dhl.shipments[waybill] = ds.IN_TRANSIT
        await shipped(session_factory, waybill, customer=9100 + n)
    stats = await poll_cycle(session_factory, client, settings)
    assert stats.rate_limited == 1 and stats.calls == 3 and dhl.answered_429 == 1
    again = await poll_cycle(session_factory, client, settings)
    assert again.calls == 0 and "paused" in again.notes[0]  # Retry-After: 2 s not over yet
    await asyncio.sleep(2.1)
    dhl.per_second = 100
    final = await poll_cycle(session_factory, client, settings)
    assert final.calls == 3 and final.rate_limited == 0  # the released shipments are picked up again
    async with session_factory() as session:
        states = (await session.execute(select(Order.state))).scalars().all()
    assert states.count("in_transit") == 5
    await client.aclose()


async def test_failure_alerts_admins_once(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = DhlClient.from_settings(settings)
    await shipped(session_factory, "8888888888")
    dhl.shipments["8888888888"] = ds.FAILURE
    now = utcnow()
    await poll_cycle(session_factory, client, settings, now)
    await poll_cycle(session_factory, client, settings, now + timedelta(seconds=901))
    async with session_factory() as session:
        alerts = (await session.execute(select(Outbox).where(Outbox.chat_id == ADMIN_CHAT_ID))).scalars().all()
    assert len(alerts) == 1 and "Shipment on hold - customs" in alerts[0].text
    await client.aclose()


async def test_gives_up_after_n_days_and_bad_key_alerts(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl, dhl_give_up_days=30)
    client = DhlClient.from_settings(settings)
    old = await shipped(session_factory, "3333333333", days_ago=31)
    stats = await poll_cycle(session_factory, client, settings)
    assert stats.gave_up == 1 and stats.calls == 0 and (await order_of(session_factory, old)).tracking_next_check_at is None
    bad = DhlClient.from_settings(settings_for(dhl, key="wrong-key-000"))
    await shipped(session_factory, "4444444444", customer=9002)
    assert (await poll_cycle(session_factory, bad, settings)).failures == 1
    async with session_factory() as session:
        texts = [o.text for o in (await session.execute(select(Outbox).where(Outbox.chat_id == ADMIN_CHAT_ID))).scalars()]
    assert any("after 30 days" in x for x in texts) and any("refused our API key" in x for x in texts)
    await client.aclose()
    await bad.aclose()


async def test_budget_limits_calls_per_cycle(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl, daily=96 * 3)  # 3 calls per 15-minute cycle
    client = DhlClient(settings.dhl_api_url, ds.API_KEY, min_interval=0)
    for n in range(5):
        await shipped(session_factory, f"60000000{n:02d}", customer=9200 + n)
    stats = await poll_cycle(session_factory, client, settings)
    assert stats.calls == 3 and len(dhl.calls) == 3
    await client.aclose()


@pytest.mark.pg_only
async def test_two_workers_poll_each_shipment_once(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    waybills = [f"90000000{n:02d}" for n in range(30)]
    for n, waybill in enumerate(waybills):
        dhl.shipments[waybill] = ds.PRE_TRANSIT
        await shipped(session_factory, waybill, customer=9300 + n)
    a = DhlClient(settings.dhl_api_url, ds.API_KEY, min_interval=0)
    b = DhlClient(settings.dhl_api_url, ds.API_KEY, min_interval=0)
    s1, s2 = await asyncio.gather(poll_cycle(session_factory, a, settings, batch_size=5),
                                  poll_cycle(session_factory, b, settings, batch_size=5))
    assert s1.calls + s2.calls == 30 and sorted(dhl.calls) == sorted(waybills)
    await a.aclose()
    await b.aclose()
