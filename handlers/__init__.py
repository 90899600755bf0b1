"""aiogram routers, one module per feature. Thin: parse the update, call a service, render a reply."""
from __future__ import annotations

import importlib

from aiogram import Router

from handlers.routing import RootRouter

# Order matters: customer commands and buttons in a group first (answered "let's talk in private";
# the root router never enters that router for a private chat, so private updates pay nothing for it),
# then /start (it leaves any flow, so nothing needs to see it before), then the specific features,
# the catch-all help fallback last.
FEATURES = ("group", "start", "admin", "catalog", "cart", "checkout", "payments", "pay_mpesa", "pay_card", "orders", "common")


_root: Router | None = None


def setup_routers() -> Router:
    """The root router with every feature router. Routers are module singletons, so the tree is
    built once and detached from any previous dispatcher (tests and benchmarks build several)."""
    global _root
    if _root is not None:
        _root._parent_router = None
        return _root
    root = RootRouter(name="root")
    for name in FEATURES:
        try:
            module = importlib.import_module(f"handlers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"handlers.{name}":
                raise
            continue
        root.include_router(module.router)
    _root = root
    return root
