"""Feature routers, built afresh for each dispatcher.

An aiogram `Router` can be included in one parent only, and a process may build several dispatchers
(each test and benchmark starts its own shop). So a feature module does not hold a Router: it holds
`Routes`, which takes the same decorators and filters as a Router (`@router.callback_query(...)`,
`router.message.filter(...)`, `@router.errors()`) and registers them on a new plain Router at each
`build()`, through aiogram's public `register` and `filter`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiogram import Router
from aiogram.dispatcher.event.handler import CallbackType


class _Event:
    """One event's router-level filters and handlers, in registration order."""

    def __init__(self) -> None:
        self.filters: list[CallbackType] = []
        self.handlers: list[tuple[CallbackType, tuple[CallbackType, ...], dict[str, Any] | None]] = []

    def filter(self, *filters: CallbackType) -> None:
        self.filters.extend(filters)

    def register(
        self, callback: CallbackType, *filters: CallbackType, flags: dict[str, Any] | None = None
    ) -> CallbackType:
        self.handlers.append((callback, filters, flags))
        return callback

    def __call__(
        self, *filters: CallbackType, flags: dict[str, Any] | None = None
    ) -> Callable[[CallbackType], CallbackType]:
        def decorator(callback: CallbackType) -> CallbackType:
            return self.register(callback, *filters, flags=flags)

        return decorator


class Routes:
    """A feature's handlers (messages, button presses, inline queries, errors) and its router-level filters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message, self.callback_query, self.errors = _Event(), _Event(), _Event()
        self.inline_query = _Event()

    def build(self) -> Router:
        router = Router(name=self.name)
        for observer, recorded in (
            (router.message, self.message),
            (router.callback_query, self.callback_query),
            (router.inline_query, self.inline_query),
            (router.errors, self.errors),
        ):
            if recorded.filters:
                observer.filter(*recorded.filters)
            for callback, filters, flags in recorded.handlers:
                observer.register(callback, *filters, flags=dict(flags) if flags else None)
        return router
