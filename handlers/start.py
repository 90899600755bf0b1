"""/start and the main menu: the first router, so the commonest message of all (and a deep link)
is answered without passing every feature's handlers. /start leaves whatever flow the customer was
in, so no feature needs to see it first."""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.filters import CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.middlewares import ONE_STATEMENT_EACH
from handlers.buttons import MENU_MAIN, Menu, MenuScreen
from handlers.common import leave_flow, main_menu, ways_to_pay
from handlers.filters import Buttons
from handlers.render import send, show
from handlers.routing import Routes
from services.i18n import t

router = Routes("start")
router.callback_query.filter(Buttons(exact=(MENU_MAIN,)))


@router.message(CommandStart(deep_link=True))
async def start_deep_link(
    message: Message,
    command: CommandObject,
    session: AsyncSession,
    providers: dict[str, Any],
    settings: Settings,
    lang: str,
    state: FSMContext,
    customer_id: int | None = None,
) -> None:
    await leave_flow(message, state, lang)
    payload = command.args or ""
    if payload.startswith("p_"):
        from handlers.catalog import send_product_by_sku

        if await send_product_by_sku(message, session, payload[2:], lang):
            return
    await start(message, providers, settings, lang)


@router.message(CommandStart(), flags=ONE_STATEMENT_EACH)  # its only statement: registering the customer
async def start(
    message: Message,
    providers: dict[str, Any],
    settings: Settings,
    lang: str,
    state: FSMContext | None = None,
    customer_id: int | None = None,
) -> None:
    """Welcome and main menu; /start always leaves whatever flow the customer was in. The welcome
    names the ways to pay this shop has set up. Takes `customer_id` so that first contact registers
    them and a returning customer who had blocked us is reachable again."""
    if state is not None:
        await leave_flow(message, state, lang)
    name = message.from_user.first_name if message.from_user else ""
    welcome = t("start.welcome", lang, name=name or "", payments=ways_to_pay(providers, settings, lang))
    await send(message, welcome, main_menu(lang))


@router.callback_query(Menu.filter(F.screen == MenuScreen.MAIN))
async def menu_main(query: CallbackQuery, lang: str) -> None:
    await query.answer()
    await show(query, t("menu.title", lang), main_menu(lang))
