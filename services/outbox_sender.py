"""The sending side of the transactional outbox.

Rows are claimed with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), sent, and marked sent in a
commit right after the send. A worker that dies between send and mark leaves the row to be sent
again when the lease runs out: at-least-once, never lost. Telegram's limits are kept with aiolimiter
(about 30/s overall, 1/s per chat, 20/min per group); a 429 pauses the sender for `retry_after`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Customer, Outbox, utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
MAX_BACKOFF = 300.0


class RetryAfter(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds}s")
        self.seconds = seconds


class Blocked(Exception):
    """403: the user blocked the bot or deleted the account; stop writing to them."""


class TemporaryError(Exception):
    """Network trouble or a 5xx: try again later."""


class PermanentError(Exception):
    """A 400 we cannot fix by retrying (chat not found, bad markup)."""


class Transport(Protocol):
    async def send(self, chat_id: int, text: str, reply_markup: dict[str, Any] | None) -> None: ...


class BotApiTransport:
    """sendMessage over the Bot API with httpx, so services stay free of aiogram."""

    def __init__(self, api_url: str, token: str, timeout: float = 10.0) -> None:
        self.http = httpx.AsyncClient(base_url=f"{api_url.rstrip('/')}/bot{token}", timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, chat_id: int, text: str, reply_markup: dict[str, Any] | None) -> None:
        body: dict[str, Any] = {"chat_id": chat_id, "text": text, "parse_mode": "HTML",
                                "link_preview_options": {"is_disabled": True}}
        if reply_markup:
            body["reply_markup"] = reply_markup
        try:
            resp = await self.http.post("/sendMessage", json=body)
        except httpx.HTTPError as exc:
            raise TemporaryError(type(exc).__name__) from None
        if resp.status_code == 200:
            return
        try:
            data = resp.json()
        except ValueError:
            data = {}
        description = str(data.get("description", resp.reason_phrase))
        if resp.status_code == 429:
            raise RetryAfter(float((data.get("parameters") or {}).get("retry_after", 1)))
        if resp.status_code == 403:
            raise Blocked(description)
        if resp.status_code >= 500:
            raise TemporaryError(f"{resp.status_code} {description}")
        if "message is not modified" in description:
            return
        raise PermanentError(f"{resp.status_code} {description}")


@dataclass
class Limits:
    """Telegram's sending limits. The global aiolimiter has no burst (one slot every 1/rate s), so no
    one-second window holds more than `per_second` sends; each chat is spaced by its own interval,
    measured at the moment of sending (after the global wait), with 10% slack for arrival jitter."""
    per_second: float = 29.5
    per_chat_seconds: float = 1.1
    group_seconds: float = 1.1 * 60 / 20
    paused_until: float = 0.0
    overall: AsyncLimiter = field(init=False)
    _next_ok: OrderedDict[int, float] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.overall = AsyncLimiter(1, 1 / self.per_second)

    async def wait_turn(self, chat_id: int) -> None:
        spacing = self.group_seconds if chat_id < 0 else self.per_chat_seconds
        while True:
            now = time.monotonic()
            delay = max(self._next_ok.get(chat_id, 0.0), self.paused_until) - now
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            async with self.overall:
                pass
            now = time.monotonic()
            if now >= self._next_ok.get(chat_id, 0.0) and now >= self.paused_until:
                self._next_ok[chat_id] = now + spacing
                self._next_ok.move_to_end(chat_id)
                if len(self._next_ok) > 10_000:
                    self._next_ok.popitem(last=False)
                return


async def claim(session_factory: async_sessionmaker[AsyncSession], *, batch: int, lease_seconds: float,
                now: datetime) -> list[Outbox]:
    """Lease due rows, keeping each chat's messages in order: if an older message of a chat is held
    elsewhere (another worker, or backing off), the chat's newer rows wait."""
    async with session_factory() as session, session.begin():
        stmt = (select(Outbox).where(Outbox.state == "pending", Outbox.next_attempt_at <= now)
                .order_by(Outbox.id).limit(batch))
        if session.bind.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list((await session.execute(stmt)).scalars().all())
        if not rows:
            return []
        chats = {r.chat_id for r in rows}
        oldest = dict((await session.execute(
            select(Outbox.chat_id, func.min(Outbox.id)).where(Outbox.state == "pending", Outbox.chat_id.in_(chats))
            .group_by(Outbox.chat_id))).all())
        first_claimed: dict[int, int] = {}
        for r in rows:
            first_claimed.setdefault(r.chat_id, r.id)
        rows = [r for r in rows if oldest[r.chat_id] == first_claimed[r.chat_id]]
        lease = now + timedelta(seconds=lease_seconds)
        for r in rows:
            r.next_attempt_at = lease
            r.attempts += 1
        return rows


async def drain_once(session_factory: async_sessionmaker[AsyncSession], transport: Transport, limits: Limits, *,
                     batch: int = 200, lease_seconds: float = 60.0, concurrency: int = 64) -> int:
    """Send one batch of due messages; returns how many were sent."""
    rows = await claim(session_factory, batch=batch, lease_seconds=lease_seconds, now=utcnow())
    by_chat: dict[int, list[Outbox]] = defaultdict(list)
    for r in rows:
        by_chat[r.chat_id].append(r)
    gate = asyncio.Semaphore(concurrency)

    async def run_chat(chat_rows: list[Outbox]) -> int:
        async with gate:
            return await _send_chat(session_factory, transport, limits, chat_rows)

    return sum(await asyncio.gather(*(run_chat(v) for v in by_chat.values())))


async def _send_chat(session_factory: async_sessionmaker[AsyncSession], transport: Transport, limits: Limits,
                     rows: list[Outbox]) -> int:
    sent = 0
    for index, row in enumerate(rows):
        await limits.wait_turn(row.chat_id)
        try:
            await transport.send(row.chat_id, row.text, row.reply_markup)
        except RetryAfter as exc:
            limits.paused_until = max(limits.paused_until, time.monotonic() + exc.seconds)
            await _reschedule(session_factory, rows[index:], exc.seconds, f"429 retry_after={exc.seconds}")
            log.warning("outbox.rate_limited", extra={"retry_after": exc.seconds})
            return sent
        except Blocked as exc:
            await _blocked(session_factory, row.chat_id, str(exc))
            return sent
        except TemporaryError as exc:
            if row.attempts >= MAX_ATTEMPTS:
                await _mark(session_factory, [row.id], state="dead", error=str(exc))
                log.error("outbox.gave_up", extra={"outbox_id": row.id, "error": str(exc)})
                continue
            await _reschedule(session_factory, rows[index:], min(2.0 ** row.attempts, MAX_BACKOFF), str(exc))
            return sent
        except PermanentError as exc:
            await _mark(session_factory, [row.id], state="dead", error=str(exc))
            log.error("outbox.permanent_failure", extra={"outbox_id": row.id, "kind": row.kind, "error": str(exc)})
            continue
        await _mark(session_factory, [row.id], state="sent")
        sent += 1
    return sent


async def _mark(session_factory: async_sessionmaker[AsyncSession], ids: list[int], *, state: str,
                error: str | None = None) -> None:
    async with session_factory() as session, session.begin():
        values: dict[str, Any] = {"state": state, "last_error": error}
        if state == "sent":
            values["sent_at"] = utcnow()
        await session.execute(update(Outbox).where(Outbox.id.in_(ids)).values(**values))


async def _reschedule(session_factory: async_sessionmaker[AsyncSession], rows: list[Outbox], delay: float,
                      error: str) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(update(Outbox).where(Outbox.id.in_([r.id for r in rows]))
                              .values(next_attempt_at=utcnow() + timedelta(seconds=delay), last_error=error[:500]))


async def _blocked(session_factory: async_sessionmaker[AsyncSession], chat_id: int, error: str) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(update(Customer).where(Customer.chat_id == chat_id).values(unreachable=True))
        await session.execute(update(Outbox).where(Outbox.chat_id == chat_id, Outbox.state == "pending")
                              .values(state="dead", last_error=error[:500]))
    log.info("outbox.customer_unreachable", extra={"chat_id": chat_id})


async def run_sender(shop: Any, idle_seconds: float = 0.5) -> None:
    """Drain the outbox until cancelled (the worker's long-running task)."""
    settings = shop.settings
    transport = BotApiTransport(settings.telegram_api_url, settings.bot_token.get_secret_value())
    limits = Limits()
    try:
        while True:
            try:
                sent = await drain_once(shop.session_factory, transport, limits)
            except Exception:  # a database blip must not kill the sender
                log.exception("outbox.drain_failed")
                sent = 0
            if not sent:
                await asyncio.sleep(idle_seconds)
    finally:
        await transport.aclose()
