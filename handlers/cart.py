"""Cart: lines with − / + / remove, subtotals in both currencies, clear and Checkout."""
from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Customer
from handlers.render import kb, send, show
from services import cart as cart_service
from services import catalog
from services.errors import DomainError, NotFound
from services.i18n import t
from services.money import format_money

router = Router(name="cart")
LINES_PER_PAGE = 8


def _line_text(n: int, line: cart_service.CartLine, lang: str) -> str:
    p = line.product
    text = t("cart.line", lang, n=n, name=html.escape(p.name), qty=line.quantity,
             kes=format_money(p.price_kes * line.quantity, "KES"), usd=format_money(p.price_usd * line.quantity, "USD"))
    if line.price_changed:
        text += "\n" + t("cart.price_changed", lang, old=format_money(line.seen_price_kes, "KES"),
                         new=format_money(p.price_kes, "KES"))
    if not p.active:
        text += "\n" + t("cart.line_gone", lang)
    elif p.stock < line.quantity:
        text += "\n" + t("cart.line_short", lang, n=p.stock)
    return text


async def cart_screen(session: AsyncSession, customer: Customer, lang: str, page: int = 0) -> tuple[str, object]:
    lines = await cart_service.lines(session, customer.id)
    if not lines:
        return t("cart.empty", lang), kb([(t("menu.catalog", lang), "menu:catalog"), (t("menu.back", lang), "menu:main")])
    pages = (len(lines) + LINES_PER_PAGE - 1) // LINES_PER_PAGE
    page = max(0, min(page, pages - 1))
    shown = lines[page * LINES_PER_PAGE:(page + 1) * LINES_PER_PAGE]
    parts = [t("cart.title", lang)]
    rows: list[list[tuple[str, str]]] = []
    for i, line in enumerate(shown, start=page * LINES_PER_PAGE + 1):
        parts.append(_line_text(i, line, lang))
        pid = line.product.id
        rows.append([("−", f"crt:d:{pid}:{page}"), (f"{i}. ×{line.quantity}", f"cat:v:{pid}:{line.quantity}"),
                     ("+", f"crt:i:{pid}:{page}"), ("✖", f"crt:r:{pid}:{page}")])
    kes = sum(line.product.price_kes * line.quantity for line in lines)
    usd = sum(line.product.price_usd * line.quantity for line in lines)
    parts.append(t("cart.subtotal", lang, kes=format_money(kes, "KES"), usd=format_money(usd, "USD")))
    if pages > 1:
        parts.append(t("cart.page", lang, page=page + 1, pages=pages))
        rows.append([b for b in (("◀", f"crt:pg:{page - 1}") if page > 0 else None,
                                 ("▶", f"crt:pg:{page + 1}") if page < pages - 1 else None) if b])
    rows.append([(t("cart.clear", lang), "crt:clr"), (t("cart.checkout", lang), "chk:start")])
    rows.append([(t("cart.continue", lang), "menu:catalog"), (t("menu.back", lang), "menu:main")])
    return "\n\n".join(parts), kb(*rows)


@router.callback_query(F.data == "menu:cart")
async def open_cart(query: CallbackQuery, session: AsyncSession, customer: Customer, lang: str) -> None:
    await query.answer()
    await show(query, *await cart_screen(session, customer, lang))  # type: ignore[arg-type]


@router.message(Command("cart"))
async def cart_command(message: Message, session: AsyncSession, customer: Customer, lang: str) -> None:
    await send(message, *await cart_screen(session, customer, lang))  # type: ignore[arg-type]


@router.callback_query(F.data.regexp(r"^crt:pg:(-?\d+)$").as_("m"))
async def cart_page(query: CallbackQuery, m, session: AsyncSession, customer: Customer, lang: str) -> None:  # type: ignore[no-untyped-def]
    await query.answer()
    await show(query, *await cart_screen(session, customer, lang, int(m.group(1))))  # type: ignore[arg-type]


@router.callback_query(F.data.regexp(r"^crt:([dir]):(\d+):(\d+)$").as_("m"))
async def change_line(query: CallbackQuery, m, session: AsyncSession, customer: Customer, lang: str) -> None:  # type: ignore[no-untyped-def]
    action, product_id, page = m.group(1), int(m.group(2)), int(m.group(3))
    current = await cart_service.quantity_in_cart(session, customer.id, product_id)
    if current == 0:
        await query.answer(t("cart.line_missing", lang), show_alert=True)
        await show(query, *await cart_screen(session, customer, lang, page))  # type: ignore[arg-type]
        return
    target = {"d": current - 1, "i": current + 1, "r": 0}[action]
    try:
        product = await catalog.get_product(session, product_id, active_only=False)
        if target == 0:
            await cart_service.remove(session, customer.id, product_id)
            now = 0
        else:
            now = await cart_service.set_quantity(session, customer.id, product, target)
    except (DomainError, NotFound) as exc:
        await query.answer(t(exc.key, lang, **exc.values), show_alert=True)
        return
    if action == "i" and now < target:
        await query.answer(t("cart.capped", lang, qty=now, name=html.escape(product.name[:60])), show_alert=True)
    else:
        await query.answer()
    await show(query, *await cart_screen(session, customer, lang, page))  # type: ignore[arg-type]


@router.callback_query(F.data == "crt:clr")
async def clear_cart(query: CallbackQuery, session: AsyncSession, customer: Customer, lang: str) -> None:
    await cart_service.clear(session, customer.id)
    await query.answer(t("cart.cleared", lang))
    await show(query, *await cart_screen(session, customer, lang))  # type: ignore[arg-type]
