"""The Telegram webhook: only requests carrying our secret, junk answered 400 (never 500), and an
update Telegram delivers twice is handled once."""
from __future__ import annotations

import json
import logging
from collections import OrderedDict

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from pydantic import ValidationError

log = logging.getLogger(__name__)


class SeenUpdates:
    """Recently handled update ids (in-process; Telegram redelivers to the same URL soon after)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[int, None] = OrderedDict()

    def first_time(self, update_id: int) -> bool:
        if update_id in self._ids:
            return False
        self._ids[update_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class TelegramWebhook(SimpleRequestHandler):
    def __init__(self, dispatcher: Dispatcher, bot: Bot, secret_token: str | None) -> None:
        super().__init__(dispatcher=dispatcher, bot=bot, secret_token=secret_token, handle_in_background=False)
        self.seen = SeenUpdates()

    async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected application/json")
        try:
            update = Update.model_validate(json.loads(await request.read()), context={"bot": bot})
        except (ValueError, ValidationError):
            log.info("telegram.webhook.bad_update")
            return web.Response(status=400, text="malformed update")
        if not self.seen.first_time(update.update_id):
            log.info("telegram.webhook.duplicate", extra={"update_id": update.update_id})
            return web.json_response({})
        await self.dispatcher.feed_update(bot, update, **self.data)
        return web.json_response({})

    async def _handle_close(self, app: web.Application) -> None:
        return None  # the Shop owns the bot session and closes it
