"""One aiohttp application carrying the Telegram webhook beside the payment callbacks and health.

Body sizes are capped (`client_max_size`) so a provider endpoint can never be made to buffer junk.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.runtime import Shop
from db.migrate import database_revisions, head_revision
from webhooks import metrics, mpesa, status, stripe
from webhooks.telegram import TelegramWebhook

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # provider callbacks are a few KB; Telegram updates rarely exceed this
SHOP_KEY: web.AppKey[Shop] = web.AppKey("shop", Shop)


async def alive(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing about configuration (which providers are set up is no
    business of whoever can reach the port)."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the database answers and its schema is the one this code was written for (its Alembic
    revision is db/migrations' head), so this process can take traffic. The body says nothing more."""
    shop = request.app[SHOP_KEY]
    try:
        head = head_revision()
        revisions = await database_revisions(shop.engine)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is "not ready"
        log.error("ready.database_down", extra={"error": type(exc).__name__})
        return web.json_response({"status": "unavailable"}, status=503)
    if revisions != [head]:
        log.error("ready.schema_not_current", extra={"database": ",".join(revisions) or "-", "head": head})
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


def add_telegram_route(app: web.Application, shop: Shop) -> TelegramWebhook:
    """POST /telegram, with the secret setWebhook registers (`Settings.webhook_secret`)."""
    webhook = TelegramWebhook(shop.dp, shop.bot, shop.settings.webhook_secret)
    webhook.register(app, path="/telegram")
    return webhook


def build_web_app(shop: Shop) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SHOP_KEY] = shop
    app.router.add_get("/healthz", alive)
    app.router.add_get("/readyz", ready)
    # The Telegram route exists only in webhook mode, and always with a secret: in polling mode updates
    # come from getUpdates, and a route here would let anyone who reaches the port post one as an admin.
    if shop.settings.webhook_mode:
        add_telegram_route(app, shop)
    mpesa.setup(app)
    stripe.setup(app)
    metrics.setup(app)
    status.setup(app, shop)  # the customers' order status page (GET/POST /status)
    return app


def build_worker_app(shop: Shop) -> web.Application:
    """The worker's own small server: liveness, readiness and its metrics, so a supervisor can check it
    and Prometheus can scrape what only the worker counts. No Telegram or payment routes."""
    app = web.Application(client_max_size=1024)
    app[SHOP_KEY] = shop
    app.router.add_get("/healthz", alive)
    app.router.add_get("/readyz", ready)
    metrics.setup(app)
    return app
