"""POST /webhooks/mpesa/{token}: Daraja's STK callback. Daraja does not sign callbacks, so the URL
carries an unguessable token, and with MPESA_ALLOWED_NETWORKS set only those networks may call (the
client address as webhooks.common.client_address tells it). The body is stored before we answer
"Accepted", and it is only a hint: the STK query decides (services.payments.mpesa_flow)."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from services.payments.mpesa_flow import BadCallback, handle_callback
from webhooks.common import allowed, client_address, ours_failed, read_json

log = logging.getLogger(__name__)
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


async def mpesa_callback(request: web.Request) -> web.Response:
    from webhooks.server import SHOP_KEY

    shop = request.app[SHOP_KEY]
    settings = shop.settings
    client = client_address(request, settings.trusted_proxies, settings.client_ip_header)
    if not allowed(client, settings.mpesa_allowed_networks):
        log.warning("mpesa.callback.refused_network", extra={"client": str(client), "peer": request.remote})
        raise web.HTTPForbidden()
    expected = shop.settings.mpesa_callback_token
    given = request.match_info.get("token", "")
    if expected is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        log.warning("mpesa.callback.bad_token", extra={"client": str(client)})
        raise web.HTTPNotFound()
    payload = await read_json(request)
    try:
        outcome = await handle_callback(shop.session_factory, payload, settings, shop.providers.get("mpesa"))
    except BadCallback as exc:
        log.info("mpesa.callback.rejected", extra={"reason": str(exc)})
        raise web.HTTPBadRequest(text=str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - only storage failures become 5xx; anything else re-raises
        return ours_failed("mpesa", exc)
    log.info("mpesa.callback", extra={"outcome": outcome})
    return web.json_response(ACCEPTED)


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/mpesa/{token}", mpesa_callback)
