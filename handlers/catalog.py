"""Catalogue: categories → products (keyset pages) → product card with quantity and Add to cart."""
from __future__ import annotations

import html
import logging

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer, Product
from handlers.render import kb, send, show
from services import cart as cart_service
from services import catalog
from services.errors import DomainError, NotFound
from services.i18n import t
from services.money import format_money

log = logging.getLogger(__name__)
router = Router(name="catalog")


class TypeQuantity(StatesGroup):
    waiting = State()


# --- screens ----------------------------------------------------------------------------------------


async def categories_screen(session: AsyncSession, lang: str) -> tuple[str, object]:
    cats = await catalog.list_categories(session)
    if not cats:
        return t("catalog.empty", lang), kb([(t("menu.back", lang), "menu:main")])
    rows = [[(t("catalog.category_button", lang, name=c.name, count=n), f"cat:c:{c.id}")] for c, n in cats]
    rows.append([(t("menu.cart", lang), "menu:cart"), (t("menu.back", lang), "menu:main")])
    return t("catalog.categories", lang), kb(*rows)


async def category_screen(session: AsyncSession, category_id: int, lang: str, size: int,
                          after: str | None = None, before: str | None = None) -> tuple[str, object] | None:
    page = await catalog.category_page(session, category_id, after=after, before=before, size=size)
    if not page.products:
        return None
    name = page.products[0].category.name
    lines = [t("catalog.category_title", lang, name=html.escape(name))]
    rows: list[list[tuple[str, str]]] = []
    for p in page.products:
        stock = t("catalog.in_stock_short", lang, n=p.stock) if p.stock > 0 else t("catalog.out_of_stock_short", lang)
        rows.append([(t("catalog.product_button", lang, name=_short(p.name), price=format_money(p.price_kes, "KES"),
                        stock=stock), f"cat:v:{p.id}:1")])
    nav = []
    if page.prev_cursor:
        nav.append(("◀", f"cat:p:{category_id}:b:{page.prev_cursor}"))
    if page.next_cursor:
        nav.append(("▶", f"cat:p:{category_id}:a:{page.next_cursor}"))
    rows.append(nav)
    rows.append([(t("catalog.back_to_categories", lang), "menu:catalog"), (t("menu.cart", lang), "menu:cart")])
    return "\n".join(lines), kb(*rows)


def product_card(product: Product, qty: int, lang: str) -> tuple[str, object]:
    text = t("catalog.product_card", lang, name=html.escape(product.name),
             description=html.escape(product.description), kes=format_money(product.price_kes, "KES"),
             usd=format_money(product.price_usd, "USD"), sku=html.escape(product.sku))
    back = (t("catalog.back_to_category", lang), f"cat:c:{product.category_id}")
    if product.stock <= 0:
        text += "\n" + t("catalog.out_of_stock", lang)
        return text, kb([(t("catalog.notify_me", lang), f"cat:n:{product.id}")],
                        [back, (t("menu.cart", lang), "menu:cart")])
    qty = max(1, min(qty, product.stock, cart_service.MAX_LINE_QTY))
    text += "\n" + t("catalog.stock_left", lang, n=product.stock)
    return text, kb(
        [("−", f"cat:v:{product.id}:{max(1, qty - 1)}"), (str(qty), f"cat:v:{product.id}:{qty}"),
         ("+", f"cat:v:{product.id}:{min(qty + 1, product.stock, cart_service.MAX_LINE_QTY)}")],
        [(t("catalog.add_to_cart", lang, qty=qty), f"cat:a:{product.id}:{qty}")],
        [(t("catalog.type_quantity", lang), f"cat:t:{product.id}")],
        [back, (t("menu.cart", lang), "menu:cart")],
    )


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --- handlers ---------------------------------------------------------------------------------------


@router.callback_query(F.data == "menu:catalog")
async def open_catalog(query: CallbackQuery, session: AsyncSession, lang: str) -> None:
    await query.answer()
    text, markup = await categories_screen(session, lang)
    await show(query, text, markup)  # type: ignore[arg-type]


@router.message(Command("catalog"))
async def catalog_command(message: Message, session: AsyncSession, lang: str) -> None:
    text, markup = await categories_screen(session, lang)
    await send(message, text, markup)  # type: ignore[arg-type]


@router.callback_query(F.data.regexp(r"^cat:c:(\d+)$").as_("m"))
async def open_category(query: CallbackQuery, m, session: AsyncSession, lang: str, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    await _show_category(query, session, lang, settings, int(m.group(1)))


@router.callback_query(F.data.regexp(r"^cat:p:(\d+):([ab]):(\d+\.\d+)$").as_("m"))
async def turn_page(query: CallbackQuery, m, session: AsyncSession, lang: str, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    direction, cursor = m.group(2), m.group(3)
    await _show_category(query, session, lang, settings, int(m.group(1)),
                         after=cursor if direction == "a" else None, before=cursor if direction == "b" else None)


async def _show_category(query: CallbackQuery, session: AsyncSession, lang: str, settings: Settings,
                         category_id: int, after: str | None = None, before: str | None = None) -> None:
    screen = await category_screen(session, category_id, lang, settings.page_size, after=after, before=before)
    if screen is None:
        await query.answer(t("catalog.category_empty", lang), show_alert=True)
        return
    await query.answer()
    await show(query, *screen)  # type: ignore[arg-type]


@router.callback_query(F.data.regexp(r"^cat:v:(\d+):(\d+)$").as_("m"))
async def view_product(query: CallbackQuery, m, session: AsyncSession, lang: str) -> None:  # type: ignore[no-untyped-def]
    product = await _product_or_answer(query, session, int(m.group(1)), lang)
    if product is None:
        return
    await query.answer()
    text, markup = product_card(product, int(m.group(2)), lang)
    photo = product.photo_url if not (query.message and getattr(query.message, "photo", None)) else None
    await show(query, text, markup, photo=photo)  # type: ignore[arg-type]


@router.callback_query(F.data.regexp(r"^cat:a:(\d+):(\d+)$").as_("m"))
async def add_to_cart(query: CallbackQuery, m, session: AsyncSession, customer: Customer, lang: str) -> None:  # type: ignore[no-untyped-def]
    product = await _product_or_answer(query, session, int(m.group(1)), lang)
    if product is None:
        return
    await _add_and_confirm(query, session, customer, product, int(m.group(2)), lang)


async def _add_and_confirm(query: CallbackQuery, session: AsyncSession, customer: Customer, product: Product,
                           qty: int, lang: str) -> None:
    try:
        before = await cart_service.quantity_in_cart(session, customer.id, product.id)
        now = await cart_service.add(session, customer.id, product, qty)
    except DomainError as exc:
        await query.answer(t(exc.key, lang, **exc.values), show_alert=True)
        return
    if now < before + qty:
        await query.answer(t("cart.capped", lang, qty=now, name=_short(product.name, 60)), show_alert=True)
    else:
        await query.answer(t("cart.added", lang, qty=qty, name=_short(product.name, 60), total=now))


@router.callback_query(F.data.regexp(r"^cat:n:(\d+)$").as_("m"))
async def notify_me(query: CallbackQuery, m, session: AsyncSession, customer: Customer, lang: str) -> None:  # type: ignore[no-untyped-def]
    product = await _product_or_answer(query, session, int(m.group(1)), lang)
    if product is None:
        return
    if product.stock > 0:
        await query.answer(t("catalog.back_already", lang), show_alert=True)
        return
    await catalog.watch_product(session, customer.id, product.id)
    await query.answer(t("catalog.watching", lang, name=_short(product.name, 60)), show_alert=True)


@router.callback_query(F.data.regexp(r"^cat:t:(\d+)$").as_("m"))
async def ask_quantity(query: CallbackQuery, m, session: AsyncSession, state: FSMContext, lang: str) -> None:  # type: ignore[no-untyped-def]
    product = await _product_or_answer(query, session, int(m.group(1)), lang)
    if product is None:
        return
    await query.answer()
    await state.set_state(TypeQuantity.waiting)
    await state.update_data(product_id=product.id)
    if query.message is not None:
        await query.message.answer(t("catalog.ask_quantity", lang, name=html.escape(product.name), max=product.stock))


@router.message(StateFilter(TypeQuantity.waiting), Command("cancel"))
async def cancel_quantity(message: Message, state: FSMContext, lang: str) -> None:
    await state.clear()
    await message.answer(t("catalog.quantity_cancelled", lang))


@router.message(StateFilter(TypeQuantity.waiting), ~F.text.startswith("/"))
async def typed_quantity(message: Message, session: AsyncSession, state: FSMContext, customer: Customer,
                         lang: str) -> None:
    text = (message.text or "").strip()
    if not text.isdigit() or int(text) <= 0:
        await message.answer(t("catalog.quantity_invalid", lang))
        return
    data = await state.get_data()
    try:
        product = await catalog.get_product(session, data.get("product_id"))
        before = await cart_service.quantity_in_cart(session, customer.id, product.id)
        now = await cart_service.add(session, customer.id, product, int(text))
    except DomainError as exc:
        await state.clear()
        await message.answer(t(exc.key, lang, **exc.values))
        return
    await state.clear()
    key = "cart.capped" if now < before + int(text) else "cart.added_typed"
    await message.answer(t(key, lang, qty=now, name=html.escape(product.name), total=now),
                         reply_markup=kb([(t("menu.cart", lang), "menu:cart"),
                                          (t("catalog.continue", lang), f"cat:c:{product.category_id}")]))


async def send_product_by_sku(message: Message, session: AsyncSession, sku: str, lang: str) -> bool:
    """Deep link `/start p_<SKU>`: open that product directly. False when there is no such product."""
    try:
        product = await catalog.get_product(session, sku=sku)
    except NotFound:
        return False
    text, markup = product_card(product, 1, lang)
    await send(message, text, markup, photo=product.photo_url)  # type: ignore[arg-type]
    return True


async def _product_or_answer(query: CallbackQuery, session: AsyncSession, product_id: int, lang: str) -> Product | None:
    try:
        return await catalog.get_product(session, product_id)
    except NotFound:
        await query.answer(t("catalog.product_gone", lang), show_alert=True)
        return None
