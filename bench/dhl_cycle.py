"""DHL tracking cycle: 10,000 active DHL shipments polled by services.dhl.poll_cycle against the DHL
stand-in (tests/dhl_standin.py), which enforces its own per-second rate limit with 429 + Retry-After.

Figures: calls made, 429s received, SQL statements per cycle (counted by poll_cycle itself with a
`before_cursor_execute` listener, cross-checked by ours), batches, time per cycle. Production spacing
is 5 s a call and ~250 calls a day; here the client is spaced at SPACING s (under the stand-in's
limit) and the daily budget is raised so one cycle covers every shipment: the figures are about the
cycle's cost, not DHL's quota.

1. Cycle with a per-cycle budget of 1,000 (poll_cycle's `budget`), then a cycle with no explicit budget
   for the remaining 9,000 (its allowance is its share of the day's budget). Statements must grow
   with batches (50 shipments each), not with shipments.
2. The same shipments due again, client not spaced at all against a stand-in limit of 100/s: the cycle
   must stop at the first 429 and store the pause, i.e. exactly one 429 received.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update

from bench.common import QueryCounter, Result, main, migrated_engine
from bot.config import Settings
from db.models import ApiBudget, Customer, Order, Outbox
from db.session import make_sessionmaker
from services.dhl import DhlClient, poll_cycle
from tests import dhl_standin as ds

SHIPMENTS = 10_000
FIRST_BUDGET = 1_000
CHANGING_EVERY = 100  # 1 % of shipments moved to "in transit" since the last poll
SPACING = 0.0025  # client: one call every 2.5 ms (400/s) ...
STANDIN_PER_SECOND = 500  # ... under the stand-in's 500/s
BURST_LIMIT = 100  # scenario 2: the stand-in allows 100/s and the client is not spaced
PRE = ds.PRE_TRANSIT[0]


async def seed(session_factory) -> None:  # type: ignore[no-untyped-def]
    """SHIPMENTS shipped DHL orders whose last known event is the pre-transit one."""
    now = datetime.now(UTC)
    async with session_factory() as session, session.begin():
        await session.execute(insert(Customer).values(id=777, chat_id=777, first_name="Buyer", language="en"))
        for start in range(0, SHIPMENTS, 5_000):
            await session.execute(
                insert(Order),
                [
                    {
                        "public_id": f"HL-B{n:05d}",
                        "customer_id": 777,
                        "state": "shipped",
                        "currency": "USD",
                        "subtotal": 100_00,
                        "shipping": 40_00,
                        "total": 140_00,
                        "zone": "intl",
                        "phone": "254712345678",
                        "email": "buyer@example.com",
                        "address": "1 High St, London",
                        "reserved_until": now,
                        "carrier": "DHL",
                        "tracking_number": f"{1_000_000_000 + n}",
                        "shipped_at": now - timedelta(days=1),
                        "tracking_status": "pre-transit",
                        "tracking_description": PRE["description"],
                        "tracking_place": PRE["location"]["address"]["addressLocality"],
                        "tracking_time": datetime.fromisoformat(PRE["timestamp"].replace("Z", "+00:00")),
                    }
                    for n in range(start, min(start + 5_000, SHIPMENTS))
                ],
            )


def settings_for(dhl: ds.DhlStandIn) -> Settings:
    return Settings(
        _env_file=None,
        dhl_api_key=ds.API_KEY,
        dhl_api_url=f"{dhl.url}/track/shipments",  # type: ignore[call-arg]
        dhl_poll_seconds=900,
        dhl_min_interval_seconds=0,
        dhl_daily_budget=10_000_000,
        admin_chat_id=-1001234567890,
    )


async def run() -> Result:
    figures: dict[str, object] = {}
    async with migrated_engine("sf_bench_dhl") as engine:
        session_factory = make_sessionmaker(engine)
        await seed(session_factory)
        dhl = await ds.DhlStandIn(per_second=STANDIN_PER_SECOND).start()
        for n in range(SHIPMENTS):
            dhl.shipments[f"{1_000_000_000 + n}"] = ds.IN_TRANSIT if n % CHANGING_EVERY == 0 else ds.PRE_TRANSIT
        settings = settings_for(dhl)
        client = DhlClient(settings.dhl_api_url, ds.API_KEY, min_interval=SPACING, retry_wait=0)
        ours = QueryCounter(engine)
        cycles = []
        try:
            for label, budget in (
                (f"cycle 1 (budget {FIRST_BUDGET:,})", FIRST_BUDGET),
                ("cycle 2 (no budget given)", None),
            ):
                ours.reset()
                stats = await poll_cycle(session_factory, client, settings, budget=budget)
                cycles.append((label, stats, ours.reset()))
        finally:
            await client.aclose()
        ok_calls = sum(s.calls for _, s, _ in cycles)
        polled_once = len(dhl.calls) == SHIPMENTS and len(set(dhl.calls)) == SHIPMENTS
        answered_429 = dhl.answered_429
        for label, s, counted in cycles:
            figures[label] = (
                f"polled {s.polled:,}, calls {s.calls:,}, 429s {s.rate_limited}, changed {s.changed}, "
                f"batches {s.batches}, queries {s.queries} (ours {counted}), "
                f"{s.queries / max(s.batches, 1):.1f} queries/batch, "
                f"{s.queries / max(s.polled, 1):.3f} queries/shipment, {s.seconds:.1f} s"
            )
        async with session_factory() as session:
            messages = (await session.execute(select(func.count(Outbox.id)))).scalar_one()
            in_transit = (
                await session.execute(select(func.count(Order.id)).where(Order.state == "in_transit"))
            ).scalar_one()
        await dhl.stop()

        # 2: due again, an unspaced client against a tighter stand-in limit.
        async with session_factory() as session, session.begin():
            await session.execute(update(Order).values(tracking_next_check_at=None))
        burst = await ds.DhlStandIn(per_second=BURST_LIMIT).start()
        burst.shipments = dict(dhl.shipments)
        settings2 = settings_for(burst)
        client2 = DhlClient(settings2.dhl_api_url, ds.API_KEY, min_interval=0, retry_wait=0)
        try:
            burst_stats = await poll_cycle(session_factory, client2, settings2, budget=SHIPMENTS)
        finally:
            await client2.aclose()
        async with session_factory() as session:
            paused = (await session.execute(select(ApiBudget.paused_until))).scalar_one_or_none()
        await burst.stop()
        ours.close()

    per_batch = [s.queries / max(s.batches, 1) for _, s, _ in cycles]
    grows_with_batches = max(per_batch) <= 2 * min(per_batch) and all(s.queries < 0.5 * s.polled for _, s, _ in cycles)
    changed = sum(s.changed for _, s, _ in cycles)
    figures.update(
        {
            "shipments polled exactly once": polled_once,
            "calls made (cycles 1+2)": ok_calls,
            "429s received (cycles 1+2)": answered_429,
            "in transit after the cycles / messages queued": f"{in_transit} / {messages}",
            "burst cycle (unspaced client, stand-in 100/s)": (
                f"calls {burst_stats.calls}, 429s received {burst.answered_429}, polled {burst_stats.polled}, "
                f"stopped and paused until {paused.isoformat() if paused else None}, {burst_stats.seconds:.2f} s"
            ),
        }
    )
    passed = (
        polled_once
        and answered_429 == 0
        and grows_with_batches
        and changed == SHIPMENTS // CHANGING_EVERY
        and burst.answered_429 == 1
        and paused is not None
    )
    return Result(
        "DHL cycle",
        "every shipment polled once, 0 429s when spaced, queries grow with batches "
        "not shipments, first 429 stops the cycle",
        passed,
        figures,
        [
            f"client spacing {SPACING * 1000:.1f} ms (production: >= 5 s and the daily budget spread over "
            "the day); batch size 50 (poll_cycle default)"
        ],
    )


if __name__ == "__main__":
    main(run)
