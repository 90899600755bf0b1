"""Promo codes: what the admins create (/promo add, list, off) and what a customer's code is worth.

The rules, decided once here:
- A code is 3–20 of A–Z 0–9 _ -, matched case-insensitively (stored upper case).
- A percent code (1–90 %) takes that share of the *subtotal* (goods only, never delivery), rounded
  down to whole minor units: 15 % of KES 1,234.55 (123455 minor units) is 18518.25 → KES 185.18 off.
  (M-Pesa then charges the total rounded *up* to whole shillings, services/money.whole_units_up.)
- A fixed code (KES 500, USD 5) applies only to orders in its currency, and never more than the
  subtotal: delivery is always paid, so every total is above zero and payable.
- total = subtotal + shipping − discount (never below 0).
- "min CUR AMOUNT" is a minimum *subtotal*, before the discount, in that currency; an order in another
  currency does not meet it (the code is then for that currency's orders only).
- "until YYYY-MM-DD" is the last day the code works, in the shop's time zone: it ends at the start of
  the next day there (`ends_at`, stored UTC).
- "uses N" limits how many orders hold a use at once. A use is claimed at Confirm, in the order's
  transaction, by one conditional UPDATE (so concurrent checkouts can never push `used` past the limit;
  a CHECK constraint holds the database to it too), given back when the order expires or is
  cancelled, and taken again if a late payment revives the order (when the limit has room).

No aiogram here: handlers/promo.py and handlers/checkout.py render what these return.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

from sqlalchemy import Row, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import PromoCode, table_of, utcnow
from db.session import execute_dml
from services import audit
from services.errors import DomainError, NotFound
from services.money import CURRENCIES, MINOR_PER_UNIT, format_money

log = logging.getLogger(__name__)

CODE = re.compile(r"^[A-Z0-9_-]{3,20}$")
PERCENT = re.compile(r"^(\d{1,3})%$")
AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
MIN_PERCENT, MAX_PERCENT = 1, 90
MAX_USES = 1_000_000
LIST_LIMIT = 50


class PromoArgsError(DomainError):
    """The admin's /promo arguments do not parse: `key` says which part (admin.promo.bad.*)."""

    key = "admin.promo.bad.syntax"


class PromoRefused(DomainError):
    """A customer's code does not apply to this order: `key` (promo.error.*) says why, in their words."""

    key = "promo.error.unknown"


# --- the admins' side ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromoSpec:
    code: str
    percent: int | None
    amount: int | None  # minor units of `currency`
    currency: str | None
    min_amount: int | None
    min_currency: str | None
    last_day: date | None
    uses_limit: int | None


def normalize_code(text: str) -> str:
    return text.strip().upper()


def _money(currency: str, amount: str) -> tuple[str, int]:
    cur = currency.upper()
    if cur not in CURRENCIES:
        raise PromoArgsError("admin.promo.bad.currency", currency=currency, known=", ".join(CURRENCIES))
    if not AMOUNT.match(amount):
        raise PromoArgsError("admin.promo.bad.amount", amount=amount)
    try:
        minor = int(Decimal(amount) * MINOR_PER_UNIT)
    except InvalidOperation:
        raise PromoArgsError("admin.promo.bad.amount", amount=amount) from None
    if minor <= 0:
        raise PromoArgsError("admin.promo.bad.amount", amount=amount)
    return cur, minor


def parse_add(args: list[str], today: date) -> PromoSpec:
    """`CODE (N% | CUR AMOUNT) [min CUR AMOUNT] [until YYYY-MM-DD] [uses N]`, the options in any
    order, each at most once. `today` is the shop's date: a last day before it is refused."""
    if len(args) < 2:
        raise PromoArgsError("admin.promo.bad.syntax")
    code = normalize_code(args[0])
    if not CODE.match(code):
        raise PromoArgsError("admin.promo.bad.code", code=args[0])
    rest = args[1:]
    percent: int | None = None
    amount: int | None = None
    currency: str | None = None
    percent_match = PERCENT.match(rest[0])
    if percent_match:
        percent = int(percent_match.group(1))
        if not MIN_PERCENT <= percent <= MAX_PERCENT:
            raise PromoArgsError("admin.promo.bad.percent", value=rest[0], lo=MIN_PERCENT, hi=MAX_PERCENT)
        rest = rest[1:]
    elif rest[0].endswith("%"):
        raise PromoArgsError("admin.promo.bad.percent", value=rest[0], lo=MIN_PERCENT, hi=MAX_PERCENT)
    else:
        if len(rest) < 2:
            raise PromoArgsError("admin.promo.bad.syntax")
        currency, amount = _money(rest[0], rest[1])
        rest = rest[2:]
    options: dict[str, list[str]] = {}
    while rest:
        word = rest[0].lower()
        width = {"min": 3, "until": 2, "uses": 2}.get(word)
        if width is None:
            raise PromoArgsError("admin.promo.bad.option", option=rest[0])
        if word in options:
            raise PromoArgsError("admin.promo.bad.twice", option=word)
        if len(rest) < width:
            raise PromoArgsError("admin.promo.bad.missing", option=word)
        options[word], rest = rest[1:width], rest[width:]
    min_currency: str | None = None
    min_amount: int | None = None
    if "min" in options:
        min_currency, min_amount = _money(*options["min"])
        if currency is not None and min_currency != currency:
            raise PromoArgsError("admin.promo.bad.min_currency", currency=currency)
    last_day: date | None = None
    if "until" in options:
        try:
            last_day = date.fromisoformat(options["until"][0])
        except ValueError:
            raise PromoArgsError("admin.promo.bad.date", value=options["until"][0]) from None
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", options["until"][0]):
            raise PromoArgsError("admin.promo.bad.date", value=options["until"][0])
        if last_day < today:
            raise PromoArgsError("admin.promo.bad.past", value=last_day.isoformat(), today=today.isoformat())
    uses: int | None = None
    if "uses" in options:
        raw = options["uses"][0]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_USES:
            raise PromoArgsError("admin.promo.bad.uses", value=raw, max=MAX_USES)
        uses = int(raw)
    return PromoSpec(code, percent, amount, currency, min_amount, min_currency, last_day, uses)


def ends_at_of(last_day: date, zone: tzinfo) -> datetime:
    """The first moment after `last_day` in the shop's zone, in UTC."""
    return datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def last_day_of(ends_at: datetime, zone: tzinfo) -> date:
    """The inverse of `ends_at_of`: the last day the code works, in the shop's zone."""
    return (ends_at.astimezone(zone) - timedelta(microseconds=1)).date()


def shop_today(zone: tzinfo, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(zone).date()


def describe(promo: PromoCode, lang: str | None = None) -> str:
    """What the code takes off: "10%" or "KES 500"."""
    if promo.percent is not None:
        return f"{promo.percent}%"
    assert promo.amount is not None and promo.currency is not None
    return format_money(promo.amount, promo.currency, lang or "en")


async def create(
    session: AsyncSession, spec: PromoSpec, zone: tzinfo, actor: str, *, name: str = "", admin_id: int = 0
) -> PromoCode:
    """A new code and its audit row, in the caller's transaction (rolled back on refusal)."""
    promo = PromoCode(
        code=spec.code,
        percent=spec.percent,
        amount=spec.amount,
        currency=spec.currency,
        min_amount=spec.min_amount,
        min_currency=spec.min_currency,
        ends_at=ends_at_of(spec.last_day, zone) if spec.last_day else None,
        uses_limit=spec.uses_limit,
        used=0,
        active=True,
        created_by=admin_id,
    )
    exists = (await session.execute(select(PromoCode.id).where(PromoCode.code == spec.code))).first()
    if exists is not None:
        raise PromoArgsError("admin.promo.exists", code=spec.code)
    session.add(promo)
    try:
        await session.flush()
    except IntegrityError:  # created by another admin a moment ago
        await session.rollback()
        raise PromoArgsError("admin.promo.exists", code=spec.code) from None
    detail = " ".join(
        part
        for part in (
            f"{spec.code} {describe(promo)}",
            f"min {format_money(spec.min_amount, spec.min_currency)}" if spec.min_amount and spec.min_currency else "",
            f"until {spec.last_day.isoformat()}" if spec.last_day else "",
            f"uses {spec.uses_limit}" if spec.uses_limit else "",
        )
        if part
    )
    audit.record(session, actor, name, "promo_add", detail)
    log.info("promo.created", extra={"actor": actor, "code": spec.code})
    return promo


async def disable(session: AsyncSession, text: str, actor: str, *, name: str = "") -> PromoCode:
    """Switch a code off (orders already placed with it keep their discount), with its audit row."""
    code = normalize_code(text)
    promo = (await session.execute(select(PromoCode).where(PromoCode.code == code))).scalar_one_or_none()
    if promo is None:
        raise NotFound("admin.promo.not_found", code=code[:20])
    await session.execute(
        update(PromoCode)
        .where(PromoCode.id == promo.id)
        .values(active=False)
        .execution_options(synchronize_session=False)
    )
    was_active = promo.active
    await session.refresh(promo)
    audit.record(
        session, actor, name, "promo_off", f"{code} ({promo.used} used)" + ("" if was_active else " (already off)")
    )
    log.info("promo.disabled", extra={"actor": actor, "code": code})
    return promo


async def all_codes(session: AsyncSession, limit: int = LIST_LIMIT) -> list[PromoCode]:
    """The newest codes first."""
    stmt = select(PromoCode).order_by(PromoCode.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars().all())


def status(promo: PromoCode, now: datetime | None = None) -> str:
    """ "off", "ended", "used_up" or "active" (for /promo list)."""
    now = now or utcnow()
    if not promo.active:
        return "off"
    if promo.ends_at is not None and promo.ends_at <= now:
        return "ended"
    if promo.uses_limit is not None and promo.used >= promo.uses_limit:
        return "used_up"
    return "active"


# --- the customers' side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """A code that applies to an order, and what it takes off (minor units of the order's currency)."""

    code: str
    discount: int


def discount_of(promo: PromoCode | Row[tuple[int | None, int | None, str | None]], subtotal: int) -> int:
    """What the code takes off a subtotal (the currency already checked): a percentage rounded
    down to whole minor units, or the fixed amount; never more than the subtotal."""
    off = subtotal * promo.percent // 100 if promo.percent is not None else (promo.amount or 0)
    return max(0, min(off, subtotal))


def _refuse_for_order(promo: PromoCode, currency: str, subtotal: int, lang: str) -> None:
    """The reasons that depend on the order, not on time or other orders."""
    if promo.currency is not None and promo.currency != currency:
        raise PromoRefused("promo.error.currency", code=promo.code, currency=promo.currency)
    if promo.min_amount is not None and promo.min_currency is not None:
        if promo.min_currency != currency:
            raise PromoRefused("promo.error.currency", code=promo.code, currency=promo.min_currency)
        if subtotal < promo.min_amount:
            raise PromoRefused(
                "promo.error.min",
                code=promo.code,
                min=format_money(promo.min_amount, promo.min_currency, lang),
                subtotal=format_money(subtotal, currency, lang),
            )


def _refuse_for_now(promo: PromoCode, now: datetime) -> None:
    if not promo.active:
        raise PromoRefused("promo.error.inactive", code=promo.code)
    if promo.ends_at is not None and promo.ends_at <= now:
        raise PromoRefused("promo.error.expired", code=promo.code)
    if promo.uses_limit is not None and promo.used >= promo.uses_limit:
        raise PromoRefused("promo.error.used_up", code=promo.code)


async def _find(session: AsyncSession, text: str) -> PromoCode:
    code = normalize_code(text)
    if not CODE.match(code):
        raise PromoRefused("promo.error.format")
    promo = (
        await session.execute(select(PromoCode).where(PromoCode.code == code).execution_options(populate_existing=True))
    ).scalar_one_or_none()
    if promo is None:
        raise PromoRefused("promo.error.unknown", code=code)
    return promo


async def evaluate(
    session: AsyncSession, text: str, currency: str, subtotal: int, *, lang: str = "en", now: datetime | None = None
) -> Applied:
    """What the code typed would take off this order now, or PromoRefused with the reason. Only
    reads: the summary quotes it; Confirm claims it (`claim`)."""
    now = now or utcnow()
    promo = await _find(session, text)
    _refuse_for_now(promo, now)
    _refuse_for_order(promo, currency, subtotal, lang)
    return Applied(promo.code, discount_of(promo, subtotal))


_PC = table_of(PromoCode).c


async def claim(
    session: AsyncSession, text: str, currency: str, subtotal: int, *, lang: str = "en", now: datetime | None = None
) -> Applied:
    """Take one use of the code for an order being placed, in the caller's transaction, or raise
    PromoRefused (the caller rolls back). The use is taken by one conditional UPDATE — active, not
    ended, a use left — so however many checkouts race for the last use, one gets it: on PostgreSQL
    the others wait on the row and re-check the condition against the committed count; on SQLite
    writers are serialised. The row stays locked until the order commits."""
    now = now or utcnow()
    promo = await _find(session, text)
    _refuse_for_order(promo, currency, subtotal, lang)  # fixed properties: no race
    claimed = (
        await session.execute(
            update(table_of(PromoCode))
            .where(
                _PC.id == promo.id,
                _PC.active.is_(True),
                or_(_PC.ends_at.is_(None), _PC.ends_at > now),
                or_(_PC.uses_limit.is_(None), _PC.used < _PC.uses_limit),
            )
            .values(used=_PC.used + 1)
            .returning(_PC.percent, _PC.amount, _PC.currency)
        )
    ).first()
    if claimed is None:
        promo = await _find(session, text)  # as committed now: why it failed
        _refuse_for_now(promo, now)
        raise PromoRefused("promo.error.used_up", code=promo.code)  # pragma: no cover - a race past the re-read
    return Applied(promo.code, discount_of(claimed, subtotal))


async def give_back(session: AsyncSession, code: str, order: str) -> None:
    """The order holding a use ended (expired, cancelled): the use is free again."""
    await session.execute(update(table_of(PromoCode)).where(_PC.code == code, _PC.used > 0).values(used=_PC.used - 1))
    log.info("promo.use_returned", extra={"code": code, "order": order})


async def take_again(session: AsyncSession, code: str, order: str) -> bool:
    """A late payment revived an ended order: it holds a use again if the limit has room (the
    customer paid the discounted amount we asked, so the order proceeds either way; the count never
    passes the limit)."""
    result = await execute_dml(
        session,
        update(table_of(PromoCode))
        .where(_PC.code == code, or_(_PC.uses_limit.is_(None), _PC.used < _PC.uses_limit))
        .values(used=_PC.used + 1),
    )
    taken = result.rowcount == 1
    if not taken:
        log.warning("promo.late_payment_over_limit", extra={"code": code, "order": order})
    return taken
