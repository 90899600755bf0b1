"""Admin commands in the private admin group: /restock /stock /orders /order /ship /delivered /cancel,
and the buttons on the new-paid-order alert. Only admins, only in the admin group."""
from __future__ import annotations

import html
import logging
import time
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import CallbackQuery, Message, TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Order
from handlers.render import clip, kb
from services import admin as admin_service
from services import orders as sm
from services.errors import DomainError
from services.i18n import t
from services.money import format_money

log = logging.getLogger(__name__)
router = Router(name="admin")

ADMIN_ONLY = ("restock", "stock", "order", "ship", "delivered")  # never customer commands
IN_GROUP = ADMIN_ONLY + ("orders", "cancel")  # /orders and /cancel mean admin things only in the group
_member_cache: dict[tuple[int, int], tuple[float, bool]] = {}
CACHE_SECONDS = 300


async def is_admin(bot: Bot, settings: Settings, chat_id: int, user_id: int) -> bool:
    if settings.admin_chat_id is None or chat_id != settings.admin_chat_id:
        return False
    if user_id in settings.admin_user_ids:
        return True
    key = (chat_id, user_id)
    cached = _member_cache.get(key)
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        member = await bot.get_chat_member(chat_id, user_id)
        allowed = member.status in ("creator", "administrator")
    except Exception:  # noqa: BLE001 - Telegram unreachable: deny, don't guess
        log.warning("admin.member_lookup_failed", extra={"chat_id": chat_id})
        allowed = False
    _member_cache[key] = (time.monotonic(), allowed)
    return allowed


class AdminCommand(Filter):
    """Matches admin commands: in the admin group all of them, elsewhere only the admin-only ones
    (so they can be refused). Puts `authorised` into the handler data."""

    async def __call__(self, message: TelegramObject, bot: Bot, settings: Settings) -> bool | dict[str, Any]:
        assert isinstance(message, Message)
        text = message.text or ""
        if not text.startswith("/") or message.from_user is None:
            return False
        name = text.split()[0][1:].split("@")[0].lower()
        in_group = settings.admin_chat_id is not None and message.chat.id == settings.admin_chat_id
        if name not in (IN_GROUP if in_group else ADMIN_ONLY):
            return False
        return {"authorised": await is_admin(bot, settings, message.chat.id, message.from_user.id)}


router.message.filter(AdminCommand())


@router.message(F.func(lambda m: True))
async def admin_command(message: Message, authorised: bool, session: AsyncSession, settings: Settings,
                        providers: dict[str, Any]) -> None:
    user_id = message.from_user.id if message.from_user else 0
    name, *args = (message.text or "").split()
    name = name[1:].split("@")[0].lower()
    if not authorised:
        log.warning("admin.refused", extra={"command": name, "user_id": user_id, "chat_id": message.chat.id})
        await message.reply(t("admin.refused"))
        return
    actor = f"admin:{user_id}"
    try:
        reply = await COMMANDS[name](session, args, actor, settings, providers)
    except (ValueError, IndexError):
        reply = t(f"admin.usage.{name}")
    except DomainError as exc:
        reply = t(exc.key, None, **exc.values) if exc.key.startswith(("admin.", "error.")) else t(f"admin.usage.{name}")
    await message.reply(clip(reply))


# --- commands: each returns the reply text ----------------------------------------------------------


async def cmd_restock(session: AsyncSession, args: list[str], actor: str, *_: Any) -> str:
    if len(args) != 2:
        raise ValueError
    product, told = await admin_service.restock(session, args[0], int(args[1]), actor)
    return t("admin.restock.done", None, sku=product.sku, stock=product.stock, reserved=product.reserved,
             sold=product.sold, told=told)


async def cmd_stock(session: AsyncSession, args: list[str], actor: str, settings: Settings, *_: Any) -> str:
    products = await admin_service.stock_report(session, " ".join(args) or None)
    if not products:
        return t("admin.stock.none")
    lines = [t("admin.stock.title")]
    for p in products:
        flag = " ⚠️" if p.active and p.stock < settings.low_stock_threshold else ""
        lines.append(t("admin.stock.line", None, sku=p.sku, free=p.stock, reserved=p.reserved, sold=p.sold,
                       flag=flag, inactive="" if p.active else " (inactive)"))
    return "\n".join(lines)


async def cmd_orders(session: AsyncSession, args: list[str], *_: Any) -> str:
    state = args[0].lower() if args else sm.PROCESSING
    if state not in sm.STATES:
        raise ValueError
    orders = await sm.orders_in_state(session, state)
    if not orders:
        return t("admin.orders.none", None, state=state)
    return "\n".join([t("admin.orders.title", None, state=state)] + [
        t("admin.orders.line", None, order=o.public_id, total=format_money(o.total, o.currency), zone=o.zone,
          age=o.created_at.strftime("%d %b %H:%M")) for o in orders])


async def cmd_order(session: AsyncSession, args: list[str], *_: Any) -> str:
    if len(args) != 1:
        raise ValueError
    return await order_detail(session, await admin_service.find_order(session, args[0]))


async def cmd_ship(session: AsyncSession, args: list[str], actor: str, *_: Any) -> str:
    if len(args) < 2:
        raise ValueError
    order = await admin_service.ship(session, args[0], args[1], " ".join(args[2:]) or None, actor)
    return t("admin.ship.done", None, order=order.public_id, carrier=order.carrier, tracking=order.tracking_number)


async def cmd_delivered(session: AsyncSession, args: list[str], actor: str, *_: Any) -> str:
    if len(args) != 1:
        raise ValueError
    order = await admin_service.mark_delivered(session, args[0], actor)
    return t("admin.delivered.done", None, order=order.public_id)


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


async def order_detail(session: AsyncSession, order: Order) -> str:
    customer = order.customer
    items = "\n".join(f"• {i.quantity} × {html.escape(i.name)} ({i.sku}) — "
                      f"{format_money(i.unit_price * i.quantity, order.currency)}" for i in order.items)
    payments = "\n".join(
        f"• {p.provider} {p.state} {format_money(p.amount, p.currency)} {html.escape(p.receipt_number or '')}"
        for p in await admin_service.order_payments(session, order.id)) or "—"
    events = "\n".join(f"• {e.created_at:%d %b %H:%M} {e.from_state or '∅'} → {e.to_state} ({e.actor})"
                       + (f": {html.escape(e.note)}" if e.note else "") for e in await sm.events_of(session, order.id))
    return t("admin.order.detail", None, order=order.public_id, state=order.state, items=items,
             subtotal=format_money(order.subtotal, order.currency), shipping=format_money(order.shipping, order.currency),
             total=format_money(order.total, order.currency), name=html.escape(customer.first_name),
             username=html.escape(customer.username or "-"), phone="+" + order.phone, email=html.escape(order.email),
             address=html.escape(order.address), zone=order.zone, carrier=html.escape(order.carrier or "-"),
             tracking=html.escape(order.tracking_number or "-"), payments=payments, events=events)


# --- buttons on the new-order alert ----------------------------------------------------------------


@router.callback_query(F.data.regexp(r"^adm:(v|s|c|cc):(HL-[A-Z0-9]{6})$").as_("m"))
async def alert_button(query: CallbackQuery, m, bot: Bot, session: AsyncSession, settings: Settings,  # type: ignore[no-untyped-def]
                       providers: dict[str, Any]) -> None:
    chat_id = query.message.chat.id if query.message else 0
    if not await is_admin(bot, settings, chat_id, query.from_user.id):
        log.warning("admin.refused_button", extra={"user_id": query.from_user.id, "chat_id": chat_id})
        await query.answer(t("admin.refused"), show_alert=True)
        return
    action, public_id = m.group(1), m.group(2)
    await query.answer()
    if query.message is None:
        return
    try:
        if action == "v":
            text, markup = await order_detail(session, await admin_service.find_order(session, public_id)), None
        elif action == "s":
            text, markup = t("admin.ship.hint", None, order=public_id), None
        elif action == "c":
            text = t("admin.cancel.confirm", None, order=public_id)
            markup = kb([(t("admin.cancel.confirm_button"), f"adm:cc:{public_id}")])
        else:
            text, markup = await cmd_cancel(session, [public_id, "cancelled from the alert"],
                                            f"admin:{query.from_user.id}", settings, providers), None
    except DomainError as exc:
        text, markup = t(exc.key, None, **exc.values), None
    await query.message.answer(clip(text), reply_markup=markup)
