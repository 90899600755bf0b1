"""Scheduled jobs (APScheduler) and long-running loops of the worker.

Each job runs under an advisory lock so that, however many workers run, a cycle's work is done once;
inside a job, rows are also claimed with compare-and-set updates so a lock lost mid-way cannot
double anything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.runtime import Shop
from services import broadcasts, dhl_jobs
from services.locks import run_exclusive
from services.orders import expire_due_orders
from services.payments import mpesa_reconcile, stripe_reconcile

log = logging.getLogger(__name__)

JobFactory = Callable[[Shop], tuple[str, float, Callable[[], Awaitable[object]]]]


def _expiry(shop: Shop) -> tuple[str, float, Callable[[], Awaitable[object]]]:
    async def run() -> object:
        gateway = shop.providers.get("stripe")
        if gateway is not None:  # card links first: an order whose link may still be paid is not expired
            from services.payments.stripe_flow import close_lapsed_links

            await close_lapsed_links(shop.session_factory, gateway, shop.settings)
        return await expire_due_orders(shop.session_factory)

    return "reservation-expiry", 30.0, run


def _broadcast_progress(shop: Shop) -> tuple[str, float, Callable[[], Awaitable[object]]]:
    """A broadcast's progress message in the admin group is edited at most this often."""

    async def run() -> object:
        return await broadcasts.report_progress(shop.session_factory)

    return "broadcast-progress", 5.0, run


def job_factories(*, carrier: bool = True) -> list[JobFactory]:
    """Every scheduled job of the shop: the expiry and broadcast progress here, the payment
    reconcilers' and (unless `carrier` is false: the console, which has no network) the carrier's."""
    jobs = [_expiry, _broadcast_progress, *mpesa_reconcile.job_factories(), *stripe_reconcile.job_factories()]
    return jobs + (dhl_jobs.job_factories() if carrier else [])


def build_scheduler(shop: Shop, factories: list[JobFactory] | None = None) -> AsyncIOScheduler:
    """`factories`: every job of the shop unless given (the console leaves out the carrier's poll)."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    for factory in job_factories() if factories is None else factories:
        name, seconds, job = factory(shop)
        seconds = shop.settings.job_interval_override_seconds or seconds

        async def _run(name: str = name, job: Callable[[], Awaitable[object]] = job) -> None:
            try:
                result = await run_exclusive(shop.engine, f"job:{name}", job)
                if result:
                    log.info("job.done", extra={"job": name, "result": result})
            except Exception:
                log.exception("job.failed", extra={"job": name})

        scheduler.add_job(
            _run,
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(int(seconds), 1),
            next_run_time=datetime.now(UTC),
        )
    return scheduler
