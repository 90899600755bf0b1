"""Short-lived memo of read-mostly catalogue results (the category list, category pages, the
product shown on a card), shared by all customers of one process.

A screen is stale the moment it is sent anyway; what must be exact (stock when adding to the cart,
reserving at checkout) is always read from the database. An entry is reused only while it is younger
than `ttl` seconds and no catalogue row has been written by this process since it was made
(`db.changes`), so an admin's restock or a sale shows at once here and within `ttl` elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from db.changes import catalogue_version

T = TypeVar("T")


class CatalogueMemo(Generic[T]):
    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[Hashable, tuple[float, int, T]] = {}
        self._making: dict[Hashable, asyncio.Future[T]] = {}
        self.hits = self.misses = 0

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """The memoised value for `key`, or `make()`'s (kept unless the catalogue changed meanwhile).
        Customers asking for the same screen while it is being made wait for that one (an entry
        expiring under 20 customers at once costs one query, not 20)."""
        version = catalogue_version()
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now and entry[1] == version:
            self.hits += 1
            return entry[2]
        making = self._making.get(key)
        if making is not None and self.ttl > 0:
            try:
                value = await asyncio.shield(making)
                self.hits += 1
                return value
            except asyncio.CancelledError:
                if not making.cancelled():
                    raise  # this update itself is being cancelled
        self.misses += 1
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._making[key] = future
        try:
            value = await make()
        except asyncio.CancelledError:
            future.cancel()  # waiters make it themselves
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: nobody may be waiting
            raise
        finally:
            if self._making.get(key) is future:
                del self._making[key]
        future.set_result(value)
        if self.ttl > 0 and catalogue_version() == version:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, version, value)
        return value
