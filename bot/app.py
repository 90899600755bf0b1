"""Builds the Bot and the Dispatcher. Everything the handlers need arrives through the dispatcher's
workflow data (settings, session factory, payment clients), so tests build the same app."""
from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.middlewares import CustomerMiddleware, DbSessionMiddleware, LanguageMiddleware
from services.cache import CatalogueMemo

log = logging.getLogger(__name__)


_PINNED_RESPONSE_TYPES: list[type] = []


def _pin_response_types() -> None:
    """aiogram parses every Bot API reply as `Response[<method's result type>]`; pydantic keeps those
    generic classes in a weak cache, so they are garbage-collected and rebuilt again and again (a
    profile showed ~15 % of a webhook update's CPU there). Holding them once stops that."""
    if _PINNED_RESPONSE_TYPES:
        return
    import aiogram.methods as methods
    from aiogram.methods import Response, TelegramMethod

    for name in dir(methods):
        obj = getattr(methods, name)
        if isinstance(obj, type) and issubclass(obj, TelegramMethod) and obj is not TelegramMethod:
            _PINNED_RESPONSE_TYPES.append(Response[obj.__returning__])  # type: ignore[name-defined]


def run_magic_filters_inline(dispatcher: Dispatcher) -> None:
    """aiogram runs every synchronous filter through `asyncio.to_thread`, including the `F.data == …`
    magic filters, so routing one callback past ~30 handlers meant ~30 thread hand-offs (a profile
    of the throughput bench showed them as the largest single cost after the database). Magic filters
    are pure attribute checks, so they are made awaitable and evaluated inline instead."""
    for router in dispatcher.chain_tail:
        for observer in router.observers.values():
            for handler in [observer._handler, *observer.handlers]:  # noqa: SLF001 (observer-level filters)
                for flt in handler.filters or []:
                    if flt.magic is not None and not flt.awaitable:
                        flt.callback, flt.awaitable = _inline(flt.callback), True


def _inline(resolve: Any) -> Any:
    async def check(value: Any) -> Any:
        return resolve(value)
    return check


def build_bot(settings: Settings) -> Bot:
    _pin_response_types()
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
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


def build_dispatcher(settings: Settings, session_factory: async_sessionmaker[AsyncSession],
                     **extra: Any) -> Dispatcher:
    from handlers import setup_routers

    dp = Dispatcher(storage=build_storage(settings), settings=settings, session_factory=session_factory,
                    screens=CatalogueMemo(settings.catalog_cache_seconds), **extra)
    sessions, customers = DbSessionMiddleware(session_factory), CustomerMiddleware()
    for observer in (dp.message, dp.callback_query):
        observer.outer_middleware(LanguageMiddleware())
        observer.middleware(sessions)  # inner, in this order: the customer is looked up in the session
        observer.middleware(customers)
    dp.include_router(setup_routers())
    run_magic_filters_inline(dp)
    return dp
