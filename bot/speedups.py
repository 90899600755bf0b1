"""What a webhook update costs beyond its own work, cut through public extension points only: a
Bot API session subclass that sends calls as JSON (and skips parsing replies nobody reads), and
`settle_heap` for start-up. Nothing here assigns to another library's classes."""

from __future__ import annotations

import contextvars
import datetime
import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import orjson
from aiogram import Bot
from aiogram.client.default import Default
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import InputFile, TelegramObject
from aiohttp import ClientError, ClientTimeout

_PINNED_RESPONSE_TYPES: list[type] = []


def pin_response_types() -> None:
    """aiogram parses every Bot API reply as `Response[<method's result type>]`; pydantic keeps those
    generic classes in a weak cache, so they are garbage-collected and rebuilt again and again.
    Holding them once stops that."""
    if _PINNED_RESPONSE_TYPES:
        return
    from aiogram import methods
    from aiogram.methods import Response, TelegramMethod

    for name in dir(methods):
        obj = getattr(methods, name)
        if isinstance(obj, type) and issubclass(obj, TelegramMethod) and obj is not TelegramMethod:
            _PINNED_RESPONSE_TYPES.append(Response[obj.__returning__])  # type: ignore[name-defined]  # a type found at run time


def settle_heap() -> None:
    """Move everything a started process holds for good (modules, aiogram's and pydantic's classes
    and schemas, routers, the mapped tables) out of the garbage collector's sight (`gc.freeze`).
    Otherwise every full collection walks those millions of objects again, and a run's speed depends
    on when collections fall. Call once, when startup is done."""
    gc.collect()
    gc.freeze()


_result_unused: contextvars.ContextVar[bool] = contextvars.ContextVar("bot_result_unused", default=False)


@contextmanager
def results_unused() -> Iterator[None]:
    """Bot API calls made inside are not read back (a screen edited in place): their reply is only
    checked for success, not parsed into a Message with its whole keyboard. They return True;
    failures raise exactly as usual."""
    token = _result_unused.set(True)
    try:
        yield
    finally:
        _result_unused.reset(token)


class _NotPlain(Exception):
    """A value orjson cannot encode as it is (a file, a nested default)."""


class _Upload(Exception):
    """The call uploads a file: it goes as aiogram's multipart form."""


class JsonBodySession(AiohttpSession):
    """Bot API calls as JSON bodies, which Telegram takes for every method that uploads no file.
    aiogram sends form fields, each keyboard serialised to JSON and then percent-encoded character by
    character, where one JSON encoding of the whole call costs a fraction of that. Calls that upload
    a file keep aiogram's multipart form."""

    _JSON: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - BaseSession's signature, which aiogram calls
    ) -> TelegramType:
        body = self._json_body(bot, method)
        if body is None:
            return await super().make_request(bot, method, timeout)
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(
                url,
                data=body,
                headers=self._JSON,
                timeout=ClientTimeout(total=self.timeout if timeout is None else timeout),
            ) as resp:
                raw_result = await resp.text()
        except TimeoutError as e:
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
        are; only a call orjson cannot encode so (a default nested in an object) is walked in
        Python first. Bytes: aiohttp sends them as they are, where a str body costs an encoding
        look-up and a copy."""
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
        try:
            return orjson.dumps(_resolved(payload, bot), default=_plain, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except (_Upload, orjson.JSONEncodeError):
            return None


def _resolved(value: Any, bot: Bot) -> Any:
    """`value` with the bot's defaults filled in wherever they are nested (a media caption's parse
    mode) and the Nones they leave dropped, as aiogram's form preparation does; _Upload for a file."""
    if isinstance(value, Default):
        value = bot.default[value.name]
    if isinstance(value, TelegramObject):
        value = value.model_dump(warnings=False, exclude_none=True)
    if isinstance(value, dict):
        return {key: item for key, raw in value.items() if (item := _resolved(raw, bot)) is not None}
    if isinstance(value, list):
        return [item for raw in value if (item := _resolved(raw, bot)) is not None]
    if isinstance(value, InputFile):
        raise _Upload
    return value


def _plain(value: Any) -> Any:
    """orjson's hook: dates as Unix seconds; anything else is not plain."""
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
        value = datetime.datetime.now(datetime.UTC) + value
    if isinstance(value, datetime.datetime):
        return round(value.timestamp())
    return value
