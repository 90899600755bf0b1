"""Scheduled Stripe reconciliation: sessions still pending past their expiry are looked up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.payments.stripe_flow import reconcile_due


def job_factories() -> list[Callable[[Any], tuple[str, float, Callable[[], Awaitable[object]]]]]:
    def factory(shop: Any) -> tuple[str, float, Callable[[], Awaitable[object]]]:
        async def run() -> object:
            gateway = shop.providers.get("stripe")
            return 0 if gateway is None else await reconcile_due(shop.session_factory, gateway, shop.settings)

        return "stripe-reconcile", 60.0, run

    return [factory]
