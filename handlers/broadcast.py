"""/broadcast in the admin group, and customers' /stop_news and /start_news.

/broadcast asks for the message (a reply prompt; the conversation state is keyed to the group and
the admin, so the admin's next message there is taken, replied to the prompt or not): text, or a photo
with a caption, formatting kept (the message's HTML). The bot shows it back as customers will see it,
opt-out footer included, and asks "Send to N customers?" with Send / Cancel (`BroadcastButton`,
"bc:<action>:<id>"; any admin may press them, each works once). Send queues it (services/broadcasts.py)
and turns the question into the progress message, which the worker keeps up to date.

Only admins, only in the admin group (`AdminOnly`, rights asked afresh before Send); /broadcast from
anyone else, anywhere, is refused like the other admin-only commands.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from aiogram import Bot, F
from aiogram.filters import Command, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ForceReply, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from handlers.admin import AdminOnly, is_admin, refusal, refuse_command
from handlers.buttons import Id
from handlers.filters import PrivateChat
from handlers.render import kb
from handlers.routing import Routes
from services import broadcasts
from services.errors import DomainError
from services.i18n import plain, t

log = logging.getLogger(__name__)


class BroadcastAction(StrEnum):
    SEND = "s"
    CANCEL = "x"


class BroadcastButton(CallbackData, prefix="bc"):
    action: BroadcastAction
    broadcast: Id


class BroadcastFlow(StatesGroup):
    message = State()  # waiting for the admin's message to broadcast


class BroadcastTraffic(Filter):
    """Router-level, cheap first: commands (ours are /broadcast, /stop_news, /start_news), and any
    message in the admin group (the message to broadcast may be a photo, with or without a caption)."""

    async def __call__(self, message: Message, settings: Settings) -> bool:
        return (message.text or "").startswith("/") or message.chat.id == settings.admin_chat_id


class DraftMessage(Filter):
    """The admin's message after /broadcast: in the admin group, not a command, while that admin's
    conversation state there waits for it."""

    async def __call__(self, message: Message, settings: Settings, state: FSMContext) -> bool:
        if message.chat.id != settings.admin_chat_id or (message.text or "").startswith("/"):
            return False
        return await state.get_state() == BroadcastFlow.message.state


router = Routes("broadcast")
router.message.filter(BroadcastTraffic())
router.callback_query.filter(BroadcastButton.filter())  # only ours enter; adds `callback_data`


def _user_id(event: Message | CallbackQuery) -> int:
    return event.from_user.id if event.from_user else 0


# --- the admin ----------------------------------------------------------------------------------------


@router.message(Command("broadcast", ignore_case=True), AdminOnly())
async def broadcast_command(message: Message, state: FSMContext) -> None:
    prompt = await message.reply(
        t("admin.broadcast.prompt"),
        reply_markup=ForceReply(selective=True, input_field_placeholder=plain("admin.broadcast.placeholder")),
    )
    await state.set_state(BroadcastFlow.message)
    await state.set_data({"prompt": prompt.message_id})


router.message(Command("broadcast", ignore_case=True))(refuse_command)  # anywhere: never a customer command


@router.message(DraftMessage())
async def draft_message(
    message: Message, bot: Bot, settings: Settings, session: AsyncSession, state: FSMContext
) -> None:
    """Preview what customers will get and ask how many it goes to."""
    user_id = _user_id(message)
    if not await is_admin(bot, settings, message.chat.id, user_id):  # demoted since /broadcast
        log.warning("admin.refused", extra={"command": "broadcast_message", "user_id": user_id})
        await state.clear()
        await message.reply(t("admin.refused"))
        return
    photo = message.photo[-1].file_id if message.photo else None
    if photo is None and message.text is None:
        await message.reply(t("admin.broadcast.unsupported"))  # a sticker, a file…: still waiting
        return
    await state.clear()
    try:
        draft = await broadcasts.draft(
            session, created_by=user_id, chat_id=message.chat.id, html=message.html_text, photo=photo
        )
    except DomainError as exc:
        await message.reply(refusal(exc))
        return
    audience = await broadcasts.audience_size(session)
    preview = broadcasts.message_for(draft.html, None)
    if photo is not None:
        await message.answer_photo(photo, caption=preview)
    else:
        await message.answer(preview)
    await message.answer(
        t("admin.broadcast.confirm", None, n=f"{audience:,}"),
        reply_markup=kb(
            [
                (t("admin.broadcast.send_button"), _button(BroadcastAction.SEND, draft.id)),
                (t("admin.broadcast.cancel_button"), _button(BroadcastAction.CANCEL, draft.id)),
            ]
        ),
    )


def _button(action: BroadcastAction, broadcast_id: int) -> str:
    return BroadcastButton(action=action, broadcast=broadcast_id).pack()


async def _settle(query: CallbackQuery, run: Any) -> None:
    """Answer the press and replace the question with what came of it (so it cannot be pressed again)."""
    await query.answer()
    message = query.message
    if not isinstance(message, Message):
        return
    try:
        text = await run(message.message_id)
    except DomainError as exc:
        await message.edit_text(refusal(exc), reply_markup=None)
        return
    await message.edit_text(text, reply_markup=None)


@router.callback_query(BroadcastButton.filter(F.action == BroadcastAction.SEND), AdminOnly(fresh=True))
async def send_button(query: CallbackQuery, callback_data: BroadcastButton, session: AsyncSession) -> None:
    async def run(message_id: int) -> str:
        broadcast = await broadcasts.confirm(session, callback_data.broadcast, progress_message_id=message_id)
        log.info("broadcast.confirmed", extra={"broadcast_id": broadcast.id, "user_id": _user_id(query)})
        return broadcasts.progress_text(broadcast)

    await _settle(query, run)


@router.callback_query(BroadcastButton.filter(F.action == BroadcastAction.CANCEL), AdminOnly())
async def cancel_button(query: CallbackQuery, callback_data: BroadcastButton, session: AsyncSession) -> None:
    async def run(message_id: int) -> str:
        await broadcasts.cancel(session, callback_data.broadcast)
        return t("admin.broadcast.cancelled")

    await _settle(query, run)


@router.callback_query()  # the router's filter let only broadcast buttons in
async def refuse_button(query: CallbackQuery, callback_data: BroadcastButton) -> None:
    log.warning(
        "admin.refused_button",
        extra={"user_id": query.from_user.id, "action": f"broadcast:{callback_data.action.value}"},
    )
    await query.answer(t("admin.refused"), show_alert=True)


# --- customers ------------------------------------------------------------------------------------------


@router.message(Command("stop_news", ignore_case=True), PrivateChat())
async def stop_news(message: Message, session: AsyncSession, customer_id: int, lang: str) -> None:
    await broadcasts.set_news(session, customer_id, wanted=False)
    await message.answer(t("news.stopped", lang))


@router.message(Command("start_news", ignore_case=True), PrivateChat())
async def start_news(message: Message, session: AsyncSession, customer_id: int, lang: str) -> None:
    await broadcasts.set_news(session, customer_id, wanted=True)
    await message.answer(t("news.started", lang))
