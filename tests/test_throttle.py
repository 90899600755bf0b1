"""Each Telegram user gets THROTTLE_UPDATES_PER_SECOND updates a second with THROTTLE_BURST on top;
the rest are not handled, and the user is told to slow down (a press always, messages once a while)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.throttle import ThrottleMiddleware, TokenBuckets
from tests.harness import Harness
from tests.standins import BotAPIStandIn
from tests.test_redis_state import REDIS_URL, redis_up

USER, OTHER = 7301, 7302
SLOW = "Slow down a little"

pytestmark = pytest.mark.faults  # forged input and abuse through the real entry points


def answers(botapi: BotAPIStandIn, since: int) -> tuple[int, int]:
    """(presses answered by their handler, presses answered "slow down") among calls[since:]."""
    texts = [str(c.params.get("text") or "") for c in botapi.calls[since:] if c.method == "answerCallbackQuery"]
    return sum(1 for text in texts if not text), sum(1 for text in texts if text.startswith(SLOW))


async def test_a_burst_of_presses_is_cut_at_the_limit_and_answered_slow_down(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, throttle_updates_per_second=3.0, throttle_burst=10).start()
    try:
        began = time.monotonic()
        menu = await shop.send(USER, "/start")  # one update of the ten
        before = len(botapi.calls)
        await asyncio.gather(*(shop.press(USER, "menu:help", message=menu) for _ in range(30)))
        elapsed = time.monotonic() - began
        handled, slowed = answers(botapi, before)
        assert 9 <= handled <= 9 + 3 * elapsed and handled + slowed == 30
        helps = [c for c in botapi.calls[before:] if c.method == "sendMessage" and "How it works" in c.text]
        assert len(helps) == handled  # the refused presses did nothing else

        before = len(botapi.calls)
        await shop.press(OTHER, "menu:help", message=menu, chat_id=USER)  # someone else: a bucket of their own
        assert answers(botapi, before) == (1, 0)
    finally:
        await shop.stop()


async def test_a_flood_of_messages_gets_one_slow_down_reply(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, throttle_updates_per_second=3.0, throttle_burst=10).start()
    try:
        began = time.monotonic()
        for n in range(25):
            await shop.send(USER, f"hello {n}")
        elapsed = time.monotonic() - began
        texts = [c.text for c in botapi.calls if c.method == "sendMessage" and c.chat_id == USER]  # not the relays
        handled = sum(1 for text in texts if text.startswith(("Sent to the shop", "You've sent the shop")))
        assert 10 <= handled <= 10 + 3 * elapsed
        assert sum(1 for text in texts if text.startswith(SLOW)) == 1 and len(texts) == handled + 1
    finally:
        await shop.stop()


async def test_processes_sharing_redis_share_each_users_bucket(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    if not await redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    user = random.randint(10**9, 2 * 10**9)  # runs share the Redis server: a user of our own
    limits: dict[str, Any] = {"redis_url": REDIS_URL, "throttle_updates_per_second": 0.1, "throttle_burst": 4}
    first = await Harness(engine, botapi, **limits).start()
    second = await Harness(engine, botapi, **limits).start()
    try:
        menu = await first.send(user, "/start")
        before = len(botapi.calls)
        for shop in (second, first, second, first, second):
            await shop.press(user, "menu:help", message=menu)
        assert answers(botapi, before) == (3, 2)  # 4 in all, whichever process took them
    finally:
        await first.stop()
        await second.stop()


async def test_unreachable_redis_falls_back_to_this_process_buckets(caplog: pytest.LogCaptureFixture) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    throttle = ThrottleMiddleware(0.1, 3, dead)
    try:
        with caplog.at_level(logging.WARNING, logger="bot.throttle"):
            assert [await throttle.allow(USER) for _ in range(4)] == [True, True, True, False]
            assert await throttle.allow(OTHER)
        assert [r.message for r in caplog.records] == ["throttle.redis_unreachable"]  # then not tried for a while
    finally:
        await dead.aclose()


def test_in_process_buckets_stay_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2, max_users=3)
    for user in range(10):
        assert buckets.allow(user, now=100.0)
    assert len(buckets._tat) <= 3
    assert buckets.allow(9, now=100.0) and not buckets.allow(9, now=100.0)  # a full bucket is still kept
    assert buckets.allow(9, now=101.0)  # one a second comes back
