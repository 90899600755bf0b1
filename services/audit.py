"""The admins' audit log (table admin_actions): who changed what, when.

`record` adds a row to the session of the change it describes and never commits: it is written by
services/admin.py inside the action's unit of work, so it is committed with the change or rolled
back with it — a refused or failed action leaves no row. `recent` reads the log for /audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEntry, Order, Product

NAME_MAX = 128
DETAIL_MAX = 1000


def admin_id_of(actor: str) -> int:
    """The Telegram user id in an "admin:<id>" actor (0 for any other actor, e.g. a test's "system:x")."""
    kind, _, ident = actor.partition(":")
    return int(ident) if kind == "admin" and ident.isdigit() else 0


def record(
    session: AsyncSession,
    actor: str,
    name: str,
    action: str,
    detail: str,
    *,
    order_id: int | None = None,
    product_id: int | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        admin_id=admin_id_of(actor),
        admin_name=name[:NAME_MAX],
        action=action,
        order_id=order_id,
        product_id=product_id,
        detail=detail[:DETAIL_MAX],
    )
    session.add(entry)
    return entry


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    admin_id: int
    admin_name: str
    action: str
    order: str | None  # public id
    sku: str | None
    detail: str


async def recent(session: AsyncSession, *, order_id: int | None = None, limit: int = 20) -> list[Entry]:
    """The newest `limit` entries (of one order when `order_id` is given), newest first."""
    stmt = (
        select(AuditEntry, Order.public_id, Product.sku)
        .outerjoin(Order, Order.id == AuditEntry.order_id)
        .outerjoin(Product, Product.id == AuditEntry.product_id)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    if order_id is not None:
        stmt = stmt.where(AuditEntry.order_id == order_id)
    rows = (await session.execute(stmt)).all()
    return [Entry(e.at, e.admin_id, e.admin_name, e.action, public_id, sku, e.detail) for e, public_id, sku in rows]
