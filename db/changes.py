"""A per-process count of writes to the catalogue tables, so cached catalogue screens know when they
are stale.

Every INSERT, UPDATE or DELETE sent on an engine made by `db.session.make_engine` that touches
`products` or `categories` bumps the count, once when the statement runs and again when its
transaction commits (a screen rendered in between, from the old committed rows, is then not reused).
Writes made by other processes are not seen here: caches also expire on a timer
(`CATALOG_CACHE_SECONDS`)."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

WATCHED = ("products", "categories")
_TARGET = re.compile(r'\s*(?:insert\s+into|update|delete\s+from)\s+"?(\w+)"?', re.IGNORECASE)
_TRUNCATE = re.compile(r'\s*truncate\s+(?:table\s+)?([\w",\s]+?)(?:\s+(?:restart|continue|cascade|restrict)\b|;|$)',
                       re.IGNORECASE)
_FLAG = "catalogue_written"


class _Counter:
    value = 0


_writes = _Counter()


def catalogue_version() -> int:
    """Changes whenever this process writes a catalogue row; equal values mean nothing was written."""
    return _writes.value


def touches_catalogue(statement: str) -> bool:
    """True for a statement that writes a catalogue table (its target, not a table it only reads)."""
    head = statement[:400]
    target = _TARGET.match(head)
    if target:
        return target.group(1).lower() in WATCHED
    truncated = _TRUNCATE.match(head)
    return bool(truncated) and any(name.strip(' "').lower() in WATCHED for name in truncated.group(1).split(","))


def watch(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "after_cursor_execute", _after_execute)
    event.listen(engine.sync_engine, "commit", _on_commit)
    event.listen(engine.sync_engine, "rollback", _on_rollback)


def _after_execute(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
    if touches_catalogue(statement):
        _writes.value += 1
        conn.info[_FLAG] = True


def _on_commit(conn: Connection) -> None:
    if conn.info.pop(_FLAG, False):
        _writes.value += 1


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_FLAG, None)
