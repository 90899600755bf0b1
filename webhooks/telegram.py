"""The Telegram webhook: only requests carrying our secret, junk answered 4xx (never 500), an
update Telegram delivers twice handled once, and a failure of our storage answered 503 so that
Telegram delivers the update again. Built on aiohttp and the dispatcher's `feed_update` only.

A button press is answered (answerCallbackQuery) in the webhook's own HTTP reply, which Telegram
executes as a Bot API call: one request fewer per press. Handlers keep calling `query.answer()`; a
Bot session middleware holds that call back while the update is being handled through the webhook
and the webhook returns it. An update still being handled after `HOLD_SECONDS` (a payment
provider's HTTP call) has its answer sent as a call then, so the button's spinner does not wait for
the provider. Anywhere else (polling, tasks that outlive the update) the call goes out as usual."""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
from collections import OrderedDict
from typing import Any

import orjson
from aiogram import Bot, Dispatcher
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.methods import AnswerCallbackQuery, TelegramMethod
from aiogram.types import Update
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
        """The update was not handled after all: its redelivery is a first time again."""
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

    async def __call__(
        self, make_request: NextRequestMiddlewareType[Any], bot: Bot, method: TelegramMethod[Any]
    ) -> Any:
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
    Leaving the keyboard out before parsing spares building a dozen objects per press."""
    if isinstance(raw, dict):
        query = raw.get("callback_query")
        message = query.get("message") if isinstance(query, dict) else None
        if isinstance(message, dict):
            message.pop("reply_markup", None)
    return raw


class TelegramWebhook:
    """The aiohttp handler of POST /telegram, for one bot. It cannot be built without a secret.

    In order: a request without our X-Telegram-Bot-Api-Secret-Token is refused (401), a body that
    is not JSON (415) or not an update (400) changes nothing, an update id seen before is answered
    once more without being handled, and the rest is fed to the dispatcher while the answer to a
    button press is held for the reply. A failure of our storage (the database, its connection)
    answers 503 and forgets the id, so Telegram's redelivery is handled afresh."""

    SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

    def __init__(self, dispatcher: Dispatcher, bot: Bot, secret_token: str, **data: Any) -> None:
        if not secret_token:
            raise ValueError("the Telegram webhook needs a secret token")
        self.dispatcher = dispatcher
        self.bot = bot
        self.data = data  # extra keyword arguments for every update's handlers
        self._secret = secret_token.encode()
        self.seen = SeenUpdates()
        install_reply_middleware(bot)

    def register(self, app: web.Application, path: str) -> None:
        app.router.add_post(path, self.handle)

    def verify_secret(self, given: str) -> bool:
        """Constant-time, on bytes: a header of any characters is a wrong secret (401), never a 500
        (`hmac.compare_digest` refuses non-ASCII str). aiohttp decodes header bytes that are not
        UTF-8 as surrogates, which this encodes back to the bytes that came."""
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._secret)

    async def handle(self, request: web.Request) -> web.Response:
        if not self.verify_secret(request.headers.get(self.SECRET_HEADER, "")):
            return web.Response(status=401, text="Unauthorized")
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected application/json")
        raw = await request.read()  # aiohttp enforces client_max_size (413)
        try:
            update = Update.model_validate(_without_pressed_keyboard(orjson.loads(raw)), context={"bot": self.bot})
        except (ValueError, ValidationError):  # orjson.JSONDecodeError is a ValueError
            log.info("telegram.webhook.bad_update")
            return web.Response(status=400, text="malformed update")
        if not self.seen.first_time(update.update_id):
            log.info("telegram.webhook.duplicate", extra={"update_id": update.update_id})
            return _empty_reply()
        reply = _Reply()
        token = _reply.set(reply)
        try:
            await self.dispatcher.feed_update(self.bot, update, **self.data)
        except Exception as exc:
            self.seen.forget(update.update_id)  # not handled: Telegram's redelivery must be
            if database_unreachable(exc):  # ours and passing: 503, Telegram delivers it again
                return ours_failed("telegram", exc)
            raise
        finally:
            method = reply.take()
            _reply.reset(token)
        if method is None:
            return _empty_reply()
        body = method.model_dump(exclude_none=True, warnings=False)
        body["method"] = method.__api_method__
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _empty_reply() -> web.Response:
    return web.Response(body=b"{}", content_type="application/json")
