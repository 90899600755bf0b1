"""Shared rules for provider webhooks: bad input is a 4xx and changes nothing; only a failure of
ours (the database down) is a 5xx, so that the provider retries."""
from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)


async def read_json(request: web.Request) -> Any:
    """The JSON body, or an HTTP 4xx exception (wrong type, oversized, malformed)."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="expected application/json")
    raw = await request.read()  # aiohttp enforces client_max_size (413)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="malformed JSON") from None


def ours_failed(provider: str, exc: Exception) -> web.Response:
    if isinstance(exc, (OperationalError, DBAPIError, OSError, ConnectionError)):
        log.error("webhook.storage_failed", extra={"provider": provider, "error": type(exc).__name__})
        return web.json_response({"error": "temporarily unavailable"}, status=503)
    raise exc
