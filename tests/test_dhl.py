"""The DHL poller against a stand-in serving realistic Unified Tracking answers, 404s, 429s, 401s and 5xx.

Orders are made as the shop makes them: cart → place_order → paid (processing) → /ship's service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from bot.config import Settings
from db.models import ApiBudget, Order, OrderEvent, Outbox, utcnow
from services import admin
from services import orders as sm
from services.dhl import NEVER, DhlClient, parse_shipment, poll_cycle
from services.dhl_jobs import job_factories
from tests import dhl_standin as ds
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID


@pytest.fixture
async def dhl() -> AsyncIterator[ds.DhlStandIn]:
    server = await ds.DhlStandIn().start()
    yield server
    await server.stop()


def settings_for(dhl: ds.DhlStandIn, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        _env_file=None,
        dhl_api_key=kw.pop("key", ds.API_KEY),
        dhl_api_url=f"{dhl.url}/track/shipments",  # type: ignore[call-arg]
        dhl_poll_seconds=kw.pop("poll", 900),
        dhl_min_interval_seconds=kw.pop("spacing", 0),
        admin_chat_id=ADMIN_CHAT_ID,
        dhl_daily_budget=kw.pop("daily", 100_000),
        **kw,
    )


def client_for(settings: Settings, key: str = ds.API_KEY) -> DhlClient:
    """No spacing and no retry wait: tests must not sleep (production spacing comes from_settings)."""
    return DhlClient(settings.dhl_api_url, key, min_interval=0, retry_wait=0)


async def shipped(
    session_factory,
    waybill: str,
    customer: int = 9001,
    days_ago: int = 0,  # type: ignore[no-untyped-def]
    via_admin: bool = True,
) -> str:
    """An International order, paid, then shipped with DHL (through the admin's /ship service, or by a
    bare transition that leaves tracking_next_check_at NULL)."""
    pid = await make_product(session_factory, f"DHL-{waybill}", stock=3)
    order = await make_order(session_factory, customer, [(pid, 1)], zone="intl")
    async with session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, sm.PROCESSING, "system:test")
        if via_admin:
            o = await admin.ship(session, order.public_id, waybill, None, "admin:1")
        else:
            o.carrier, o.tracking_number, o.shipped_at = "DHL", waybill, utcnow()
            await sm.transition(session, o, sm.SHIPPED, "admin:1")
        o.shipped_at = utcnow() - timedelta(days=days_ago)
    return order.public_id


async def order_of(session_factory, public_id: str) -> Order:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return await sm.get_order(session, public_id)


async def customer_updates(session_factory, public_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return [
            o.text
            for o in (
                await session.execute(
                    select(Outbox)
                    .where(Outbox.kind == "order_status", Outbox.text.contains(public_id))
                    .order_by(Outbox.id)
                )
            ).scalars()
        ]


async def admin_alerts(session_factory) -> list[str]:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return [
            o.text
            for o in (
                await session.execute(select(Outbox).where(Outbox.chat_id == ADMIN_CHAT_ID).order_by(Outbox.id))
            ).scalars()
        ]


async def budget_calls(session_factory) -> int:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return (await session.get(ApiBudget, "dhl")).calls


def next_midnight() -> datetime:
    """A fixed time of day, so the cycle's share of the daily budget is predictable (96 cycles left)."""
    return (utcnow() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


async def test_shipment_lifecycle_notifies_once_per_change(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)
    pid = await shipped(session_factory, "1234567890")
    dhl.shipments["1234567890"] = ds.PRE_TRANSIT
    later = utcnow()
    await poll_cycle(session_factory, client, settings, later)
    order = await order_of(session_factory, pid)
    assert order.state == "shipped" and order.tracking_description == "Shipment information received"
    assert order.tracking_status == "pre-transit" and order.tracking_place == "NAIROBI - KENYA"
    steps = [ds.IN_TRANSIT[1:], ds.IN_TRANSIT[1:], ds.IN_TRANSIT, ds.DELIVERED]
    for events in steps:
        later += timedelta(seconds=901)
        dhl.shipments["1234567890"] = events
        await poll_cycle(session_factory, client, settings, later)
    order = await order_of(session_factory, pid)
    assert order.state == "delivered" and order.tracking_place == "LONDON - UNITED KINGDOM"
    assert order.tracking_time == datetime(2026, 11, 28, 11, 5, tzinfo=UTC)
    texts = await customer_updates(session_factory, pid)
    assert len(texts) == 5  # processing, shipped, in transit, a new transit event (the repeat was silent), delivered
    assert "Departed Facility in NAIROBI - KENYA (NAIROBI - KENYA)" in texts[2]
    assert "Arrived at DHL Sort Facility (LEIPZIG - GERMANY)" in texts[3] and "delivered" in texts[4]
    async with session_factory() as session:
        events = (
            (
                await session.execute(
                    select(OrderEvent).where(OrderEvent.order_id == order.id, OrderEvent.actor == "system:dhl")
                )
            )
            .scalars()
            .all()
        )
    assert [e.to_state for e in events] == ["in_transit", "delivered"]
    requests = dhl.requests
    assert len(requests) == 5 and all(
        r.params == {"trackingNumber": "1234567890", "service": "express", "language": "en"} for r in requests
    )
    await poll_cycle(session_factory, client, settings, later + timedelta(days=1))
    assert len(dhl.requests) == 5  # delivered: never polled again
    await client.aclose()


async def test_pre_transit_and_unknown_change_nothing_and_null_next_check_is_due(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)
    pre = await shipped(session_factory, "1000000001", via_admin=False)
    unknown = await shipped(session_factory, "1000000002", customer=9002, via_admin=False)
    assert (await order_of(session_factory, pre)).tracking_next_check_at is None
    dhl.shipments["1000000001"], dhl.shipments["1000000002"] = ds.PRE_TRANSIT, ds.UNKNOWN
    stats = await poll_cycle(session_factory, client, settings)
    assert stats.calls == 2 and stats.changed == 1 and stats.unchanged == 1
    p, u = await order_of(session_factory, pre), await order_of(session_factory, unknown)
    assert p.state == u.state == "shipped" and p.tracking_status == "pre-transit"
    assert u.tracking_status is None and u.tracking_checked_at is not None and u.tracking_next_check_at is not None
    assert len(await customer_updates(session_factory, pre)) == 2  # processing, shipped: nothing from DHL
    assert len(await customer_updates(session_factory, unknown)) == 2
    await client.aclose()


async def test_carrier_texts_are_escaped_for_html(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)
    pid = await shipped(session_factory, "1000000003")
    dhl.shipments["1000000003"] = [
        ds.event("transit", "Customs & clearance <LHR>", "LONDON & HEATHROW", "2026-11-26T03:10:00+01:00")
    ]
    await poll_cycle(session_factory, client, settings)
    text = (await customer_updates(session_factory, pid))[-1]
    assert "Customs &amp; clearance &lt;LHR&gt; (LONDON &amp; HEATHROW)" in text
    assert (await order_of(session_factory, pid)).tracking_time == datetime(2026, 11, 26, 2, 10, tzinfo=UTC)
    await client.aclose()


async def test_not_found_backs_off_per_shipment(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)
    pid = await shipped(session_factory, "5550001111")
    now = utcnow()
    stats = await poll_cycle(session_factory, client, settings, now)
    first = await order_of(session_factory, pid)
    assert stats.not_found == 1 and first.state == "shipped"
    assert first.tracking_misses == 1 and first.tracking_next_check_at >= now + timedelta(seconds=1800)
    await poll_cycle(session_factory, client, settings, now + timedelta(seconds=901))
    assert len(dhl.calls) == 1  # backing off: not due after one cycle
    await poll_cycle(session_factory, client, settings, now + timedelta(seconds=1801))
    second = await order_of(session_factory, pid)
    assert second.tracking_misses == 2 and second.tracking_next_check_at >= now + timedelta(seconds=1801 + 3600)
    dhl.shipments["5550001111"] = ds.PRE_TRANSIT  # DHL knows it now: the back-off is over
    await poll_cycle(session_factory, client, settings, now + timedelta(hours=3))
    assert (await order_of(session_factory, pid)).tracking_misses == 0
    await client.aclose()


async def test_429_stops_the_cycle_and_every_worker_honours_retry_after(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    dhl.per_second = 2
    settings = settings_for(dhl)
    client = client_for(settings)
    for n in range(5):
        waybill = f"70000000{n:02d}"
        dhl.shipments[waybill] = ds.IN_TRANSIT
        await shipped(session_factory, waybill, customer=9100 + n)
    t0 = utcnow()
    stats = await poll_cycle(session_factory, client, settings, t0)
    assert stats.rate_limited == 1 and stats.calls == 3 and dhl.answered_429 == 1
    assert await budget_calls(session_factory) == 3  # the two never asked are given back to the budget
    other = client_for(settings)  # another worker: the pause lives in the database
    again = await poll_cycle(session_factory, other, settings, t0)
    assert again.calls == 0 and "paused" in again.notes[0]  # Retry-After: 2 s not over yet
    dhl.per_second = 100
    final = await poll_cycle(session_factory, other, settings, t0 + timedelta(seconds=3))
    assert final.calls == 3 and final.rate_limited == 0  # the released shipments are picked up again
    async with session_factory() as session:
        states = (await session.execute(select(Order.state))).scalars().all()
    assert states.count("in_transit") == 5 and len(dhl.calls) == 5
    await client.aclose()
    await other.aclose()


async def test_failure_alerts_admins_once(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)
    pid = await shipped(session_factory, "8888888888")
    dhl.shipments["8888888888"] = [
        ds.event("failure", "On hold - customs <docs> & duty", "LEIPZIG - GERMANY", "2026-11-26T09:00:00Z"),
        *ds.IN_TRANSIT,
    ]
    now = utcnow()
    await poll_cycle(session_factory, client, settings, now)
    await poll_cycle(session_factory, client, settings, now + timedelta(seconds=901))
    alerts = await admin_alerts(session_factory)
    assert len(alerts) == 1 and "On hold - customs &lt;docs&gt; &amp; duty" in alerts[0] and pid in alerts[0]
    assert (await order_of(session_factory, pid)).state == "shipped"  # failure: admins act, the state stays
    await client.aclose()


async def test_gives_up_after_n_days_once(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl, dhl_give_up_days=30)
    client = client_for(settings)
    old = await shipped(session_factory, "3333333333", days_ago=31)
    young = await shipped(session_factory, "3333333334", customer=9002, days_ago=29)
    dhl.shipments["3333333334"] = ds.PRE_TRANSIT
    now = utcnow()
    stats = await poll_cycle(session_factory, client, settings, now)
    assert stats.gave_up == 1 and stats.calls == 1 and dhl.calls == ["3333333334"]
    assert (await order_of(session_factory, old)).tracking_next_check_at == NEVER
    assert (await order_of(session_factory, young)).tracking_next_check_at < NEVER
    again = await poll_cycle(session_factory, client, settings, now + timedelta(days=1))
    assert again.gave_up == 1 and dhl.calls == ["3333333334"]  # the second one's turn; the old one stays off
    alerts = await admin_alerts(session_factory)
    assert len(alerts) == 2 and all("after 30 days" in a for a in alerts) and old in alerts[0]
    await client.aclose()


async def test_bad_key_stops_the_cycle_and_alerts_once(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    bad = client_for(settings, key="wrong-key-000")
    for n in range(3):
        await shipped(session_factory, f"444444444{n}", customer=9010 + n)
    now = utcnow()
    first = await poll_cycle(session_factory, bad, settings, now)
    second = await poll_cycle(session_factory, bad, settings, now + timedelta(seconds=60))
    assert first.calls == second.calls == 1 and first.failures == 1 and len(dhl.answered(401)) == 2
    alerts = await admin_alerts(session_factory)
    assert len(alerts) == 1 and "refused our API key" in alerts[0]
    assert await budget_calls(session_factory) == 2
    await bad.aclose()


async def test_budget_per_cycle_and_per_day_shared_by_workers(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl, daily=96 * 3)  # 3 calls per 15-minute cycle
    a, b = client_for(settings), client_for(settings)
    for n in range(5):
        dhl.shipments[f"60000000{n:02d}"] = ds.PRE_TRANSIT
        await shipped(session_factory, f"60000000{n:02d}", customer=9200 + n)
    midnight = next_midnight()
    stats = await poll_cycle(session_factory, a, settings, midnight)
    assert stats.calls == 3 and len(dhl.calls) == 3
    assert (await poll_cycle(session_factory, b, settings, midnight)).calls == 2  # the other two, still due
    small = settings_for(dhl, daily=6)
    day_end = midnight + timedelta(hours=23, minutes=50)  # one cycle left today: the share is all that's left
    assert (await poll_cycle(session_factory, b, small, day_end)).calls == 1  # 5 of 6 spent by both workers
    spent = await poll_cycle(session_factory, a, small, day_end + timedelta(minutes=1))
    assert spent.calls == 0 and "daily budget spent" in spent.notes
    assert await budget_calls(session_factory) == 6
    tomorrow = await poll_cycle(session_factory, a, small, midnight + timedelta(days=1))
    assert tomorrow.calls == 1  # a new UTC day, a new budget (its share: 6 / 96 cycles → 1)
    await a.aclose()
    await b.aclose()


async def test_spacing_spreads_the_daily_budget_over_the_day(dhl) -> None:  # type: ignore[no-untyped-def]
    client = DhlClient.from_settings(settings_for(dhl, daily=250))
    assert client.min_interval == pytest.approx(0.8 * 86400 / 250)
    fast = DhlClient.from_settings(settings_for(dhl, daily=100_000, spacing=5))
    assert fast.min_interval == 5  # never closer than DHL's own spacing
    await client.aclose()
    await fast.aclose()


async def test_5xx_gets_one_quick_retry_then_waits_for_the_next_cycle(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)
    pid = await shipped(session_factory, "2000000001")
    dhl.shipments["2000000001"] = ds.IN_TRANSIT
    dhl.errors.extend([503])
    stats = await poll_cycle(session_factory, client, settings)
    assert stats.calls == 2 and stats.changed == 1 and (await order_of(session_factory, pid)).state == "in_transit"
    assert await budget_calls(session_factory) == 2  # the retry is counted too
    other = await shipped(session_factory, "2000000002", customer=9002)
    dhl.shipments["2000000002"] = ds.IN_TRANSIT
    dhl.errors.extend([502, 504])
    now = utcnow()
    failed = await poll_cycle(session_factory, client, settings, now)
    assert failed.failures == 1 and failed.changed == 0 and (await order_of(session_factory, other)).state == "shipped"
    assert (await poll_cycle(session_factory, client, settings, now + timedelta(seconds=60))).calls == 0
    retried = await poll_cycle(session_factory, client, settings, now + timedelta(seconds=901))
    assert retried.changed == 1 and (await order_of(session_factory, other)).state == "in_transit"
    await client.aclose()


async def test_dhl_down_stops_the_cycle(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = DhlClient(settings.dhl_api_url, ds.API_KEY, min_interval=0, retries=0)
    for n in range(5):
        await shipped(session_factory, f"210000000{n}", customer=9020 + n)
    dhl.errors.extend([503] * 10)
    stats = await poll_cycle(session_factory, client, settings)
    assert stats.calls == 3 and "DHL looks down" in stats.notes[0]
    assert await budget_calls(session_factory) == 3
    await client.aclose()


async def test_queries_grow_with_batches_not_with_shipments(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    client = client_for(settings)

    async def add(first: int, count: int) -> None:
        for n in range(first, first + count):
            dhl.shipments[f"30000000{n:02d}"] = ds.PRE_TRANSIT
            await shipped(session_factory, f"30000000{n:02d}", customer=9400 + n)

    await add(0, 4)
    t = utcnow()
    await poll_cycle(session_factory, client, settings, t)  # first answers: changes
    four = await poll_cycle(session_factory, client, settings, t + timedelta(seconds=901), batch_size=50)
    await add(4, 4)
    await poll_cycle(session_factory, client, settings, t + timedelta(seconds=902))  # only the new four are due
    eight = await poll_cycle(session_factory, client, settings, t + timedelta(seconds=1803), batch_size=50)
    assert four.unchanged == 4 and eight.unchanged == 8 and four.batches == eight.batches == 1
    assert eight.queries == four.queries  # twice the shipments, the same statements
    small = await poll_cycle(session_factory, client, settings, t + timedelta(seconds=2704), batch_size=2)
    assert small.unchanged == 8 and small.batches == 4 and small.queries > eight.queries
    await client.aclose()


def test_parse_shipment_is_defensive() -> None:
    assert parse_shipment(None).status_code == "unknown"
    assert parse_shipment({"shipments": "nope"}).status_code == "unknown"
    assert parse_shipment({"shipments": [None, 3]}).status_code == "unknown"
    assert parse_shipment({"shipments": [{"status": "x"}]}).status_code == "unknown"
    odd = parse_shipment({"shipments": [{"status": {"statusCode": "teleported", "location": "x"}}]})
    assert odd.status_code == "unknown" and odd.place is None
    from_events = parse_shipment({"shipments": [{"events": [ds.IN_TRANSIT[0]]}]})
    assert from_events.status_code == "transit" and from_events.place == "LEIPZIG - GERMANY"
    both = parse_shipment(
        {
            "shipments": [
                {"service": "freight", "status": ds.DELIVERED[0]},
                {
                    "service": "express",
                    "status": {"statusCode": "TRANSIT", "status": "On its way", "timestamp": "2026-11-26T03:10:00"},
                },
            ]
        }
    )
    assert both.status_code == "transit" and both.description == "On its way"
    assert both.timestamp == datetime(2026, 11, 26, 3, 10, tzinfo=UTC)  # no offset: read as UTC
    assert parse_shipment({"shipments": [{"status": {"statusCode": "transit", "timestamp": "soon"}}]}).timestamp is None


async def test_job_factory_runs_only_with_a_key(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    (factory,) = job_factories()
    off = SimpleNamespace(settings=Settings(_env_file=None), providers={}, session_factory=session_factory)  # type: ignore[call-arg]
    name, seconds, run = factory(off)
    assert name == "dhl-poll" and seconds == 900 and await run() == 0 and "dhl" not in off.providers
    on = SimpleNamespace(settings=settings_for(dhl, poll=600), providers={}, session_factory=session_factory)
    name, seconds, run = factory(on)
    assert seconds == 600 and isinstance(on.providers["dhl"], DhlClient)
    pid = await shipped(session_factory, "1999999999")
    dhl.shipments["1999999999"] = ds.IN_TRANSIT
    assert await run() == 1 and (await order_of(session_factory, pid)).state == "in_transit"
    await on.providers["dhl"].aclose()


@pytest.mark.pg_only
async def test_two_workers_poll_each_shipment_once(session_factory, dhl) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(dhl)
    waybills = [f"90000000{n:02d}" for n in range(30)]
    for n, waybill in enumerate(waybills):
        dhl.shipments[waybill] = ds.IN_TRANSIT
        await shipped(session_factory, waybill, customer=9300 + n)
    a, b = client_for(settings), client_for(settings)
    s1, s2 = await asyncio.gather(
        poll_cycle(session_factory, a, settings, batch_size=5), poll_cycle(session_factory, b, settings, batch_size=5)
    )
    assert s1.calls + s2.calls == 30 and sorted(dhl.calls) == sorted(waybills)
    assert s1.changed + s2.changed == 30 and await budget_calls(session_factory) == 30
    async with session_factory() as session:
        texts = (
            (
                await session.execute(
                    select(Outbox.text).where(Outbox.kind == "order_status", Outbox.text.contains("on its way"))
                )
            )
            .scalars()
            .all()
        )
    assert len(texts) == 30  # one in-transit message per order, none twice
    await a.aclose()
    await b.aclose()
