"""The event loop the shop runs on: uvloop where it is installed (Linux and macOS), asyncio's own
elsewhere. uvloop does the socket and scheduling work in C, and the shop is mostly that (webhook
HTTP, asyncpg, Bot API calls): on the flash-sale bench it raised checkouts/s by about a quarter
(bench/RESULTS.md). The test suite runs on the same loop (tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows, or a minimal install: asyncio's loop works, only slower
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the shop's loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
