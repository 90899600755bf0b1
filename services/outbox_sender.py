"""The sending side of the transactional outbox.

Rows are claimed with a lease by a compare-and-set UPDATE (read with `FOR UPDATE SKIP LOCKED` on
PostgreSQL), so each lease is had by one lane or worker, on SQLite too; sent, and marked sent in a
commit right after the send. A worker that dies between send and mark leaves the row to be sent
again when the lease runs out: at-least-once, never lost. Telegram's limits are kept with aiolimiter
(about 30/s overall, 1/s per chat, 20/min per group); a 429 holds that chat for `retry_after` (the
whole sender when several chats get one at once); 5xx and network errors back off exponentially
until `max_attempts`, then the row is dead; a 403 marks the customer unreachable and drops its rows.
Rows a worker cannot send soon after claiming are given back rather than held past their lease.
Rows are claimed most urgent first (`Outbox.priority`: order updates and alerts before broadcasts);
a row is a text message, a photo with a caption, or an edit of one of the bot's messages, and a
broadcast's row is counted in its broadcast (sent, failed, blocked) in the commit that settles it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Broadcast, Customer, Outbox, StockWatch, utcnow
from db.session import dialect_name
from services import metrics
from services.locks import run_as_leader
from services.markup import is_unparsable, refusal_for_log, to_plain

log = logging.getLogger(__name__)


class RetryAfter(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds}s")
        self.seconds = seconds


class Blocked(Exception):
    """403: the user blocked the bot or deleted the account; stop writing to them."""


# Telegram's 400 descriptions that leave an edit nothing to do: the text is already so, or the
# message is gone or can no longer be edited (the customer deleted it). Retrying cannot change them.
EDIT_DONE = ("message is not modified", "message to edit not found", "message can't be edited")


class TemporaryError(Exception):
    """Network trouble or a 5xx: try again later."""


class PermanentError(Exception):
    """A 400 we cannot fix by retrying (chat not found, bad markup)."""


class Transport(Protocol):
    """How the sender reaches Telegram: a text message, a photo with a caption, or an edit of a text
    message the bot sent (a broadcast's progress in the admin group)."""

    async def send(self, chat_id: int, text: str, reply_markup: dict[str, Any] | None) -> None: ...

    async def send_photo(self, chat_id: int, photo: str, caption: str, reply_markup: dict[str, Any] | None) -> None: ...

    async def edit_text(
        self, chat_id: int, message_id: int, text: str, reply_markup: dict[str, Any] | None
    ) -> None: ...


class BotApiTransport:
    """sendMessage, sendPhoto and editMessageText over the Bot API with httpx, so services stay free
    of aiogram."""

    def __init__(self, api_url: str, token: str, timeout: float = 10.0) -> None:
        self.http = httpx.AsyncClient(base_url=f"{api_url.rstrip('/')}/bot{token}", timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, chat_id: int, text: str, reply_markup: dict[str, Any] | None) -> None:
        """One message in HTML parse mode. A text Telegram still cannot parse ("can't parse
        entities") goes out once more as plain text, so the message is never lost to its markup."""
        body: dict[str, Any] = {"chat_id": chat_id, "text": text, "link_preview_options": {"is_disabled": True}}
        await self._call("/sendMessage", body, "text", reply_markup)

    async def send_photo(self, chat_id: int, photo: str, caption: str, reply_markup: dict[str, Any] | None) -> None:
        """A photo (a Telegram file_id) with an HTML caption, resent with a plain caption if unparsable."""
        await self._call(
            "/sendPhoto", {"chat_id": chat_id, "photo": photo, "caption": caption}, "caption", reply_markup
        )

    async def edit_text(self, chat_id: int, message_id: int, text: str, reply_markup: dict[str, Any] | None) -> None:
        """Replace the text of the bot's message `message_id`. "Message is not modified" is success, and
        so is a message that is gone or can no longer be edited (the customer deleted it): there is
        nothing left to change, and retrying cannot bring it back."""
        body: dict[str, Any] = {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "link_preview_options": {"is_disabled": True},
        }
        await self._call("/editMessageText", body, "text", reply_markup, done_when=EDIT_DONE)

    async def _call(
        self,
        method: str,
        body: dict[str, Any],
        field: str,
        reply_markup: dict[str, Any] | None,
        *,
        done_when: tuple[str, ...] = (),
    ) -> None:
        """One Bot API call, its refusal sorted into the sender's exceptions; a refusal whose
        description contains one of `done_when` is the call's work already done."""
        body["parse_mode"] = "HTML"
        if reply_markup:
            body["reply_markup"] = reply_markup
        chat_id = body["chat_id"]
        while True:
            try:
                resp = await self.http.post(method, json=body)
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
            if any(done in description for done in done_when):
                log.info("outbox.nothing_to_do", extra={"chat_id": chat_id, "error": refusal_for_log(description)})
                return
            if resp.status_code == 400 and "parse_mode" in body and is_unparsable(description):
                log.warning(
                    "outbox.unparsable_sent_as_plain_text",
                    extra={"chat_id": chat_id, "error": refusal_for_log(description)},
                )
                body.pop("parse_mode")
                body[field] = to_plain(body[field])
                continue
            raise PermanentError(f"{resp.status_code} {description}")


@dataclass
class Limits:
    """Telegram's sending limits and the sender's retry policy (one per process, shared by its drains).

    Telegram counts messages as they arrive, and a request arrives some time between our decision to
    send it and its answer. So the hard cap counts each send from the moment it starts until one
    second after its answer came back: a new send may start only while fewer than `window_max` are
    so counted. Whatever the network jitter, no second of arrivals then holds more than `window_max`
    (the last send of any such second started after every other one had arrived, hence less than a
    second after it was answered). The sustained rate is `window_max / (1 + round trip)`. An
    aiolimiter bucket of two slots at `per_second` spreads the sends over the second instead of
    bursting; two slots so a late wake-up of the event loop is made up instead of lost.

    Each chat is spaced by its own interval, booked at the moment of sending (after the global wait,
    so queueing cannot squeeze two sends together), with 10% slack for arrival jitter; an aiolimiter
    per chat would be booked before the global wait and could. The per-chat bookings live in a
    bounded LRU dict.

    A 429 makes that chat wait `retry_after`. Telegram does not say whether a 429 is about one chat
    or the bot as a whole, so 429s on `global_429_chats` different chats within a second are taken
    as the global limit and pause every chat.
    """

    per_second: float = 30.0
    window_max: int = 30
    per_chat_seconds: float = 1.1
    group_seconds: float = 1.1 * 60 / 20
    max_hold: float = 5.0  # a claimed row that cannot be sent this soon is given back, not held
    backoff_first: float = 2.0  # 5xx / network: first retry after ~2 s, doubling (jittered), capped
    backoff_max: float = 300.0
    max_attempts: int = 8
    global_429_chats: int = 3
    max_chats: int = 10_000
    paused_until: float = 0.0
    global_pauses: int = 0
    overall: AsyncLimiter = field(init=False)
    _next_ok: OrderedDict[int, float] = field(default_factory=OrderedDict)
    _recent_429: list[tuple[float, int]] = field(default_factory=list)
    _in_flight: int = 0
    _answered_at: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.overall = AsyncLimiter(2, 2 / self.per_second)
        self.window_max = min(self.window_max, max(1, int(self.per_second)))

    def _window_wait(self, now: float) -> float:
        """Seconds to wait before one more send may start (0: now); see the class docstring."""
        while self._answered_at and now - self._answered_at[0] >= 1.0:
            self._answered_at.popleft()
        if self._in_flight + len(self._answered_at) < self.window_max:
            return 0.0
        return self._answered_at[0] + 1.0 - now if self._answered_at else 0.005

    def answered(self) -> None:
        """A send that `wait_turn` allowed has finished (whatever its outcome)."""
        self._in_flight -= 1
        self._answered_at.append(time.monotonic())

    def chat_delay(self, chat_id: int) -> float:
        """Seconds until `chat_id` may be written to: its spacing, a 429 on it, or a global pause."""
        return max(self._next_ok.get(chat_id, 0.0), self.paused_until) - time.monotonic()

    def _book(self, chat_id: int, until: float) -> None:
        self._next_ok[chat_id] = until
        self._next_ok.move_to_end(chat_id)
        if len(self._next_ok) > self.max_chats:
            self._next_ok.popitem(last=False)

    async def wait_turn(self, chat_id: int, deadline: float) -> bool:
        """Wait for the chat's turn and a global slot. False (chat slot not booked) if that would be
        after `deadline` (monotonic), so the caller can give the row back before its lease runs out.
        After True the caller sends at once and then calls `answered()`."""
        spacing = self.group_seconds if chat_id < 0 else self.per_chat_seconds
        while True:
            delay = self.chat_delay(chat_id)
            if time.monotonic() + max(delay, 0.0) > deadline:
                return False
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            async with self.overall:
                pass
            now = time.monotonic()
            while (wait := self._window_wait(now)) > 0:
                if now + wait > deadline:
                    return False
                await asyncio.sleep(wait)
                now = time.monotonic()
            if now > deadline:
                return False
            if self.chat_delay(chat_id) <= 0:
                self._book(chat_id, now + spacing)
                self._in_flight += 1
                return True

    def note_429(self, chat_id: int, seconds: float) -> bool:
        """Make the chat wait; returns True when the 429s look global and the whole sender pauses."""
        now = time.monotonic()
        self._book(chat_id, max(self._next_ok.get(chat_id, 0.0), now + seconds))
        self._recent_429 = [(at, c) for at, c in self._recent_429 if now - at < 1.0] + [(now, chat_id)]
        if len({c for _, c in self._recent_429}) < self.global_429_chats:
            return False
        if self.paused_until < now:
            self.global_pauses += 1
        self.paused_until = max(self.paused_until, now + seconds)
        return True

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after `attempts` failed sends: exponential, ±20% so workers spread."""
        return min(self.backoff_first * 2.0 ** max(attempts - 1, 0), self.backoff_max) * random.uniform(0.8, 1.2)


async def claim(
    session_factory: async_sessionmaker[AsyncSession], *, batch: int, lease_seconds: float, now: datetime
) -> list[Outbox]:
    """Lease due rows, most urgent first (`Outbox.priority`, then age), keeping each chat's messages
    of one priority in order: if an older message of a chat is held elsewhere (another worker, or
    backing off), the chat's newer rows of that priority and of less urgent ones wait. A more urgent
    row does not wait for less urgent ones: an order update overtakes a customer's pending broadcast.

    The lease is a compare-and-set: one UPDATE takes only rows that are still pending and due, and
    RETURNING says which it got. PostgreSQL's `SKIP LOCKED` read already keeps two claimers apart;
    SQLite has no row locks (its read is not even in the write transaction), so there two lanes read
    the same rows and the UPDATE, serialised by SQLite's write lock, is what lets only one of them
    have each row. The lease end a claim writes into `next_attempt_at` is its token: `_mark` and
    `_release` change a row only while it still holds it."""
    async with session_factory() as session, session.begin():
        stmt = (
            select(Outbox.id, Outbox.chat_id)
            .where(Outbox.state == "pending", Outbox.next_attempt_at <= now)
            .order_by(Outbox.priority, Outbox.id)
            .limit(batch)
        )
        if dialect_name(session) == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        due = (await session.execute(stmt)).all()
        if not due:
            return []
        heads: dict[int, tuple[int, int]] = {}  # chat -> (priority, id) of its first pending row
        for chat_id, priority, first_id in (
            await session.execute(
                select(Outbox.chat_id, Outbox.priority, func.min(Outbox.id))
                .where(Outbox.state == "pending", Outbox.chat_id.in_({c for _, c in due}))
                .group_by(Outbox.chat_id, Outbox.priority)
            )
        ).all():
            heads[chat_id] = min(heads.get(chat_id, (priority, first_id)), (priority, first_id))
        oldest = {chat_id: head[1] for chat_id, head in heads.items()}
        first_wanted: dict[int, int] = {}
        for row_id, chat_id in due:
            first_wanted.setdefault(chat_id, row_id)
        wanted = [row_id for row_id, chat_id in due if oldest[chat_id] == first_wanted[chat_id]]
        if not wanted:
            return []
        lease = now + timedelta(seconds=lease_seconds)
        rows = sorted(
            (
                await session.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(wanted), Outbox.state == "pending", Outbox.next_attempt_at <= now)
                    .values(next_attempt_at=lease, attempts=Outbox.attempts + 1)
                    .returning(Outbox)
                    .execution_options(synchronize_session=False)
                )
            )
            .scalars()
            .all(),
            key=lambda r: (r.priority, r.id),
        )
        won = {r.id for r in rows}
        # A chat whose oldest row another claimer took first: its newer rows we got must wait for it.
        lost = [r.id for r in rows if first_wanted[r.chat_id] not in won]
        if lost:
            await session.execute(
                update(Outbox)
                .where(Outbox.id.in_(lost))
                .values(next_attempt_at=now, attempts=Outbox.attempts - 1)
                .execution_options(synchronize_session=False)
            )
        return [r for r in rows if first_wanted[r.chat_id] in won]


async def drain_once(
    session_factory: async_sessionmaker[AsyncSession],
    transport: Transport,
    limits: Limits,
    *,
    batch: int = 150,
    lease_seconds: float = 60.0,
    concurrency: int = 64,
) -> int:
    """Send one batch of due messages, chats concurrently; returns how many were sent.

    No send starts later than half the lease after the claim (nor later than `limits.max_hold`); rows
    that cannot go by then are given back. Each send, whole (its plain-text resend included), must end
    a quarter of the lease before the lease does, or it is abandoned and retried later. So a live
    worker never holds a row past its lease and another worker never sends it a second time.
    """
    started = time.monotonic()  # before the claim: the lease, counted from here, ends no later
    deadline = started + min(limits.max_hold, lease_seconds / 2)
    send_by = started + lease_seconds * 3 / 4
    rows = await claim(session_factory, batch=batch, lease_seconds=lease_seconds, now=utcnow())
    by_chat: dict[int, list[Outbox]] = defaultdict(list)
    for r in rows:
        by_chat[r.chat_id].append(r)
    gate = asyncio.Semaphore(concurrency)

    async def run_chat(chat_rows: list[Outbox]) -> int:
        async with gate:
            return await _send_chat(session_factory, transport, limits, chat_rows, deadline, send_by)

    return sum(await asyncio.gather(*(run_chat(v) for v in by_chat.values())))


async def _send_chat(
    session_factory: async_sessionmaker[AsyncSession],
    transport: Transport,
    limits: Limits,
    rows: list[Outbox],
    deadline: float,
    send_by: float,
) -> int:
    """Send one chat's claimed rows in order (priority, then id); stop that chat at the first row
    that must wait."""
    sent, chat_id = 0, rows[0].chat_id
    try:
        for index, row in enumerate(rows):
            if not await limits.wait_turn(chat_id, deadline):
                await _release(session_factory, rows[index:], max(limits.chat_delay(chat_id), 0.0))
                return sent
            try:
                try:
                    await _send_within(transport, row, send_by)
                finally:
                    limits.answered()
            except RetryAfter as exc:
                scope = "global" if limits.note_429(chat_id, exc.seconds) else "chat"
                await _release(session_factory, rows[index:], exc.seconds, f"429 retry_after={exc.seconds}")
                metrics.NOTIFICATIONS.labels("rate_limited").inc()
                log.warning(
                    "outbox.rate_limited", extra={"chat_id": chat_id, "retry_after": exc.seconds, "scope": scope}
                )
                return sent
            except Blocked as exc:
                await _blocked(session_factory, chat_id, str(exc))
                return sent
            except TemporaryError as exc:
                if row.attempts >= limits.max_attempts:
                    await _mark(session_factory, row, state="dead", error=str(exc))
                    metrics.NOTIFICATIONS.labels("dead").inc()
                    log.error(
                        "outbox.gave_up",
                        extra={"outbox_id": row.id, "chat_id": chat_id, "attempts": row.attempts, "error": str(exc)},
                    )
                    continue
                delay = limits.backoff(row.attempts)
                await _release(session_factory, rows[index:], delay, str(exc), attempted=row.id)
                metrics.NOTIFICATIONS.labels("retried").inc()
                log.warning(
                    "outbox.retry",
                    extra={
                        "outbox_id": row.id,
                        "chat_id": chat_id,
                        "attempts": row.attempts,
                        "in_seconds": round(delay, 2),
                        "error": str(exc),
                    },
                )
                return sent
            except PermanentError as exc:
                await _mark(session_factory, row, state="dead", error=str(exc))
                metrics.NOTIFICATIONS.labels("dead").inc()
                log.error(
                    "outbox.permanent_failure",
                    extra={"outbox_id": row.id, "chat_id": chat_id, "kind": row.kind, "error": str(exc)},
                )
                continue
            await _mark(session_factory, row, state="sent")
            metrics.NOTIFICATIONS.labels("sent").inc()
            sent += 1
    except Exception:  # a database blip: the chat's leased rows come back when the lease runs out
        log.exception("outbox.chat_failed", extra={"chat_id": chat_id})
    return sent


async def _send_within(transport: Transport, row: Outbox, send_by: float) -> None:
    """One send, bounded as a whole: the transport's timeouts are per request phase, and a send may be
    two requests (the plain-text resend), so only this keeps it inside the claim's lease. A send cut
    off is a temporary failure: the row is retried once released (Telegram may have it already:
    at-least-once), never sent meanwhile by another worker that took over the lease."""
    try:
        async with asyncio.timeout(max(send_by - time.monotonic(), 0.0)):
            if row.edit_message_id is not None:
                await transport.edit_text(row.chat_id, row.edit_message_id, row.text, row.reply_markup)
            elif row.photo is not None:
                await transport.send_photo(row.chat_id, row.photo, row.text, row.reply_markup)
            else:
                await transport.send(row.chat_id, row.text, row.reply_markup)
    except TimeoutError:
        raise TemporaryError("no answer from Telegram within the claim's lease") from None


async def _mark(
    session_factory: async_sessionmaker[AsyncSession], row: Outbox, *, state: str, error: str | None = None
) -> None:
    """Record the outcome of a send. "sent" is recorded whoever holds the row now (it did go out);
    "dead" only while our lease holds, so a worker that lost its lease cannot kill a row another one
    took over. A sent back-in-stock message ends the watch it was queued for, in the same commit; a
    broadcast's message is counted (sent or failed) in its broadcast in that commit, once: only by the
    update that settled a pending row."""
    values: dict[str, Any] = {"state": state, "last_error": error[:500] if error else None}
    where = [Outbox.id == row.id]
    if state == "sent":
        values["sent_at"] = utcnow()
    else:
        where += [Outbox.state == "pending", Outbox.next_attempt_at == row.next_attempt_at]
    async with session_factory() as session, session.begin():
        if row.broadcast_id is None:
            await session.execute(update(Outbox).where(*where).values(**values))
        else:
            settled = (
                await session.execute(
                    update(Outbox)
                    .where(*where, Outbox.state == "pending")
                    .values(**values)
                    .returning(Outbox.id)
                    .execution_options(synchronize_session=False)
                )
            ).first()
            if settled is not None:
                counter = Broadcast.sent if state == "sent" else Broadcast.failed
                await session.execute(
                    update(Broadcast).where(Broadcast.id == row.broadcast_id).values({counter: counter + 1})
                )
            elif state == "sent":  # sent after all, though another worker had settled it: say so, uncounted
                await session.execute(update(Outbox).where(*where).values(**values))
        if state == "sent" and row.kind == "back_in_stock":
            await session.execute(delete(StockWatch).where(StockWatch.outbox_id == row.id))


async def _release(
    session_factory: async_sessionmaker[AsyncSession],
    rows: list[Outbox],
    delay: float,
    error: str | None = None,
    *,
    attempted: int | None = None,
) -> None:
    """Give leased rows back, due in `delay` s. Only the row `attempted` (a send that failed) keeps the
    attempt its claim counted: waiting for a rate limit is not a failed delivery. Rows whose lease we
    no longer hold (it ran out and another worker claimed them) are left alone."""
    values: dict[str, Any] = {
        "next_attempt_at": utcnow() + timedelta(seconds=delay),
        "attempts": Outbox.attempts - (case((Outbox.id == attempted, 0), else_=1) if attempted else 1),
    }
    if error is not None:
        values["last_error"] = error[:500]
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Outbox)
            .where(
                Outbox.id.in_([r.id for r in rows]),
                Outbox.state == "pending",
                Outbox.next_attempt_at == rows[0].next_attempt_at,
            )
            .values(**values)
        )


async def _blocked(session_factory: async_sessionmaker[AsyncSession], chat_id: int, error: str) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(update(Customer).where(Customer.chat_id == chat_id).values(unreachable=True))
        dropped_rows = (
            await session.execute(
                update(Outbox)
                .where(Outbox.chat_id == chat_id, Outbox.state == "pending")
                .values(state="dead", last_error=error[:500])
                .returning(Outbox.id, Outbox.broadcast_id)
                .execution_options(synchronize_session=False)
            )
        ).all()
        dropped_ids = [row_id for row_id, _ in dropped_rows]
        dropped = len(dropped_ids)
        if dropped:  # they blocked the bot: their back-in-stock watches go with the messages
            await session.execute(delete(StockWatch).where(StockWatch.outbox_id.in_(dropped_ids)))
        # …and each broadcast that was to reach them counts them as blocked
        for broadcast_id, n in Counter(b for _, b in dropped_rows if b is not None).items():
            await session.execute(
                update(Broadcast).where(Broadcast.id == broadcast_id).values(blocked=Broadcast.blocked + n)
            )
    metrics.NOTIFICATIONS.labels("dropped").inc(dropped)
    log.warning("outbox.customer_unreachable", extra={"chat_id": chat_id, "dropped": dropped})


async def drain_lanes(
    session_factory: async_sessionmaker[AsyncSession],
    transport: Transport,
    limits: Limits,
    *,
    lanes: int = 2,
    lease_seconds: float = 60.0,
    idle_seconds: float = 0.5,
    until_empty: bool = False,
) -> int:
    """Keep draining with `lanes` overlapping drain loops sharing one rate budget, so the tail of one
    batch overlaps the head of the next (a single loop idles at every batch boundary). Each claim is
    sized to what can be sent before the hold deadline. Runs until cancelled, or, with `until_empty`,
    until nothing is pending. Returns the number sent."""
    hold = min(limits.max_hold, lease_seconds / 2)
    batch = max(1, int(limits.per_second * hold * 0.95 / lanes))
    total = 0

    async def lane() -> None:
        nonlocal total
        while True:
            try:
                sent = await drain_once(session_factory, transport, limits, batch=batch, lease_seconds=lease_seconds)
            except Exception:  # a database blip must not kill the sender
                log.exception("outbox.drain_failed")
                sent = 0
            total += sent
            if sent:
                continue
            if until_empty and not await _pending(session_factory):
                return
            await asyncio.sleep(max(idle_seconds, limits.paused_until - time.monotonic()))

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return total


async def _pending(session_factory: async_sessionmaker[AsyncSession]) -> int:
    async with session_factory() as session:
        return (await session.execute(select(func.count(Outbox.id)).where(Outbox.state == "pending"))).scalar_one()


async def run_sender(
    shop: Any,
    idle_seconds: float = 0.5,
    lease_seconds: float = 60.0,
    retry_seconds: float = 5.0,
    check_seconds: float = 2.0,
    transport: Transport | None = None,
) -> None:
    """Drain the outbox until cancelled (the worker's long-running task). With several workers on
    PostgreSQL one of them sends at a time (Telegram's limits are the bot's, not the process's);
    the others stand by and take over within `retry_seconds` + 3 × `check_seconds` when it stops.
    `transport`: Telegram's Bot API over HTTP unless given (the console shows messages in-process)."""
    settings = shop.settings
    timeout = min(10.0, lease_seconds / 4)  # a send must finish well inside the lease
    sender: Transport = transport or BotApiTransport(
        settings.telegram_api_url, settings.bot_token.get_secret_value(), timeout=timeout
    )
    log.info("outbox.sender_started", extra={"lease_seconds": lease_seconds})
    try:
        await run_as_leader(
            shop.engine,
            "outbox-sender",
            lambda: drain_lanes(
                shop.session_factory, sender, Limits(), lease_seconds=lease_seconds, idle_seconds=idle_seconds
            ),
            retry_seconds=retry_seconds,
            check_seconds=check_seconds,
        )
    finally:
        if transport is None and isinstance(sender, BotApiTransport):  # a given transport is its owner's to close
            await sender.aclose()
