"""DHL Express tracking: a polite client for the Shipment Tracking – Unified API and the poll cycle.

Budget: a cycle may spend `daily_budget / cycles_per_day` calls. The cycle job runs under a cluster
advisory lock (one worker at a time), so however many workers there are, the day's calls stay
within the daily budget. Calls are spaced by `min_interval` (aiolimiter) and spread over the cycle.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.models import Order, utcnow
from services import orders as sm
from services.i18n import t
from services.notifications import alert_admins, enqueue, inline_keyboard

log = logging.getLogger(__name__)
MAX_MISS_BACKOFF = timedelta(hours=12)


class NotFoundYet(Exception):
    """404: DHL has no record yet (common in the first hours after the label is made)."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class BadKey(Exception):
    """401/403: the API key is wrong or revoked."""


class TemporaryError(Exception):
    """Network trouble, timeouts, 5xx: try again next cycle."""


@dataclass(frozen=True, slots=True)
class TrackEvent:
    status_code: str  # pre-transit / transit / delivered / failure / unknown
    description: str
    place: str | None
    timestamp: datetime | None

    @property
    def key(self) -> str:
        return f"{self.status_code}|{self.timestamp.isoformat() if self.timestamp else ''}|{self.description}"


def parse_shipment(body: Any) -> TrackEvent:
    """The latest status of the first shipment; defensive about missing pieces."""
    shipments = body.get("shipments") if isinstance(body, dict) else None
    if not shipments or not isinstance(shipments, list) or not isinstance(shipments[0], dict):
        return TrackEvent("unknown", "", None, None)
    status = shipments[0].get("status") or {}
    if not isinstance(status, dict):
        return TrackEvent("unknown", "", None, None)
    address = ((status.get("location") or {}).get("address") or {}) if isinstance(status.get("location"), dict) else {}
    place = address.get("addressLocality") if isinstance(address, dict) else None
    stamp = None
    if isinstance(status.get("timestamp"), str):
        try:
            stamp = datetime.fromisoformat(status["timestamp"].replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                from datetime import timezone
                stamp = stamp.replace(tzinfo=timezone.utc)
        except ValueError:
            stamp = None
    description = str(status.get("description") or status.get("status") or "")[:500]
    return TrackEvent(str(status.get("statusCode") or "unknown"), description, place, stamp)


class DhlClient:
    def __init__(self, api_url: str, api_key: str, min_interval: float = 5.0, timeout: float = 15.0) -> None:
        self.http = httpx.AsyncClient(timeout=timeout)
        self.api_url, self._api_key = api_url, api_key
        self.limiter = AsyncLimiter(1, min_interval) if min_interval > 0 else None
        self.calls = 0
        self.paused_until = 0.0

    @classmethod
    def from_settings(cls, s: Settings) -> "DhlClient":
        assert s.dhl_api_key is not None
        # Spread a cycle's budget over most of the cycle instead of bursting it at the start.
        spread = 0.8 * s.dhl_poll_seconds / cycle_budget(s)
        return cls(s.dhl_api_url, s.dhl_api_key.get_secret_value(), max(s.dhl_min_interval_seconds, spread))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def track(self, tracking_number: str) -> TrackEvent:
        if self.limiter is not None:
            await self.limiter.acquire()
        self.calls += 1
        try:
            resp = await self.http.get(self.api_url, headers={"DHL-API-Key": self._api_key, "Accept": "application/json"},
                                       params={"trackingNumber": tracking_number, "service": "express", "language": "en"})
        except httpx.HTTPError as exc:
            raise TemporaryError(type(exc).__name__) from None
        if resp.status_code == 200:
            try:
                return parse_shipment(resp.json())
            except ValueError:
                raise TemporaryError("unreadable body") from None
        if resp.status_code == 404:
            raise NotFoundYet(tracking_number)
        if resp.status_code == 429:
            try:
                retry = float(resp.headers.get("Retry-After", "60"))
            except ValueError:
                retry = 60.0
            raise RateLimited(retry)
        if resp.status_code in (401, 403):
            raise BadKey(str(resp.status_code))
        raise TemporaryError(str(resp.status_code))


@dataclass
class CycleStats:
    calls: int = 0
    changed: int = 0
    unchanged: int = 0
    not_found: int = 0
    rate_limited: int = 0
    failures: int = 0
    gave_up: int = 0
    batches: int = 0
    queries: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def cycle_budget(settings: Settings) -> int:
    cycles_per_day = max(1, 86400 // max(settings.dhl_poll_seconds, 1))
    return max(1, settings.dhl_daily_budget // cycles_per_day)


async def poll_cycle(session_factory: async_sessionmaker[AsyncSession], client: DhlClient, settings: Settings,
                     now: datetime | None = None, *, budget: int | None = None, batch_size: int = 100) -> CycleStats:
    """One tracking cycle: due DHL shipments, most stale first, in batches, within the budget."""
    started, stats = time.monotonic(), CycleStats()
    now = now or utcnow()
    budget = cycle_budget(settings) if budget is None else budget
    if time.monotonic() < client.paused_until:
        stats.notes.append("paused after a 429")
        return stats
    engine = session_factory.kw["bind"]
    counter = _QueryCounter(engine.sync_engine)
    try:
        await _give_up_old(session_factory, settings, now, stats)
        while stats.calls < budget:
            batch = await _claim(session_factory, now, settings, min(batch_size, budget - stats.calls))
            if not batch:
                break
            stats.batches += 1
            if not await _poll_batch(session_factory, client, settings, now, batch, stats):
                break
    finally:
        stats.queries = counter.close()
        stats.seconds = time.monotonic() - started
    log.info("dhl.cycle", extra={"calls": stats.calls, "changed": stats.changed, "batches": stats.batches,
                                 "queries": stats.queries, "rate_limited": stats.rate_limited})
    return stats


class _QueryCounter:
    """Counts the SQL statements a cycle issues (the benchmark reports them)."""

    def __init__(self, sync_engine: Any) -> None:
        self.sync_engine, self.count = sync_engine, 0
        event.listen(sync_engine, "before_cursor_execute", self._tick)

    def _tick(self, *args: Any) -> None:
        self.count += 1

    def close(self) -> int:
        event.remove(self.sync_engine, "before_cursor_execute", self._tick)
        return self.count


async def _claim(session_factory: async_sessionmaker[AsyncSession], now: datetime, settings: Settings,
                 limit: int) -> list[tuple[int, str, int]]:
    """Claim due shipments by moving their next check to the next cycle (one worker per shipment)."""
    async with session_factory() as session, session.begin():
        stmt = (select(Order.id, Order.tracking_number, Order.tracking_misses)
                .where(Order.carrier == "DHL", Order.state.in_((sm.SHIPPED, sm.IN_TRANSIT)),
                       Order.tracking_next_check_at <= now, Order.tracking_number.is_not(None))
                .order_by(Order.tracking_checked_at.asc().nulls_first(), Order.id).limit(limit))
        if session.bind.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True, of=Order)
        rows = [(r[0], r[1], r[2]) for r in (await session.execute(stmt)).all()]
        if rows:
            await session.execute(update(Order).where(Order.id.in_([r[0] for r in rows]))
                                  .values(tracking_next_check_at=now + timedelta(seconds=settings.dhl_poll_seconds))
                                  .execution_options(synchronize_session=False))
        return rows


async def _poll_batch(session_factory: async_sessionmaker[AsyncSession], client: DhlClient, settings: Settings,
                      now: datetime, batch: list[tuple[int, str, int]], stats: CycleStats) -> bool:
    """Poll one claimed batch. Returns False when the cycle must stop (429, bad key)."""
    unchanged: list[int] = []
    misses: dict[int, list[int]] = {}
    changes: list[tuple[int, TrackEvent]] = []
    go_on = True
    for index, (order_id, number, miss_count) in enumerate(batch):
        stats.calls += 1
        try:
            changes.append((order_id, await client.track(number)))
        except NotFoundYet:
            stats.not_found += 1
            misses.setdefault(miss_count + 1, []).append(order_id)
        except RateLimited as exc:
            stats.rate_limited += 1
            client.paused_until = time.monotonic() + exc.retry_after
            await _release(session_factory, [b[0] for b in batch[index:]], now)
            go_on = False
            break
        except BadKey:
            stats.failures += 1
            async with session_factory() as session, session.begin():
                alert_admins(session, settings.admin_chat_id, t("dhl.alert.bad_key"), kind="dhl_alert",
                             dedup_key=f"dhl-bad-key:{now:%Y%m%d}")
            await _release(session_factory, [b[0] for b in batch[index:]], now)
            go_on = False
            break
        except TemporaryError:
            stats.failures += 1
    async with session_factory() as session, session.begin():
        for order_id, ev in changes:
            if not await _apply(session, order_id, ev, settings, now):
                unchanged.append(order_id)
            else:
                stats.changed += 1
        if unchanged:
            stats.unchanged += len(unchanged)
            await session.execute(update(Order).where(Order.id.in_(unchanged))
                                  .values(tracking_checked_at=now, tracking_misses=0)
                                  .execution_options(synchronize_session=False))
        for count, ids in misses.items():
            delay = min(timedelta(seconds=settings.dhl_poll_seconds) * 2 ** min(count, 10), MAX_MISS_BACKOFF)
            await session.execute(update(Order).where(Order.id.in_(ids))
                                  .values(tracking_misses=count, tracking_checked_at=now, tracking_next_check_at=now + delay)
                                  .execution_options(synchronize_session=False))
    return go_on


async def _release(session_factory: async_sessionmaker[AsyncSession], ids: list[int], now: datetime) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(update(Order).where(Order.id.in_(ids)).values(tracking_next_check_at=now)
                              .execution_options(synchronize_session=False))


async def _apply(session: AsyncSession, order_id: int, ev: TrackEvent, settings: Settings, now: datetime) -> bool:
    """Apply a tracking answer; True when something the buyer (or admins) should know changed."""
    if ev.status_code not in ("pre-transit", "transit", "delivered", "failure"):
        return False
    order = await session.get(Order, order_id)
    if order is None or order.state not in (sm.SHIPPED, sm.IN_TRANSIT):
        return False
    previous = (order.tracking_status, order.tracking_description, order.tracking_time)
    order.tracking_status, order.tracking_description = ev.status_code, ev.description or order.tracking_description
    order.tracking_place, order.tracking_time = ev.place or order.tracking_place, ev.timestamp or order.tracking_time
    order.tracking_checked_at, order.tracking_misses = now, 0
    changed = previous != (order.tracking_status, order.tracking_description, order.tracking_time)
    if ev.status_code == "delivered":
        await sm.transition(session, order, sm.DELIVERED, "system:dhl", ev.description)
        order.tracking_next_check_at = None
        return True
    if ev.status_code == "transit" and order.state == sm.SHIPPED:
        await sm.transition(session, order, sm.IN_TRANSIT, "system:dhl", ev.description)
        return True
    if ev.status_code == "transit" and changed:
        customer = order.customer
        if not customer.unreachable:
            enqueue(session, customer.chat_id, sm.status_message(order, customer.language), kind="order_status",
                    dedup_key=f"dhl:{order.id}:{ev.key}"[:128],
                    reply_markup=inline_keyboard([[(t("orders.button.view", customer.language), f"ord:v:{order.public_id}")]]))
        return True
    if ev.status_code == "failure" and changed:
        alert_admins(session, settings.admin_chat_id,
                     t("dhl.alert.failure", None, order=order.public_id, tracking=order.tracking_number,
                       event=ev.description, place=ev.place or "-"),
                     kind="dhl_alert", dedup_key=f"dhl-failure:{order.id}:{ev.key}"[:128])
        return True
    return changed


async def _give_up_old(session_factory: async_sessionmaker[AsyncSession], settings: Settings, now: datetime,
                       stats: CycleStats) -> None:
    cutoff = now - timedelta(days=settings.dhl_give_up_days)
    async with session_factory() as session, session.begin():
        stale = (await session.execute(
            select(Order).where(Order.carrier == "DHL", Order.state.in_((sm.SHIPPED, sm.IN_TRANSIT)),
                                Order.tracking_next_check_at.is_not(None), Order.shipped_at < cutoff)
        )).unique().scalars().all()
        for order in stale:
            order.tracking_next_check_at = None
            alert_admins(session, settings.admin_chat_id,
                         t("dhl.alert.gave_up", None, order=order.public_id, tracking=order.tracking_number,
                           days=settings.dhl_give_up_days), kind="dhl_alert", dedup_key=f"dhl-gave-up:{order.id}")
            stats.gave_up += 1


