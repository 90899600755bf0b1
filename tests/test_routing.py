"""handlers/routing.py: the root router skips a feature only where that feature's own first filter
would have refused the press, so every press still reaches the same handler as without it."""
from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import CallbackQuery, Message, User

from handlers.routing import FeatureRouter, RootRouter

USER = User(id=5, is_bot=False, first_name="Wanjiru")


def _tree(seen: list[str]) -> RootRouter:
    root = RootRouter(name="root")
    cat = FeatureRouter("catalog", buttons=("cat:", "menu:catalog"))
    watched = FeatureRouter("watched", buttons=("w:",))
    anything = FeatureRouter("fallback")

    @cat.callback_query(F.data.startswith("cat:v:"))
    async def view(query: CallbackQuery) -> str:
        return "catalog"

    @watched.callback_query.outer_middleware()
    async def count(handler: Any, event: Any, data: dict[str, Any]) -> Any:
        seen.append(event.data)  # an outer middleware sees every press that reaches its router
        return await handler(event, data)

    @watched.callback_query()
    async def watch(query: CallbackQuery) -> str:
        return "watched"

    @anything.callback_query()
    async def stale(query: CallbackQuery) -> str:
        return "fallback"

    @anything.message()
    async def text(message: Message) -> str:
        return "message"

    for router in (cat, watched, anything):
        root.include_router(router)
    return root


def _press(data: str | None) -> CallbackQuery:
    return CallbackQuery(id="q", from_user=USER, chat_instance="c", data=data)


async def test_presses_reach_the_same_handlers_and_skipped_routers_are_only_those_that_would_refuse() -> None:
    seen: list[str] = []
    root = _tree(seen)
    assert await root.propagate_event("callback_query", _press("cat:v:1:1")) == "catalog"
    assert await root.propagate_event("callback_query", _press("w:1")) == "watched"
    assert await root.propagate_event("callback_query", _press("cat:zz")) == "fallback"  # entered, no handler
    assert await root.propagate_event("callback_query", _press("old:button")) == "fallback"
    assert await root.propagate_event("callback_query", _press(None)) == "fallback"
    # the router with an outer middleware is never skipped: its middleware saw all but the first press
    assert seen == ["w:1", "cat:zz", "old:button", None]


async def test_a_router_without_prefixes_takes_any_press_and_messages_go_the_usual_way() -> None:
    root = RootRouter(name="root")
    cat = FeatureRouter("catalog", buttons=("cat:",))
    anything = FeatureRouter("fallback")

    @anything.callback_query()
    async def stale(query: CallbackQuery) -> str:
        return "fallback"

    root.include_router(cat)
    root.include_router(anything)
    assert not cat.may_take("menu:main") and cat.may_take("cat:c:1") and anything.may_take("whatever")
    assert await root.propagate_event("callback_query", _press("menu:main")) == "fallback"
    message = Message(message_id=1, date=0, chat={"id": 5, "type": "private"}, text="hi")  # type: ignore[arg-type]
    assert await root.propagate_event("message", message) is UNHANDLED  # nobody takes messages here
