"""Scheduled M-Pesa reconciliation: attempts whose callback is overdue are confirmed by query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.payments.mpesa_flow import reconcile_due


def job_factories() -> list[Callable[[Any], tuple[str, float, Callable[[], Awaitable[object]]]]]:
    def factory(shop: Any) -> tuple[str, float, Callable[[], Awaitable[object]]]:
        async def run() -> object:
            client = shop.providers.get("mpesa")
            if client is None:
                return 0
            return await reconcile_due(shop.session_factory, client, shop.settings)

        return "mpesa-reconcile", 15.0, run

    return [factory]
