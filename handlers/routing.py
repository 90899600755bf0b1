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

from handlers.filters import Buttons, NotPrivateChat


class _Event:
    """One event's router-level filters and handlers, in registration order."""

    def __init__(self) -> None:
        self.filters: list[CallbackType] = []
        self.handlers: list[tuple[CallbackType, tuple[CallbackType, ...], dict[str, Any] | None]] = []

    def filter(self, *filters: CallbackType) -> None:
        self.filters.extend(filters)

    def register(self, callback: CallbackType, *filters: CallbackType,
                 flags: dict[str, Any] | None = None) -> CallbackType:
        self.handlers.append((callback, filters, flags))
        return callback

    def __call__(self, *filters: CallbackType,
                 flags: dict[str, Any] | None = None) -> Callable[[CallbackType], CallbackType]:
        def decorator(callback: CallbackType) -> CallbackType:
            return self.register(callback, *filters, flags=flags)
        return decorator


class Routes:
    """A feature's handlers (messages, button presses, errors) and its router-level filters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message, self.callback_query, self.errors = _Event(), _Event(), _Event()

    def build(self) -> Router:
        router = Router(name=self.name)
        for observer, recorded in ((router.message, self.message), (router.callback_query, self.callback_query),
                                   (router.errors, self.errors)):
            if recorded.filters:
                observer.filter(*recorded.filters)
            for callback, filters, flags in recorded.handlers:
                observer.register(callback, *filters, flags=dict(flags) if flags else None)
        return router


class FeatureRouter(Routes):
    """`Routes` with the older constructor (admin.py and group.py): `buttons`, the prefixes of the
    feature's callback data (none: any press); `groups_only`, never a private chat's update."""

    def __init__(self, name: str, *, buttons: tuple[str, ...] = (), groups_only: bool = False) -> None:
        super().__init__(name)
        self.buttons, self.groups_only = buttons, groups_only
        if groups_only:
            self.message.filter(NotPrivateChat())
            self.callback_query.filter(NotPrivateChat())
        if buttons:
            self.callback_query.filter(Buttons(prefixes=buttons))

    def may_take(self, data: str | None, *, private: bool = False) -> bool:
        """False when the router-level filters refuse such a press."""
        if private and self.groups_only:
            return False
        return not self.buttons or (data or "").startswith(self.buttons)

    def may_take_message(self, private: bool) -> bool:
        return not (private and self.groups_only)
