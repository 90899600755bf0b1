"""Cart: lines with − / + / remove, subtotals in both currencies, clear and Checkout.

Buttons (handlers/buttons.py): CartLine (fewer / more / remove), CartPage, CartClear and "menu:cart";
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
from handlers.buttons import (
    MENU_CART,
    MENU_CATALOG,
    MENU_MAIN,
    Card,
    CardAction,
    CartClear,
    CartLine,
    CartPage,
    CheckoutAction,
    CheckoutStep,
    LineAction,
    Menu,
    MenuScreen,
)
from handlers.filters import Buttons
from handlers.render import TEXT_LIMIT, kb, send, show
from handlers.routing import Routes
from services import cart as cart_service
from services import catalog
from services.errors import DomainError, NotFound
from services.i18n import plain, t
from services.markup import Markup
from services.money import format_money

router = Routes("cart")
router.callback_query.filter(Buttons(CartLine, exact=(MENU_CART,)))
MAX_LINES_PER_PAGE = 8  # each line brings a row of four buttons
PAGE_BUDGET = TEXT_LIMIT - 600  # room for the title, subtotal and page number around the lines


def _line_text(n: int, line: cart_service.CartLine, lang: str) -> Markup:
    p = line.product
    text = t(
        "cart.line",
        lang,
        n=n,
        name=p.name,
        qty=line.quantity,
        kes=format_money(p.price_kes * line.quantity, "KES", lang),
        usd=format_money(p.price_usd * line.quantity, "USD", lang),
    )
    if line.price_changed:
        changes = [
            f"{format_money(old, cur, lang)} → {format_money(new, cur, lang)}"
            for old, new, cur in ((line.seen_price_kes, p.price_kes, "KES"), (line.seen_price_usd, p.price_usd, "USD"))
            if old != new
        ]
        text += "\n" + t("cart.price_changed", lang, changes=" · ".join(changes))
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
    session: AsyncSession, customer_id: int, lang: str, page: int = 0
) -> tuple[str, InlineKeyboardMarkup]:
    lines = await cart_service.lines(session, customer_id)
    if not lines:
        return t("cart.empty", lang), kb([(t("menu.catalog", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)])
    texts = [_line_text(i, line, lang) for i, line in enumerate(lines, start=1)]
    pages = paginate(texts)
    page = max(0, min(page, len(pages) - 1))
    parts = [t("cart.title", lang)]
    rows: list[list[tuple[str, str]]] = []
    for i in pages[page]:
        line, pid = lines[i], lines[i].product.id
        parts.append(texts[i])
        rows.append(
            [
                ("−", CartLine(action=LineAction.FEWER, product_id=pid, page=page).pack()),
                (
                    f"{i + 1}. ×{line.quantity}",
                    Card(action=CardAction.VIEW, product_id=pid, qty=min(max(1, line.quantity), 999)).pack(),
                ),
                ("+", CartLine(action=LineAction.MORE, product_id=pid, page=page).pack()),
                ("✖", CartLine(action=LineAction.REMOVE, product_id=pid, page=page).pack()),
            ]
        )
    live = [line for line in lines if line.product.active]
    kes = sum(line.product.price_kes * line.quantity for line in live)
    usd = sum(line.product.price_usd * line.quantity for line in live)
    parts.append(t("cart.subtotal", lang, kes=format_money(kes, "KES", lang), usd=format_money(usd, "USD", lang)))
    if len(pages) > 1:
        parts.append(t("cart.page", lang, page=page + 1, pages=len(pages)))
        turn = [("◀", page - 1)] if page > 0 else []
        turn += [("▶", page + 1)] if page < len(pages) - 1 else []
        rows.append([(arrow, CartPage(action="pg", page=to).pack()) for arrow, to in turn])
    rows.append(
        [
            (t("cart.clear", lang), CartClear(action="clr").pack()),
            (t("cart.checkout", lang), CheckoutStep(action=CheckoutAction.START).pack()),
        ]
    )
    rows.append([(t("cart.continue", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)])
    return Markup("\n\n").join(parts), kb(*rows)


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


@router.callback_query(CartLine.filter(F.page >= 0))
async def change_line(
    query: CallbackQuery, callback_data: CartLine, session: AsyncSession, customer_id: int, lang: str
) -> None:
    """− / + / ✖ on a line. A button for a line that is gone refreshes the cart with a short answer."""
    action, product_id, page = callback_data.action, callback_data.product_id, callback_data.page
    current = await cart_service.quantity_in_cart(session, customer_id, product_id)
    if current == 0:
        await query.answer(t("cart.line_missing", lang), show_alert=True)
        await show(query, *await cart_screen(session, customer_id, lang, page))
        return
    target = {LineAction.FEWER: current - 1, LineAction.MORE: current + 1, LineAction.REMOVE: 0}[action]
    try:
        product = await catalog.get_product(session, product_id, active_only=False)
        if target == 0:
            await cart_service.remove(session, customer_id, product_id)
            now = 0
        else:
            now = await cart_service.set_quantity(session, customer_id, product, target)
    except (DomainError, NotFound) as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return
    if action is LineAction.MORE and now < target:
        await query.answer(plain("cart.capped", lang, qty=now, name=product.name[:60]), show_alert=True)
    elif action is LineAction.REMOVE:
        await query.answer(plain("cart.removed", lang, name=product.name[:60]))
    else:
        await query.answer()
    await show(query, *await cart_screen(session, customer_id, lang, page))


@router.callback_query(CartClear.filter())
async def clear_cart(query: CallbackQuery, session: AsyncSession, customer_id: int, lang: str) -> None:
    await cart_service.clear(session, customer_id)
    await query.answer(t("cart.cleared", lang))
    await show(query, *await cart_screen(session, customer_id, lang))
