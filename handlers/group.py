"""Customer commands and buttons in a group: one short "let's talk in private" answer, nothing else.

The shop is a one-to-one conversation (cart, phone, address, orders); in a group those screens would
show one customer's data to everyone, and the customer middleware registers nobody there, so the
handlers that need a customer would fail. This router comes first and only ever sees group updates
(its own first filter, `GroupChat`, turns every private chat's message and press away). It takes:
- our customer commands (not other bots' `/start@their_bot`), except the admin group's own admin
  commands, which the admin router after it answers or refuses as before;
- presses of any button but the admin ones (`AdminButton`, `BroadcastButton`, `ReturnDecision`), answered with an alert.
Plain chatter in a group gets no answer: a bot must not talk in a group unless it is asked to."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import CallbackQuery, Message

from bot.config import Settings
from handlers.admin import IN_GROUP, AdminButton
from handlers.broadcast import BroadcastButton
from handlers.filters import NotPrivateChat
from handlers.returns import ReturnDecision
from handlers.routing import Routes
from services.i18n import t

log = logging.getLogger(__name__)

CUSTOMER_COMMANDS = (
    "start",
    "catalog",
    "cart",
    "checkout",
    "orders",
    "track",
    "help",
    "cancel",
    "language",
    "search",
    "stop_news",
    "start_news",
    "return",
)


router = Routes("group")
router.message.filter(NotPrivateChat())
router.callback_query.filter(NotPrivateChat())


class NotAnAdminGroupCommand(Filter):
    """False for the commands the admin router owns in the admin group (/orders, /cancel there)."""

    async def __call__(self, message: Message, command: CommandObject, settings: Settings) -> bool:
        return message.chat.id != settings.admin_chat_id or command.command.lower() not in IN_GROUP


async def _username(bot: Bot) -> str | None:
    """The bot's @username: `bot.me()` asks Telegram once per process, then answers from memory."""
    try:
        return (await bot.me()).username
    except Exception:  # noqa: BLE001 - Telegram unreachable: the plain text will do
        log.warning("group.get_me_failed")
        return None


@router.message(Command(*CUSTOMER_COMMANDS), NotAnAdminGroupCommand())
async def customer_command_in_group(message: Message, bot: Bot, lang: str) -> None:
    log.info("group.customer_command", extra={"chat_id": message.chat.id})
    username = await _username(bot)
    if username:
        await message.reply(t("group.talk_in_private", lang, username=username))
    else:
        await message.reply(t("group.talk_in_private_plain", lang))


@router.callback_query(
    ~AdminButton.filter(), ~BroadcastButton.filter(), ~ReturnDecision.filter()
)  # the admin routers after this one answer those
async def customer_button_in_group(query: CallbackQuery, bot: Bot, lang: str) -> None:
    username = await _username(bot)
    text = (
        t("group.talk_in_private_alert", lang, username=username)
        if username
        else t("group.talk_in_private_plain", lang)
    )
    await query.answer(text, show_alert=True)
