"""Middlewares: one DB session per update (committed when the handler succeeds), the customer's
language, and the customer row itself so handlers can stay thin.

The session is lazy (SQLAlchemy opens a connection on the first statement) and the customer row is
loaded only for handlers that take a `customer` argument, so screens that need neither (the main
menu, help, the catalogue's first screen) cost no database round trip."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.types import TelegramObject, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.cart import ensure_customer
from services.i18n import available_languages

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class DbSessionMiddleware(BaseMiddleware):
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        async with self.session_factory() as session:
            data["session"] = session
            result = await handler(event, data)
            await session.commit()
            return result


class LanguageMiddleware(BaseMiddleware):
    """Picks the language of the texts from the user's Telegram client (English when we lack it)."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        lang = "en"
        if user is not None and not user.is_bot:
            code = (user.language_code or "en").split("-")[0]
            lang = code if code in available_languages() else "en"
        data["lang"] = lang
        return await handler(event, data)


class CustomerMiddleware(BaseMiddleware):
    """Registers the customer on first contact (and notes they can be reached again) for every handler
    that takes a `customer` argument. Inner middleware: it runs once the handler is chosen."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        chosen: HandlerObject | None = data.get("handler")
        wants = chosen is None or chosen.varkw or "customer" in chosen.params
        user: User | None = data.get("event_from_user")
        chat = data.get("event_chat")
        if wants and user is not None and not user.is_bot and (chat is None or chat.type == "private"):
            data["customer"] = await ensure_customer(
                data["session"], user.id, chat.id if chat else user.id, user.first_name or "",
                user.username, data.get("lang", "en"),
            )
        return await handler(event, data)
