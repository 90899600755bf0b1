"""Figures for the admin group: /report (a period's orders, revenue, top products, refunds) and
/export orders (a CSV of order lines for the books).

Every figure is one SQL aggregate over the orders *placed* in the period (the orders' own
`created_at`), so the numbers of one report describe one set of orders and add up:
placed = paid + awaiting payment + abandoned + cancelled after payment.

- paid: the states after payment (processing, shipped, in_transit, delivered, and return_requested /
  returned: sold and paid, what came back is a refund); revenue is their totals (after any promo
  discount), per currency — a paid order cancelled later (refunded, or a refund owed) is not revenue.
- abandoned: expired or cancelled without money ever taken (no payment paid, refunded or refund_due).
- cancelled after payment: expired or cancelled orders with money taken (refunded or owed).
- refunds: the payments of those orders in state `refunded` (done) or `refund_due` (owed: an M-Pesa
  reversal to make by hand, a Stripe refund that failed, a second or too-late payment), per currency,
  plus approved partial returns (a whole return refunds its payment, counted above): done when Stripe
  refunded it, owed for an M-Pesa reversal or a Stripe refund still pending.

Periods are whole days of the shop's zone (SHOP_TIMEZONE): today = since 00:00 today; week = the last
7 days, today included; month = the last 30 days, today included. Stored times are UTC; the bounds
are converted once, so the queries compare plain timestamps (SQLite and PostgreSQL alike).
No aiogram here: handlers/admin.py renders what these return.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Customer, Order, OrderItem, Payment, Product, ReturnRequest
from services import orders as sm
from services.money import major_units

PAID_STATES = (sm.PROCESSING, sm.SHIPPED, sm.IN_TRANSIT, sm.DELIVERED, sm.RETURN_REQUESTED, sm.RETURNED)
ENDED_STATES = (sm.EXPIRED, sm.CANCELLED)
MONEY_TAKEN = ("paid", "refund_due", "refunded")  # payment states in which the customer was charged
REFUND_STATES = ("refunded", "refund_due")
PERIOD_DAYS = {"today": 1, "week": 7, "month": 30}
TOP_N = 5
EXPORT_DEFAULT_DAYS = 30
EXPORT_BATCH = 1000

# --- periods --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    name: str  # today / week / month / a range
    first_day: date  # in the shop's zone, inclusive
    last_day: date  # in the shop's zone, inclusive
    start: datetime  # UTC, inclusive: 00:00 of first_day in the zone
    end: datetime  # UTC, exclusive: 00:00 of the day after last_day in the zone


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def days(first_day: date, last_day: date, zone: tzinfo, name: str = "range") -> Period:
    if first_day > last_day:
        raise ValueError("the first day is after the last")
    return Period(name, first_day, last_day, _midnight(first_day, zone), _midnight(last_day + timedelta(days=1), zone))


def today_in(zone: tzinfo, now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(zone).date()


def period(name: str, zone: tzinfo, now: datetime | None = None) -> Period:
    """today | week | month (ValueError for anything else), ending with today in `zone`."""
    n = PERIOD_DAYS.get(name.lower())
    if n is None:
        raise ValueError(f"unknown period {name!r}")
    last = today_in(zone, now)
    return days(last - timedelta(days=n - 1), last, zone, name.lower())


def parse_day(text: str) -> date:
    """A YYYY-MM-DD date (ValueError otherwise; `date.fromisoformat` also takes other ISO forms)."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"not a YYYY-MM-DD date: {text!r}")
    return date.fromisoformat(text)


def export_period(args: list[str], zone: tzinfo, now: datetime | None = None) -> Period:
    """[FROM] [TO] as typed after /export orders: inclusive days of the shop's zone; FROM defaults to
    the first of the last 30 days, TO to today. ValueError for a bad date, FROM after TO, or more."""
    if len(args) > 2:
        raise ValueError("too many arguments")
    today = today_in(zone, now)
    first = parse_day(args[0]) if args else today - timedelta(days=EXPORT_DEFAULT_DAYS - 1)
    last = parse_day(args[1]) if len(args) > 1 else max(today, first)
    return days(first, last, zone)


def _placed_in(p: Period) -> ColumnElement[bool]:
    return and_(Order.created_at >= p.start, Order.created_at < p.end)


# --- /report --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Amount:
    currency: str
    count: int
    amount: int  # minor units


@dataclass(frozen=True, slots=True)
class TopProduct:
    sku: str
    name: str
    units: int


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    placed: int
    paid: int
    awaiting: int
    abandoned: int
    after_payment: int  # expired or cancelled with money taken
    revenue: list[Amount]  # paid orders' totals, per currency
    top: list[TopProduct]
    refunded: list[Amount]  # refunds made, per currency
    refund_owed: list[Amount]  # refunds still to make, per currency


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def report(session: AsyncSession, p: Period) -> Report:
    placed_in = _placed_in(p)
    money_taken = exists().where(Payment.order_id == Order.id, Payment.state.in_(MONEY_TAKEN))
    ended = Order.state.in_(ENDED_STATES)
    counts = (
        await session.execute(
            select(
                func.count(Order.id),
                _count_if(Order.state.in_(PAID_STATES)),
                _count_if(Order.state == sm.AWAITING_PAYMENT),
                _count_if(and_(ended, ~money_taken)),
                _count_if(and_(ended, money_taken)),
            ).where(placed_in)
        )
    ).one()
    revenue = (
        await session.execute(
            select(Order.currency, func.count(Order.id), func.sum(Order.total))
            .where(placed_in, Order.state.in_(PAID_STATES))
            .group_by(Order.currency)
            .order_by(Order.currency)
        )
    ).all()
    units = func.sum(OrderItem.quantity).label("units")
    top = (
        await session.execute(
            select(Product.sku, Product.name, units)
            .select_from(OrderItem)
            .join(Order, Order.id == OrderItem.order_id)
            .join(Product, Product.id == OrderItem.product_id)
            .where(placed_in, Order.state.in_(PAID_STATES))
            .group_by(Product.id, Product.sku, Product.name)
            .order_by(units.desc(), Product.sku)
            .limit(TOP_N)
        )
    ).all()
    refunds = (
        await session.execute(
            select(Payment.state, Payment.currency, func.count(Payment.id), func.sum(Payment.amount))
            .join(Order, Order.id == Payment.order_id)
            .where(placed_in, Payment.state.in_(REFUND_STATES))
            .group_by(Payment.state, Payment.currency)
            .order_by(Payment.state, Payment.currency)
        )
    ).all()
    refund_done = case((ReturnRequest.refund_status == "refunded", "refunded"), else_="refund_due")
    partial_returns = (
        await session.execute(
            select(
                refund_done, ReturnRequest.currency, func.count(ReturnRequest.id), func.sum(ReturnRequest.refund_amount)
            )
            .join(Order, Order.id == ReturnRequest.order_id)
            .where(
                placed_in,
                ReturnRequest.state == "approved",
                ReturnRequest.whole_order.is_(False),
                ReturnRequest.refund_status.in_(("refunded", "refund_pending", "manual_reversal_owed")),
            )
            .group_by(refund_done, ReturnRequest.currency)
        )
    ).all()
    refund_rows = _merged([*refunds, *partial_returns])
    return Report(
        period=p,
        placed=int(counts[0]),
        paid=int(counts[1]),
        awaiting=int(counts[2]),
        abandoned=int(counts[3]),
        after_payment=int(counts[4]),
        revenue=[Amount(cur, int(n), int(total)) for cur, n, total in revenue],
        top=[TopProduct(sku, name, int(n)) for sku, name, n in top],
        refunded=[Amount(cur, int(n), int(total)) for state, cur, n, total in refund_rows if state == "refunded"],
        refund_owed=[Amount(cur, int(n), int(total)) for state, cur, n, total in refund_rows if state == "refund_due"],
    )


def _merged(rows: list[Any]) -> list[tuple[str, str, int, int]]:
    """(state, currency, count, amount) rows summed per state and currency, in that order."""
    sums: dict[tuple[str, str], tuple[int, int]] = {}
    for state, currency, n, total in rows:
        count, amount = sums.get((state, currency), (0, 0))
        sums[(state, currency)] = (count + int(n), amount + int(total))
    return [(state, cur, n, total) for (state, cur), (n, total) in sorted(sums.items())]


# --- /export orders -------------------------------------------------------------------------------

CSV_HEADER = (
    "order_id",
    "placed_at",
    "state",
    "customer_name",
    "zone",
    "sku",
    "product",
    "quantity",
    "unit_price",
    "line_total",
    "order_shipping",
    "promo_code",
    "order_discount",
    "order_total",
    "currency",
    "payment_provider",
    "receipt",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """A cell a spreadsheet will not run: text starting like a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


@dataclass(frozen=True, slots=True)
class Export:
    content: bytes  # UTF-8 with a byte-order mark (spreadsheets then read names right), CRLF rows
    orders: int
    lines: int


async def orders_csv(session: AsyncSession, p: Period, zone: tzinfo, batch: int = EXPORT_BATCH) -> Export:
    """One row per order line of the orders placed in `p`, oldest order first. Order-level values
    (shipping, total, payment) repeat on each of the order's lines. The payment is the one that took
    the money (paid, refunded or refund owed; the latest if several), empty for an unpaid order.
    Customers' contact details (phone, email, address) are left out: /order shows them when needed.
    Read in keyset batches of `batch` lines, so no more than that many rows are held at once."""
    charged = (
        select(Payment.order_id, func.max(Payment.id).label("payment_id"))
        .where(Payment.state.in_(MONEY_TAKEN))
        .group_by(Payment.order_id)
        .subquery()
    )
    stmt = (
        select(
            Order.id,
            OrderItem.id,
            Order.public_id,
            Order.created_at,
            Order.state,
            Customer.first_name,
            Order.zone,
            OrderItem.sku,
            OrderItem.name,
            OrderItem.quantity,
            OrderItem.unit_price,
            Order.shipping,
            Order.promo_code,
            Order.discount,
            Order.total,
            Order.currency,
            Payment.provider,
            Payment.receipt_number,
        )
        .select_from(OrderItem)
        .join(Order, Order.id == OrderItem.order_id)
        .join(Customer, Customer.id == Order.customer_id)
        .outerjoin(charged, charged.c.order_id == Order.id)
        .outerjoin(Payment, Payment.id == charged.c.payment_id)
        .where(_placed_in(p))
        .order_by(Order.id, OrderItem.id)
        .limit(batch)
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    orders = lines = 0
    after: tuple[int, int] | None = None
    while True:
        page = stmt
        if after is not None:
            page = stmt.where(or_(Order.id > after[0], and_(Order.id == after[0], OrderItem.id > after[1])))
        rows = (await session.execute(page)).all()
        for row in rows:
            (order_id, item_id, public_id, placed, state, name, zone_code, sku, product, qty, unit, shipping,
             promo, discount, total, currency, provider, receipt) = row  # fmt: skip
            if after is None or order_id != after[0]:
                orders += 1
            after = (order_id, item_id)
            lines += 1
            writer.writerow(
                [
                    safe_cell(v)
                    for v in (
                        public_id,
                        placed.astimezone(zone).isoformat(timespec="seconds"),
                        state,
                        name,
                        zone_code,
                        sku,
                        product,
                        qty,
                        major_units(unit),
                        major_units(unit * qty),
                        major_units(shipping),
                        promo,
                        major_units(discount or 0),
                        major_units(total),
                        currency,
                        provider,
                        receipt,
                    )
                ]
            )
        if len(rows) < batch:
            break
    return Export(out.getvalue().encode("utf-8-sig"), orders, lines)
