"""The running shop: one object holding settings, database, bot, dispatcher and provider clients.

`storefront web`, `storefront worker` and `storefront run` build one of these; tests build it too
(pointed at stand-in servers), so production and tests share the wiring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.base import BaseSession
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import build_bot, build_dispatcher
from bot.config import Settings
from db.session import make_engine, make_sessionmaker
from services.payments.mpesa import MpesaClient
from services.payments.stripe import StripeGateway

log = logging.getLogger(__name__)


@dataclass
class Shop:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    bot: Bot
    dp: Dispatcher
    providers: dict[str, Any] = field(default_factory=dict)  # "mpesa" / "stripe" / "dhl" clients

    async def close(self) -> None:
        for provider in self.providers.values():
            closer = getattr(provider, "aclose", None)
            if closer is not None:
                await closer()
        await self.bot.session.close()
        await self.dp.storage.close()
        await self.engine.dispose()


def build_providers(settings: Settings) -> dict[str, Any]:
    """Payment and carrier clients for whatever has credentials configured."""
    providers: dict[str, Any] = {}
    if settings.mpesa_configured:
        providers["mpesa"] = MpesaClient.from_settings(settings)
    if settings.stripe_configured:
        providers["stripe"] = StripeGateway.from_settings(settings)
    return providers


def build_shop(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    providers: dict[str, Any] | None = None,
    bot_session: BaseSession | None = None,
) -> Shop:
    """`providers` and `bot_session` replace the configured clients and Telegram itself (tests, and
    `storefront console`, which simulates both in-process)."""
    engine = engine or make_engine(settings.database_url)
    session_factory = make_sessionmaker(engine)
    providers = build_providers(settings) if providers is None else providers
    bot = build_bot(settings, bot_session)
    dp = build_dispatcher(settings, session_factory, providers=providers)
    return Shop(settings, engine, session_factory, bot, dp, providers)
