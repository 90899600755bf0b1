"""One sender in the cluster at a time (services/locks.py `run_as_leader`): Telegram's limits are the
bot's, so a second worker must stand by, take over when the first stops, and a leader that loses its
lock connection must stop before another starts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text

from db.session import make_engine
from services.locks import lock_key, run_as_leader

pytestmark = pytest.mark.pg_only


class Workers:
    """Work loops that note while they run; `overlaps` counts any moment two ran at once."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.overlaps = 0

    def work(self, name: str) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            self.active.add(name)
            self.overlaps += len(self.active) > 1
            try:
                await asyncio.Event().wait()
            finally:
                self.active.discard(name)

        return loop


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_leader_and_a_takeover_when_it_stops(engine) -> None:  # type: ignore[no-untyped-def]
    other = make_engine(engine.url.render_as_string(hide_password=False))  # a second process's pool
    workers = Workers()
    a = asyncio.create_task(
        run_as_leader(engine, "test-lock", workers.work("a"), retry_seconds=0.05, check_seconds=0.05)
    )
    await until(lambda: workers.active == {"a"})
    b = asyncio.create_task(
        run_as_leader(other, "test-lock", workers.work("b"), retry_seconds=0.05, check_seconds=0.05)
    )
    try:
        await asyncio.sleep(0.5)  # b retried about ten times meanwhile
        assert workers.active == {"a"}
        await _stop(a)
        await until(lambda: workers.active == {"b"})
        assert workers.overlaps == 0
    finally:
        await _stop(a, b)
        await other.dispose()


async def test_a_leader_whose_lock_connection_dies_stops_working(engine) -> None:  # type: ignore[no-untyped-def]
    other = make_engine(engine.url.render_as_string(hide_password=False))
    workers = Workers()
    a = asyncio.create_task(
        run_as_leader(engine, "test-lock-2", workers.work("a"), retry_seconds=0.2, check_seconds=0.05)
    )
    await until(lambda: workers.active == {"a"})
    b = asyncio.create_task(
        run_as_leader(other, "test-lock-2", workers.work("b"), retry_seconds=0.2, check_seconds=0.05)
    )
    try:
        async with other.connect() as conn:  # the database drops the leader's connection (restart, failover)
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND objid = :k AND granted"
                ),
                {"k": lock_key("test-lock-2")},
            )
            await conn.commit()
        await until(lambda: "a" not in workers.active)
        await until(lambda: len(workers.active) == 1)  # someone leads again, alone
        assert workers.overlaps == 0
    finally:
        await _stop(a, b)
        await other.dispose()
