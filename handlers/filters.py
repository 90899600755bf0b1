"""Small message and router filters. They are `Filter` subclasses (coroutines): aiogram runs a plain
function or a magic filter (`F.text`) in a worker thread, one hand-off per check."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiogram.filters import Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, Message, TelegramObject


class Text(Filter):
    """A text message that is not a command (free text typed at a step of a flow)."""

    async def __call__(self, message: Message) -> bool:
        return message.text is not None and not message.text.startswith("/")


class NotCommand(Filter):
    """Anything but a command: text, a sticker, a photo, a contact…"""

    async def __call__(self, message: Message) -> bool:
        return not (message.text or "").startswith("/")


class AnyCommand(Filter):
    """A command, ours or not (`/cart`, `/whatever`)."""

    async def __call__(self, message: Message) -> bool:
        return (message.text or "").startswith("/")


class SharedContact(Filter):
    async def __call__(self, message: Message) -> bool:
        return message.contact is not None


class TextIn(Filter):
    """The message's text is one of `texts()` (a reply keyboard's labels, in every language)."""

    def __init__(self, texts: Callable[[], Iterable[str]]) -> None:
        self.texts = texts

    async def __call__(self, message: Message) -> bool:
        return message.text is not None and message.text in self.texts()


def _chat_type(event: TelegramObject) -> str | None:
    if isinstance(event, CallbackQuery):
        return event.message.chat.type if event.message is not None else None
    chat = getattr(event, "chat", None)
    return chat.type if chat is not None else None


class PrivateChat(Filter):
    """The message (or the message the pressed button is on) is in a private chat."""

    async def __call__(self, event: TelegramObject) -> bool:
        return _chat_type(event) == "private"


class Never(Filter):
    """Router-level: this router takes no event of this kind (its sub-routers are not even entered)."""

    async def __call__(self, event: TelegramObject) -> bool:
        return False


class NotPrivateChat(Filter):
    """A group's, supergroup's or channel's message or button (not a press whose message is unknown)."""

    async def __call__(self, event: TelegramObject) -> bool:
        chat_type = _chat_type(event)
        return chat_type is not None and chat_type != "private"


class Buttons(Filter):
    """Router-level: the press is one of these factories' buttons, by prefix (`cat:` …), or one of
    the `exact` packed buttons ("menu:cart"). A router filtered so is not searched for a press that
    is not its own; the handlers' `Factory.filter()` unpack the data."""

    def __init__(self, *factories: type[CallbackData], exact: Iterable[str] = ()) -> None:
        self.prefixes = tuple(dict.fromkeys(f"{f.__prefix__}{f.__separator__}" for f in factories))
        self.exact = frozenset(exact)

    async def __call__(self, query: CallbackQuery) -> bool:
        data = query.data
        return data is not None and (data in self.exact or data.startswith(self.prefixes))
