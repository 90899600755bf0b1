"""Reaching a person: "💬 Talk to us" asks for a message, which goes to the admin group; so does
free text a customer types outside any flow (the customer is in no conversation state, so a flow's
step never loses its text here; no feature takes text outside its own states) when it has a
letter in it: digits or emoji alone get the help instead (handlers/common.py). An admin's
Telegram reply to that relayed message in the admin group goes back to the customer.

The relay is sent at once (its message id in the admin group is what a reply is matched by) and
recorded with services/support.py, which also limits how many a customer may send in a while."""

from __future__ import annotations

import logging

from aiogram import Bot, F
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Filter, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ForceReply, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer
from handlers.admin import AdminOnly, InAdminGroup
from handlers.buttons import MENU_SUPPORT, Menu, MenuScreen
from handlers.common import leave_flow, main_menu
from handlers.filters import AnyCommand, Buttons, NotCommand, PrivateChat, Text
from handlers.routing import Routes
from services import support
from services.i18n import plain, t

log = logging.getLogger(__name__)

router = Routes("support")
router.callback_query.filter(Buttons(exact=(MENU_SUPPORT,)))


class Replying(Filter):
    """The message answers another one (a Telegram reply)."""

    async def __call__(self, message: Message) -> bool:
        return message.reply_to_message is not None


class Words(Filter):
    """Text with a letter in it: something written to a person. Digits alone (a quantity or a phone
    number typed after its step ended) or emoji are not passed to the shop; they get the help."""

    async def __call__(self, message: Message) -> bool:
        text = message.text
        return text is not None and not text.startswith("/") and any(ch.isalpha() for ch in text)


class Talk(StatesGroup):
    """After "💬 Talk to us": the next text goes to the shop."""

    writing = State()


@router.callback_query(Menu.filter(F.screen == MenuScreen.SUPPORT), PrivateChat())
async def talk_button(query: CallbackQuery, state: FSMContext, lang: str) -> None:
    """Ask for the message; whatever flow the customer was in (checkout…) is left first."""
    await query.answer()
    if isinstance(query.message, Message):
        await leave_flow(query.message, state, lang)
        await state.set_state(Talk.writing)
        await query.message.answer(
            t("support.ask", lang),
            reply_markup=ForceReply(input_field_placeholder=plain("support.placeholder", lang)),
        )


@router.message(StateFilter(Talk.writing), AnyCommand())
async def command_leaves(message: Message, state: FSMContext) -> None:
    """A command means the customer moved on: leave the question and let that command run."""
    await state.clear()
    raise SkipHandler


@router.message(PrivateChat(), StateFilter(Talk.writing), Text())
async def written(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    customer: Customer,
    state: FSMContext,
    settings: Settings,
    lang: str,
) -> None:
    await state.clear()
    await relay(message, bot, session, customer, settings, lang)


@router.message(PrivateChat(), StateFilter(Talk.writing), NotCommand())
async def not_text(message: Message, lang: str) -> None:
    """A sticker or a photo after "Talk to us": only words are passed on."""
    await message.answer(t("support.text_only", lang))


@router.message(PrivateChat(), StateFilter(None), Words())
async def free_text(
    message: Message, bot: Bot, session: AsyncSession, customer: Customer, settings: Settings, lang: str
) -> None:
    """Text outside any flow: a person reads it (commands and every flow's steps came first)."""
    await relay(message, bot, session, customer, settings, lang)


async def relay(
    message: Message, bot: Bot, session: AsyncSession, customer: Customer, settings: Settings, lang: str
) -> None:
    """Post the customer's text to the admin group and tell them so; refused politely when they
    sent too many lately or there is no admin group to post to."""
    if settings.admin_chat_id is None:
        await message.answer(t("support.unavailable", lang), reply_markup=main_menu(lang))
        return
    if not await support.may_relay(session, customer.id):
        log.info("support.rate_limited", extra={"customer": customer.id})
        await message.answer(t("support.too_many", lang), reply_markup=main_menu(lang))
        return
    try:
        sent = await bot.send_message(settings.admin_chat_id, support.relay_text(customer, message.text or ""))
    except TelegramAPIError as exc:
        log.warning("support.relay_failed", extra={"customer": customer.id, "error": type(exc).__name__})
        await message.answer(t("support.unavailable", lang), reply_markup=main_menu(lang))
        return
    support.record_relay(session, customer.id, settings.admin_chat_id, sent.message_id)
    log.info("support.relayed", extra={"customer": customer.id})
    await message.answer(t("support.sent", lang), reply_markup=main_menu(lang))


@router.message(InAdminGroup(), Replying(), AdminOnly())
async def admin_reply(message: Message, session: AsyncSession) -> None:
    """An admin's reply to a relayed message: to its customer (words only: a photo or a sticker is
    not passed on, and the admin is told). A reply to anything else is not ours."""
    replied = message.reply_to_message
    customer = await support.customer_of(session, message.chat.id, replied.message_id) if replied is not None else None
    if customer is None or (message.text or "").startswith("/"):
        raise SkipHandler
    if not message.text:
        await message.reply(t("admin.support.text_only"))
        return
    support.queue_reply(session, customer, message.text)
    log.info("support.answered", extra={"customer": customer.id})
    await message.reply(t("admin.support.answered", None, name=customer.first_name or str(customer.id)))
