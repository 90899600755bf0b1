"""Where aiogram's generic machinery costs a webhook update more than the work itself. Each tweak
keeps aiogram's behaviour and was found with a profiler on the throughput bench (bench/RESULTS.md).
They are applied once, by `build_bot` and `build_dispatcher`."""
from __future__ import annotations

import asyncio
import contextvars
import datetime
import functools
import gc
import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from aiogram import Bot, Dispatcher
from aiogram.client.default import Default
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import TelegramObject
import orjson
from aiohttp import ClientError

_PINNED_RESPONSE_TYPES: list[type] = []


def pin_response_types() -> None:
    """aiogram parses every Bot API reply as `Response[<method's result type>]`; pydantic keeps those
    generic classes in a weak cache, so they are garbage-collected and rebuilt again and again (a
    profile showed ~15 % of a webhook update's CPU there). Holding them once stops that."""
    if _PINNED_RESPONSE_TYPES:
        return
    import aiogram.methods as methods
    from aiogram.methods import Response, TelegramMethod

    for name in dir(methods):
        obj = getattr(methods, name)
        if isinstance(obj, type) and issubclass(obj, TelegramMethod) and obj is not TelegramMethod:
            _PINNED_RESPONSE_TYPES.append(Response[obj.__returning__])  # type: ignore[name-defined]


def settle_heap() -> None:
    """Move everything a started process holds for good (modules, aiogram's and pydantic's classes
    and schemas, routers, the mapped tables) out of the garbage collector's sight (`gc.freeze`).
    Otherwise every full collection walks those millions of objects again: on the throughput bench
    that was 20-40 % of the CPU, and why the same run went at two speeds (the echo bot: 1,560 or
    2,510 updates/s, depending on when collections fell). Call once, when startup is done."""
    gc.collect()
    gc.freeze()


def _bind_bot(self: Any, context: Any, /) -> None:
    bot = context.get("bot") if context else None
    private = getattr(self, "__pydantic_private__", None)
    if private is None:
        object.__setattr__(self, "__pydantic_private__", {"_bot": bot})
    else:  # a subclass defined later, whose own private attributes pydantic has just set up
        private["_bot"] = bot


def bind_bot_cheaply() -> None:
    """Every aiogram object (each nested User, Chat, Message, button … of an update and of every Bot
    API reply) keeps its Bot in the private attribute `_bot`, set by `model_post_init`. Pydantic
    wraps that hook again at every class level (BotContextController → TelegramObject → Message),
    and each wrapper runs its generic private-attribute set-up: ~10 % of a webhook update's CPU in
    the throughput profile (Update parsing 80 → 40 µs for a button press on a 10-button screen).
    Where a class's only private attribute is `_bot` and its hook is that chain of wrappers around
    aiogram's own, the hook is replaced by one that leaves the same state
    (`__pydantic_private__ == {"_bot": bot or None}`). Classes with anything else keep theirs, and
    so do classes defined after this ran (they are only slower). Safe to call again."""
    from aiogram.client.context_controller import BotContextController

    original = inspect.unwrap(BotContextController.model_post_init)
    todo, seen = [BotContextController], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if (set(getattr(cls, "__private_attributes__", ())) == {"_bot"}
                and inspect.unwrap(cls.model_post_init) in (original, _bind_bot)):
            cls.model_post_init = _bind_bot  # type: ignore[method-assign]


def _wrap_middlewares(middlewares: Any, handler: Any) -> Any:
    def handler_wrapper(event: Any, kwargs: dict[str, Any]) -> Any:
        return handler(event, **kwargs)

    middleware = handler_wrapper
    for m in reversed(middlewares):
        middleware = functools.partial(m, middleware)
    return middleware


def wrap_middlewares_cheaply() -> None:
    """aiogram chains the middlewares of every router an update passes through anew for each update,
    and dresses each chain's innermost function with `functools.wraps` (a copy of the handler's
    name, docstring and attributes that nothing reads). A press passes up to ten routers on its way
    to its handler, so that copying was ~1.5 % of a browsing update. The chain itself is unchanged."""
    from aiogram.dispatcher.middlewares.manager import MiddlewareManager

    MiddlewareManager.wrap_middlewares = staticmethod(_wrap_middlewares)  # type: ignore[method-assign]


def run_magic_filters_inline(dispatcher: Dispatcher) -> None:
    """aiogram runs every synchronous filter through `asyncio.to_thread`, including the `F.data == …`
    magic filters, so routing one callback past ~30 handlers meant ~30 thread hand-offs (a profile
    of the throughput bench showed them as the largest single cost after the database). Magic filters
    are pure attribute checks, so they are made awaitable and evaluated inline instead."""
    for router in dispatcher.chain_tail:
        for observer in router.observers.values():
            for handler in [observer._handler, *observer.handlers]:  # noqa: SLF001 (observer-level filters)
                for flt in handler.filters or []:
                    if flt.magic is not None and not flt.awaitable:
                        flt.callback, flt.awaitable = _inline(flt.callback), True


def _inline(resolve: Any) -> Any:
    async def check(value: Any) -> Any:
        return resolve(value)
    return check


_result_unused: contextvars.ContextVar[bool] = contextvars.ContextVar("bot_result_unused", default=False)


@contextmanager
def results_unused() -> Iterator[None]:
    """Bot API calls made inside are not read back (a screen edited in place): their reply is only
    checked for success, not parsed into a Message with its whole keyboard (~6 % of a browsing
    update's CPU). They return True; failures raise exactly as usual."""
    token = _result_unused.set(True)
    try:
        yield
    finally:
        _result_unused.reset(token)


class _NotPlain(Exception):
    """A value only aiogram's own preparation knows how to send (a file, a nested default)."""


class JsonBodySession(AiohttpSession):
    """Bot API calls as JSON bodies, which Telegram takes for every method that uploads no file.
    aiogram sends form fields, each keyboard serialised to JSON and then percent-encoded character by
    character: ~8 % of a browsing update's CPU in the throughput profile, against ~1 % for one
    JSON encoding of the whole call. Calls that upload a file keep aiogram's multipart form."""

    _JSON = {"Content-Type": "application/json"}

    async def make_request(self, bot: Bot, method: TelegramMethod[TelegramType],
                           timeout: int | None = None) -> TelegramType:
        body = self._json_body(bot, method)
        if body is None:
            return await super().make_request(bot, method, timeout)
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(url, data=body, headers=self._JSON,
                                    timeout=self.timeout if timeout is None else timeout) as resp:
                raw_result = await resp.text()
        except asyncio.TimeoutError as e:
            raise TelegramNetworkError(method=method, message="Request timeout error") from e
        except ClientError as e:
            raise TelegramNetworkError(method=method, message=f"{type(e).__name__}: {e}") from e
        if resp.status == 200 and _result_unused.get() and _succeeded(raw_result):
            return cast(TelegramType, True)
        response = self.check_response(bot=bot, method=method, status_code=resp.status, content=raw_result)
        return cast(TelegramType, response.result)

    def _json_body(self, bot: Bot, method: TelegramMethod[Any]) -> bytes | None:
        """The call as JSON, or None when it uploads a file (multipart then). exclude_none: aiogram's
        preparation drops None anyway, after walking every unset field of every button (a dozen
        each) in Python; pydantic-core leaves them out before that. Plain values go to orjson as they
        are; only what it cannot encode (a nested default) goes through aiogram's `prepare_value`,
        which walked every button of every keyboard (~5 % of a browsing update). Bytes: aiohttp
        sends them as they are, where a str body costs an encoding look-up and a copy."""
        payload: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False, exclude_none=True).items():
            if isinstance(value, Default):
                value = bot.default[value.name]
            if isinstance(value, TelegramObject):
                value = value.model_dump(warnings=False, exclude_none=True)
            if value is not None and value != "":
                payload[key] = value
        try:
            return orjson.dumps(payload, default=_plain, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except orjson.JSONEncodeError:  # _NotPlain, or an integer beyond 64 bits
            pass
        files: dict[str, Any] = {}
        prepared = {key: self.prepare_value(_scalar(value), bot=bot, files=files, _dumps_json=False)
                    for key, value in payload.items()}
        if files:
            return None
        return self.json_dumps(prepared).encode()  # payload has no None or "" left to drop


def _plain(value: Any) -> Any:
    """orjson's hook: dates as Unix seconds; anything else needs aiogram's preparation."""
    if isinstance(value, (datetime.datetime, datetime.timedelta)):
        return _scalar(value)
    raise _NotPlain


_OK_FIRST = re.compile(r'\s*\{\s*"ok"\s*:\s*true\b')


def _succeeded(raw: str) -> bool:
    """The Bot API's reply says ok: true. Telegram writes "ok" first; a reply written otherwise
    is parsed in full (`check_response`), so this only ever takes a shortcut, never a guess."""
    return _OK_FIRST.match(raw) is not None


def _scalar(value: Any) -> Any:
    """Dates as Unix seconds: a number in JSON, where aiogram's form preparation writes a string."""
    if isinstance(value, datetime.timedelta):
        value = datetime.datetime.now() + value  # noqa: DTZ005 (aiogram does the same)
    if isinstance(value, datetime.datetime):
        return round(value.timestamp())
    return value
