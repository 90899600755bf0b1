"""Enqueueing side of the transactional outbox.

A message the system sends on its own is a row added to the caller's session, so it commits (or rolls
back) with the change that caused it. The sender (`services.outbox_sender`) drains the table.
Reply markups are plain Telegram JSON dicts: services never import aiogram.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Outbox
from services.markup import Markup, clip, to_plain

# Outbox.priority: lower goes first. Order updates, admin alerts and everything else a customer or an
# admin is waiting for are URGENT; news for many customers (a broadcast) is BULK and gives way to them.
URGENT = 0
BULK = 10


def enqueue(
    session: AsyncSession,
    chat_id: int,
    text: str,
    *,
    kind: str,
    reply_markup: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    edit_message_id: int | None = None,
) -> Outbox:
    """Add a message to the outbox (`edit_message_id`: instead, replace the text of that message of
    the bot's in the chat). `dedup_key` makes a repeat enqueue fail at commit (unique index).
    `text` is HTML (from `t`); one over Telegram's limit is cut between tags and entities."""
    row = Outbox(
        chat_id=chat_id,
        text=str(clip(text, 4096)),
        kind=kind,
        reply_markup=reply_markup,
        dedup_key=dedup_key,
        edit_message_id=edit_message_id,
        priority=URGENT,
    )
    session.add(row)
    return row


def alert_admins(
    session: AsyncSession,
    admin_chat_id: int | None,
    text: str,
    *,
    kind: str = "admin_alert",
    reply_markup: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> Outbox | None:
    """Post to the admin group (if one is configured; otherwise the alert is only logged by the caller)."""
    if admin_chat_id is None:
        return None
    return enqueue(session, admin_chat_id, text, kind=kind, reply_markup=reply_markup, dedup_key=dedup_key)


def inline_keyboard(rows: list[list[tuple[str, str]]]) -> dict[str, Any]:
    """Telegram InlineKeyboardMarkup JSON from (text, callback_data-or-url) pairs; URLs start with http.
    Labels are shown as they are, so one from `t` (escaped for HTML) becomes the text it stands for."""
    return {
        "inline_keyboard": [
            [
                {"text": _label(text), "url": data}
                if data.startswith(("http://", "https://"))
                else {"text": _label(text), "callback_data": data}
                for text, data in row
            ]
            for row in rows
        ]
    }


def _label(text: str) -> str:
    return to_plain(text) if isinstance(text, Markup) else text
