"""Showing a screen in place: navigation edits the message it came from instead of flooding the chat.
What Telegram sends back for these calls is never read, so it is not parsed (bot/speedups.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.speedups import results_unused
from services import markup
from services.i18n import t

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024


def kb(*rows: Sequence[tuple[str, str]]) -> InlineKeyboardMarkup:
    """Inline keyboard from rows of (label, callback_data or URL). Telegram shows labels as they are,
    so a label from `t` (escaped for HTML) is turned back into the text it stands for."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=label_text(label), url=data)
                if data.startswith(("http://", "https://"))
                else InlineKeyboardButton(text=label_text(label), callback_data=data)
                for label, data in row
            ]
            for row in rows
            if row
        ]
    )


def pager(
    lang: str, previous: str | None, here: str, following: str | None, page: int, pages: int
) -> list[tuple[str, str]]:
    """A pager row, ◀ Previous · n/N · Next ▶, in words a screen reader can say: the callback data of
    the page before (None on the first), of this page (pressing where you are redraws it) and of the
    page after (None on the last)."""
    row: list[tuple[str, str]] = [(t("pager.previous", lang), previous)] if previous else []
    row.append((t("pager.position", lang, page=page, pages=pages), here))
    if following:
        row.append((t("pager.next", lang), following))
    return row


def label_text(label: str) -> str:
    if isinstance(label, markup.Markup) and ("&" in label or "<" in label):
        return markup.to_plain(label)
    return label


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """At most `limit` characters as Telegram counts them, cut between tags and entities (never
    inside one) with the tags open at the cut closed."""
    return markup.clip(text, limit)


async def show(
    query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None, *, photo: str | None = None
) -> None:
    """Replace the screen the button was on. Text edits text; a photo screen needs a new message."""
    message = query.message
    if not isinstance(message, Message):
        return
    with results_unused():
        await _replace(message, text, markup, photo)


async def _replace(message: Message, text: str, markup: InlineKeyboardMarkup | None, photo: str | None) -> None:
    try:
        if photo:
            await message.answer_photo(photo, caption=clip(text, CAPTION_LIMIT), reply_markup=markup)
            await _delete_quietly(message)
        elif message.photo:
            await message.answer(clip(text), reply_markup=markup)
            await _delete_quietly(message)
        else:
            await message.edit_text(clip(text), reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" in str(exc):
            return
        if "can't be edited" in str(exc) or "message to edit not found" in str(exc):
            await message.answer(clip(text), reply_markup=markup)
            return
        raise


async def send(
    message: Message, text: str, markup: InlineKeyboardMarkup | None = None, *, photo: str | None = None
) -> None:
    with results_unused():
        if photo:
            await message.answer_photo(photo, caption=clip(text, CAPTION_LIMIT), reply_markup=markup)
        else:
            await message.answer(clip(text), reply_markup=markup)


async def _delete_quietly(message: Message) -> None:
    try:
        await message.delete()
    except TelegramBadRequest:
        log.info("render.delete_failed", extra={"message_id": message.message_id})
