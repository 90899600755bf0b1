"""Shared rules for provider webhooks: bad input is a 4xx and changes nothing; only a failure of
ours (the database down) is a 5xx, so that the provider retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
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


IPAddress = IPv4Address | IPv6Address
Networks = Sequence[IPv4Network | IPv6Network]


def _parse_ip(text: str) -> IPAddress | None:
    """An address as peers and proxies write it ("1.2.3.4", "1.2.3.4:5678", "[::1]:80", "::ffff:1.2.3.4"
    is the IPv4 address), or None."""
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    return addr.ipv4_mapped or addr if isinstance(addr, IPv6Address) else addr


def _within(addr: IPAddress, networks: Networks) -> bool:
    return any(addr in net for net in networks)


def client_address(
    request: web.Request, trusted_proxies: Networks, header: str = "X-Forwarded-For"
) -> IPAddress | None:
    """Who sent the request: the TCP peer, unless the peer is one of our trusted proxies; then the
    right-most address in `header` that is not itself a trusted proxy (the left part of that header
    is whatever the client wrote, so it is never read past an untrusted hop). The header of a peer
    that is not a trusted proxy is ignored. None when it cannot be told (no peer, a malformed hop)."""
    peer = _parse_ip(request.remote or "")
    if peer is None or not _within(peer, trusted_proxies):
        return peer
    hops = [hop for line in request.headers.getall(header, []) for hop in line.split(",")]
    for hop in reversed(hops):
        addr = _parse_ip(hop)
        if addr is None or not _within(addr, trusted_proxies):
            return addr
    return _parse_ip(hops[0]) if hops else peer  # only our proxies on the way: the request is theirs


def allowed(addr: IPAddress | None, networks: Networks) -> bool:
    """Is the client inside `networks`? An empty list allows everyone; an unknown client no one."""
    return not networks or (addr is not None and _within(addr, networks))
