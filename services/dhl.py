"""DHL Express tracking: a polite client for the Shipment Tracking – Unified API and the poll cycle.

Budget and rate limits (DHL's default key: ~250 calls a day, 1 call per 5 s):
- The day's calls are counted in the `api_budgets` row "dhl" (UTC day), reserved batch by batch
  under a row lock, so every worker and every restart shares one daily budget. A 429's
  `Retry-After` is stored there too, so no worker calls DHL again before it is over.
- A cycle spends at most its share of what is left today (`remaining / cycles left today`) and
  no more than fits into the cycle at the client's spacing. `DhlClient.from_settings` spaces
  calls so that the daily budget lasts the whole day (never closer than DHL_MIN_INTERVAL_SECONDS;
  aiolimiter), which spreads the calls across the cycle instead of bursting them.
- The job runs under an advisory lock (bot/jobs.py); on top of that rows are claimed with one
  compare-and-set UPDATE (… FOR UPDATE SKIP LOCKED on PostgreSQL) that moves their next check
  to the next cycle before DHL is called, so a shipment is polled by one worker per cycle.

`tracking_next_check_at` NULL means "due" (never checked); NEVER (far future) means "stop".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy import event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from bot.config import Settings
from db.models import ApiBudget, Order, Outbox, utcnow
from db.session import dialect_name, insert_with_conflicts
from services import buttons, metrics
from services import orders as sm
from services.errors import DomainError
from services.i18n import t
from services.markup import cut
from services.notifications import alert_admins, enqueue, inline_keyboard

log = logging.getLogger(__name__)

BUDGET_NAME = "dhl"
NEVER = datetime(9999, 1, 1, tzinfo=UTC)  # "stop polling this shipment"
MAX_MISS_BACKOFF = timedelta(hours=12)
MAX_TEMPORARY_ERRORS = 3  # in a row: DHL looks down, stop the cycle instead of burning the budget
KNOWN_CODES = ("pre-transit", "transit", "delivered", "failure")


# --- the client ------------------------------------------------------------------------------------


class NotFoundYet(Exception):
    """404: DHL has no record yet (common in the first hours after the label is made)."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class BadKey(Exception):
    """401/403: the API key is wrong or revoked."""


class TemporaryError(Exception):
    """Network trouble, timeouts, 5xx, unreadable bodies: try again next cycle."""


@dataclass(frozen=True, slots=True)
class TrackEvent:
    status_code: str  # pre-transit / transit / delivered / failure / unknown
    description: str
    place: str | None
    timestamp: datetime | None

    @property
    def key(self) -> str:
        """Identifies the event (dedup keys of the messages it causes)."""
        return f"{self.status_code}|{self.timestamp.isoformat() if self.timestamp else ''}|{self.description}"


UNKNOWN = TrackEvent("unknown", "", None, None)


def _text(value: Any, limit: int) -> str | None:
    return value.strip()[:limit] or None if isinstance(value, str) else None


def _timestamp(value: Any) -> datetime | None:
    """ISO 8601; DHL Express often sends local time without an offset: read that as UTC."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def parse_shipment(body: Any) -> TrackEvent:
    """The latest status of the (express) shipment; anything missing or odd reads as "unknown"."""
    shipments = body.get("shipments") if isinstance(body, dict) else None
    if not isinstance(shipments, list):
        return UNKNOWN
    candidates = [s for s in shipments if isinstance(s, dict)]
    shipment = next((s for s in candidates if s.get("service") == "express"), candidates[0] if candidates else None)
    if shipment is None:
        return UNKNOWN
    status = shipment.get("status")
    if not isinstance(status, dict):  # fall back to the newest event
        events = shipment.get("events")
        status = events[0] if isinstance(events, list) and events and isinstance(events[0], dict) else None
    if status is None:
        return UNKNOWN
    code = (_text(status.get("statusCode"), 24) or "unknown").lower()
    location = status.get("location")
    address = location.get("address") if isinstance(location, dict) else None
    place = _text(address.get("addressLocality"), 200) if isinstance(address, dict) else None
    description = _text(status.get("description"), 500) or _text(status.get("status"), 500) or ""
    return TrackEvent(
        code if code in KNOWN_CODES else "unknown", description, place, _timestamp(status.get("timestamp"))
    )


def _retry_after(value: str | None) -> float:
    try:
        return max(1.0, float(value)) if value else 60.0
    except ValueError:
        return 60.0


class DhlClient:
    """One tracking number per call, spaced by `min_interval`; one quick retry on temporary errors."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        min_interval: float = 5.0,
        timeout: float = 15.0,
        retries: int = 1,
        retry_wait: float = 0.5,
    ) -> None:
        self.http = httpx.AsyncClient(timeout=timeout)
        self.api_url, self._api_key = api_url, api_key
        self.min_interval = min_interval
        self.limiter = AsyncLimiter(1, min_interval) if min_interval > 0 else None
        self.retries, self.retry_wait = retries, retry_wait
        self.calls = 0  # HTTP requests made (retries included): the budget counts these

    @classmethod
    def from_settings(cls, s: Settings) -> DhlClient:
        if not s.dhl_api_key:
            raise ValueError("DHL_API_KEY is not set")
        # Spread the daily budget over the day, never closer than DHL's own minimum spacing.
        spacing = max(s.dhl_min_interval_seconds, 0.8 * 86400 / s.dhl_daily_budget)
        return cls(s.dhl_api_url, s.dhl_api_key.get_secret_value(), spacing)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def track(self, tracking_number: str) -> TrackEvent:
        """The latest event, or NotFoundYet / RateLimited / BadKey / TemporaryError."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(1 + self.retries),
            wait=wait_fixed(self.retry_wait),
            retry=retry_if_exception_type(TemporaryError),
            reraise=True,
        ):
            with attempt:
                return await self._once(tracking_number)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, tracking_number: str) -> TrackEvent:
        if self.limiter is not None:
            await self.limiter.acquire()
        self.calls += 1
        try:
            resp = await self.http.get(
                self.api_url,
                headers={"DHL-API-Key": self._api_key, "Accept": "application/json"},
                params={"trackingNumber": tracking_number, "service": "express", "language": "en"},
            )
        except httpx.HTTPError as exc:
            metrics.count_dhl_call(None)
            raise TemporaryError(type(exc).__name__) from None
        metrics.count_dhl_call(resp.status_code)
        if resp.status_code == 200:
            try:
                return parse_shipment(resp.json())
            except ValueError:
                raise TemporaryError("unreadable body") from None
        if resp.status_code == 404:
            raise NotFoundYet(tracking_number)
        if resp.status_code == 429:
            raise RateLimited(_retry_after(resp.headers.get("Retry-After")))
        if resp.status_code in (401, 403):
            raise BadKey(str(resp.status_code))
        raise TemporaryError(str(resp.status_code))


# --- the cycle -------------------------------------------------------------------------------------


@dataclass
class CycleStats:
    calls: int = 0  # HTTP requests to DHL
    polled: int = 0  # shipments claimed and asked about
    changed: int = 0
    unchanged: int = 0
    not_found: int = 0
    rate_limited: int = 0
    failures: int = 0  # temporary errors and bad key
    gave_up: int = 0
    batches: int = 0
    queries: int = 0  # SQL statements on the engine during the cycle (bench: grows with batches)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Claim:
    order_id: int
    tracking_number: str
    misses: int


@dataclass
class _Cycle:
    now: datetime
    started: float
    allowance: int | None  # calls this cycle may spend; None: computed at the first claim
    batch_size: int
    reserved: int = 0
    stop: bool = False

    def clock(self) -> datetime:
        """`now` moved on by the time the cycle has taken (calls are spaced out)."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)


def cycle_allowance(settings: Settings, now: datetime, remaining: int, spacing: float) -> int:
    """This cycle's share of what is left of today's budget, and no more than fits in the cycle."""
    if remaining <= 0:
        return 0
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    seconds_left = 86400 - (now - midnight).total_seconds()
    share = math.ceil(remaining / max(1, math.ceil(seconds_left / settings.dhl_poll_seconds)))
    fits = int(0.8 * settings.dhl_poll_seconds / spacing) + 1 if spacing > 0 else share
    return max(1, min(share, fits))


async def poll_cycle(
    session_factory: async_sessionmaker[AsyncSession],
    client: DhlClient,
    settings: Settings,
    now: datetime | None = None,
    *,
    budget: int | None = None,
    batch_size: int = 50,
) -> CycleStats:
    """One tracking cycle: give up on old shipments, then poll due ones, most stale first, in batches,
    within the budget; stops early on a 429, a bad key or DHL being down."""
    stats = CycleStats()
    cycle = _Cycle(now or utcnow(), time.monotonic(), budget, batch_size)
    counter = _QueryCounter(session_factory.kw["bind"].sync_engine)
    try:
        await _give_up_old(session_factory, settings, cycle.now, stats)
        await _ensure_budget_row(session_factory)
        while not cycle.stop:
            batch = await _claim(session_factory, settings, cycle, stats, client.min_interval)
            if not batch:
                break
            stats.batches += 1
            await _poll_batch(session_factory, client, settings, cycle, batch, stats)
    finally:
        stats.queries = counter.close()
        stats.seconds = time.monotonic() - cycle.started
    log.info(
        "dhl.cycle",
        extra={
            "calls": stats.calls,
            "changed": stats.changed,
            "batches": stats.batches,
            "queries": stats.queries,
            "rate_limited": stats.rate_limited,
            "not_found": stats.not_found,
            "gave_up": stats.gave_up,
        },
    )
    return stats


class _QueryCounter:
    """Counts the SQL statements issued on the engine while a cycle runs (the benchmark reports them)."""

    def __init__(self, sync_engine: Any) -> None:
        self.sync_engine, self.count = sync_engine, 0
        event.listen(sync_engine, "before_cursor_execute", self._tick)

    def _tick(self, *args: Any) -> None:
        self.count += 1

    def close(self) -> int:
        event.remove(self.sync_engine, "before_cursor_execute", self._tick)
        return self.count


def _due(now: datetime) -> tuple[Any, ...]:
    return (
        Order.carrier == "DHL",
        Order.state.in_((sm.SHIPPED, sm.IN_TRANSIT)),
        Order.tracking_number.is_not(None),
        or_(Order.tracking_next_check_at.is_(None), Order.tracking_next_check_at <= now),
    )


async def _ensure_budget_row(session_factory: async_sessionmaker[AsyncSession]) -> None:
    async with session_factory() as session, session.begin():
        insert = insert_with_conflicts(dialect_name(session))
        await session.execute(
            insert(ApiBudget).values(name=BUDGET_NAME, day="", calls=0).on_conflict_do_nothing(index_elements=["name"])
        )


async def _claim(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    cycle: _Cycle,
    stats: CycleStats,
    spacing: float,
) -> list[Claim]:
    """Reserve budget and claim up to a batch of due shipments in one transaction: the budget row is
    locked, the shipments' next check moves to the next cycle with a compare-and-set."""
    async with session_factory() as session, session.begin():
        budget = (
            await session.execute(select(ApiBudget).where(ApiBudget.name == BUDGET_NAME).with_for_update())
        ).scalar_one()
        today = cycle.now.date().isoformat()
        if budget.day != today:
            budget.day, budget.calls = today, 0
        if budget.paused_until is not None and budget.paused_until > cycle.clock():
            stats.notes.append(f"paused after a 429 until {budget.paused_until.isoformat()}")
            return []
        remaining = settings.dhl_daily_budget - budget.calls
        if cycle.allowance is None:
            cycle.allowance = cycle_allowance(settings, cycle.now, remaining, spacing)
        limit = min(cycle.batch_size, cycle.allowance - cycle.reserved, remaining)
        if limit <= 0:
            if remaining <= 0:
                stats.notes.append("daily budget spent")
            return []
        pick = (
            select(Order.id)
            .where(*_due(cycle.now))
            .order_by(Order.tracking_checked_at.asc().nulls_first(), Order.id)
            .limit(limit)
        )
        if dialect_name(session) == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        # A CTE, not `IN (subquery)`: PostgreSQL may rescan a subquery and, skipping the rows this very
        # statement just moved, claim more than the limit. A locking CTE is evaluated once.
        picked = pick.cte("picked")
        rows = (
            await session.execute(
                update(Order)
                .where(Order.id.in_(select(picked.c.id)), *_due(cycle.now))
                .values(
                    tracking_next_check_at=cycle.now + timedelta(seconds=settings.dhl_poll_seconds),
                    updated_at=Order.updated_at,
                )
                .returning(Order.id, Order.tracking_number, Order.tracking_misses, Order.tracking_checked_at)
                .execution_options(synchronize_session=False)
            )
        ).all()
        budget.calls += len(rows)
        cycle.reserved += len(rows)
    claims = []
    for order_id, tracking_number, misses, _ in sorted(rows, key=lambda r: (r[3] is not None, r[3] or cycle.now, r[0])):
        assert tracking_number is not None  # `_due` picks only orders with one
        claims.append(Claim(order_id, tracking_number, misses))
    return claims  # most stale first


async def _poll_batch(
    session_factory: async_sessionmaker[AsyncSession],
    client: DhlClient,
    settings: Settings,
    cycle: _Cycle,
    batch: list[Claim],
    stats: CycleStats,
) -> None:
    """Ask DHL about each claimed shipment, then write every answer of the batch in one transaction."""
    answers: list[tuple[Claim, TrackEvent]] = []
    misses: list[Claim] = []
    calls_before, asked, temporary = client.calls, 0, 0
    for claim in batch:
        asked += 1
        try:
            answers.append((claim, await client.track(claim.tracking_number)))
            temporary = 0
        except NotFoundYet:
            stats.not_found += 1
            misses.append(claim)
            temporary = 0
        except TemporaryError as exc:
            stats.failures += 1
            temporary += 1
            log.warning("dhl.temporary_error", extra={"error": str(exc)})
            if temporary >= MAX_TEMPORARY_ERRORS:
                stats.notes.append("DHL looks down: stopped the cycle")
                cycle.stop = True
                break
        except RateLimited as exc:
            stats.rate_limited += 1
            cycle.stop = True
            await _pause(session_factory, cycle.clock() + timedelta(seconds=exc.retry_after))
            asked -= 1  # this shipment was not answered: give it back with the rest
            break
        except BadKey:
            stats.failures += 1
            cycle.stop = True
            await _alert_bad_key(session_factory, settings, cycle.now)
            asked -= 1
            break
    stats.polled += asked
    calls = client.calls - calls_before
    stats.calls += calls
    await _write_batch(session_factory, settings, cycle, answers, misses, batch[asked:], calls - len(batch), stats)


async def _write_batch(
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    cycle: _Cycle,
    answers: list[tuple[Claim, TrackEvent]],
    misses: list[Claim],
    unasked: list[Claim],
    budget_delta: int,
    stats: CycleStats,
) -> None:
    now = cycle.clock()
    async with session_factory() as session, session.begin():
        unchanged = await _apply_answers(session, settings, now, answers, stats)
        if unchanged:
            await _bulk(session, unchanged, tracking_checked_at=now, tracking_misses=0)
        for count in sorted({c.misses + 1 for c in misses}):
            delay = min(timedelta(seconds=settings.dhl_poll_seconds) * 2 ** min(count, 10), MAX_MISS_BACKOFF)
            await _bulk(
                session,
                [c.order_id for c in misses if c.misses + 1 == count],
                tracking_misses=count,
                tracking_checked_at=now,
                tracking_next_check_at=now + delay,
            )
        if unasked:  # stopped early: due again as soon as the pause allows
            await _bulk(session, [c.order_id for c in unasked], tracking_next_check_at=cycle.now)
        if budget_delta:  # retries spent more than reserved, or an early stop spent less
            await session.execute(
                update(ApiBudget).where(ApiBudget.name == BUDGET_NAME).values(calls=ApiBudget.calls + budget_delta)
            )


async def _bulk(session: AsyncSession, ids: Iterable[int], **values: Any) -> None:
    """Tracking bookkeeping on many orders in one statement; `updated_at` is for real changes only."""
    await session.execute(
        update(Order)
        .where(Order.id.in_(list(ids)))
        .values(updated_at=Order.updated_at, **values)
        .execution_options(synchronize_session=False)
    )


async def _apply_answers(
    session: AsyncSession, settings: Settings, now: datetime, answers: list[tuple[Claim, TrackEvent]], stats: CycleStats
) -> list[int]:
    """Apply the answers that changed something; returns the ids of those that did not."""
    if not answers:
        return []
    ids = [claim.order_id for claim, _ in answers]
    orders = {o.id: o for o in (await session.execute(select(Order).where(Order.id.in_(ids)))).unique().scalars()}
    unchanged: list[int] = []
    for claim, ev in answers:
        order = orders.get(claim.order_id)
        if order is None or order.state not in (sm.SHIPPED, sm.IN_TRANSIT) or not _is_news(order, ev):
            unchanged.append(claim.order_id)
            continue
        try:
            await _apply(session, settings, order, ev, now)
            stats.changed += 1
        except DomainError:  # an admin moved the order meanwhile (e.g. /delivered): nothing to do
            unchanged.append(claim.order_id)
    stats.unchanged += len(unchanged)
    return unchanged


def _is_news(order: Order, ev: TrackEvent) -> bool:
    if ev.status_code not in KNOWN_CODES:
        return False
    if (ev.status_code == "transit" and order.state == sm.SHIPPED) or ev.status_code == "delivered":
        return True
    return (order.tracking_status, order.tracking_description, order.tracking_place, order.tracking_time) != (
        ev.status_code,
        ev.description or order.tracking_description,
        ev.place or order.tracking_place,
        ev.timestamp or order.tracking_time,
    )


async def _apply(session: AsyncSession, settings: Settings, order: Order, ev: TrackEvent, now: datetime) -> None:
    """Store the new latest event (before any transition: the buyer's message quotes it) and act on it."""
    order.tracking_status = ev.status_code
    order.tracking_description = ev.description or order.tracking_description
    order.tracking_place = ev.place or order.tracking_place
    order.tracking_time = ev.timestamp or order.tracking_time
    order.tracking_checked_at, order.tracking_misses = now, 0
    if ev.status_code == "delivered":
        order.tracking_next_check_at = NEVER
        await sm.transition(session, order, sm.DELIVERED, "system:dhl", ev.description or None)
    elif ev.status_code == "transit" and order.state == sm.SHIPPED:
        await sm.transition(session, order, sm.IN_TRANSIT, "system:dhl", ev.description or None)
    elif ev.status_code == "transit":
        await _tell_buyer(session, order, ev)
    elif ev.status_code == "failure":
        text = t(
            "dhl.alert.failure",
            None,
            order=order.public_id,
            tracking=order.tracking_number,
            event=cut(ev.description or "-", 300),
            place=cut(ev.place or "-", 200),
        )
        await _alert_once(session, settings, text, f"dhl-failure:{order.id}:{ev.key}")
    log.info("dhl.update", extra={"order": order.public_id, "status": ev.status_code, "state": order.state})


async def _tell_buyer(session: AsyncSession, order: Order, ev: TrackEvent) -> None:
    """A new transit event of an order already in transit: one message per event, ever."""
    key = f"dhl:{order.id}:{ev.key}"[:128]
    customer = order.customer
    if customer.unreachable or await _exists(session, key):
        return
    enqueue(
        session,
        customer.chat_id,
        sm.status_message(order, customer.language),
        kind="order_status",
        dedup_key=key,
        reply_markup=inline_keyboard(
            [[(t("orders.button.view", customer.language), buttons.view_order(order.public_id))]]
        ),
    )


async def _exists(session: AsyncSession, dedup_key: str) -> bool:
    """Checked before enqueueing: a repeat must not break the batch's transaction at commit."""
    return (await session.execute(select(Outbox.id).where(Outbox.dedup_key == dedup_key))).first() is not None


async def _alert_once(session: AsyncSession, settings: Settings, text: str, dedup_key: str) -> None:
    key = dedup_key[:128]
    if not await _exists(session, key):
        alert_admins(session, settings.admin_chat_id, text, kind="dhl_alert", dedup_key=key)
    log.warning("dhl.alert", extra={"key": key})


async def _pause(session_factory: async_sessionmaker[AsyncSession], until: datetime) -> None:
    """Honour Retry-After for every worker."""
    async with session_factory() as session, session.begin():
        await session.execute(update(ApiBudget).where(ApiBudget.name == BUDGET_NAME).values(paused_until=until))
    log.warning("dhl.rate_limited", extra={"until": until.isoformat()})


async def _alert_bad_key(session_factory: async_sessionmaker[AsyncSession], settings: Settings, now: datetime) -> None:
    """One alert a day while the key is refused (every cycle would flood the group)."""
    async with session_factory() as session, session.begin():
        await _alert_once(session, settings, t("dhl.alert.bad_key"), f"dhl-bad-key:{now:%Y%m%d}")


async def _give_up_old(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, now: datetime, stats: CycleStats
) -> None:
    """Stop polling shipments older than DHL_GIVE_UP_DAYS, with one admin alert each (compare-and-set:
    a concurrent worker cannot alert twice)."""
    cutoff = now - timedelta(days=settings.dhl_give_up_days)
    async with session_factory() as session, session.begin():
        rows = (
            await session.execute(
                update(Order)
                .where(
                    Order.carrier == "DHL",
                    Order.state.in_((sm.SHIPPED, sm.IN_TRANSIT)),
                    Order.shipped_at < cutoff,
                    or_(Order.tracking_next_check_at.is_(None), Order.tracking_next_check_at < NEVER),
                )
                .values(tracking_next_check_at=NEVER)
                .returning(Order.id, Order.public_id, Order.tracking_number)
                .execution_options(synchronize_session=False)
            )
        ).all()
        for order_id, public_id, tracking in rows:
            await _alert_once(
                session,
                settings,
                t("dhl.alert.gave_up", None, order=public_id, tracking=tracking, days=settings.dhl_give_up_days),
                f"dhl-gave-up:{order_id}",
            )
            stats.gave_up += 1
