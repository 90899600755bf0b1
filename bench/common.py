"""What every benchmark shares: a fresh PostgreSQL database per run (created like tests/conftest.py
does, migrated with the production migrations, dropped afterwards), quiet logging, percentiles, a
query counter and the result line each benchmark prints."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from db.migrate import upgrade
from db.session import make_engine

PG_ADMIN_DSN = os.environ.get(
    "BENCH_PG_DSN", os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
)


def quiet_logs(level: int = logging.WARNING) -> None:
    """The shop logs every transition at INFO; at benchmark volume that is most of the CPU time."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(level)
    for name in ("aiogram", "aiohttp.access", "httpx", "alembic"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


@asynccontextmanager
async def fresh_database(prefix: str = "sf_bench") -> AsyncIterator[str]:
    """URL (postgresql+asyncpg) of a new empty database on the test server, dropped on exit."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def migrated_engine(prefix: str = "sf_bench", **engine_kw: Any) -> AsyncIterator[AsyncEngine]:
    """A fresh database migrated to head, and an engine on it (disposed before the drop)."""
    async with fresh_database(prefix) as url:
        engine = make_engine(url, **engine_kw)
        try:
            await upgrade(engine)
            yield engine
        finally:
            await engine.dispose()


class QueryCounter:
    """Counts SQL statements sent on an engine (SQLAlchemy `before_cursor_execute`: every statement
    the shop sends goes through SQLAlchemy)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sync_engine = engine.sync_engine
        self.count = 0
        self.statements: list[str] = []
        self.keep = False
        event.listen(self.sync_engine, "before_cursor_execute", self._tick)

    def _tick(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += 1
        if self.keep:
            self.statements.append(statement)

    def reset(self) -> int:
        n, self.count = self.count, 0
        return n

    def close(self) -> None:
        event.remove(self.sync_engine, "before_cursor_execute", self._tick)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 500 samples is the 495th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


@dataclass
class Result:
    """One benchmark's figures and verdict; `lines()` is what gets printed and kept in RESULTS.md."""

    name: str
    target: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"== {self.name}: {'PASS' if self.passed else 'FAIL'} (target: {self.target})"]
        width = max((len(k) for k in self.figures), default=0)
        for key, value in self.figures.items():
            if isinstance(value, float):
                value = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
            out.append(f"   {key.ljust(width)}  {value}")
        out.extend(f"   note: {n}" for n in self.notes)
        return out

    def print(self) -> Result:
        print("\n".join(self.lines()), flush=True)
        return self


def main(run: Callable[[], Any]) -> None:
    """`python -m bench.<name>`: run one benchmark, exit 1 when it fails."""
    from bot.loop import run as run_loop

    quiet_logs()
    result: Result = run_loop(run())
    result.print()
    raise SystemExit(0 if result.passed else 1)
