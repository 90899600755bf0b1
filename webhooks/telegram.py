"""The Telegram webhook: only requests carrying our secret, junk answered 400 (never 500), and an
update Telegram delivers twice is handled once.

A button press is answered (answerCallbackQuery) in the webhook's own HTTP reply, which Telegram
executes as a Bot API call: one request fewer per press. Handlers keep calling `query.answer()`; a
Bot session middleware holds that call back while the update is being handled through the webhook
and the webhook returns it. An update still being handled after `HOLD_SECONDS` (a payment
provider's HTTP call) has its answer sent as a call then, so the button's spinner does not wait for
the provider. Anywhere else (polling, tests feeding updates, tasks that outlive the update) the call
goes out as usual."""
from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
from collections import OrderedDict
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.methods import AnswerCallbackQuery, TelegramMethod
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
import orjson
from aiohttp import web
from pydantic import ValidationError

from db.session import database_unreachable
from webhooks.common import ours_failed

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

    def forget(self, update_id: int) -> None:
        """Handle it again when it comes back (it failed for a reason of ours)."""
        self._ids.pop(update_id, None)


HOLD_SECONDS = 0.5


class _Reply:
    """The one callback answer an update may carry back in the webhook reply."""

    def __init__(self) -> None:
        self.method: AnswerCallbackQuery | None = None
        self.open = True
        self.timer: asyncio.TimerHandle | None = None

    def take(self) -> AnswerCallbackQuery | None:
        """Close the reply and hand over the answer held, if any (to the webhook or the late sender)."""
        self.open = False
        if self.timer is not None:
            self.timer.cancel()
        method, self.method = self.method, None
        return method


_reply: contextvars.ContextVar[_Reply | None] = contextvars.ContextVar("telegram_webhook_reply", default=None)


class DeferCallbackAnswers(BaseRequestMiddleware):
    def __init__(self) -> None:
        self._late: set[asyncio.Task[None]] = set()

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Any:
        reply = _reply.get()
        if isinstance(method, AnswerCallbackQuery) and reply is not None and reply.open and reply.method is None:
            reply.method = method
            reply.timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._send_late, reply, make_request, bot)
            return True  # what the call itself returns: the session hands back the result, not the Response
        return await make_request(bot, method)

    def _send_late(self, reply: _Reply, make_request: NextRequestMiddlewareType[Any], bot: Bot) -> None:
        method = reply.take()
        if method is not None:
            task = asyncio.create_task(self._send(make_request, bot, method))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    @staticmethod
    async def _send(make_request: NextRequestMiddlewareType[Any], bot: Bot, method: AnswerCallbackQuery) -> None:
        try:
            await make_request(bot, method)
        except Exception as exc:  # noqa: BLE001 - a spinner left turning is not worth failing the update for
            log.warning("telegram.callback_answer_failed", extra={"error": str(exc)})


def install_reply_middleware(bot: Bot) -> None:
    if not any(isinstance(m, DeferCallbackAnswers) for m in bot.session.middleware):
        bot.session.middleware(DeferCallbackAnswers())


def _without_pressed_keyboard(raw: Any) -> Any:
    """A button press carries the whole message the button was on, keyboard included: the bot's own
    buttons, which no handler reads back (they carry what they need in their callback data).
    Leaving the keyboard out before parsing spares building a dozen objects per press (~5 % of a
    browsing update's CPU on the throughput bench)."""
    if isinstance(raw, dict):
        query = raw.get("callback_query")
        message = query.get("message") if isinstance(query, dict) else None
        if isinstance(message, dict):
            message.pop("reply_markup", None)
    return raw


class TelegramWebhook(SimpleRequestHandler):
    """aiogram's handler, refusing (401) every request whose X-Telegram-Bot-Api-Secret-Token is not
    `secret_token`; it cannot be built without one."""

    def __init__(self, dispatcher: Dispatcher, bot: Bot, secret_token: str) -> None:
        if not secret_token:
            raise ValueError("the Telegram webhook needs a secret token")
        super().__init__(dispatcher=dispatcher, bot=bot, secret_token=secret_token, handle_in_background=False)
        self.seen = SeenUpdates()
        install_reply_middleware(bot)

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        """Constant-time, on bytes: a header of any characters is a wrong secret (401), never a 500
        (`secrets.compare_digest` refuses non-ASCII str)."""
        given = telegram_secret_token.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.secret_token.encode())  # type: ignore[union-attr]

    async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected application/json")
        try:
            update = Update.model_validate(_without_pressed_keyboard(orjson.loads(await request.read())),
                                           context={"bot": bot})
        except (ValueError, ValidationError):
            log.info("telegram.webhook.bad_update")
            return web.Response(status=400, text="malformed update")
        if not self.seen.first_time(update.update_id):
            log.info("telegram.webhook.duplicate", extra={"update_id": update.update_id})
            return web.json_response({})
        reply = _Reply()
        token = _reply.set(reply)
        try:
            await self.dispatcher.feed_update(bot, update, **self.data)
        except Exception as exc:  # the database out of reach becomes 503; anything else re-raises
            if not database_unreachable(exc):
                raise
            self.seen.forget(update.update_id)
            return ours_failed("telegram", exc)
        finally:
            method = reply.take()
            _reply.reset(token)
        if method is None:
            return web.json_response({})
        body = method.model_dump(exclude_none=True, warnings=False)
        body["method"] = method.__api_method__
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _handle_close(self, app: web.Application) -> None:
        return None  # the Shop owns the bot session and closes it
