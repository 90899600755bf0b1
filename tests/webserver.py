"""Run the shop's aiohttp application on a free local port for a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from bot.runtime import Shop
from webhooks.server import build_web_app


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serve_shop(shop: Shop, port: int = 0) -> AsyncIterator[str]:
    """Yields the base URL (http://127.0.0.1:PORT) of the running web app."""
    runner = web.AppRunner(build_web_app(shop), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
