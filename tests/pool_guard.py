"""Catches an asyncio task that holds two pooled connections at once. With a bounded pool, enough such
tasks at the same moment deadlock (each waits for a connection another one holds), so the shop's
rule is one connection per task: a handler hands its connection back before a flow opens its own."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

APP_DIRS = ("/handlers/", "/services/", "/webhooks/", "/bot/", "/db/")


class OneConnectionPerTask:
    def __init__(self, engine: AsyncEngine) -> None:
        self.held: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
        self.owner: dict[int, asyncio.Task[Any]] = {}
        self.violations: list[str] = []
        pool = engine.sync_engine.pool
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)

    def _checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        if task is None:
            return
        held = self.held.get(task, 0)
        if held:
            frames = _awaiting(task)
            if _ours(frames):
                self.violations.append("\n".join(f"  {file}:{line} in {name}" for file, line, name in frames))
        self.held[task] = held + 1
        self.owner[id(record)] = task

    def _checkin(self, dbapi_conn: Any, record: Any) -> None:
        task = self.owner.pop(id(record), None)
        if task is not None and self.held.get(task):
            self.held[task] -= 1

    def take(self) -> list[str]:
        found, self.violations = self.violations, []
        return found


def _awaiting(task: asyncio.Task[Any]) -> list[tuple[str, int, str]]:
    """The code path that asked for the connection, outermost first. This hook runs in the greenlet
    SQLAlchemy's asyncio layer spawns, so the caller's frames hang off the parent greenlet, which is
    suspended inside the awaiting coroutine."""
    import greenlet

    parent = greenlet.getcurrent().parent
    frame = parent.gr_frame if parent is not None else None
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return frames[::-1]


def _ours(frames: list[tuple[str, int, str]]) -> bool:
    """The connection was asked for by the shop's code (not by a test nesting sessions on purpose):
    the innermost frame outside libraries is in one of the shop's packages."""
    for file, _, _ in reversed(frames):
        if "/site-packages/" in file or "/lib/python3" in file:
            continue
        return "/tests/" not in file and any(d in file for d in APP_DIRS)
    return False
