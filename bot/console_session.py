"""The Bot API inside the process, for `storefront console`: an aiogram session (`BaseSession`, the
library's extension point for how calls reach Telegram) that answers each call itself the way
Telegram would, with results of the right types, and shows what the bot sends on the `Screen`.

It also remembers, per chat, the messages it showed and their buttons, so the console can press a
button on the message it is on, answer a ForceReply prompt with a reply, and share a contact where
a reply keyboard asks for one."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, cast

from aiogram import Bot
from aiogram.client.default import Default
from aiogram.client.session.base import BaseSession
from aiogram.methods import (
    AnswerCallbackQuery,
    DeleteMessage,
    EditMessageCaption,
    EditMessageMedia,
    EditMessageReplyMarkup,
    EditMessageText,
    GetChatAdministrators,
    GetChatMember,
    GetMe,
    SendDocument,
    SendMessage,
    SendPhoto,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiogram.types import ForceReply, InlineKeyboardMarkup, ReplyKeyboardMarkup, ReplyKeyboardRemove

from bot.console_view import Screen, terminal_text

BOT_USER: dict[str, Any] = {"id": 777000000, "is_bot": True, "first_name": "Shop", "username": "console_shop_bot"}


@dataclass
class Button:
    label: str
    data: str | None = None  # an inline button's callback_data
    url: str | None = None
    contact: bool = False  # a reply keyboard's "share my phone number"


@dataclass
class Shown:
    """A message the bot has in a chat, as it stands now."""

    chat_id: int
    message_id: int
    text: str
    photo: bool = False
    rows: list[list[Button]] = field(default_factory=list)  # its inline keyboard


@dataclass
class ChatLog:
    messages: dict[int, Shown] = field(default_factory=dict)
    keyboard: list[Button] = field(default_factory=list)  # what the numbers press: the last keyboard shown
    keyboard_on: Shown | None = None  # the message that keyboard is on (None: a reply keyboard)
    reply_keyboard: list[Button] = field(default_factory=list)
    force_reply_to: int | None = None  # a ForceReply prompt: the next text answers it


class ConsoleSession(BaseSession):
    """Answers Bot API calls in-process for one person, `user_id`, who chats with the bot in private
    and is the creator of the admin group `admin_chat_id` (so getChatMember lets them act as admin)."""

    def __init__(self, screen: Screen, user_id: int, admin_chat_id: int) -> None:
        super().__init__()
        self.screen = screen
        self.user_id = user_id
        self.admin_chat_id = admin_chat_id
        self.chats: dict[int, ChatLog] = {}
        self._ids = itertools.count(1)

    def chat(self, chat_id: int) -> ChatLog:
        return self.chats.setdefault(chat_id, ChatLog())

    async def close(self) -> None:
        return None

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - BaseSession's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """Downloads: the console has no files to give."""
        nothing: tuple[bytes, ...] = ()
        for chunk in nothing:
            yield chunk

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - BaseSession's signature, which aiogram calls
    ) -> TelegramType:
        result = self.answer(bot, method)
        content = json.dumps({"ok": True, "result": result})
        response = self.check_response(bot=bot, method=method, status_code=200, content=content)
        return cast(TelegramType, response.result)

    def answer(self, bot: Bot, method: TelegramMethod[Any]) -> Any:
        """What Telegram would answer to `method` (as JSON), having shown what it sends."""
        if isinstance(method, SendMessage):
            return self.post(method.chat_id, method.text, _is_html(bot, method.parse_mode), method.reply_markup)
        if isinstance(method, (SendPhoto, SendDocument)):
            html = _is_html(bot, method.parse_mode)
            return self.post(method.chat_id, method.caption or "", html, method.reply_markup, photo=True)
        if isinstance(method, (EditMessageText, EditMessageCaption, EditMessageMedia, EditMessageReplyMarkup)):
            return self.edit(bot, method)
        if isinstance(method, DeleteMessage):
            self.chat(int(method.chat_id)).messages.pop(method.message_id, None)
            return True
        if isinstance(method, AnswerCallbackQuery):
            if method.text:
                self.screen.notice(f"({'pop-up' if method.show_alert else 'toast'}: {method.text})")
            return True
        if isinstance(method, GetMe):
            return BOT_USER
        if isinstance(method, GetChatMember):
            return self.member(int(method.chat_id), method.user_id)
        if isinstance(method, GetChatAdministrators):
            return [self.member(int(method.chat_id), uid) for uid in self.admins_of(int(method.chat_id))]
        return True  # setMyCommands, setChatMenuButton, sendChatAction, deleteWebhook…: done

    # --- messages -----------------------------------------------------------------------------------

    def post(self, chat_id: int | str, text: str, html: bool, markup: Any, *, photo: bool = False) -> dict[str, Any]:
        log = self.chat(int(chat_id))
        shown = Shown(int(chat_id), next(self._ids), text, photo)
        log.messages[shown.message_id] = shown
        log.force_reply_to = shown.message_id if isinstance(markup, ForceReply) else None
        if isinstance(markup, InlineKeyboardMarkup):
            shown.rows = _inline_rows(markup)
        reply_rows = self._reply_keyboard(log, markup)
        self.show(shown, html, note="(photo)" if photo else "", reply_rows=reply_rows)
        return self.message_json(shown)

    def edit(self, bot: Bot, method: Any) -> dict[str, Any] | bool:
        if method.chat_id is None or method.message_id is None:  # an inline-mode message: not ours to show
            return True
        shown = self.chat(int(method.chat_id)).messages.get(method.message_id)
        if shown is None:
            shown = Shown(int(method.chat_id), method.message_id, "")
            self.chat(shown.chat_id).messages[shown.message_id] = shown
        if isinstance(method, EditMessageText):
            shown.text = method.text or ""
        elif isinstance(method, EditMessageCaption):
            shown.text = method.caption or ""
        elif isinstance(method, EditMessageMedia):
            shown.text, shown.photo = method.media.caption or "", True
        shown.rows = _inline_rows(method.reply_markup) if isinstance(method.reply_markup, InlineKeyboardMarkup) else []
        parse_mode = getattr(method, "parse_mode", Default("parse_mode"))
        self.show(shown, _is_html(bot, parse_mode), note="(edited)")
        return self.message_json(shown)

    def show(self, shown: Shown, html: bool, *, note: str, reply_rows: list[list[Button]] | None = None) -> None:
        """Print the message; its buttons (else a reply keyboard sent with it) become the numbered ones."""
        log = self.chat(shown.chat_id)
        rows = shown.rows or reply_rows or []
        if rows:
            log.keyboard = [button for row in rows for button in row]
            log.keyboard_on = shown if shown.rows else None
        elif log.keyboard_on is shown:
            log.keyboard, log.keyboard_on = [], None
        text = terminal_text(shown.text, html=html, ansi=self.screen.ansi)
        self.screen.message(self.label(shown.chat_id), text, [[_caption(b) for b in row] for row in rows], note=note)

    @staticmethod
    def _reply_keyboard(log: ChatLog, markup: Any) -> list[list[Button]]:
        if isinstance(markup, ReplyKeyboardRemove):
            if log.keyboard_on is None:
                log.keyboard = []
            log.reply_keyboard = []
        if not isinstance(markup, ReplyKeyboardMarkup):
            return []
        rows = [
            [
                Button(b if isinstance(b, str) else b.text, contact=not isinstance(b, str) and bool(b.request_contact))
                for b in row
            ]
            for row in markup.keyboard
        ]
        log.reply_keyboard = [button for row in rows for button in row]
        return rows

    def message_json(self, shown: Shown) -> dict[str, Any]:
        """The Message Telegram returns for a sent or edited message (and the console sends back on a press)."""
        chat: dict[str, Any] = {"id": shown.chat_id, "type": "private"}
        if shown.chat_id < 0:
            chat = {"id": shown.chat_id, "type": "supergroup", "title": self.label(shown.chat_id).strip("[]")}
        body: dict[str, Any] = {
            "message_id": shown.message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": BOT_USER,
        }
        if shown.photo:
            body["caption"] = shown.text
            body["photo"] = [{"file_id": "console", "file_unique_id": "console", "width": 1, "height": 1}]
        else:
            body["text"] = shown.text or "."
        return body

    # --- the admin group ----------------------------------------------------------------------------

    def label(self, chat_id: int) -> str:
        """Which chat a message is in, as the console shows it."""
        if chat_id == self.user_id:
            return "[you]"
        return "[admin group]" if chat_id == self.admin_chat_id else f"[chat {chat_id}]"

    def is_admin(self, chat_id: int, user_id: int) -> bool:
        return chat_id == self.admin_chat_id and user_id == self.user_id

    def admins_of(self, chat_id: int) -> list[int]:
        return [self.user_id] if self.is_admin(chat_id, self.user_id) else []

    def member(self, chat_id: int, user_id: int) -> dict[str, Any]:
        user = {"id": user_id, "is_bot": False, "first_name": "Console"}
        if self.is_admin(chat_id, user_id):
            return {"status": "creator", "user": user, "is_anonymous": False}
        return {"status": "member", "user": user}


def _is_html(bot: Bot, parse_mode: Any) -> bool:
    if isinstance(parse_mode, Default):
        parse_mode = bot.default[parse_mode.name]
    return str(getattr(parse_mode, "value", parse_mode) or "").lower() == "html"  # ParseMode.HTML or "HTML"


def _inline_rows(markup: InlineKeyboardMarkup) -> list[list[Button]]:
    return [[Button(b.text, data=b.callback_data, url=b.url) for b in row] for row in markup.inline_keyboard]


def _caption(button: Button) -> str:
    if button.url:
        return f"{button.label} ↗"
    return f"{button.label} (shares your phone number)" if button.contact else button.label
