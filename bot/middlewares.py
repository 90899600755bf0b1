"""Middlewares: one DB session per update (committed when the handler succeeds), the customer's
language, and the customer row itself so handlers can stay thin."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.cart import ensure_customer
from services.i18n import available_languages


class DbSessionMiddleware(BaseMiddleware):
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        async with self.session_factory() as session:
            data["session"] = session
            result = await handler(event, data)
            await session.commit()
            return result


class CustomerMiddleware(BaseMiddleware):
    """Registers the customer on first contact and picks the language of the texts."""

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        chat = data.get("event_chat")
        lang = "en"
        if user is not None and not user.is_bot:
            code = (user.language_code or "en").split("-")[0]
            lang = code if code in available_languages() else "en"
            if chat is None or chat.type == "private":
                data["customer"] = await ensure_customer(
                    data["session"], user.id, chat.id if chat else user.id, user.first_name or "",
                    user.username, lang,
                )
        data["lang"] = lang
        return await handler(event, data)
