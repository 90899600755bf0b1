"""Fan-out: 1,000 status notifications (outbox rows) to 300 chats, drained by the outbox sender through
a Bot API stand-in that enforces Telegram's limits (30/s overall, 1/s per chat) by answering 429.

Target: at least 28.5 messages/s sustained, 0 answered 429, 0 lost, 0 duplicated. It takes ~35 s by
nature (1,000 messages at under 30/s). The drain loop is the worker's (`run_sender`'s) loop:
drain_once until the table has nothing pending, sleeping briefly when a drain sent nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from sqlalchemy import func, select

from bench.common import Result, main, migrated_engine
from db.models import Outbox
from db.session import make_sessionmaker
from services.notifications import enqueue
from services.outbox_sender import BotApiTransport, Limits, drain_lanes
from tests.harness import TEST_TOKEN
from tests.limited_botapi import TelegramLimits
from tests.standins import BotAPIStandIn

MESSAGES, CHATS = 1_000, 300
TARGET_RATE = 28.5


async def run() -> Result:
    botapi = await BotAPIStandIn().start()
    limits_standin = TelegramLimits(botapi)
    async with migrated_engine("sf_bench_fan") as engine:
        session_factory = make_sessionmaker(engine)
        expected = Counter()
        async with session_factory() as session, session.begin():
            for n in range(MESSAGES):
                chat, text = 500_000 + n % CHATS, f"Order HL-{n:05d}: shipped"
                enqueue(session, chat, text, kind="order_status", dedup_key=f"bench:{n}")
                expected[(chat, text)] += 1
        transport = BotApiTransport(botapi.url, TEST_TOKEN)
        limits = Limits()
        began = time.perf_counter()
        try:
            await asyncio.wait_for(
                drain_lanes(session_factory, transport, limits, until_empty=True, idle_seconds=0.05), 300
            )
        finally:
            await transport.aclose()
        wall = time.perf_counter() - began
        async with session_factory() as session:
            states = Counter(
                dict((await session.execute(select(Outbox.state, func.count(Outbox.id)).group_by(Outbox.state))).all())
            )
    await botapi.stop()
    delivered = Counter((c.chat_id, c.text) for c in botapi.sent(method="sendMessage"))
    times = sorted(c.at for c in botapi.sent(method="sendMessage"))
    lost = sum((expected - delivered).values())
    duplicated = sum((delivered - expected).values())
    rate = len(times) / wall
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    worst_second = max(Counter(int(t - times[0]) for t in times).values()) if times else 0
    passed = rate >= TARGET_RATE and limits_standin.answered_429 == 0 and lost == 0 and duplicated == 0
    return Result(
        "fan-out",
        f">= {TARGET_RATE} msg/s sustained, 0 answered 429, 0 lost, 0 duplicated",
        passed,
        {
            "messages / chats": f"{MESSAGES} / {CHATS}",
            "delivered": sum(delivered.values()),
            "messages/s (delivered / wall time)": rate,
            "messages/s (first to last delivery)": steady,
            "most deliveries in one second": worst_second,
            "429 answered by the stand-in": limits_standin.answered_429,
            "lost": lost,
            "duplicated": duplicated,
            "outbox states": dict(states),
            "wall time s": wall,
        },
    )


if __name__ == "__main__":
    main(run)
