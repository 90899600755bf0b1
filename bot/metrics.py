"""Counts and times each Telegram update by the handler that took it (services/metrics)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.types import TelegramObject

from services.metrics import HANDLER_SECONDS, UPDATES


class HandlerMetrics(BaseMiddleware):
    """Inner middleware, registered before the session's: the time includes the handler's commit."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        chosen: HandlerObject | None = data.get("handler")
        name = getattr(chosen.callback, "__name__", "unknown") if chosen is not None else "unknown"
        started = time.perf_counter()
        try:
            return await handler(event, data)
        finally:
            HANDLER_SECONDS.labels(name).observe(time.perf_counter() - started)
            UPDATES.labels(name).inc()
