"""The order status page's look-up: an order by its public id and the email it was placed with.

The answer tells nothing about which of the two was wrong, by its content or its timing: the same
query runs whether the order exists or not, and the email is compared in constant time against the
order's, or against a dummy when there is no order. Only the columns the page shows are read — never
the phone number or the address — and the items are read only once the pair has matched.
"""

from __future__ import annotations

import hmac
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Order, OrderItem
from services.orders import normalize_public_id

# Never an order's email (the .invalid top-level domain cannot be registered), so nothing matches it.
DUMMY_EMAIL = "no-order@status-page.invalid"
MAX_INPUT = 320  # longer than any public id or email address: the rest is not read

DHL_TRACKING = "https://www.dhl.com/ke-en/home/tracking/tracking-express.html?submit=1&tracking-id="


def normalize_email(text: str) -> str:
    """As people type the same address: any case, surrounding spaces, compatibility forms."""
    return unicodedata.normalize("NFKC", text[:MAX_INPUT]).strip().casefold()


def tracking_url(carrier: str | None, number: str | None) -> str | None:
    """The carrier's public tracking page for `number`, or None for a carrier we have no page for."""
    if not number:
        return None
    if (carrier or "").strip().upper() == "DHL":
        return DHL_TRACKING + quote(number.strip(), safe="")
    return None


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    quantity: int
    unit_price: int  # minor units, in the order's currency
    amount: int


@dataclass(frozen=True, slots=True)
class OrderStatus:
    public_id: str
    state: str
    currency: str
    lines: tuple[Line, ...]
    subtotal: int
    shipping: int
    total: int
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    tracking_description: str | None
    tracking_place: str | None
    updated_at: datetime  # the latest change: the order's own, or the carrier's latest event


# The only query a look-up makes before the email is compared: the same for any input.
_ORDER = select(
    Order.id,
    Order.public_id,
    Order.email,
    Order.state,
    Order.currency,
    Order.subtotal,
    Order.shipping,
    Order.total,
    Order.carrier,
    Order.tracking_number,
    Order.tracking_description,
    Order.tracking_place,
    Order.tracking_time,
    Order.updated_at,
)
_OrderRow = Row[*tuple[Any, ...]]  # _ORDER's columns, read by name
_LINES = select(OrderItem.name, OrderItem.quantity, OrderItem.unit_price).order_by(OrderItem.id)


async def lookup(session: AsyncSession, public_id: str, email: str) -> OrderStatus | None:
    """The order's status when `email` is the order's (case and spaces aside); None otherwise, the
    same way whether there is no such order or the email is another."""
    row = (await session.execute(_ORDER.where(Order.public_id == normalize_public_id(public_id[:MAX_INPUT])))).first()
    stored = row.email if row is not None else DUMMY_EMAIL
    matches = hmac.compare_digest(normalize_email(email).encode(), normalize_email(stored).encode())
    if row is None or not matches:
        return None
    return await _status(session, row)


async def by_public_id(session: AsyncSession, public_id: str) -> OrderStatus | None:
    """The status of an order whose email was already checked (a signed link from a look-up)."""
    row = (await session.execute(_ORDER.where(Order.public_id == public_id))).first()
    return await _status(session, row) if row is not None else None


async def _status(session: AsyncSession, row: _OrderRow) -> OrderStatus:
    lines = tuple(
        Line(name, quantity, unit_price, unit_price * quantity)
        for name, quantity, unit_price in (await session.execute(_LINES.where(OrderItem.order_id == row.id))).all()
    )
    updated = max(t for t in (row.updated_at, row.tracking_time) if t is not None)
    return OrderStatus(
        public_id=row.public_id,
        state=row.state,
        currency=row.currency,
        lines=lines,
        subtotal=row.subtotal,
        shipping=row.shipping,
        total=row.total,
        carrier=row.carrier,
        tracking_number=row.tracking_number,
        tracking_url=tracking_url(row.carrier, row.tracking_number),
        tracking_description=row.tracking_description,
        tracking_place=row.tracking_place,
        updated_at=updated,
    )
