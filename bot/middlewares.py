"""Middlewares: one DB session per update (committed when the handler succeeds), the customer's
language, and the customer row itself so handlers can stay thin.

Both run once the handler is chosen: a session is opened only for handlers that take one (or the
customer), and the customer row is loaded only for handlers that take a `customer` argument, so
screens that need neither (the main menu, help, cached catalogue screens) cost no database work."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.dispatcher.flags import get_flag
from aiogram.types import TelegramObject, User
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.session import autocommit_sessionmaker
from services.cart import ensure_customer, register_customer
from services.i18n import supported_language

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# Handler flag: this handler's statements may each commit on its own (reads, single-statement
# writes), so its update pays no BEGIN/COMMIT round trips. See DbSessionMiddleware.
ONE_STATEMENT_EACH = {"autocommit": True}


def statements_commit(data: dict[str, Any]) -> bool:
    """The chosen handler is flagged `ONE_STATEMENT_EACH`: each statement of its session commits as it runs."""
    return bool(get_flag(data, "autocommit"))


class DbSessionMiddleware(BaseMiddleware):
    """One session for the update, committed when the handler succeeds. Inner middleware: it runs
    once the handler is chosen and opens nothing for handlers that need no database (the menu, help,
    catalogue screens served from memory).

    A handler flagged `ONE_STATEMENT_EACH` gets a session whose statements
    commit one by one: for screens that only read, or write with one self-contained statement. Its
    whole update then costs one round trip per statement instead of BEGIN, statements, COMMIT."""

    USES_DATABASE = frozenset({"session", "customer", "customer_id"})

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], customers: CustomerMiddleware | None = None
    ) -> None:
        self.session_factory = session_factory
        self.autocommit_factory = autocommit_sessionmaker(session_factory)
        self.customers = customers

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        chosen: HandlerObject | None = data.get("handler")
        if (
            chosen is not None
            and not chosen.varkw
            and (self.USES_DATABASE.isdisjoint(chosen.params) or self._only_a_known_id(chosen, data))
            and not (self.customers is not None and data.get(LANGUAGE_UNKNOWN))  # its language is read in it
        ):
            return await handler(event, data)
        autocommit = statements_commit(data)
        async with (self.autocommit_factory if autocommit else self.session_factory)() as session:
            data["session"] = session
            result = await handler(event, data)
            # Statement by statement, everything executed is committed already: only objects the
            # handler changed without flushing are left to write.
            if session.in_transaction() and (not autocommit or session.new or session.dirty or session.deleted):
                await session.commit()
            return result

    def _only_a_known_id(self, chosen: HandlerObject, data: dict[str, Any]) -> bool:
        """The handler takes just `customer_id`, of a customer checked moments ago (/start)."""
        return (
            self.customers is not None
            and "session" not in chosen.params
            and "customer" not in chosen.params
            and self.customers.known(data)
        )


class LanguageMemo:
    """The language each customer chose (/language), as this process last read it from their row:
    user id -> (until, their choice or None for "never chose"). The row is the truth; an entry lives
    `remember_seconds`, so a choice made through another process shows here within that time (at
    once on screens that load the customer row, which refresh it)."""

    def __init__(self, remember_seconds: float = 60.0, max_remembered: int = 100_000) -> None:
        self.remember_seconds, self.max_remembered = remember_seconds, max_remembered
        self._chosen: dict[int, tuple[float, str | None]] = {}

    def lookup(self, user_id: int) -> tuple[bool, str | None]:
        """(known, chosen): whether this process read the customer's choice lately, and that choice."""
        until, chosen = self._chosen.get(user_id, (0.0, None))
        return until > time.monotonic(), chosen

    def remember(self, user_id: int, chosen: str | None) -> None:
        now = time.monotonic()
        if len(self._chosen) >= self.max_remembered:
            self._chosen = {k: v for k, v in self._chosen.items() if v[0] > now}
            if len(self._chosen) >= self.max_remembered:
                self._chosen.clear()
        self._chosen[user_id] = (now + self.remember_seconds, chosen)


# data key: the customer's chosen language is not known to this process; the inner middlewares read it.
LANGUAGE_UNKNOWN = "language_unknown"


class LanguageMiddleware(BaseMiddleware):
    """Picks the language of the texts: the customer's own choice (/language) when this process knows
    it, else their Telegram client's when we have that catalogue, else English. Outer and on every
    update, so it only looks in memory: when the choice is not known here (a customer this process
    has not seen for `LanguageMemo.remember_seconds`) it flags the update, and CustomerMiddleware
    reads the choice with the customer row or its registration and corrects `lang` before the handler."""

    def __init__(self, languages: LanguageMemo | None = None) -> None:
        self.languages = languages

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        lang = "en"
        if user is not None and not user.is_bot:
            lang = supported_language(user.language_code)
            if self.languages is not None:
                known, chosen = self.languages.lookup(user.id)
                if chosen is not None:
                    lang = chosen
                elif not known and CustomerMiddleware.key_of(data) is not None:
                    data[LANGUAGE_UNKNOWN] = True
        data["lang"] = lang
        data["telegram_lang"] = supported_language(user.language_code) if user is not None else "en"
        return await handler(event, data)


class CustomerMiddleware(BaseMiddleware):
    """Registers the customer on first contact (and notes they can be reached again). Handlers that
    take `customer` get the row; handlers that only need to know who it is take `customer_id`, and
    for those a customer this process registered or checked less than `remember_seconds` ago costs
    no lookup (browsing the catalogue is most of the traffic). Inner middleware: it runs once the
    handler is chosen, so screens that need neither cost nothing."""

    def __init__(
        self, remember_seconds: float = 60.0, max_remembered: int = 100_000, languages: LanguageMemo | None = None
    ) -> None:
        self.remember_seconds, self.max_remembered = remember_seconds, max_remembered
        self._checked: dict[tuple[int, int], float] = {}  # (user id, chat id) -> until (monotonic)
        self.languages = languages if languages is not None else LanguageMemo(remember_seconds, max_remembered)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        chosen: HandlerObject | None = data.get("handler")
        wants_row = chosen is None or chosen.varkw or "customer" in chosen.params
        wants_id = chosen is not None and "customer_id" in chosen.params
        wants_language = bool(data.get(LANGUAGE_UNKNOWN))
        key = self.key_of(data) if wants_row or wants_id or wants_language else None
        if key is not None:
            user: User = data["event_from_user"]
            now = time.monotonic()
            # No session: DbSessionMiddleware found this customer known a moment ago and opened none.
            if (wants_row or wants_language or self._checked.get(key, 0.0) <= now) and "session" in data:
                session: AsyncSession = data["session"]
                telegram_lang = data.get("telegram_lang", "en")
                who = (session, user.id, key[1], user.first_name or "", user.username, telegram_lang)
                if wants_row:
                    customer = await ensure_customer(*who)
                    data["customer"] = customer
                    own = customer.language if customer.language_chosen else None
                else:
                    own = await register_customer(*who)
                self.languages.remember(user.id, own)
                data["lang"] = own or telegram_lang
                if statements_commit(data) and not wants_row:
                    self._remember(key, now)  # the registration committed as it ran
                else:  # once it is committed: a first contact rolled back with its update left no row
                    sa_event.listen(
                        session.sync_session, "after_commit", lambda _s: self._remember(key, now), once=True
                    )
            data["customer_id"] = user.id
        return await handler(event, data)

    def known(self, data: dict[str, Any]) -> bool:
        """The customer behind this update was registered or checked less than `remember_seconds` ago."""
        key = self.key_of(data)
        return key is not None and self._checked.get(key, 0.0) > time.monotonic()

    @staticmethod
    def key_of(data: dict[str, Any]) -> tuple[int, int] | None:
        """(user id, chat id) of a customer writing to us in private; None for bots and groups."""
        user: User | None = data.get("event_from_user")
        chat = data.get("event_chat")
        if user is None or user.is_bot or (chat is not None and chat.type != "private"):
            return None
        return user.id, chat.id if chat else user.id

    def _remember(self, key: tuple[int, int], now: float) -> None:
        if len(self._checked) >= self.max_remembered:
            self._checked = {k: until for k, until in self._checked.items() if until > now}
            if len(self._checked) >= self.max_remembered:
                self._checked.clear()
        self._checked[key] = now + self.remember_seconds
