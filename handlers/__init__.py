"""aiogram routers, one module per feature. Thin: parse the update, call a service, render a reply."""

from __future__ import annotations

from aiogram import Router

from handlers import (
    admin,
    broadcast,
    cart,
    catalog,
    checkout,
    common,
    group,
    language,
    manual_payments,
    orders,
    pay_card,
    pay_mpesa,
    payments,
    promo,
    returns,
    reviews,
    search,
    start,
    support,
)
from handlers.filters import Never, PrivateChat

# Order matters: customer commands and buttons in a group first (answered "let's talk in private";
# its router-level filter turns private updates away before any of its handlers), then /start (it
# leaves any flow, so nothing needs to see it before), then support: a command typed after "Talk to
# us" ends that question before any feature runs it; its free-text handler takes only text outside
# every flow (each feature's text handlers are for its own states), and an admin's reply to a relayed
# message is told from the Ship… and Reject… prompts' replies by the message it answers. Then
# /broadcast, /promo and /review (before the admin router, whose unknown-command answer would take
# them; /broadcast with /stop_news and /start_news), returns (its admin buttons and the reply to its
# Reject… prompt), /paid (before the admin router too), then the specific features, the catch-all
# help and stale-button fallback last.
FEATURES = (
    group,
    start,
    support,
    language,
    broadcast,
    promo,
    returns,
    reviews,
    manual_payments,
    admin,
    catalog,
    cart,
    checkout,
    payments,
    pay_mpesa,
    pay_card,
    orders,
    search,
    common,
)


# A button press in a private chat (most of the traffic) goes first to the features that own buttons,
# busiest first, under one router that takes nothing else: it skips entering the group and admin
# routers, and the features before its own, which aiogram does for every router an update passes.
# Their buttons are told apart by prefix (handlers/buttons.py), so their order among themselves only
# matters for the three payment routers sharing "pay:". A press none of them takes (an admin button,
# a stale one) carries on through FEATURES as before.
PRIVATE_PRESSES = (
    catalog,
    cart,
    orders,
    checkout,
    payments,
    pay_mpesa,
    pay_card,
    returns,
    start,
    language,
    reviews,
    support,
)


def setup_routers() -> Router:
    """A new root router with new routers for every feature (a router belongs to one dispatcher)."""
    presses = Router(name="private_presses")
    presses.message.filter(Never())
    presses.callback_query.filter(PrivateChat())
    presses.include_routers(*(feature.router.build() for feature in PRIVATE_PRESSES))
    root = Router(name="root")
    root.include_routers(presses, *(feature.router.build() for feature in FEATURES))
    return root
