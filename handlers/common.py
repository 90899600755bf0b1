"""The main menu's keyboard, help, the catch-all fallback and the apology for our own errors (last
of the routers: it answers whatever no feature took). /start lives in handlers/start.py, first."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from aiogram import F
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardRemove,
)

from bot.config import Settings
from db.session import database_unreachable
from handlers.buttons import (
    MENU_CART,
    MENU_CATALOG,
    MENU_HELP,
    MENU_LANGUAGE,
    MENU_ORDERS,
    MENU_SUPPORT,
    Menu,
    MenuScreen,
)
from handlers.filters import PrivateChat
from handlers.routing import Routes
from services.i18n import counted, plain, supported_language, t
from services.markup import Markup

log = logging.getLogger(__name__)
router = Routes("common")  # any button: the stale-button answer


@lru_cache(maxsize=32)
def main_menu(lang: str) -> InlineKeyboardMarkup:
    """Built once per language: the same six buttons on every welcome."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=t("menu.catalog", lang), callback_data=MENU_CATALOG),
                InlineKeyboardButton(text=t("menu.cart", lang), callback_data=MENU_CART),
            ],
            [
                InlineKeyboardButton(text=t("menu.orders", lang), callback_data=MENU_ORDERS),
                InlineKeyboardButton(text=t("menu.help", lang), callback_data=MENU_HELP),
            ],
            [
                InlineKeyboardButton(text=t("menu.support", lang), callback_data=MENU_SUPPORT),
                InlineKeyboardButton(text=t("menu.language", lang), callback_data=MENU_LANGUAGE),
            ],
        ]
    )


def ways_to_pay(providers: dict[str, Any], settings: Settings, lang: str) -> Markup:
    """One sentence naming only the ways to pay this shop has: M-Pesa (Daraja's STK push, or a
    Paybill paid by hand), cards (Stripe); with neither, that the shop arranges payment. From the
    same `providers` the payment screen offers, so the welcome never promises another."""
    mpesa = "mpesa" in providers or bool(settings.mpesa_manual_paybill)
    card = "stripe" in providers
    key = {(True, True): "both", (True, False): "mpesa", (False, True): "card"}.get((mpesa, card), "arranged")
    return t(f"pay_methods.{key}", lang)


def help_text(providers: dict[str, Any], settings: Settings, lang: str) -> Markup:
    """How it works, then how to reach the shop (phone, WhatsApp, hours) and the returns policy, as
    configured: a line whose setting is empty (or returns switched off) is left out."""
    lines = [t("help.text", lang, payments=ways_to_pay(providers, settings, lang))]
    contacts = (
        ("help.phone", settings.shop_phone),
        ("help.whatsapp", settings.shop_whatsapp),
        ("help.hours", settings.shop_hours),
    )
    lines += [t(key, lang, value=value.strip()) for key, value in contacts if value.strip()]
    days = settings.return_days
    if days:
        lines.append(counted("help.returns", days, lang, days=days))
    lines.append(t("help.talk", lang))
    return Markup("\n").join(lines)


async def leave_flow(message: Message, state: FSMContext, lang: str) -> None:
    """Leave whatever the customer was in. Checkout's phone and email steps show a reply keyboard,
    which outlives the flow unless it is removed, so leaving checkout says so and removes it."""
    current = await state.get_state()
    await state.clear()
    if current is not None and current.startswith("Checkout:"):
        await message.answer(t("checkout.cancelled", lang), reply_markup=ReplyKeyboardRemove())


@router.message(Command("help"))
async def help_command(message: Message, providers: dict[str, Any], settings: Settings, lang: str) -> None:
    await message.answer(help_text(providers, settings, lang), reply_markup=main_menu(lang))


@router.callback_query(Menu.filter(F.screen == MenuScreen.HELP))
async def help_button(query: CallbackQuery, providers: dict[str, Any], settings: Settings, lang: str) -> None:
    await query.answer()
    if query.message is not None:
        await query.message.answer(help_text(providers, settings, lang), reply_markup=main_menu(lang))


@router.message(PrivateChat())
async def fallback(message: Message, lang: str) -> None:
    """Unknown commands, and what no step took (a sticker, a photo; free text outside a flow goes
    to the shop, handlers/support.py): a short help, never silence."""
    log.info("fallback", extra={"update_text_kind": "command" if (message.text or "").startswith("/") else "text"})
    await message.answer(t("help.short", lang), reply_markup=main_menu(lang))


@router.callback_query()
async def stale_button(query: CallbackQuery, lang: str) -> None:
    """A button from an old message whose handler no longer matches anything."""
    await query.answer(t("error.stale_button", lang), show_alert=True)


@router.errors()
async def on_error(event: ErrorEvent, settings: Settings) -> bool:
    """Our own failure: log it with the update id, apologise, keep serving. In webhook mode the
    database out of reach is left to the webhook, which answers 503 so that Telegram delivers the
    update again; a polled update is not delivered again, so there the customer gets the apology."""
    update = event.update
    if settings.webhook_mode and database_unreachable(event.exception):
        raise event.exception
    log.error("handler.error", exc_info=event.exception, extra={"update_id": update.update_id})
    # The language middleware's pick is not in an error's data: the apology goes in the client's language.
    sender = update.message or update.callback_query
    lang = supported_language(sender.from_user.language_code if sender and sender.from_user else None)
    try:
        if update.message is not None:
            await update.message.answer(t("error.internal", lang))
        elif update.callback_query is not None:
            await update.callback_query.answer(plain("error.internal", lang), show_alert=True)
    except Exception:  # noqa: BLE001 - the apology itself failed (Telegram down): the log line above is what we have
        log.warning("handler.error.apology_failed", extra={"update_id": update.update_id})
    return True
