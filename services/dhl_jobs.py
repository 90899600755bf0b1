"""Scheduled DHL tracking (only when DHL_API_KEY is set)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.dhl import DhlClient, poll_cycle


def job_factories() -> list[Callable[[Any], tuple[str, float, Callable[[], Awaitable[object]]]]]:
    def factory(shop: Any) -> tuple[str, float, Callable[[], Awaitable[object]]]:
        client = DhlClient.from_settings(shop.settings) if shop.settings.dhl_api_key else None
        if client is not None:
            shop.providers.setdefault("dhl", client)

        async def run() -> object:
            if client is None:
                return 0
            return (await poll_cycle(shop.session_factory, client, shop.settings)).changed

        return "dhl-poll", float(shop.settings.dhl_poll_seconds), run

    return [factory]
