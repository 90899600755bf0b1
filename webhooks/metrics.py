"""GET /metrics: this process's metrics (services/metrics) in the Prometheus text format.

With METRICS_TOKEN set, only a request carrying `Authorization: Bearer <token>` is answered; anyone
else gets 401. The outbox gauges are read from the database at each scrape; with the database out of
reach they read NaN and the counters are still served.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services import metrics

log = logging.getLogger(__name__)


def _authorized(request: web.Request, token: str) -> bool:
    sent = request.headers.get("Authorization", "").encode()
    return hmac.compare_digest(sent, f"Bearer {token}".encode())


async def scrape(request: web.Request) -> web.Response:
    from webhooks.server import SHOP_KEY

    shop = request.app[SHOP_KEY]
    token = shop.settings.metrics_token
    if token is not None and token.get_secret_value() and not _authorized(request, token.get_secret_value()):
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
    try:
        await metrics.sample_outbox(shop.session_factory)
    except Exception as exc:  # noqa: BLE001 - the database out of reach: the gauges say unknown, the rest is served
        log.warning("metrics.outbox_unreadable", extra={"error": type(exc).__name__})
        metrics.OUTBOX_DEPTH.set(float("nan"))
        metrics.OUTBOX_OLDEST.set(float("nan"))
    # CONTENT_TYPE_LATEST carries its charset, which aiohttp takes only through the header.
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", scrape)
