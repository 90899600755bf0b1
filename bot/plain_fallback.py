"""A message Telegram refuses as unparsable HTML is sent again as plain text, never dropped.

Texts are escaped by construction (`services.i18n.t`), so this is the net under a mistake: a Bot
session request middleware (aiogram's public extension point) that catches 400 "can't parse
entities" on a call carrying a text or caption with a parse mode, and repeats that call once with
no parse mode and the text as the reader would have seen it (`services.markup.to_plain`).
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import TelegramMethod

from services.markup import is_unparsable, refusal_for_log, to_plain

log = logging.getLogger(__name__)


class ResendAsPlainText(BaseRequestMiddleware):
    async def __call__(
        self, make_request: NextRequestMiddlewareType[Any], bot: Bot, method: TelegramMethod[Any]
    ) -> Any:
        try:
            return await make_request(bot, method)
        except TelegramBadRequest as exc:
            if not is_unparsable(exc.message):
                raise
            again = as_plain_text(method)
            if again is None:
                raise
            log.warning(
                "telegram.unparsable_sent_as_plain_text",
                extra={"method": method.__api_method__, "error": refusal_for_log(exc.message)},
            )
            return await make_request(bot, again)


def as_plain_text(method: TelegramMethod[Any]) -> TelegramMethod[Any] | None:
    """The same call with its text (or caption) as plain text and no parse mode; None when it has
    neither (the refusal is then about something else)."""
    if "parse_mode" not in type(method).model_fields:
        return None
    for field in ("text", "caption"):
        value = getattr(method, field, None)
        if isinstance(value, str):
            return method.model_copy(update={field: to_plain(value), "parse_mode": None})
    return None
