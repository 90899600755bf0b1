"""aiogram routers, one module per feature. Thin: parse the update, call a service, render a reply."""

from __future__ import annotations

from aiogram import Router

from handlers import admin, cart, catalog, checkout, common, group, orders, pay_card, pay_mpesa, payments, start

# Order matters: customer commands and buttons in a group first (answered "let's talk in private";
# its router-level filter turns private updates away before any of its handlers), then /start (it
# leaves any flow, so nothing needs to see it before), then the specific features, the catch-all
# help and stale-button fallback last.
FEATURES = (group, start, admin, catalog, cart, checkout, payments, pay_mpesa, pay_card, orders, common)


def setup_routers() -> Router:
    """A new root router with a new router for every feature (a router belongs to one dispatcher)."""
    root = Router(name="root")
    root.include_routers(*(feature.router.build() for feature in FEATURES))
    return root
