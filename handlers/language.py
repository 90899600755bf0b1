"""/language and the main menu's "🌐 Language / Lugha": a picker with one button per catalogue we have,
each language named in itself. The choice is kept on the customer's row (services/language.py) and
wins over their Telegram client's language from then on, here and in later notifications."""

from __future__ import annotations

from aiogram import F
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.middlewares import ONE_STATEMENT_EACH, LanguageMemo
from handlers.buttons import MENU_LANGUAGE, MENU_MAIN, LanguageChoice, Menu, MenuScreen
from handlers.common import main_menu
from handlers.filters import Buttons
from handlers.render import kb, send, show
from handlers.routing import Routes
from services import language as language_service
from services.errors import DomainError
from services.i18n import plain, t

router = Routes("language")
router.callback_query.filter(Buttons(LanguageChoice, exact=(MENU_LANGUAGE,)))


def picker(lang: str) -> tuple[str, InlineKeyboardMarkup]:
    rows = [[(name, LanguageChoice(code=code).pack())] for code, name in language_service.language_names()]
    return t("language.choose", lang), kb(*rows, [(plain("menu.back", lang), MENU_MAIN)])


@router.message(Command("language"))
async def language_command(message: Message, lang: str) -> None:
    await send(message, *picker(lang))


@router.callback_query(Menu.filter(F.screen == MenuScreen.LANGUAGE))
async def language_button(query: CallbackQuery, lang: str) -> None:
    await query.answer()
    await show(query, *picker(lang))


@router.callback_query(LanguageChoice.filter(), flags=ONE_STATEMENT_EACH)  # one statement: the update
async def choose(
    query: CallbackQuery,
    callback_data: LanguageChoice,
    session: AsyncSession,
    customer_id: int,
    languages: LanguageMemo,
    lang: str,
) -> None:
    try:
        chosen = await language_service.choose_language(session, customer_id, callback_data.code)
    except DomainError:
        await query.answer(plain("error.stale_button", lang), show_alert=True)
        return
    languages.remember(customer_id, chosen)
    await query.answer(plain("language.saved", chosen))
    await show(query, t("language.changed", chosen), main_menu(chosen))
