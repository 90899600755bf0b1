"""Catalogue: categories → products (keyset pages) → product card with quantity and Add to cart.

Its buttons (`cat:…` and "menu:catalog") are the factories of handlers/buttons.py: Category,
CategoryPage, Card (view / change quantity / add / the quantity shown), ProductButton (type a quantity /
notify me / stop the alert / back to the list page holding the product) and
CardMainMenu (the main menu from a card, which may be a photo and so cannot be edited into text).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import F
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.middlewares import ONE_STATEMENT_EACH
from db.models import Customer, Product
from handlers.buttons import (
    MENU_CART,
    MENU_CATALOG,
    MENU_MAIN,
    Card,
    CardAction,
    CardMainMenu,
    CartAt,
    Category,
    CategoryPage,
    Direction,
    Menu,
    MenuScreen,
    ProductAction,
    ProductButton,
    ReviewAction,
    ReviewButton,
)
from handlers.filters import AnyCommand, Buttons, NotCommand
from handlers.render import CAPTION_LIMIT, TEXT_LIMIT, kb, pager, send, show
from handlers.routing import Routes
from services import cart as cart_service
from services import catalog, reviews
from services.cache import CatalogueMemo
from services.errors import DomainError, NotFound
from services.i18n import plain, t
from services.markup import Markup, cut
from services.money import format_money

log = logging.getLogger(__name__)
router = Routes("catalog")
router.callback_query.filter(Buttons(Category, exact=(MENU_CATALOG,)))

Screen = tuple[str, InlineKeyboardMarkup]


class TypeQuantity(StatesGroup):
    """Waiting for the customer to type how many of `product_id` (kept in the FSM data) they want."""

    waiting = State()


# --- screens ----------------------------------------------------------------------------------------


async def categories_screen(session: AsyncSession, lang: str) -> Screen:
    cats = await catalog.list_categories(session)
    if not cats:
        return t("catalog.empty", lang), kb([(t("menu.back", lang), MENU_MAIN)])
    rows = [
        [(t("catalog.category_button", lang, name=c.name, count=n), Category(action="c", category_id=c.id).pack())]
        for c, n in cats
    ]
    rows.append([(t("menu.cart", lang), MENU_CART), (t("menu.back", lang), MENU_MAIN)])
    return t("catalog.categories", lang), kb(*rows)


async def category_screen(
    session: AsyncSession, category_id: int, lang: str, size: int, after: str | None = None, before: str | None = None
) -> Screen | None:
    """One keyset page of a category, or None when the category has no active product at all."""
    page = await catalog.category_page(session, category_id, after=after, before=before, size=size)
    if not page.products and (after or before):  # the cursor's page emptied since: start over
        page = await catalog.category_page(session, category_id, size=size)
    if not page.products:
        return None
    name = page.products[0].category.name
    rows: list[list[tuple[str, str]]] = []
    for p in page.products:
        stock = t("catalog.in_stock_short", lang, n=p.stock) if p.stock > 0 else t("catalog.out_of_stock_short", lang)
        rows.append(
            [
                (
                    t(
                        "catalog.product_button",
                        lang,
                        name=_short(p.name),
                        price=format_money(p.price_kes, "KES", lang),
                        stock=stock,
                    ),
                    Card(action=CardAction.VIEW, product_id=p.id, qty=1).pack(),
                )
            ]
        )
    nav = []
    if page.prev_cursor or page.next_cursor:
        nav = _pager(category_id, page, await catalog.page_position(session, page, size), lang)
    rows.append(nav)
    rows.append([(t("catalog.back_to_categories", lang), MENU_CATALOG), (t("menu.cart", lang), MENU_CART)])
    rows.append([(t("menu.back", lang), MENU_MAIN)])
    return t("catalog.category_title", lang, name=name), kb(*rows)


def _pager(category_id: int, page: catalog.Page, position: tuple[int, int], lang: str) -> list[tuple[str, str]]:
    """The category's pager: its pages are keyset cursors (this page's is its first product's)."""

    def turn(direction: Direction, cursor: str) -> str:
        return CategoryPage(action="p", category_id=category_id, direction=direction, cursor=cursor).pack()

    previous = turn(Direction.BEFORE, page.prev_cursor) if page.prev_cursor else None
    following = turn(Direction.AFTER, page.next_cursor) if page.next_cursor else None
    here = turn(Direction.AFTER, catalog.cursor_of(page.products[0]))
    return pager(lang, previous, here, following, *position)


def product_card(
    product: Product, qty: int, lang: str, *, in_cart: int = 0, limit: int | None = None, watching: bool = False
) -> Screen:
    """The card: name, description, the price in the shop's currency (a second currency comes with an
    International delivery, at checkout), stock, quantity − 1 / + 1 and Add to cart (or Notify me, or
    Stop alert once `watching`).
    `limit` is the text budget (1024 for a photo caption); a long description is shortened to fit
    rather than cutting the HTML."""
    limit = limit or (CAPTION_LIMIT if product.photo_url else TEXT_LIMIT)
    text = _fit(
        lambda name, description: _card_text(product, name, description, in_cart, lang),
        product.name,
        product.description,
        limit,
    )
    reviewed = product.rating_count > 0
    if product.stock <= 0:
        return text, _card_keyboard(product.id, 0, lang, reviewed, watching)
    return text, _card_keyboard(product.id, clamp_quantity(product, qty), lang, reviewed)


@functools.lru_cache(maxsize=4096)
def _card_keyboard(
    product_id: int, qty: int, lang: str, reviewed: bool, watching: bool = False
) -> InlineKeyboardMarkup:
    """The card's buttons (qty 0: sold out, Notify me or, once set, Stop alert; `reviewed`: a Reviews
    button). They depend on these values only, and a keyboard is never changed once built, so each is
    built once (pydantic builds every button). Back goes to the list page holding the product, Cart
    to the cart page holding its line."""
    nav = [
        [
            (
                t("reviews.button.list", lang),
                ReviewButton(action=ReviewAction.LIST, product_id=product_id).pack(),
            )
        ]
        if reviewed
        else [],
        [
            (
                t("catalog.back_to_category", lang),
                ProductButton(action=ProductAction.BACK, product_id=product_id).pack(),
            ),
            (t("menu.cart", lang), CartAt(action="at", product_id=product_id).pack()),
        ],
        [
            (t("catalog.back_to_categories", lang), MENU_CATALOG),
            (t("menu.back", lang), CardMainMenu(action="m").pack()),
        ],
    ]
    if qty <= 0:
        alert = (
            (t("catalog.stop_alert", lang), ProductAction.STOP_NOTIFY)
            if watching
            else (t("catalog.notify_me", lang), ProductAction.NOTIFY_ME)
        )
        return kb([(alert[0], ProductButton(action=alert[1], product_id=product_id).pack())], *nav)

    def change(to: int) -> str:
        return Card(action=CardAction.QUANTITY, product_id=product_id, qty=to).pack()

    return kb(
        [
            (t("cart.fewer", lang), change(qty - 1)),  # 0 at 1: answered with the least one can order
            (str(qty), Card(action=CardAction.SHOWN, product_id=product_id, qty=qty).pack()),
            (t("cart.more", lang), change(min(qty + 1, cart_service.MAX_LINE_QTY + 1))),
        ],
        [(t("catalog.add_to_cart", lang, qty=qty), Card(action=CardAction.ADD, product_id=product_id, qty=qty).pack())],
        [
            (
                t("catalog.type_quantity", lang),
                ProductButton(action=ProductAction.TYPE_QUANTITY, product_id=product_id).pack(),
            )
        ],
        *nav,
    )


def clamp_quantity(product: Product, qty: int) -> int:
    return max(1, min(qty, product.stock, cart_service.MAX_LINE_QTY))


def _card_text(product: Product, name: str, description: str, in_cart: int, lang: str) -> str:
    parts = [
        t(
            "catalog.product_card",
            lang,
            name=name,
            description=description,
            kes=format_money(product.price_kes, "KES", lang),
            sku=product.sku,
        )
    ]
    parts.append(
        t("catalog.stock_left", lang, n=product.stock) if product.stock > 0 else t("catalog.out_of_stock", lang)
    )
    rating = reviews.rating_line(product, lang)
    if rating is not None:
        parts.append(rating)
    if in_cart:
        parts.append(t("catalog.in_cart", lang, n=in_cart))
    return Markup("\n").join(parts)


def _fit(render: Callable[[str, str], str], name: str, description: str, limit: int) -> str:
    """The card with as much of the description (then of the name) as fits `limit` characters.
    The raw values are cut and then escaped (by `t`), so a cut never lands inside an entity or a tag;
    the length is measured after escaping, which never undercounts what Telegram counts."""
    text = render(name, description)
    if len(text) <= limit:
        return text
    keep = _longest(lambda n: len(render(name, _cut(description, n))) <= limit, len(description))
    if keep > 0:
        return render(name, _cut(description, keep))
    keep = _longest(lambda n: len(render(_cut(name, n), "")) <= limit, len(name))
    return render(_cut(name, max(keep, 1)), "")


def _cut(text: str, n: int) -> str:
    return text if n >= len(text) else (text[:n].rstrip() + "…" if n else "")


def _longest(fits: Callable[[int], bool], high: int) -> int:
    """The largest n in 0..high with fits(n) (fits is monotone), by bisection."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --- browsing ---------------------------------------------------------------------------------------


def cached_categories_screen(screens: CatalogueMemo[Any], session: AsyncSession, lang: str) -> Awaitable[Screen]:
    return screens.get(("categories", lang), lambda: categories_screen(session, lang))


@router.callback_query(Menu.filter(F.screen == MenuScreen.CATALOG))
async def open_catalog(query: CallbackQuery, session: AsyncSession, lang: str, screens: CatalogueMemo[Any]) -> None:
    text, markup = await cached_categories_screen(screens, session, lang)
    await query.answer()
    await show(query, text, markup)


@router.message(Command("catalog"))
async def catalog_command(message: Message, session: AsyncSession, lang: str, screens: CatalogueMemo[Any]) -> None:
    text, markup = await cached_categories_screen(screens, session, lang)
    await send(message, text, markup)


@router.callback_query(CardMainMenu.filter())
async def open_main_menu(query: CallbackQuery, lang: str) -> None:
    """The main menu from a card: `menu:main` edits text, which a photo card does not have."""
    from handlers.common import main_menu as menu_markup

    await query.answer()
    await show(query, t("menu.title", lang), menu_markup(lang))


@router.callback_query(Category.filter())
async def open_category(
    query: CallbackQuery,
    callback_data: Category,
    session: AsyncSession,
    lang: str,
    settings: Settings,
    screens: CatalogueMemo[Any],
) -> None:
    await _show_category(query, session, lang, settings, screens, callback_data.category_id)


@router.callback_query(CategoryPage.filter())
async def turn_page(
    query: CallbackQuery,
    callback_data: CategoryPage,
    session: AsyncSession,
    lang: str,
    settings: Settings,
    screens: CatalogueMemo[Any],
) -> None:
    after = callback_data.direction is Direction.AFTER
    cursor = callback_data.cursor
    await _show_category(
        query,
        session,
        lang,
        settings,
        screens,
        callback_data.category_id,
        after=cursor if after else None,
        before=None if after else cursor,
    )


async def _show_category(
    query: CallbackQuery,
    session: AsyncSession,
    lang: str,
    settings: Settings,
    screens: CatalogueMemo[Any],
    category_id: int,
    after: str | None = None,
    before: str | None = None,
) -> None:
    size = settings.page_size
    try:
        screen = await screens.get(
            ("category", category_id, after, before, size, lang),
            lambda: category_screen(session, category_id, lang, size, after=after, before=before),
        )
    except (ValueError, OverflowError, OSError):  # a forged cursor (a timestamp out of range)
        screen = await screens.get(
            ("category", category_id, None, None, size, lang), lambda: category_screen(session, category_id, lang, size)
        )
    if screen is None:
        await query.answer(t("catalog.category_empty", lang), show_alert=True)
        await show(query, *await categories_screen(session, lang))  # the list they came from is stale
        return
    await query.answer()
    await show(query, *screen)


# --- the product card -------------------------------------------------------------------------------


@router.callback_query(Card.filter(F.action == CardAction.VIEW), flags=ONE_STATEMENT_EACH)
async def view_product(
    query: CallbackQuery,
    callback_data: Card,
    session: AsyncSession,
    lang: str,
    screens: CatalogueMemo[Any],
    customer_id: int | None = None,
) -> None:
    """Open a card as a new screen (from a list, the cart or a notification): a photo when it has one."""
    product_id, qty = callback_data.product_id, callback_data.qty
    product = await screens.get(("product", product_id), lambda: _active_product(session, product_id))
    if product is None:
        await query.answer(t("catalog.product_gone", lang), show_alert=True)
        return
    await query.answer()
    in_cart = await cart_service.quantity_in_cart(session, customer_id, product_id) if customer_id else 0
    watching = (
        product.stock <= 0 and customer_id is not None and await catalog.is_watching(session, customer_id, product_id)
    )
    text, markup = product_card(product, qty, lang, in_cart=in_cart, watching=watching)
    await show(query, text, markup, photo=product.photo_url)


async def _active_product(session: AsyncSession, product_id: int) -> Product | None:
    """For display only (read by the card after this session ends, never written)."""
    try:
        return await catalog.get_product(session, product_id)
    except NotFound:
        return None


@router.callback_query(Card.filter(F.action == CardAction.QUANTITY), flags=ONE_STATEMENT_EACH)
async def change_card_quantity(
    query: CallbackQuery, callback_data: Card, session: AsyncSession, lang: str, customer_id: int | None = None
) -> None:
    """− / + on the card: the same card edited in place, saying so when stock caps the quantity."""
    product = await _product_or_answer(query, session, callback_data.product_id, lang)
    if product is None:
        return
    wanted = callback_data.qty
    if wanted < 1 and product.stock > 0:  # − at 1
        await query.answer(plain("catalog.at_least_one", lang))
        return
    if product.stock <= 0:
        await query.answer(plain("catalog.sold_out_now", lang, name=_short(product.name, 60)), show_alert=True)
    elif wanted > clamp_quantity(product, wanted):
        await query.answer(_cap_reason(product, lang), show_alert=True)
    else:
        await query.answer()
    in_cart = await cart_service.quantity_in_cart(session, customer_id, product.id) if customer_id else 0
    await edit_card(query, product, wanted, lang, in_cart=in_cart)


@router.callback_query(Card.filter(F.action == CardAction.SHOWN))
async def shown_quantity(query: CallbackQuery, callback_data: Card, lang: str) -> None:
    """The quantity between − and + is a label, but a press on it still deserves an answer."""
    await query.answer(plain("catalog.quantity_shown", lang, n=callback_data.qty))


@router.callback_query(ProductButton.filter(F.action == ProductAction.BACK))
async def back_to_list(
    query: CallbackQuery,
    callback_data: ProductButton,
    session: AsyncSession,
    lang: str,
    settings: Settings,
    screens: CatalogueMemo[Any],
) -> None:
    """Back from a card: the category page holding the product, not the category's first page."""
    product = await _product_or_answer(query, session, callback_data.product_id, lang)
    if product is None:
        return
    after = await catalog.page_holding(session, product, settings.page_size)
    await _show_category(query, session, lang, settings, screens, product.category_id, after=after)


async def edit_card(
    query: CallbackQuery, product: Product, qty: int, lang: str, *, in_cart: int = 0, watching: bool = False
) -> None:
    """Redraw the card the button was on: its caption when it is a photo, else its text."""
    message = query.message
    if isinstance(message, Message) and message.photo and product.photo_url:
        text, markup = product_card(product, qty, lang, in_cart=in_cart, limit=CAPTION_LIMIT, watching=watching)
        try:
            await message.edit_caption(caption=text, reply_markup=markup)
        except TelegramBadRequest as exc:
            if "message is not modified" not in str(exc):
                raise
        return
    text, markup = product_card(product, qty, lang, in_cart=in_cart, limit=TEXT_LIMIT, watching=watching)
    await show(query, text, markup)


@router.callback_query(Card.filter(F.action == CardAction.ADD), flags=ONE_STATEMENT_EACH)
async def add_to_cart(
    query: CallbackQuery,
    callback_data: Card,
    session: AsyncSession,
    customer_id: int,
    lang: str,
    screens: CatalogueMemo[Any],
) -> None:
    product_id, qty = callback_data.product_id, max(1, callback_data.qty)
    added = await cart_service.try_add(session, customer_id, product_id, qty)
    product = (
        await screens.get(("product", product_id), lambda: _active_product(session, product_id)) if added else None
    )
    if added is None or product is None:
        await _add_the_long_way(query, session, customer_id, product_id, qty, lang)
        return
    await _confirm_added(query, product, qty, added, lang)


async def _add_the_long_way(
    query: CallbackQuery, session: AsyncSession, customer_id: int, product_id: int, qty: int, lang: str
) -> None:
    """Nothing could be added in one statement: read the product to say why (gone, sold out)."""
    product = await _product_or_answer(query, session, product_id, lang)
    if product is None:
        return
    try:
        added = await cart_service.add(session, customer_id, product, qty)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        in_cart = await cart_service.quantity_in_cart(session, customer_id, product.id)
        await edit_card(query, product, 1, lang, in_cart=in_cart)  # sold out since: the card offers Notify me
        return
    await _confirm_added(query, product, qty, added, lang)


async def _confirm_added(
    query: CallbackQuery, product: Product, qty: int, added: cart_service.Added, lang: str
) -> None:
    if added.now < added.before + qty:
        await query.answer(plain("cart.capped", lang, qty=added.now, name=_short(product.name, 60)), show_alert=True)
    else:
        await query.answer(plain("cart.added", lang, qty=qty, name=_short(product.name, 60), total=added.now))
    await edit_card(query, product, qty, lang, in_cart=added.now)


def _cap_reason(product: Product, lang: str) -> str:
    if product.stock > cart_service.MAX_LINE_QTY:
        return t("catalog.max_per_order", lang, n=cart_service.MAX_LINE_QTY)
    return t("catalog.max_stock", lang, n=product.stock)


@router.callback_query(ProductButton.filter(F.action == ProductAction.NOTIFY_ME))
async def notify_me(
    query: CallbackQuery, callback_data: ProductButton, session: AsyncSession, customer_id: int, lang: str
) -> None:
    product = await _product_or_answer(query, session, callback_data.product_id, lang)
    if product is None:
        return
    if product.stock > 0:
        await query.answer(t("catalog.back_already", lang), show_alert=True)
        await edit_card(query, product, 1, lang)
        return
    await catalog.watch_product(session, customer_id, product.id)
    await query.answer(plain("catalog.watching", lang, name=_short(product.name, 60)), show_alert=True)
    await edit_card(query, product, 1, lang, watching=True)


@router.callback_query(ProductButton.filter(F.action == ProductAction.STOP_NOTIFY))
async def stop_notify(
    query: CallbackQuery, callback_data: ProductButton, session: AsyncSession, customer_id: int, lang: str
) -> None:
    """Undo Notify me: no message when it is back, and the card offers Notify me again."""
    product = await _product_or_answer(query, session, callback_data.product_id, lang)
    if product is None:
        return
    await catalog.stop_watching(session, customer_id, product.id)
    await query.answer(plain("catalog.alert_stopped", lang))
    await edit_card(query, product, 1, lang)


async def send_product_by_sku(message: Message, session: AsyncSession, sku: str, lang: str) -> bool:
    """Deep link `/start p_<SKU>`: open that product directly. False when there is no such active
    product, so /start falls back to the welcome."""
    try:
        product = await catalog.get_product(session, sku=sku[:64])
    except NotFound:
        return False
    user = message.from_user.id if message.from_user else None
    in_cart = await cart_service.quantity_in_cart(session, user, product.id) if user else 0
    watching = product.stock <= 0 and user is not None and await catalog.is_watching(session, user, product.id)
    text, markup = product_card(product, 1, lang, in_cart=in_cart, watching=watching)
    await send(message, text, markup, photo=product.photo_url)
    return True


async def _product_or_answer(query: CallbackQuery, session: AsyncSession, product_id: int, lang: str) -> Product | None:
    """The active product, or None after a friendly answer to a button from an old screen."""
    try:
        return await catalog.get_product(session, product_id)
    except NotFound:
        await query.answer(t("catalog.product_gone", lang), show_alert=True)
        return None


# --- typed quantity (FSM) ---------------------------------------------------------------------------


@router.callback_query(ProductButton.filter(F.action == ProductAction.TYPE_QUANTITY))
async def ask_quantity(
    query: CallbackQuery, callback_data: ProductButton, session: AsyncSession, state: FSMContext, lang: str
) -> None:
    product = await _product_or_answer(query, session, callback_data.product_id, lang)
    if product is None:
        return
    if product.stock <= 0:
        await query.answer(plain("catalog.sold_out_now", lang, name=_short(product.name, 60)), show_alert=True)
        return
    await query.answer()
    await state.set_state(TypeQuantity.waiting)
    await state.update_data(product_id=product.id)
    if isinstance(query.message, Message):
        await query.message.answer(
            t(
                "catalog.ask_quantity",
                lang,
                name=cut(product.name, 200),
                max=min(product.stock, cart_service.MAX_LINE_QTY),
            )
        )


@router.message(StateFilter(TypeQuantity.waiting), Command("cancel"))
async def cancel_quantity(message: Message, state: FSMContext, lang: str) -> None:
    data = await state.get_data()
    await state.clear()
    await message.answer(
        t("catalog.quantity_cancelled", lang),
        reply_markup=kb(
            [
                (
                    t("catalog.back_to_product", lang),
                    Card(action=CardAction.VIEW, product_id=int(data.get("product_id") or 0), qty=1).pack(),
                ),
                (t("menu.cart", lang), MENU_CART),
            ]
        ),
    )


@router.message(StateFilter(TypeQuantity.waiting), AnyCommand())
async def other_command_leaves(message: Message, state: FSMContext) -> None:
    """Another command means the customer moved on: leave the question and let that command run."""
    await state.clear()
    raise SkipHandler


@router.message(StateFilter(TypeQuantity.waiting), NotCommand())
async def typed_quantity(
    message: Message, session: AsyncSession, state: FSMContext, customer: Customer, lang: str
) -> None:
    """The typed number becomes the cart line's quantity (not added to it). A number out of range
    gets the range and the question stays, so nothing is put in the cart until it is right."""
    product = await _asked_product(message, session, state, lang)
    if product is None:
        return
    qty, problem = parse_quantity(message.text, lang, most=min(product.stock, cart_service.MAX_LINE_QTY))
    if problem:
        await message.answer(problem)
        return
    await state.clear()
    try:
        now = await cart_service.set_quantity(session, customer.id, product, qty)
    except DomainError as exc:
        await message.answer(t(exc.key, lang, **exc.values), reply_markup=kb([(t("menu.catalog", lang), MENU_CATALOG)]))
        return
    await message.answer(
        t("cart.added_typed", lang, qty=now, name=product.name),
        reply_markup=kb(
            [
                (t("menu.cart", lang), CartAt(action="at", product_id=product.id).pack()),
                (t("catalog.continue", lang), ProductButton(action=ProductAction.BACK, product_id=product.id).pack()),
            ]
        ),
    )


async def _asked_product(message: Message, session: AsyncSession, state: FSMContext, lang: str) -> Product | None:
    """The product the question was about, or None (the question ends) after saying it is gone or sold out."""
    data = await state.get_data()
    try:
        product = await catalog.get_product(session, int(data.get("product_id") or 0))
    except DomainError as exc:
        await state.clear()
        await message.answer(t(exc.key, lang, **exc.values), reply_markup=kb([(t("menu.catalog", lang), MENU_CATALOG)]))
        return None
    if product.stock > 0:
        return product
    await state.clear()
    back = Card(action=CardAction.VIEW, product_id=product.id, qty=1).pack()
    await message.answer(
        t("catalog.sold_out_now", lang, name=product.name),
        reply_markup=kb([(t("catalog.back_to_product", lang), back)]),
    )
    return None


def parse_quantity(text: str | None, lang: str, most: int = cart_service.MAX_LINE_QTY) -> tuple[int, str | None]:
    """(quantity, None) for a whole number from 1 to `most`, else (0, the reason to re-ask with,
    which says the range)."""
    raw = (text or "").strip()
    if not raw:
        return 0, t("catalog.quantity_not_text", lang, max=most)
    if not re.fullmatch(r"[+-]?[0-9]+", raw):
        return 0, t("catalog.quantity_not_number", lang, value=cut(raw, 30), max=most)
    value = int(raw)
    if value <= 0:
        return 0, t("catalog.quantity_not_positive", lang, value=cut(raw, 30), max=most)
    if value > most:
        key = "catalog.quantity_over_limit" if most == cart_service.MAX_LINE_QTY else "catalog.quantity_over_stock"
        return 0, t(key, lang, max=most)
    return value, None
