"""Cluster-wide "only one of us does this now", from PostgreSQL advisory locks.

SQLite is the single-process embedded mode, so there the job simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


async def _try_lock(conn: AsyncConnection, key: int) -> bool:
    """Take session-level advisory lock `key` on `conn` if free (committed, so no transaction stays open)."""
    got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
    await conn.commit()
    return bool(got)


async def run_exclusive(engine: AsyncEngine, name: str, job: Callable[[], Awaitable[T]]) -> T | None:
    """Run `job` if no other process holds lock `name`; return None (skipped) otherwise."""
    if engine.dialect.name != "postgresql":
        return await job()
    async with engine.connect() as conn:
        if not await _try_lock(conn, lock_key(name)):
            return None
        try:
            return await job()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
            await conn.commit()


async def run_as_leader(
    engine: AsyncEngine,
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    retry_seconds: float = 5.0,
    check_seconds: float = 2.0,
) -> None:
    """Run `work` (a loop that runs until cancelled) in one process of the cluster at a time.

    For limits that are the cluster's, not the process's: Telegram's ~30 messages/s is per bot, so
    two workers each sending at 30/s would earn 429s. Every process calls this; the one holding the
    session-level advisory lock `name` works, the others retry every `retry_seconds`. The lock lives
    as long as its connection, so a leader that dies frees it at once. A leader checks its lock
    connection every `check_seconds` (a check that takes longer counts as lost) and stops working
    when it is gone, so it stops within 2 × `check_seconds` of losing the lock; a new leader waits
    3 × `check_seconds` after taking the lock before it starts, so two never work at once. SQLite
    (one process) just runs `work`."""
    if engine.dialect.name != "postgresql":
        await work()
        return
    key = lock_key(name)
    while True:
        try:
            async with engine.connect() as conn:
                if await _try_lock(conn, key):
                    log.info("lock.leader", extra={"lock": name})
                    try:
                        if await _lead(conn, work, check_seconds):
                            return
                    finally:  # closing the connection frees the lock; it never goes back to the pool holding it
                        with contextlib.suppress(Exception):
                            await conn.invalidate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database went away: try again, never die
            log.warning("lock.leader_stopped", extra={"lock": name, "error": type(exc).__name__})
        await asyncio.sleep(retry_seconds)


async def _lead(conn: AsyncConnection, work: Callable[[], Awaitable[object]], check_seconds: float) -> bool:
    """Run `work` while `conn` (holding the lock) answers; True when `work` ended by itself."""
    await asyncio.sleep(3 * check_seconds)  # a previous leader that lost the lock has stopped by now
    await _answers(conn, check_seconds)
    task = asyncio.ensure_future(work())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_seconds)
            if done:
                task.result()
                return True
            await _answers(conn, check_seconds)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _answers(conn: AsyncConnection, within: float) -> None:
    """Raise unless the lock's connection answers within `within` seconds."""
    async with asyncio.timeout(within):
        await conn.execute(text("SELECT 1"))
        await conn.commit()
