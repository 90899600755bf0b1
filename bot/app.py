"""Builds the Bot and the Dispatcher. Everything the handlers need arrives through the dispatcher's
workflow data (settings, session factory, payment clients), so tests build the same app."""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.metrics import HandlerMetrics
from bot.middlewares import CustomerMiddleware, DbSessionMiddleware, LanguageMemo, LanguageMiddleware
from bot.plain_fallback import ResendAsPlainText
from bot.speedups import JsonBodySession, pin_response_types
from bot.throttle import ThrottleMiddleware, shared_redis
from services.cache import CatalogueMemo

log = logging.getLogger(__name__)


def build_bot(settings: Settings, session: BaseSession | None = None) -> Bot:
    """`session`: the Bot API behind the bot; Telegram's (over HTTP) unless given (the console's
    in-process stand-in)."""
    pin_response_types()
    session = session or JsonBodySession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    session.middleware(ResendAsPlainText())  # a text Telegram cannot parse goes again as plain text
    return Bot(
        token=settings.bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def build_storage(settings: Settings) -> BaseStorage:
    """Conversation state: Redis when REDIS_URL is set (so checkout survives moving between web
    processes), memory otherwise."""
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis_url)
    return MemoryStorage()


def build_dispatcher(settings: Settings, session_factory: async_sessionmaker[AsyncSession], **extra: Any) -> Dispatcher:
    from handlers import setup_routers

    storage = build_storage(settings)
    languages = LanguageMemo()  # the customers' own language choices, read by the middlewares, kept by /language
    dp = Dispatcher(
        storage=storage,
        settings=settings,
        session_factory=session_factory,
        screens=CatalogueMemo(settings.catalog_cache_seconds),
        languages=languages,
        **extra,
    )
    customers = CustomerMiddleware(languages=languages)
    sessions = DbSessionMiddleware(session_factory, customers)
    bot_id = settings.bot_token.get_secret_value().split(":", 1)[0]  # the token's public half: its own buckets
    throttle = ThrottleMiddleware(
        settings.throttle_updates_per_second,
        settings.throttle_burst,
        shared_redis(storage),
        key_prefix=f"throttle:{bot_id}:",
    )
    for observer in (dp.message, dp.callback_query, dp.inline_query):
        observer.outer_middleware(LanguageMiddleware(languages))
        observer.outer_middleware(throttle)  # keyed by user; after the language, to refuse in it
        observer.middleware(HandlerMetrics())  # inner: counts and times the chosen handler, commit included
        observer.middleware(sessions)  # inner, in this order: the customer is looked up in the session
        observer.middleware(customers)
    dp.include_router(setup_routers())
    return dp
