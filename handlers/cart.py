"""Cart: lines with − 1 / + 1 / Remove (asked first), the subtotal in the shop's currency, Clear (asked
first) and Checkout.

Buttons (handlers/buttons.py): CartLine (fewer / more / remove), CartPage, CartAt, CartClear(Step) and
"menu:cart";
Checkout is `CheckoutStep(START)` (handlers/checkout.py). A long cart is split into pages by text size,
so no screen goes over Telegram's 4096 characters whatever the product names are.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiogram import F
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.middlewares import ONE_STATEMENT_EACH
from db.models import Product
from handlers.buttons import (
    MENU_CART,
    MENU_CATALOG,
    MENU_MAIN,
    Card,
    CardAction,
    CartAt,
    CartClear,
    CartClearStep,
    CartLine,
    CartPage,
    CheckoutAction,
    CheckoutStep,
    ClearAction,
    LineAction,
    Menu,
    MenuScreen,
)
from handlers.filters import Buttons
from handlers.render import TEXT_LIMIT, kb, pager, send, show
from handlers.routing import Routes
from services import cart as cart_service
from services import catalog
from services.errors import DomainError, NotFound
from services.i18n import counted, plain, t
from services.markup import Markup
from services.money import format_money

router = Routes("cart")
router.callback_query.filter(Buttons(CartLine, exact=(MENU_CART,)))
MAX_LINES_PER_PAGE = 8  # each line brings a row of four buttons
PAGE_BUDGET = TEXT_LIMIT - 600  # room for the title, subtotal and page number around the lines


def _line_text(n: int, line: cart_service.CartLine, lang: str) -> Markup:
    """A line in the shop's currency: unit price and line total (the second currency, if any, is the
    delivery zone's, chosen at checkout)."""
    p = line.product
    text = t(
        "cart.line",
        lang,
        n=n,
        name=p.name,
        qty=line.quantity,
        unit=format_money(p.price_kes, "KES", lang),
        total=format_money(p.price_kes * line.quantity, "KES", lang),
    )
    if line.seen_price_kes != p.price_kes:
        change = f"{format_money(line.seen_price_kes, 'KES', lang)} → {format_money(p.price_kes, 'KES', lang)}"
        text += "\n" + t("cart.price_changed", lang, changes=change)
    if not p.active:
        text += "\n" + t("cart.line_gone", lang)
    elif p.stock <= 0:
        text += "\n" + t("cart.line_sold_out", lang)
    elif p.stock < line.quantity:
        text += "\n" + t("cart.line_short", lang, n=p.stock)
    return text


def paginate(texts: Sequence[str], budget: int = PAGE_BUDGET, per_page: int = MAX_LINES_PER_PAGE) -> list[list[int]]:
    """Indexes of the lines on each page: as many as fit `budget` characters, at most `per_page`."""
    pages: list[list[int]] = [[]]
    used = 0
    for i, text in enumerate(texts):
        cost = len(text) + 2
        if pages[-1] and (used + cost > budget or len(pages[-1]) >= per_page):
            pages.append([])
            used = 0
        pages[-1].append(i)
        used += cost
    return pages


async def cart_screen(
    session: AsyncSession, customer_id: int, lang: str, page: int = 0, *, holding: int | None = None
) -> tuple[str, InlineKeyboardMarkup]:
    """A page of the cart: `page`, or with `holding` the page that holds that product's line."""
    lines = await cart_service.lines(session, customer_id)
    if not lines:
        return t("cart.empty", lang), kb([(t("menu.catalog", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)])
    texts = [_line_text(i, line, lang) for i, line in enumerate(lines, start=1)]
    pages = paginate(texts)
    if holding is not None:
        page = next((n for n, on in enumerate(pages) for i in on if lines[i].product.id == holding), 0)
    page = max(0, min(page, len(pages) - 1))
    parts = [t("cart.title", lang)]
    rows: list[list[tuple[str, str]]] = []
    for i in pages[page]:
        parts.append(texts[i])
        rows.append(_line_buttons(i + 1, lines[i], page, lang))
    live = [line for line in lines if line.product.active]
    kes = sum(line.product.price_kes * line.quantity for line in live)
    parts.append(t("cart.subtotal", lang, kes=format_money(kes, "KES", lang)))
    if len(pages) > 1:
        parts.append(t("cart.page", lang, page=page + 1, pages=len(pages)))
        rows.append(
            pager(
                lang,
                CartPage(action="pg", page=page - 1).pack() if page > 0 else None,
                CartPage(action="pg", page=page).pack(),
                CartPage(action="pg", page=page + 1).pack() if page < len(pages) - 1 else None,
                page + 1,
                len(pages),
            )
        )
    rows.append(
        [
            (t("cart.clear", lang), CartClearStep(action=ClearAction.ASK, page=page).pack()),
            (t("cart.checkout", lang), CheckoutStep(action=CheckoutAction.START).pack()),
        ]
    )
    rows.append([(t("cart.continue", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)])
    return Markup("\n\n").join(parts), kb(*rows)


def _line_buttons(n: int, line: cart_service.CartLine, page: int, lang: str) -> list[tuple[str, str]]:
    """− 1 / the line's card / + 1 / Remove: each says what it does, for screen readers too."""
    pid = line.product.id
    return [
        (t("cart.fewer", lang), CartLine(action=LineAction.FEWER, product_id=pid, page=page).pack()),
        (
            f"{n}. ×{line.quantity}",
            Card(action=CardAction.VIEW, product_id=pid, qty=min(max(1, line.quantity), 999)).pack(),
        ),
        (t("cart.more", lang), CartLine(action=LineAction.MORE, product_id=pid, page=page).pack()),
        (t("cart.remove", lang), CartLine(action=LineAction.REMOVE, product_id=pid, page=page).pack()),
    ]


@router.callback_query(Menu.filter(F.screen == MenuScreen.CART), flags=ONE_STATEMENT_EACH)
async def open_cart(query: CallbackQuery, session: AsyncSession, customer_id: int, lang: str) -> None:
    screen = await cart_screen(session, customer_id, lang)
    await query.answer()
    await show(query, *screen)


@router.message(Command("cart"), flags=ONE_STATEMENT_EACH)
async def cart_command(message: Message, session: AsyncSession, customer_id: int, lang: str) -> None:
    await send(message, *await cart_screen(session, customer_id, lang))


@router.callback_query(CartPage.filter(), flags=ONE_STATEMENT_EACH)
async def cart_page(
    query: CallbackQuery, callback_data: CartPage, session: AsyncSession, customer_id: int, lang: str
) -> None:
    await query.answer()
    await show(query, *await cart_screen(session, customer_id, lang, callback_data.page))


@router.callback_query(CartAt.filter(), flags=ONE_STATEMENT_EACH)
async def cart_at(
    query: CallbackQuery, callback_data: CartAt, session: AsyncSession, customer_id: int, lang: str
) -> None:
    """The cart from a product card: the page holding that product, so the customer is back where they were."""
    await query.answer()
    await show(query, *await cart_screen(session, customer_id, lang, holding=callback_data.product_id))


@router.callback_query(CartLine.filter(F.page >= 0))
async def change_line(
    query: CallbackQuery, callback_data: CartLine, session: AsyncSession, customer_id: int, lang: str
) -> None:
    """− / + / Remove on a line. A button for a line that is gone refreshes the cart with a short answer."""
    action, product_id, page = callback_data.action, callback_data.product_id, callback_data.page
    current = await cart_service.quantity_in_cart(session, customer_id, product_id)
    if current == 0:
        await query.answer(t("cart.line_missing", lang), show_alert=True)
        await show(query, *await cart_screen(session, customer_id, lang, page))
        return
    if action is LineAction.FEWER and current == 1:
        await query.answer(plain("cart.at_least_one", lang), show_alert=True)
        return
    try:
        product = await catalog.get_product(session, product_id, active_only=False)
    except NotFound as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return
    if action is LineAction.REMOVE:
        await query.answer()
        await show(query, *_confirm_remove(product, current, page, lang))
        return
    await _apply(query, session, customer_id, product, action, current, page, lang)


def _confirm_remove(product: Product, qty: int, page: int, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    yes = CartLine(action=LineAction.REMOVE_CONFIRMED, product_id=product.id, page=page).pack()
    return t("cart.remove_ask", lang, qty=qty, name=product.name), kb(
        [(t("cart.remove_yes", lang), yes), (t("cart.keep", lang), CartPage(action="pg", page=page).pack())]
    )


async def _apply(
    query: CallbackQuery,
    session: AsyncSession,
    customer_id: int,
    product: Product,
    action: LineAction,
    current: int,
    page: int,
    lang: str,
) -> None:
    """Make the change and redraw the same page, saying why when stock capped it."""
    target = {LineAction.FEWER: current - 1, LineAction.MORE: current + 1}.get(action, 0)
    try:
        if target == 0:
            await cart_service.remove(session, customer_id, product.id)
            now = 0
        else:
            now = await cart_service.set_quantity(session, customer_id, product, target)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return
    if action is LineAction.MORE and now < target:
        await query.answer(plain("cart.capped", lang, qty=now, name=product.name[:60]), show_alert=True)
    elif target == 0:
        await query.answer(plain("cart.removed", lang, name=product.name[:60]))
    else:
        await query.answer()
    await show(query, *await cart_screen(session, customer_id, lang, page))


@router.callback_query(CartClear.filter())
async def clear_cart_old(query: CallbackQuery, session: AsyncSession, customer_id: int, lang: str) -> None:
    """Clear on a cart sent before it asked first: ask now, as from the first page."""
    await _ask_clear(query, session, customer_id, 0, lang)


@router.callback_query(CartClearStep.filter())
async def clear_cart(
    query: CallbackQuery, callback_data: CartClearStep, session: AsyncSession, customer_id: int, lang: str
) -> None:
    """Clear asks first (how many items go); Yes empties the cart, Keep returns to the same page."""
    if callback_data.action is ClearAction.ASK:
        await _ask_clear(query, session, customer_id, callback_data.page, lang)
        return
    await cart_service.clear(session, customer_id)
    await query.answer(t("cart.cleared", lang))
    await show(query, *await cart_screen(session, customer_id, lang))


async def _ask_clear(query: CallbackQuery, session: AsyncSession, customer_id: int, page: int, lang: str) -> None:
    items = sum(line.quantity for line in await cart_service.lines(session, customer_id))
    await query.answer()
    if items == 0:
        await show(query, *await cart_screen(session, customer_id, lang))
        return
    yes = CartClearStep(action=ClearAction.CONFIRMED, page=page).pack()
    text = counted("cart.clear_ask", items, lang)
    await show(
        query,
        text,
        kb([(t("cart.clear_yes", lang), yes), (t("cart.keep", lang), CartPage(action="pg", page=page).pack())]),
    )
