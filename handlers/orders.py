"""My orders, order detail and /track — only ever the customer's own orders."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from aiogram import F
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer, Order
from handlers.buttons import (
    MENU_CATALOG,
    MENU_MAIN,
    MENU_ORDERS,
    Menu,
    MenuScreen,
    OrderAction,
    OrderButton,
    Pay,
    PayAction,
    ReturnAction,
    ReturnStep,
)
from handlers.filters import Buttons
from handlers.render import kb, send, show
from handlers.routing import Routes
from services import orders as order_service
from services.errors import NotFound
from services.i18n import plain, t
from services.markup import Markup, cut
from services.money import format_money
from services.times import customer_date, customer_time

router = Routes("orders")
router.callback_query.filter(Buttons(OrderButton, exact=(MENU_ORDERS,)))
ITEMS_BUDGET = 2500  # characters of item lines in one message; the rest (totals, address) must fit too


def join_bounded(lines: list[Markup], lang: str, budget: int = ITEMS_BUDGET) -> Markup:
    """Item lines joined, cut short with "… and N more" so the message stays within 4096 characters."""
    shown: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > budget:
            shown.append(t("orders.more_items", lang, n=len(lines) - len(shown)))
            break
        shown.append(line)
        used += len(line) + 1
    return Markup("\n").join(shown)


def not_found(exc: NotFound, lang: str) -> str:
    """The "no such order" answer; the id is the customer's own typing, so shortened (t escapes it)."""
    return t(exc.key, lang, order=cut(exc.values.get("order", ""), 24))


def order_line(order: Order, lang: str, zone: ZoneInfo) -> str:
    return t(
        "orders.line",
        lang,
        order=order.public_id,
        state=t(f"state.{order.state}", lang),
        total=format_money(order.total, order.currency, lang),
        date=customer_date(order.created_at, zone, lang),
    )


async def orders_screen(
    session: AsyncSession, customer: Customer, lang: str, zone: ZoneInfo
) -> tuple[str, InlineKeyboardMarkup]:
    orders = await order_service.customer_orders(session, customer.id)
    if not orders:
        return t("orders.none", lang), kb([(t("menu.catalog", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)])
    text = Markup("\n").join([t("orders.title", lang)] + [order_line(o, lang, zone) for o in orders])
    rows = [
        [
            (
                f"{o.public_id} · {plain(f'state.{o.state}', lang)}",
                OrderButton(action=OrderAction.VIEW, public_id=o.public_id).pack(),
            )
        ]
        for o in orders
    ]
    rows.append([(t("menu.back", lang), MENU_MAIN)])
    return text, kb(*rows)


def order_detail(order: Order, lang: str, zone: ZoneInfo) -> Markup:
    items = join_bounded(
        [
            t(
                "orders.item",
                lang,
                qty=i.quantity,
                name=i.name,
                amount=format_money(i.unit_price * i.quantity, order.currency, lang),
            )
            for i in order.items
        ],
        lang,
    )
    text = t(
        "orders.detail",
        lang,
        order=order.public_id,
        state=t(f"state.{order.state}", lang),
        items=items,
        total=format_money(order.total, order.currency, lang),
        updated=customer_time(order.updated_at, zone, lang),
    )
    text += "\n" + t("orders.delivery", lang, zone=t(f"zone.{order.zone}.short", lang))
    if order.tracking_number:
        text += "\n" + t("orders.tracking", lang, carrier=order.carrier or "-", tracking=order.tracking_number)
        link = order_service.tracking_link(order)
        if link:
            text += "\n" + link  # a plain str: Markup's + escapes it (the & in its query)
    elif order.state in (order_service.PROCESSING,):
        text += "\n" + t("orders.preparing", lang)
    if order.tracking_description:
        text += "\n" + t(
            "orders.latest_event" if order.tracking_place else "orders.latest_event_unplaced",
            lang,
            event=cut(order.tracking_description, 300),
            place=cut(order.tracking_place or "", 200),
            when=customer_time(order.tracking_time or order.updated_at, zone, lang),
        )
    if order.state == order_service.AWAITING_PAYMENT:
        text += "\n" + t("orders.reserved_until", lang, until=customer_time(order.reserved_until, zone, lang))
    return text


def detail_keyboard(order: Order, lang: str) -> InlineKeyboardMarkup:
    rows = []
    if order.state == order_service.AWAITING_PAYMENT:
        rows.append([(t("orders.pay_now", lang), Pay(action=PayAction.OFFER, public_id=order.public_id).pack())])
    if order.state == order_service.DELIVERED:  # the window is checked when it is pressed
        rows.append(
            [(t("returns.button.start", lang), ReturnStep(action=ReturnAction.START, public_id=order.public_id).pack())]
        )
    rows.append([(t("menu.orders", lang), MENU_ORDERS), (t("menu.back", lang), MENU_MAIN)])
    return kb(*rows)


@router.callback_query(Menu.filter(F.screen == MenuScreen.ORDERS))
async def my_orders(
    query: CallbackQuery, session: AsyncSession, customer: Customer, lang: str, settings: Settings
) -> None:
    await query.answer()
    await show(query, *await orders_screen(session, customer, lang, settings.shop_zone))


@router.message(Command("orders"))
async def orders_command(
    message: Message, session: AsyncSession, customer: Customer, lang: str, settings: Settings
) -> None:
    await send(message, *await orders_screen(session, customer, lang, settings.shop_zone))


@router.callback_query(OrderButton.filter(F.action == OrderAction.VIEW))
async def view_order(
    query: CallbackQuery,
    callback_data: OrderButton,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    settings: Settings,
) -> None:
    public_id = callback_data.public_id
    try:
        order = await order_service.get_order(session, public_id, customer_id=customer.id)
    except NotFound as exc:
        await query.answer(plain(exc.key, lang, order=cut(exc.values.get("order", ""), 24)), show_alert=True)
        return
    await query.answer()
    if query.message is not None:
        await query.message.answer(
            order_detail(order, lang, settings.shop_zone), reply_markup=detail_keyboard(order, lang)
        )


@router.message(Command("track"))
async def track(
    message: Message,
    command: CommandObject,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    settings: Settings,
) -> None:
    public_id = (command.args or "").strip()
    if not public_id:
        await message.answer(t("orders.track_usage", lang))
        return
    try:
        order = await order_service.get_order(session, public_id.split()[0], customer_id=customer.id)
    except NotFound as exc:
        await message.answer(not_found(exc, lang))
        return
    await message.answer(order_detail(order, lang, settings.shop_zone), reply_markup=detail_keyboard(order, lang))
