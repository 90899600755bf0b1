"""One aiohttp application carrying the Telegram webhook beside the payment callbacks and health.

Body sizes are capped (`client_max_size`) so a provider endpoint can never be made to buffer junk.
"""
from __future__ import annotations

import importlib
import logging

from aiohttp import web
from sqlalchemy import text

from bot.runtime import Shop
from webhooks.telegram import TelegramWebhook

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # provider callbacks are a few KB; Telegram updates rarely exceed this
SHOP_KEY: web.AppKey[Shop] = web.AppKey("shop", Shop)


async def health(request: web.Request) -> web.Response:
    shop = request.app[SHOP_KEY]
    try:
        async with shop.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        log.exception("health.database_down")
        return web.json_response({"status": "error", "database": "down"}, status=503)
    return web.json_response({"status": "ok", "database": "up",
                              "providers": sorted(shop.providers)})


def build_web_app(shop: Shop) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SHOP_KEY] = shop
    app.router.add_get("/healthz", health)
    secret = shop.settings.telegram_webhook_secret
    TelegramWebhook(shop.dp, shop.bot, secret.get_secret_value() if secret else None).register(
        app, path="/telegram")
    # Feature route modules register themselves when present (payments, metrics).
    for name in ("webhooks.mpesa", "webhooks.stripe", "webhooks.metrics"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.setup(app)
    return app
