"""A per-process count of catalogue writes, so cached catalogue screens (services/cache.py) know
when they are stale.

Every service that writes `products` or `categories` (the stock moves in services/inventory.py,
restocking, the catalogue import) calls `catalogue_written(session)` in the transaction that writes.
The count moves then and again when that transaction commits, so a screen rendered in between from
the old committed rows is not reused. Marking at the few writers costs nothing per statement (an
engine-wide statement hook would cost on every query). Writes made by other
processes are not seen here: cached screens also expire on a timer (`CATALOG_CACHE_SECONDS`)."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_FLAG = "catalogue_written"


class _Counter:
    value = 0


_writes = _Counter()


def catalogue_version() -> int:
    """Changes whenever this process writes a catalogue row; equal values mean nothing was written."""
    return _writes.value


def catalogue_written(session: AsyncSession | Session) -> None:
    """Note that `session`'s transaction writes catalogue rows (call it beside the write)."""
    _writes.value += 1
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if not sync.info.get(_FLAG):
        sync.info[_FLAG] = True
        event.listen(sync, "after_commit", _committed, once=True)


def _committed(session: Session) -> None:
    session.info.pop(_FLAG, None)
    _writes.value += 1
