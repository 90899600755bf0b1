"""Per-user update throttle: each Telegram user gets THROTTLE_UPDATES_PER_SECOND updates a second,
with THROTTLE_BURST on top, so one account (or a script behind it) cannot take a web process's
time, database connections and Bot API budget from everyone else.

The limit is a GCRA token bucket: one number per user, the time their bucket is next empty
("theoretical arrival time"). In-process it lives in a bounded dict; with REDIS_URL it lives in
Redis (one script call per update, so every web process shares it) and falls back to the
in-process buckets while Redis cannot be reached: a Redis outage must not refuse every customer.
The same limiter (`Limiter`) counts the order status page's look-ups per client address."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.types import CallbackQuery, Message, TelegramObject, User
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.i18n import t

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# KEYS[1]: the user's bucket; ARGV: emission interval and burst tolerance, in microseconds. Time is
# Redis's own (every process agrees on it), in integer microseconds (exact in a Lua double).
GCRA_LUA = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > tolerance then return 0 end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 1
"""


class TokenBuckets:
    """In-process GCRA buckets keyed by user id, at most `max_users` of them: when full, buckets that
    have refilled (the same as no bucket) are dropped, and if that frees nothing, all are."""

    def __init__(self, rate: float, burst: int, max_users: int = 100_000) -> None:
        self.interval = 1.0 / rate
        self.tolerance = burst * self.interval + 1e-9  # the burst-th update at once still fits
        self.max_users = max_users
        self._tat: dict[int, float] = {}

    def allow(self, key: int, now: float) -> bool:
        tat = self._tat.get(key, now)
        next_tat = (tat if tat > now else now) + self.interval
        if next_tat - now > self.tolerance:
            return False
        if len(self._tat) >= self.max_users and key not in self._tat:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
            if len(self._tat) >= self.max_users:
                self._tat.clear()
        self._tat[key] = next_tat
        return True


class Limiter:
    """GCRA limits keyed by an integer (a Telegram user, a client address): `rate` a second sustained,
    `burst` on top. With a Redis client the buckets live in Redis under `key_prefix` (one script call
    per check, so every process shares them), falling back to the in-process buckets while Redis
    cannot be reached: a Redis outage must not refuse everyone."""

    REDIS_RETRY_SECONDS = 5.0

    def __init__(
        self, rate: float, burst: int, redis: Redis | None = None, *, key_prefix: str, max_keys: int = 100_000
    ) -> None:
        self.local = TokenBuckets(rate, burst, max_keys)
        self.script = redis.register_script(GCRA_LUA) if redis is not None else None
        interval_us = max(1, round(1_000_000 / rate))
        self.script_args = (interval_us, interval_us * burst)
        self.key_prefix = key_prefix
        self._redis_down_until = 0.0

    async def allow(self, key: int) -> bool:
        """One more event for `key` fits now (and it is counted)."""
        now = time.monotonic()
        if self.script is not None and now >= self._redis_down_until:
            try:
                return bool(await self.script(keys=[f"{self.key_prefix}{key}"], args=self.script_args))
            except (RedisError, OSError) as exc:
                self._redis_down_until = now + self.REDIS_RETRY_SECONDS
                log.warning(
                    "throttle.redis_unreachable",
                    extra={"error": type(exc).__name__, "retry_in_s": self.REDIS_RETRY_SECONDS},
                )
        return self.local.allow(key, now)


class ThrottleMiddleware(BaseMiddleware):
    """Outer middleware on messages and button presses, keyed by the Telegram user. An update over
    the limit is not handled: a press gets a short "slow down" answer (it must be answered, or the
    button spins), a message gets one such reply at most every `notice_every` seconds per user (a
    reply per dropped message would itself be the flood)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        redis: Redis | None = None,
        *,
        key_prefix: str = "throttle:",
        notice_every: float = 5.0,
        max_users: int = 100_000,
    ) -> None:
        self.limiter = Limiter(rate, burst, redis, key_prefix=key_prefix, max_keys=max_users)
        self.notice_every = notice_every
        self.max_users = max_users
        self._noticed: dict[int, float] = {}  # user id -> when the next "slow down" message may go

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or await self.allow(user.id):
            return await handler(event, data)
        await self._refuse(event, user.id, data.get("lang", "en"))
        return None

    async def allow(self, user_id: int) -> bool:
        """This user may send one more update now (and it is counted)."""
        return await self.limiter.allow(user_id)

    async def _refuse(self, event: TelegramObject, user_id: int, lang: str) -> None:
        first = self._may_notice(user_id)  # of this spell: logged and told once, not per update
        if first:
            log.info("throttle.refused", extra={"user": user_id})
        try:
            if isinstance(event, CallbackQuery) or (isinstance(event, Message) and first):
                await event.answer(t("throttle.slow_down", lang))
        except TelegramAPIError as exc:  # e.g. a press too old to answer: nothing more to tell them
            log.info("throttle.notice_failed", extra={"error": type(exc).__name__})

    def _may_notice(self, user_id: int) -> bool:
        now = time.monotonic()
        if self._noticed.get(user_id, 0.0) > now:
            return False
        if len(self._noticed) >= self.max_users:
            self._noticed = {k: v for k, v in self._noticed.items() if v > now}
            if len(self._noticed) >= self.max_users:
                self._noticed.clear()
        self._noticed[user_id] = now + self.notice_every
        return True


def shared_redis(storage: BaseStorage) -> Redis | None:
    """The Redis client of the conversation storage (REDIS_URL), reused so the throttle adds no
    connection pool of its own and is closed with the storage; None for in-memory storage."""
    return storage.redis if isinstance(storage, RedisStorage) else None
