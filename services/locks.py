"""Cluster-wide "only one of us does this now", from PostgreSQL advisory locks.

SQLite is the single-process embedded mode, so there the job simply runs.
"""
from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


async def run_exclusive(engine: AsyncEngine, name: str, job: Callable[[], Awaitable[T]]) -> T | None:
    """Run `job` if no other process holds lock `name`; return None (skipped) otherwise."""
    if engine.dialect.name != "postgresql":
        return await job()
    async with engine.connect() as conn:
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(name)})).scalar()
        await conn.commit()
        if not got:
            return None
        try:
            return await job()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
            await conn.commit()
