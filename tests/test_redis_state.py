"""With REDIS_URL set, a customer's checkout survives moving between web processes."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as redis

from services import cart as cart_service
from services import catalog
from tests.harness import Harness

REDIS_URL = "redis://127.0.0.1:6379/3"


async def redis_up() -> bool:
    try:
        client = redis.from_url(REDIS_URL)
        await client.ping()
        await client.aclose()
        return True
    except (OSError, redis.RedisError):
        return False


async def test_checkout_continues_on_another_process(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    if not await redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    user = random.randint(10**9, 2 * 10**9)  # runs share the Redis server: a user of our own
    first = await Harness(engine, botapi, redis_url=REDIS_URL).start()
    second = await Harness(engine, botapi, redis_url=REDIS_URL).start()
    await first.load_demo()
    async with first.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, user, user)
        await cart_service.add(session, user, await catalog.get_product(session, sku="ACC-LEN-65W"), 1)
    cart = await first.send(user, "/cart")
    zones = await first.press(user, cart.button("Checkout"))
    await first.press(user, zones.button("Nairobi"))
    reply = await second.send(user, "0712345678")  # the next update lands on the other process
    assert "email" in reply.text
    reply = await first.send(user, "a@example.com")
    assert "delivery address" in reply.text
    await second.send(user, "/cancel")
    await first.stop()
    await second.stop()
