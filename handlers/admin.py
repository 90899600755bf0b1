"""Admin commands in the private admin group: /help /restock /stock /orders /order /ship /delivered
/cancel /report /export /audit, and the buttons on the new-paid-order alert (View, Ship…, Cancel…). Only
admins, only in the group.

Each command is one handler, parsed by aiogram's `Command` filter (`/restock@our_bot` included,
another bot's `/restock@their_bot` is not ours) with its arguments in `CommandObject.args`. The
buttons carry an `AdminButton` callback data, "adm:<action>:<ORDER_ID>".

Authorisation (`AdminOnly`): the chat must be ADMIN_CHAT_ID and the user in ADMIN_USER_IDS or an
administrator of that group (getChatMember, cached for 5 minutes in-process; asked again, past the
cache, right before /cancel or the confirmed Cancel… button, which refund). An admin command or
button that `AdminOnly` turns away is not left to fall through to the customer routers: the refusal
handlers after the admin ones answer it and log it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Bot
from aiogram.filters import Command, CommandObject, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Order, OrderEvent
from handlers.render import TEXT_LIMIT, clip
from handlers.routing import Routes
from services import admin as admin_service
from services import audit, reports
from services import orders as sm
from services.errors import DomainError
from services.i18n import counted, plain, t
from services.markup import Markup, cut, visible_len
from services.money import format_money
from services.times import admin_time
from services.zones import get_zone

log = logging.getLogger(__name__)

# never customer commands: refused anywhere
ADMIN_ONLY = ("restock", "stock", "order", "ship", "delivered", "report", "export", "audit", "paid")
# /orders, /cancel and /help mean admin things only in the group
IN_GROUP = (*ADMIN_ONLY, "orders", "cancel", "help")
CACHE_SECONDS = 300
REFUND_STATES = ("refunded", "refund_pending", "manual_reversal_owed")  # orders.refund_status, when set
_member_cache: dict[tuple[int, int], tuple[float, bool]] = {}


class AdminAction(StrEnum):
    VIEW = "v"
    SHIP = "s"
    CANCEL = "c"  # asks for confirmation
    CONFIRM_CANCEL = "cc"  # cancels (and refunds)


class AdminButton(CallbackData, prefix="adm"):
    """The admin buttons, "adm:v:HL-ABC123". Alerts already in the admin group carry these strings
    (services/payments/common.py writes them for the new-order alert): the packing must not change."""

    action: AdminAction
    order: str


class ShipFlow(StatesGroup):
    tracking = State()  # waiting for a reply to the "tracking number?" prompt


# --- authorisation --------------------------------------------------------------------------------


async def is_admin(bot: Bot, settings: Settings, chat_id: int, user_id: int, *, fresh: bool = False) -> bool:
    """Admin = in the admin group AND (listed in ADMIN_USER_IDS or an administrator of the group).
    `fresh`: ask Telegram even if the cache answers (before destructive actions); the answer
    replaces the cached one."""
    if settings.admin_chat_id is None or chat_id != settings.admin_chat_id:
        return False
    if user_id in settings.admin_user_ids:
        return True
    key = (chat_id, user_id)
    cached = _member_cache.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        member = await bot.get_chat_member(chat_id, user_id)
    except Exception:  # noqa: BLE001 - Telegram unreachable: deny this time, don't guess, don't cache
        log.warning("admin.member_lookup_failed", extra={"chat_id": chat_id, "user_id": user_id})
        return False
    allowed = member.status in ("creator", "administrator")
    _member_cache[key] = (time.monotonic(), allowed)
    return allowed


def _in_group(settings: Settings, chat_id: int) -> bool:
    return settings.admin_chat_id is not None and chat_id == settings.admin_chat_id


def _chat_id(event: Message | CallbackQuery) -> int:
    if isinstance(event, Message):
        return event.chat.id
    return event.message.chat.id if event.message else 0


class AdminOnly(Filter):
    """The user is an admin and the update comes from the admin group. `fresh`: past the cache."""

    def __init__(self, *, fresh: bool = False) -> None:
        self.fresh = fresh

    async def __call__(self, event: Message | CallbackQuery, bot: Bot, settings: Settings) -> bool:
        if event.from_user is None:
            return False
        return await is_admin(bot, settings, _chat_id(event), event.from_user.id, fresh=self.fresh)


class InAdminGroup(Filter):
    async def __call__(self, message: Message, settings: Settings) -> bool:
        return _in_group(settings, message.chat.id)


_ADMIN_ONLY_COMMANDS = Command(*ADMIN_ONLY, ignore_case=True)


class AdminTraffic(Filter):
    """The messages this router may take, cheap checks first so a customer's message passes it at
    once: text messages only; in the admin group a command or a reply (the tracking number is a
    reply to our prompt); elsewhere only the admin-only commands, so they can be refused."""

    async def __call__(self, message: Message, bot: Bot, settings: Settings) -> bool:
        text = message.text
        if not text:
            return False
        if _in_group(settings, message.chat.id):
            return text.startswith("/") or message.reply_to_message is not None
        return text.startswith("/") and bool(await _ADMIN_ONLY_COMMANDS(message, bot))


class Pressed(Filter):
    """The admin button pressed is one of `actions` (its `callback_data` comes from the router's filter)."""

    def __init__(self, *actions: AdminAction) -> None:
        self.actions = frozenset(actions)

    async def __call__(self, query: CallbackQuery, callback_data: AdminButton) -> bool:
        return callback_data.action in self.actions


class ShipReply(Filter):
    """A reply, in the admin group, to the bot's "tracking number?" prompt of the Ship… button."""

    async def __call__(self, message: Message, settings: Settings, state: FSMContext) -> bool | dict[str, Any]:
        if not _in_group(settings, message.chat.id):
            return False
        if message.reply_to_message is None or (message.text or "/").startswith("/"):
            return False
        if await state.get_state() != ShipFlow.tracking.state:
            return False
        data = await state.get_data()
        if data.get("prompt") != message.reply_to_message.message_id:
            return False
        return {"ship_order": data.get("order", "")}


router = Routes("admin")
router.message.filter(AdminTraffic())
router.callback_query.filter(AdminButton.filter())  # only admin buttons enter; adds `callback_data`


# --- commands -------------------------------------------------------------------------------------


def _actor(event: Message | CallbackQuery) -> str:
    return f"admin:{event.from_user.id if event.from_user else 0}"


def _name(event: Message | CallbackQuery) -> str:
    """The admin's name as Telegram shows it, for the audit log."""
    return event.from_user.full_name if event.from_user else ""


def _args(command: CommandObject) -> list[str]:
    return (command.args or "").split()


async def outcome(name: str, actor: str, action: Callable[[], Awaitable[str]]) -> str:
    """The reply to one admin action: its text, its usage when the arguments were wrong, or the
    refusal. A refused action has written nothing: each service action is one unit of work."""
    try:
        return await action()
    except (ValueError, IndexError):
        return t(f"admin.usage.{name}")
    except DomainError as exc:
        log.info("admin.refused_action", extra={"command": name, "actor": actor, "reason": exc.key})
        return refusal(exc)


def refusal(exc: DomainError) -> str:
    """The text of a refused action; its values may echo what the admin typed, so they are shortened
    (and escaped by `t`)."""
    return t(exc.key, None, **{k: cut(v, 100) if isinstance(v, str) else v for k, v in exc.values.items()})


@router.message(Command("restock", ignore_case=True), AdminOnly())
async def restock_command(message: Message, command: CommandObject, session: AsyncSession) -> None:
    async def run() -> str:
        sku, qty = _args(command)
        product, told = await admin_service.restock(session, sku, int(qty), actor, name=_name(message))
        return t(
            "admin.restock.done",
            None,
            sku=product.sku,
            stock=product.stock,
            reserved=product.reserved,
            sold=product.sold,
            told=told,
        )

    actor = _actor(message)
    await message.reply(await outcome("restock", actor, run))


@router.message(Command("stock", ignore_case=True), AdminOnly())
async def stock_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    async def run() -> str:
        products = await admin_service.stock_report(session, " ".join(_args(command)) or None)
        if not products:
            return t("admin.stock.none")
        lines = [
            t(
                "admin.stock.line",
                None,
                sku=p.sku,
                free=p.stock,
                reserved=p.reserved,
                sold=p.sold,
                flag=" ⚠️" if p.active and p.stock < settings.low_stock_threshold else "",
                inactive="" if p.active else t("admin.stock.inactive"),
            )
            for p in products
        ]
        return fit_lines(
            t("admin.stock.title", None, threshold=settings.low_stock_threshold), lines, more="admin.stock.more"
        )

    await message.reply(await outcome("stock", _actor(message), run))


@router.message(Command("orders", ignore_case=True), AdminOnly())
async def orders_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    async def run() -> str:
        args = _args(command)
        state = admin_service.parse_state(args) if args else sm.PROCESSING
        named = admin_service.state_name(state)
        orders = await sm.orders_in_state(session, state, limit=50)
        if not orders:
            return t("admin.orders.none", None, state=named)
        lines = [order_line(o, settings.shop_zone) for o in orders]
        total = await admin_service.count_in_state(session, state)
        title = t("admin.orders.title", None, count=counted("admin.orders.count", total), state=named)
        return fit_lines(title, lines, hidden=total - len(orders))

    await message.reply(await outcome("orders", _actor(message), run))


def order_line(order: Order, zone: ZoneInfo) -> Markup:
    """One row of /orders: id, total, items, who (name and phone, in full as /order shows them),
    zone and when it was placed."""
    return t(
        "admin.orders.line",
        None,
        order=order.public_id,
        total=format_money(order.total, order.currency),
        items=counted("admin.orders.items", sum(i.quantity for i in order.items)),
        name=cut(order.customer.first_name or str(order.customer_id), 64),
        phone="+" + order.phone,
        zone=order.zone,
        placed=admin_time(order.created_at, zone),
    )


@router.message(Command("order", ignore_case=True), AdminOnly())
async def order_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    async def run() -> str:
        (public_id,) = _args(command)
        return await order_detail_of(session, public_id, settings.shop_zone)

    await message.reply(await outcome("order", _actor(message), run))


async def ship_text(session: AsyncSession, args: list[str], actor: str, name: str = "") -> str:
    """/ship <ORDER_ID> <TRACKING_NUMBER> [carrier], typed or answered to the Ship… prompt."""
    if len(args) < 2:
        raise ValueError
    order = await admin_service.ship(session, args[0], args[1], " ".join(args[2:]) or None, actor, name=name)
    key = "admin.ship.done_dhl" if order.tracking_next_check_at else "admin.ship.done"
    return t(key, None, order=order.public_id, carrier=order.carrier or "", tracking=order.tracking_number or "")


@router.message(Command("ship", ignore_case=True), AdminOnly())
async def ship_command(message: Message, command: CommandObject, session: AsyncSession) -> None:
    actor = _actor(message)
    await message.reply(await outcome("ship", actor, lambda: ship_text(session, _args(command), actor, _name(message))))


@router.message(Command("delivered", ignore_case=True), AdminOnly())
async def delivered_command(message: Message, command: CommandObject, session: AsyncSession) -> None:
    async def run() -> str:
        (public_id,) = _args(command)
        order = await admin_service.mark_delivered(session, public_id, actor, name=_name(message))
        key = "admin.delivered.done_dhl" if (order.carrier or "").upper() == "DHL" else "admin.delivered.done"
        return t(key, None, order=order.public_id)

    actor = _actor(message)
    await message.reply(await outcome("delivered", actor, run))


async def cancel_text(
    session: AsyncSession,
    public_id: str,
    reason: str | None,
    actor: str,
    settings: Settings,
    providers: dict[str, Any],
    name: str = "",
) -> str:
    order, refund, payment = await admin_service.cancel(
        session, public_id, reason, actor, providers, settings, name=name
    )
    return t(
        f"admin.cancel.{refund}",
        None,
        order=order.public_id,
        receipt=(payment.receipt_number if payment else None) or t("admin.cancel.no_receipt"),
        amount=format_money(payment.amount, payment.currency) if payment else "",
    )


@router.message(Command("cancel", ignore_case=True), AdminOnly(fresh=True))  # it refunds: rights asked afresh
async def cancel_command(
    message: Message, command: CommandObject, session: AsyncSession, settings: Settings, providers: dict[str, Any]
) -> None:
    async def run() -> str:
        public_id, *reason = _args(command)
        return await cancel_text(
            session, public_id, " ".join(reason) or None, actor, settings, providers, _name(message)
        )

    actor = _actor(message)
    await message.reply(await outcome("cancel", actor, run))


# --- /report, /export orders, /audit ----------------------------------------------------------------


def _amounts(amounts: list[reports.Amount], key: str) -> list[Markup]:
    return [
        t(key, None, n=counted("admin.orders.count", a.count), amount=format_money(a.amount, a.currency))
        for a in amounts
    ]


def report_text(r: reports.Report, zone: ZoneInfo) -> str:
    revenue = _amounts(r.revenue, "admin.report.revenue_line")
    top = [
        t(
            "admin.report.top_line",
            None,
            rank=n,
            sku=p.sku,
            name=cut(p.name, 80),
            units=counted("admin.report.units", p.units),
        )
        for n, p in enumerate(r.top, 1)
    ]
    refunds = _amounts(r.refunded, "admin.report.refunded_line") + _amounts(
        r.refund_owed, "admin.report.refund_owed_line"
    )
    lines = Markup("\n").join
    return t(
        "admin.report.text",
        None,
        period=t(f"admin.report.period.{r.period.name}"),
        first=r.period.first_day.isoformat(),
        last=r.period.last_day.isoformat(),
        zone=zone.key,
        placed=r.placed,
        paid=r.paid,
        awaiting=r.awaiting,
        abandoned=r.abandoned,
        after_payment=r.after_payment,
        revenue=lines(revenue) if revenue else t("admin.report.none"),
        top=lines(top) if top else t("admin.report.none"),
        refunds=lines(refunds) if refunds else t("admin.report.none"),
    )


@router.message(Command("report", ignore_case=True), AdminOnly())
async def report_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    async def run() -> str:
        args = _args(command)
        if len(args) > 1:
            raise ValueError
        period = reports.period(args[0] if args else "today", settings.shop_zone)
        return report_text(await reports.report(session, period), settings.shop_zone)

    await message.reply(await outcome("report", _actor(message), run))


@router.message(Command("export", ignore_case=True), AdminOnly())
async def export_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    """/export orders [FROM] [TO]: the CSV as a document (its caption says what it holds); a usage
    line for anything else, a plain answer when no order was placed in those days."""
    zone = settings.shop_zone
    document: BufferedInputFile | None = None

    async def run() -> str:
        nonlocal document
        what, *dates = _args(command) or [""]
        if what.lower() != "orders":
            raise ValueError
        period = reports.export_period(dates, zone)
        export = await reports.orders_csv(session, period, zone)
        first, last = period.first_day.isoformat(), period.last_day.isoformat()
        if not export.lines:
            return t("admin.export.none", None, first=first, last=last, zone=zone.key)
        document = BufferedInputFile(export.content, filename=f"orders_{first}_{last}.csv")
        log.info("admin.export", extra={"actor": actor, "orders": export.orders, "lines": export.lines})
        return t(
            "admin.export.caption",
            None,
            first=first,
            last=last,
            zone=zone.key,
            orders=counted("admin.orders.count", export.orders),
            lines=counted("admin.export.lines", export.lines),
        )

    actor = _actor(message)
    text = await outcome("export", actor, run)
    if document is None:
        await message.reply(text)
    else:
        await message.reply_document(document, caption=text)


@router.message(Command("audit", ignore_case=True), AdminOnly())
async def audit_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    async def run() -> str:
        args = _args(command)
        if len(args) > 1:
            raise ValueError
        zone = settings.shop_zone
        order = await admin_service.find_order(session, args[0]) if args else None
        entries = await audit.recent(session, order_id=order.id if order else None)
        if not entries:
            return t("admin.audit.none_order", None, order=order.public_id) if order else t("admin.audit.none")
        lines = [
            t(
                "admin.audit.line",
                None,
                when=admin_time(e.at, zone),
                name=cut(e.admin_name or "admin", 64),
                admin_id=e.admin_id,
                action=e.action,
                target=e.order or e.sku or "",
                detail=cut(e.detail, 300),
            )
            for e in entries
        ]
        title = (
            t("admin.audit.title_order", None, order=order.public_id, zone=zone.key)
            if order
            else t("admin.audit.title", None, n=counted("admin.audit.actions", len(entries)), zone=zone.key)
        )
        return fit_lines(title, lines)

    await message.reply(await outcome("audit", _actor(message), run))


@router.message(Command("help", ignore_case=True), InAdminGroup(), AdminOnly())
async def help_command(message: Message) -> None:
    """/help in the admin group: every admin command with an example."""
    await message.reply(t("admin.help"))


@router.message(Command(*ADMIN_ONLY, ignore_case=True))  # anywhere: these are never customer commands
@router.message(Command("orders", "cancel", "help", ignore_case=True), InAdminGroup())
async def refuse_command(message: Message, command: CommandObject) -> None:
    """An admin command from someone `AdminOnly` turned away (or from outside the admin group)."""
    log.warning(
        "admin.refused",
        extra={
            "command": command.command.lower(),
            "chat_id": message.chat.id,
            "user_id": message.from_user.id if message.from_user else 0,
        },
    )
    await message.reply(t("admin.refused"))


@router.message(InAdminGroup(), Command(re.compile(r".+")), AdminOnly())
async def unknown_command(message: Message, command: CommandObject) -> None:
    """An admin's command we don't know, in the admin group: the list of the admin commands.
    (Customer commands there were answered before this router; a non-admin's unknown command, like
    any chatter in a group, gets no answer.)"""
    log.info("admin.unknown_command", extra={"chat_id": message.chat.id})
    await message.reply(t("admin.help"))


# --- rendering ------------------------------------------------------------------------------------


def fit_lines(
    title: Markup, lines: list[Markup], *, hidden: int = 0, limit: int = TEXT_LIMIT, more: str = "admin.more"
) -> Markup:
    """Title and as many whole lines as fit in one message (never cutting an HTML tag in half),
    then a "… N more" line for the rest."""
    return Markup("\n").join([title, *_take(lines, limit - len(title) - 1, hidden, more)])


def _take(lines: list[Markup], budget: int, hidden: int = 0, more: str = "admin.more") -> list[Markup]:
    """The leading lines that fit in `budget` characters (joined by newlines), with room kept for
    a closing "… N more" line when some (or `hidden` others never loaded) are left out."""
    room = budget - 120  # the "more" line
    shown: list[Markup] = []
    for line in lines:
        if len(line) + 1 > room:
            break
        shown.append(line)
        room -= len(line) + 1
    hidden += len(lines) - len(shown)
    return shown + ([t(more, None, n=hidden)] if hidden > 0 else [])


async def order_detail(session: AsyncSession, order: Order, zone: ZoneInfo) -> str:
    """Everything about one order, for the admins: items, customer contact, address, payments, events.
    Every line comes from `t` (values escaped); customers' free-text fields are cut to a bound first.
    Times are the shop's zone, named ("2 Dec 17:45 EAT")."""
    customer = order.customer
    lines = Markup("\n").join
    items = [
        t(
            "admin.order.item",
            None,
            qty=i.quantity,
            name=i.name,
            sku=i.sku,
            amount=format_money(i.unit_price * i.quantity, order.currency),
        )
        for i in order.items
    ]
    payments = [
        t(
            "admin.order.payment",
            None,
            provider=p.provider,
            state=p.state,
            amount=format_money(p.amount, p.currency),
            receipt=p.receipt_number or "",
            when=admin_time(p.created_at, zone),
        )
        for p in await admin_service.order_payments(session, order.id)
    ]
    events = [event_line(e, zone) for e in await sm.events_of(session, order.id)]
    values = {
        "order": order.public_id,
        "state": admin_service.state_name(order.state),
        "items": lines(_take(items, 1500)),
        "subtotal": format_money(order.subtotal, order.currency),
        "shipping": format_money(order.shipping, order.currency),
        "total": format_money(order.total, order.currency),
        "customer_id": order.customer_id,
        "name": cut(customer.first_name or str(customer.id), 64),
        "username": t("admin.order.username", None, username=cut(customer.username, 64)) if customer.username else "",
        "phone": "+" + order.phone,
        "email": cut(order.email, 254),
        "address": cut(order.address, 500),
        "zone": order.zone,
        "shipping_line": shipping_line(order),
        "payments": lines(_take(payments, 800)) or t("admin.order.no_payments"),
    }
    dropped = 0
    while True:  # the oldest events give way first when the message would be too long
        shown = ([t("admin.order.earlier_events", None, n=dropped)] if dropped else []) + events[dropped:]
        text = t("admin.order.detail", None, events=lines(shown) or t("admin.order.no_events"), **values)
        if visible_len(text) <= TEXT_LIMIT or dropped >= len(events):
            return clip(text, TEXT_LIMIT)
        dropped += 1


def event_line(event: OrderEvent, zone: ZoneInfo) -> Markup:
    """One step of an order's history, its states as admins say them ("placed → unpaid")."""
    return t(
        "admin.order.event" if event.from_state else "admin.order.event_placed",
        None,
        when=admin_time(event.created_at, zone),
        src=admin_service.state_name(event.from_state) if event.from_state else "",
        dst=admin_service.state_name(event.to_state) if event.to_state else "",
        actor=event.actor,
        note=t("admin.order.event_note", None, note=cut(event.note, 200)) if event.note else "",
    )


def shipping_line(order: Order) -> Markup:
    """Carrier and tracking number once shipped, "not shipped" (with the zone's courier) before, and
    the refund's state when there is one: never an empty placeholder."""
    status = order.refund_status
    refund = t(f"admin.order.refund.{status}", None) if status in REFUND_STATES else Markup("")
    if order.tracking_number:
        shipping = " ".join(p for p in (order.carrier, order.tracking_number) if p)
        return t("admin.order.shipped_with", None, shipping=shipping, refund=refund)
    if order.carrier:  # the zone's courier, named at checkout
        return t("admin.order.not_shipped_carrier", None, carrier=order.carrier, refund=refund)
    return t("admin.order.not_shipped", None, refund=refund)


# --- buttons on the new-paid-order alert ------------------------------------------------------------


@router.callback_query(Pressed(AdminAction.VIEW), AdminOnly())
async def view_button(
    query: CallbackQuery, callback_data: AdminButton, session: AsyncSession, settings: Settings
) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.answer(
            await outcome(
                "order", _actor(query), lambda: order_detail_of(session, callback_data.order, settings.shop_zone)
            )
        )


async def order_detail_of(session: AsyncSession, public_id: str, zone: ZoneInfo) -> str:
    return await order_detail(session, await admin_service.find_order(session, public_id), zone)


async def pressed_order(
    query: CallbackQuery, callback_data: AdminButton, session: AsyncSession
) -> tuple[Message, Order] | None:
    """The message an admin button is on and the order it names; None (the refusal said under the
    message when the order cannot be found) when there is nothing to act on."""
    message = query.message
    if not isinstance(message, Message):
        return None
    try:
        return message, await admin_service.find_order(session, callback_data.order)
    except DomainError as exc:
        await message.answer(refusal(exc))
        return None


@router.callback_query(Pressed(AdminAction.SHIP), AdminOnly())
async def ship_button(
    query: CallbackQuery, callback_data: AdminButton, session: AsyncSession, state: FSMContext
) -> None:
    """Ask for the tracking number as a reply (ForceReply), and show the exact /ship command too."""
    await query.answer()
    found = await pressed_order(query, callback_data, session)
    if found is None:
        return
    message, order = found
    if order.state != sm.PROCESSING:
        named = admin_service.state_name(order.state)
        await message.answer(t("admin.ship.not_processing", None, order=order.public_id, state=named))
        return
    zone = get_zone(order.zone)
    hint = (
        t("admin.ship.hint_dhl")
        if zone.tracked
        else t("admin.ship.hint_courier", None, carrier=order.carrier or zone.carrier)
    )
    prompt = await message.answer(
        t("admin.ship.prompt", None, order=order.public_id, hint=hint),
        reply_markup=ForceReply(input_field_placeholder=plain("admin.ship.placeholder")),
    )
    await state.set_state(ShipFlow.tracking)
    await state.set_data({"order": order.public_id, "prompt": prompt.message_id})


@router.callback_query(Pressed(AdminAction.CANCEL), AdminOnly())
async def cancel_button(query: CallbackQuery, callback_data: AdminButton, session: AsyncSession) -> None:
    """Cancel… asks first: the order, its state and total, and a "Yes, cancel it" button."""
    await query.answer()
    found = await pressed_order(query, callback_data, session)
    if found is None:
        return
    message, order = found
    refusal = admin_service.cancel_refusal(order)
    if refusal is not None:
        await message.answer(t(refusal.key, None, **refusal.values))
        return
    confirm = AdminButton(action=AdminAction.CONFIRM_CANCEL, order=order.public_id)
    await message.answer(
        t(
            "admin.cancel.confirm",
            None,
            order=order.public_id,
            state=admin_service.state_name(order.state),
            total=format_money(order.total, order.currency),
        ),
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[
                [InlineKeyboardButton(text=t("admin.cancel.confirm_button"), callback_data=confirm.pack())]
            ]
        ),
    )


@router.callback_query(Pressed(AdminAction.CONFIRM_CANCEL), AdminOnly(fresh=True))  # it refunds: asked afresh
async def confirm_cancel_button(
    query: CallbackQuery,
    callback_data: AdminButton,
    session: AsyncSession,
    settings: Settings,
    providers: dict[str, Any],
) -> None:
    """The result replaces the confirmation, so it cannot be pressed twice."""
    await query.answer()
    message = query.message
    if not isinstance(message, Message):
        return
    actor = _actor(query)
    text = await outcome(
        "cancel",
        actor,
        lambda: cancel_text(
            session, callback_data.order, "cancelled from the alert", actor, settings, providers, _name(query)
        ),
    )
    await message.edit_text(text, reply_markup=None)


@router.callback_query()  # the router's filter let only admin buttons in
async def refuse_button(query: CallbackQuery, callback_data: AdminButton) -> None:
    """An admin button pressed by someone `AdminOnly` turned away, or outside the admin group."""
    log.warning(
        "admin.refused_button",
        extra={"user_id": query.from_user.id, "chat_id": _chat_id(query), "action": callback_data.action.value},
    )
    await query.answer(t("admin.refused"), show_alert=True)


# --- the tracking number, answered to the Ship… prompt ----------------------------------------------


@router.message(ShipReply())
async def ship_reply(
    message: Message, ship_order: str, bot: Bot, session: AsyncSession, settings: Settings, state: FSMContext
) -> None:
    """The reply with "<TRACKING_NUMBER> [carrier]": the same as /ship <ORDER_ID> <TRACKING_NUMBER> [carrier]."""
    user_id = message.from_user.id if message.from_user else 0
    if not await is_admin(bot, settings, message.chat.id, user_id):
        log.warning("admin.refused", extra={"command": "ship_reply", "user_id": user_id, "chat_id": message.chat.id})
        await message.reply(t("admin.refused"))
        return
    await state.clear()
    actor = f"admin:{user_id}"
    args = [ship_order, *(message.text or "").split()]
    await message.reply(await outcome("ship", actor, lambda: ship_text(session, args, actor, _name(message))))
