"""POST /webhooks/stripe: the signature is checked by the SDK against the raw body before any parsing."""

from __future__ import annotations

import logging

import stripe
from aiohttp import web

from services.payments.stripe_flow import BadEvent, handle_event
from webhooks.common import ours_failed

log = logging.getLogger(__name__)


async def stripe_webhook(request: web.Request) -> web.Response:
    from webhooks.server import SHOP_KEY

    shop = request.app[SHOP_KEY]
    gateway = shop.providers.get("stripe")
    if gateway is None:
        raise web.HTTPNotFound(text="card payments are not configured")
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="expected application/json")
    payload = await request.read()
    signature = request.headers.get("Stripe-Signature")
    if not signature:
        raise web.HTTPBadRequest(text="missing Stripe-Signature")
    try:
        event = gateway.verify_event(payload, signature)
    except stripe.SignatureVerificationError:
        log.warning("stripe.webhook.bad_signature", extra={"remote": request.remote})
        raise web.HTTPBadRequest(text="bad signature") from None
    except ValueError:
        raise web.HTTPBadRequest(text="malformed JSON") from None
    try:
        outcome = await handle_event(shop.session_factory, event, shop.settings)
    except BadEvent as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - storage failures become 503; anything else re-raises
        return ours_failed("stripe", exc)
    log.info("stripe.webhook", extra={"outcome": outcome, "type": event.get("type")})
    return web.json_response({"received": True})


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/stripe", stripe_webhook)
