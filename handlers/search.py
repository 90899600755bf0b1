"""Product search: `/search words` in the private chat (up to 8 products as buttons opening their
cards), `/search` alone asks what to look for, and inline mode (`@bot words` in any chat) answers with
articles whose message carries an "Open in the shop" deep link (`/start p_<SKU>`, handlers/start.py).
The search itself is services/search.py."""

from __future__ import annotations

from aiogram import Bot
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQuery,
    InlineQueryResultArticle,
    InlineQueryResultsButton,
    InputTextMessageContent,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Product
from handlers.buttons import MENU_CATALOG, MENU_MAIN, Card, CardAction
from handlers.filters import AnyCommand, PrivateChat, Text
from handlers.render import kb, send
from handlers.routing import Routes
from services import search
from services.i18n import plain, t
from services.markup import Markup, cut
from services.money import format_money

router = Routes("search")
router.message.filter(PrivateChat())

INLINE_RESULTS = 20
INLINE_CACHE_SECONDS = 30  # stock changes: Telegram may reuse an answer for this long


class SearchFor(StatesGroup):
    """`/search` alone: the next text is what to look for."""

    waiting = State()


@router.message(Command("search"))
async def search_command(
    message: Message, command: CommandObject, session: AsyncSession, state: FSMContext, lang: str
) -> None:
    query = search.parse_query(command.args)
    if query is not None:
        await _answer(message, session, query, lang)
        return
    if await state.get_state() is not None:  # in another flow (checkout…): its next step keeps the text
        await message.answer(t("search.usage", lang))
        return
    await state.set_state(SearchFor.waiting)
    await message.answer(
        t("search.ask", lang), reply_markup=ForceReply(input_field_placeholder=plain("search.placeholder", lang))
    )


@router.message(StateFilter(SearchFor.waiting), AnyCommand())
async def other_command_leaves(message: Message, state: FSMContext) -> None:
    """Another command means the customer moved on: leave the question and let that command run."""
    await state.clear()
    raise SkipHandler


@router.message(StateFilter(SearchFor.waiting), Text())
async def typed_query(message: Message, session: AsyncSession, state: FSMContext, lang: str) -> None:
    query = search.parse_query(message.text)
    if query is None:
        await message.answer(t("search.ask", lang))
        return
    await state.clear()
    await _answer(message, session, query, lang)


async def _answer(message: Message, session: AsyncSession, query: search.Query, lang: str) -> None:
    products = await search.search_products(session, query, limit=search.MAX_RESULTS)
    if not products:
        await send(
            message,
            t("search.nothing", lang, query=query.text),
            kb([(t("menu.catalog", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)]),
        )
        return
    rows = [[(_button_label(p, lang), Card(action=CardAction.VIEW, product_id=p.id, qty=1).pack())] for p in products]
    rows.append([(t("menu.catalog", lang), MENU_CATALOG), (t("menu.back", lang), MENU_MAIN)])
    text = t("search.results", lang, query=query.text)
    if len(products) >= search.MAX_RESULTS:
        text = Markup("\n").join((text, t("search.narrow", lang, n=len(products))))
    await send(message, text, kb(*rows))


def _button_label(product: Product, lang: str) -> str:
    return t(
        "catalog.product_button",
        lang,
        name=cut(product.name, 40),
        price=format_money(product.price_kes, "KES"),
        stock=_stock_short(product, lang),
    )


def _stock_short(product: Product, lang: str) -> str:
    if product.stock > 0:
        return plain("catalog.in_stock_short", lang, n=product.stock)
    return plain("catalog.out_of_stock_short", lang)


# --- inline mode ------------------------------------------------------------------------------------


@router.inline_query()
async def inline_search(inline_query: InlineQuery, session: AsyncSession, bot: Bot, lang: str) -> None:
    query = search.parse_query(inline_query.query)
    products = await search.search_products(session, query, limit=INLINE_RESULTS) if query else []
    username = (await bot.me()).username or ""
    await inline_query.answer(
        [_article(p, username, lang) for p in products],
        cache_time=INLINE_CACHE_SECONDS,
        is_personal=False,
        button=InlineQueryResultsButton(text=plain("search.inline_open_shop", lang), start_parameter="search"),
    )


def _article(product: Product, username: str, lang: str) -> InlineQueryResultArticle:
    price = format_money(product.price_kes, "KES")
    stock = t("catalog.stock_left", lang, n=product.stock) if product.stock > 0 else t("catalog.out_of_stock", lang)
    link = f"https://t.me/{username}?start=p_{product.sku}"
    return InlineQueryResultArticle(
        id=str(product.id),
        title=cut(product.name, 100),
        description=plain("search.inline_description", lang, price=price, stock=_stock_short(product, lang)),
        input_message_content=InputTextMessageContent(
            message_text=t(
                "search.inline_message",
                lang,
                name=cut(product.name, 200),
                description=cut(product.description, 600),
                price=price,
                stock=stock,
            ),
            parse_mode="HTML",
        ),
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text=plain("search.open_in_shop", lang), url=link)]]
        ),
        thumbnail_url=product.photo_url if product.photo_url and product.photo_url.startswith("https://") else None,
    )
