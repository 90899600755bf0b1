"""Admin commands in the private admin group: /restock /stock /orders /order /ship /delivered /cancel,
and the buttons on the new-paid-order alert (View, Ship…, Cancel…). Only admins, only in the group.

Authorisation (AdminCommand / AdminButton filters): the chat must be ADMIN_CHAT_ID and the user in
ADMIN_USER_IDS or an administrator of that group (getChatMember, cached for 5 minutes in-process;
asked again, past the cache, right before /cancel or the confirmed Cancel… button, which refund).
The filters match the admin updates and say whether they are authorised, rather than letting a
refused one fall through to the customer routers: a refusal gets an answer and a log line.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from aiogram import Bot, F
from aiogram.filters import Filter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ForceReply, Message, TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Order
from handlers.render import TEXT_LIMIT, clip, kb
from handlers.routing import FeatureRouter
from services import admin as admin_service
from services import orders as sm
from services.errors import DomainError
from services.i18n import plain, t
from services.markup import Markup, cut, visible_len
from services.money import format_money
from services.zones import get_zone

log = logging.getLogger(__name__)
router = FeatureRouter("admin", buttons=("adm:",))
# Cheap first checks, so a customer's press or text passes this router at once: admin buttons carry
# "adm:", admin commands start with "/", and the tracking number is a reply to our prompt.
router.message.filter(F.text.startswith("/") | F.reply_to_message)

ADMIN_ONLY = ("restock", "stock", "order", "ship", "delivered")  # never customer commands: refused anywhere
IN_GROUP = ADMIN_ONLY + ("orders", "cancel")  # /orders and /cancel mean admin things only in the group
BUTTON_ACTIONS = ("v", "s", "c", "cc")
CACHE_SECONDS = 300
RECHECKED_COMMANDS = ("cancel",)  # cancel and refund: an admin demoted a minute ago must not
RECHECKED_BUTTONS = ("cc",)  # still be able to, so their rights are asked of Telegram again
_member_cache: dict[tuple[int, int], tuple[float, bool]] = {}


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


class AdminCommand(Filter):
    """Matches admin commands (in the admin group all of them, elsewhere only the admin-only ones so
    they can be refused) and adds `command`, `args` and `authorised` to the handler data."""

    async def __call__(self, message: TelegramObject, bot: Bot, settings: Settings) -> bool | dict[str, Any]:
        if not isinstance(message, Message) or message.from_user is None:
            return False
        text = message.text or ""
        if not text.startswith("/"):
            return False
        head, *args = text.split()
        name = head[1:].split("@")[0].lower()
        if name not in (IN_GROUP if _in_group(settings, message.chat.id) else ADMIN_ONLY):
            return False
        authorised = await is_admin(bot, settings, message.chat.id, message.from_user.id,
                                    fresh=name in RECHECKED_COMMANDS)
        return {"command": name, "args": args, "authorised": authorised}


class AdminButton(Filter):
    """Matches the admin buttons `adm:<action>:<ORDER_ID>`; adds `action`, `public_id`, `authorised`."""

    async def __call__(self, query: TelegramObject, bot: Bot, settings: Settings) -> bool | dict[str, Any]:
        if not isinstance(query, CallbackQuery) or not (query.data or "").startswith("adm:"):
            return False
        parts = (query.data or "").split(":")
        if len(parts) != 3 or parts[1] not in BUTTON_ACTIONS:
            return False
        chat_id = query.message.chat.id if query.message else 0
        return {"action": parts[1], "public_id": parts[2],
                "authorised": await is_admin(bot, settings, chat_id, query.from_user.id,
                                             fresh=parts[1] in RECHECKED_BUTTONS)}


class ShipReply(Filter):
    """A reply, in the admin group, to the bot's "tracking number?" prompt of the Ship… button."""

    async def __call__(self, message: TelegramObject, settings: Settings, state: FSMContext) -> bool | dict[str, Any]:
        if not isinstance(message, Message) or not _in_group(settings, message.chat.id):
            return False
        if message.reply_to_message is None or (message.text or "/").startswith("/"):
            return False
        if await state.get_state() != ShipFlow.tracking.state:
            return False
        data = await state.get_data()
        if data.get("prompt") != message.reply_to_message.message_id:
            return False
        return {"ship_order": data.get("order", "")}


# --- commands -------------------------------------------------------------------------------------


@router.message(AdminCommand())
async def admin_command(message: Message, command: str, args: list[str], authorised: bool, session: AsyncSession,
                        settings: Settings, providers: dict[str, Any]) -> None:
    user_id = message.from_user.id if message.from_user else 0
    if not authorised:
        log.warning("admin.refused", extra={"command": command, "user_id": user_id, "chat_id": message.chat.id})
        await message.reply(t("admin.refused"))
        return
    await message.reply(await run_command(command, args, f"admin:{user_id}", session, settings, providers))


async def run_command(name: str, args: list[str], actor: str, session: AsyncSession, settings: Settings,
                      providers: dict[str, Any]) -> str:
    """The reply to one admin command. A refusal rolls the session back: nothing half-done is kept."""
    try:
        return await COMMANDS[name](session, args, actor, settings, providers)
    except (ValueError, IndexError):
        await session.rollback()
        return t(f"admin.usage.{name}")
    except DomainError as exc:
        await session.rollback()
        log.info("admin.refused_action", extra={"command": name, "actor": actor, "reason": exc.key})
        return refusal(exc)


def refusal(exc: DomainError) -> str:
    """The text of a refused action; its values may echo what the admin typed, so they are shortened
    (and escaped by `t`)."""
    return t(exc.key, None, **{k: cut(v, 100) if isinstance(v, str) else v for k, v in exc.values.items()})


async def cmd_restock(session: AsyncSession, args: list[str], actor: str, *_: Any) -> str:
    if len(args) != 2:
        raise ValueError
    product, told = await admin_service.restock(session, args[0], int(args[1]), actor)
    return t("admin.restock.done", None, sku=product.sku, stock=product.stock,
             reserved=product.reserved, sold=product.sold, told=told)


async def cmd_stock(session: AsyncSession, args: list[str], actor: str, settings: Settings, *_: Any) -> str:
    products = await admin_service.stock_report(session, " ".join(args) or None)
    if not products:
        return t("admin.stock.none")
    lines = [t("admin.stock.line", None, sku=p.sku, free=p.stock, reserved=p.reserved, sold=p.sold,
               flag=" ⚠️" if p.active and p.stock < settings.low_stock_threshold else "",
               inactive="" if p.active else t("admin.stock.inactive"))
             for p in products]
    return fit_lines(t("admin.stock.title", None, threshold=settings.low_stock_threshold), lines,
                     more="admin.stock.more")


async def cmd_orders(session: AsyncSession, args: list[str], *_: Any) -> str:
    if len(args) > 1:
        raise ValueError
    state = args[0].lower() if args else sm.PROCESSING
    if state not in sm.STATES:
        raise ValueError
    orders = await sm.orders_in_state(session, state, limit=50)
    if not orders:
        return t("admin.orders.none", None, state=state)
    lines = [t("admin.orders.line", None, order=o.public_id, total=format_money(o.total, o.currency), zone=o.zone,
               items=sum(i.quantity for i in o.items), age=o.created_at.strftime("%d %b %H:%M")) for o in orders]
    total = await admin_service.count_in_state(session, state)
    return fit_lines(t("admin.orders.title", None, state=state, n=total), lines, hidden=total - len(orders))


async def cmd_order(session: AsyncSession, args: list[str], *_: Any) -> str:
    if len(args) != 1:
        raise ValueError
    return await order_detail(session, await admin_service.find_order(session, args[0]))


async def cmd_ship(session: AsyncSession, args: list[str], actor: str, *_: Any) -> str:
    if len(args) < 2:
        raise ValueError
    order = await admin_service.ship(session, args[0], args[1], " ".join(args[2:]) or None, actor)
    key = "admin.ship.done_dhl" if order.tracking_next_check_at else "admin.ship.done"
    return t(key, None, order=order.public_id, carrier=order.carrier or "-", tracking=order.tracking_number or "-")


async def cmd_delivered(session: AsyncSession, args: list[str], actor: str, *_: Any) -> str:
    if len(args) != 1:
        raise ValueError
    order = await admin_service.mark_delivered(session, args[0], actor)
    key = "admin.delivered.done_dhl" if (order.carrier or "").upper() == "DHL" else "admin.delivered.done"
    return t(key, None, order=order.public_id)


async def cmd_cancel(session: AsyncSession, args: list[str], actor: str, settings: Settings,
                     providers: dict[str, Any]) -> str:
    if not args:
        raise ValueError
    order, outcome, payment = await admin_service.cancel(session, args[0], " ".join(args[1:]) or None, actor,
                                                         providers, settings)
    return t(f"admin.cancel.{outcome}", None, order=order.public_id,
             receipt=(payment.receipt_number if payment else None) or "-",
             amount=format_money(payment.amount, payment.currency) if payment else "-")


COMMANDS = {"restock": cmd_restock, "stock": cmd_stock, "orders": cmd_orders, "order": cmd_order, "ship": cmd_ship,
            "delivered": cmd_delivered, "cancel": cmd_cancel}


# --- rendering ------------------------------------------------------------------------------------


def fit_lines(title: Markup, lines: list[Markup], *, hidden: int = 0, limit: int = TEXT_LIMIT,
              more: str = "admin.more") -> Markup:
    """Title and as many whole lines as fit in one message (never cutting an HTML tag in half),
    then a "… N more" line for the rest."""
    return Markup("\n").join([title, *_take(lines, limit - len(title) - 1, hidden, more)])


def _take(lines: list[Markup], budget: int, hidden: int = 0, more: str = "admin.more") -> list[Markup]:
    """The leading lines that fit in `budget` characters (joined by newlines), with room kept for
    a closing "… N more" line when some (or `hidden` others never loaded) are left out."""
    room = budget - 120  # the "more" line
    shown: list[str] = []
    for line in lines:
        if len(line) + 1 > room:
            break
        shown.append(line)
        room -= len(line) + 1
    hidden += len(lines) - len(shown)
    return shown + ([t(more, None, n=hidden)] if hidden > 0 else [])


async def order_detail(session: AsyncSession, order: Order) -> Markup:
    """Everything about one order, for the admins: items, customer contact, address, payments, events.
    Every line comes from `t` (values escaped); customers' free-text fields are cut to a bound first."""
    customer = order.customer
    lines = Markup("\n").join
    items = [t("admin.order.item", None, qty=i.quantity, name=i.name, sku=i.sku,
               amount=format_money(i.unit_price * i.quantity, order.currency)) for i in order.items]
    payments = [t("admin.order.payment", None, provider=p.provider, state=p.state,
                  amount=format_money(p.amount, p.currency), receipt=p.receipt_number or "",
                  when=f"{p.created_at:%d %b %H:%M}")
                for p in await admin_service.order_payments(session, order.id)]
    events = [t("admin.order.event", None, when=f"{e.created_at:%d %b %H:%M}", src=e.from_state or "∅",
                dst=e.to_state or "∅", actor=e.actor, note=t("admin.order.event_note", None, note=cut(e.note, 200))
                if e.note else "") for e in await sm.events_of(session, order.id)]
    values = dict(order=order.public_id, state=order.state, items=lines(_take(items, 1500)),
                  subtotal=format_money(order.subtotal, order.currency),
                  shipping=format_money(order.shipping, order.currency), total=format_money(order.total, order.currency),
                  customer_id=order.customer_id, name=cut(customer.first_name or "-", 64),
                  username=cut(customer.username or "-", 64), phone="+" + order.phone,
                  email=cut(order.email, 254), address=cut(order.address, 500), zone=order.zone,
                  carrier=order.carrier or "-", tracking=order.tracking_number or "-",
                  refund=order.refund_status or "-", payments=lines(_take(payments, 800)) or "—")
    dropped = 0
    while True:  # the oldest events give way first when the message would be too long
        shown = ([t("admin.order.earlier_events", None, n=dropped)] if dropped else []) + events[dropped:]
        text = t("admin.order.detail", None, events=lines(shown) or "—", **values)
        if visible_len(text) <= TEXT_LIMIT or dropped >= len(events):
            return clip(text, TEXT_LIMIT)
        dropped += 1


# --- buttons on the new-paid-order alert ------------------------------------------------------------


@router.callback_query(AdminButton())
async def alert_button(query: CallbackQuery, action: str, public_id: str, authorised: bool, session: AsyncSession,
                       settings: Settings, providers: dict[str, Any], state: FSMContext) -> None:
    chat_id = query.message.chat.id if query.message else 0
    if not authorised:
        log.warning("admin.refused_button", extra={"user_id": query.from_user.id, "chat_id": chat_id,
                                                   "action": action})
        await query.answer(t("admin.refused"), show_alert=True)
        return
    await query.answer()
    message = query.message
    if not isinstance(message, Message):
        return
    actor = f"admin:{query.from_user.id}"
    if action == "v":
        await message.answer(await run_command("order", [public_id], actor, session, settings, providers))
    elif action == "s":
        await ship_prompt(message, session, public_id, state)
    elif action == "c":
        await cancel_confirm(message, session, public_id)
    else:  # "cc": confirmed; the result replaces the confirmation, so it cannot be pressed twice
        text = await run_command("cancel", [public_id, "cancelled from the alert"], actor, session, settings, providers)
        await message.edit_text(text, reply_markup=None)


async def ship_prompt(message: Message, session: AsyncSession, public_id: str, state: FSMContext) -> None:
    """Ask for the tracking number as a reply (ForceReply), and show the exact /ship command too."""
    try:
        order = await admin_service.find_order(session, public_id)
    except DomainError as exc:
        await message.answer(refusal(exc))
        return
    if order.state != sm.PROCESSING:
        await message.answer(t("admin.ship.not_processing", None, order=order.public_id, state=order.state))
        return
    zone = get_zone(order.zone)
    hint = t("admin.ship.hint_dhl") if zone.tracked else t("admin.ship.hint_courier", None,
                                                           carrier=order.carrier or zone.carrier)
    prompt = await message.answer(t("admin.ship.prompt", None, order=order.public_id, hint=hint),
                                  reply_markup=ForceReply(input_field_placeholder=plain("admin.ship.placeholder")))
    await state.set_state(ShipFlow.tracking)
    await state.set_data({"order": order.public_id, "prompt": prompt.message_id})


@router.message(ShipReply())
async def ship_reply(message: Message, ship_order: str, bot: Bot, session: AsyncSession, settings: Settings,
                     providers: dict[str, Any], state: FSMContext) -> None:
    """The reply with "<TRACKING_NUMBER> [carrier]": the same as /ship <ORDER_ID> <TRACKING_NUMBER> [carrier]."""
    user_id = message.from_user.id if message.from_user else 0
    if not await is_admin(bot, settings, message.chat.id, user_id):
        log.warning("admin.refused", extra={"command": "ship_reply", "user_id": user_id, "chat_id": message.chat.id})
        await message.reply(t("admin.refused"))
        return
    await state.clear()
    args = [ship_order, *(message.text or "").split()]
    await message.reply(await run_command("ship", args, f"admin:{user_id}", session, settings, providers))


async def cancel_confirm(message: Message, session: AsyncSession, public_id: str) -> None:
    try:
        order = await admin_service.find_order(session, public_id)
    except DomainError as exc:
        await message.answer(refusal(exc))
        return
    if order.state not in admin_service.CANCELLABLE:
        await message.answer(t("admin.cancel.not_allowed", None, order=order.public_id, state=order.state))
        return
    await message.answer(t("admin.cancel.confirm", None, order=order.public_id, state=order.state,
                           total=format_money(order.total, order.currency)),
                         reply_markup=kb([(t("admin.cancel.confirm_button"), f"adm:cc:{order.public_id}")]))
