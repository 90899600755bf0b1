"""How updates find their handler: plain aiogram routers with router-level filters, one per feature,
built afresh for each dispatcher; every button is a CallbackData factory."""

from __future__ import annotations

from aiogram import Dispatcher, F
from aiogram.types import CallbackQuery, Chat, Message, User

from handlers import setup_routers
from handlers.buttons import MENU_CART, MENU_CATALOG, Card, CardAction, Category, Menu, MenuScreen
from handlers.filters import Buttons, NotPrivateChat
from handlers.routing import Routes
from tests.harness import Harness

USER = User(id=5, is_bot=False, first_name="Wanjiru")
PRIVATE = Chat(id=5, type="private")
GROUP = Chat(id=-100, type="supergroup")


def _tree() -> Routes:
    """group (groups only) → catalog (its buttons) → cart (its buttons) → fallback (anything)."""
    group, cat, cart, fallback = Routes("group"), Routes("catalog"), Routes("cart"), Routes("fallback")
    group.message.filter(NotPrivateChat())
    group.callback_query.filter(NotPrivateChat())
    cat.callback_query.filter(Buttons(Category, exact=(MENU_CATALOG,)))
    cart.callback_query.filter(Buttons(exact=(MENU_CART,)))

    @group.message()
    @group.callback_query()
    async def in_group(event: object) -> str:
        return "group"

    @cat.callback_query(Menu.filter(F.screen == MenuScreen.CATALOG))
    async def catalogue(query: CallbackQuery) -> str:
        return "catalog"

    @cat.callback_query(Card.filter(F.action == CardAction.VIEW))
    async def card(query: CallbackQuery, callback_data: Card) -> str:
        return f"card {callback_data.product_id}×{callback_data.qty}"

    @cart.callback_query(Menu.filter(F.screen == MenuScreen.CART))
    async def open_cart(query: CallbackQuery) -> str:
        return "cart"

    @fallback.callback_query()
    async def stale(query: CallbackQuery) -> str:
        return "stale"

    @fallback.message()
    async def text(message: Message) -> str:
        return "message"

    root = Routes("root")
    root.sub = [group, cat, cart, fallback]  # type: ignore[attr-defined]
    return root


def _build(root: Routes) -> object:
    router = root.build()
    router.include_routers(*(r.build() for r in root.sub))  # type: ignore[attr-defined]
    return router


def _press(data: str | None, chat: Chat = PRIVATE) -> CallbackQuery:
    message = Message(message_id=1, date=0, chat=chat, text="screen")  # type: ignore[arg-type]
    return CallbackQuery(id="q", from_user=USER, chat_instance="c", data=data, message=message)


async def test_a_press_reaches_its_feature_and_anything_else_the_fallback() -> None:
    router = _build(_tree())
    assert await router.propagate_event("callback_query", _press("menu:catalog")) == "catalog"
    assert await router.propagate_event("callback_query", _press("cat:v:12:3")) == "card 12×3"
    assert await router.propagate_event("callback_query", _press("menu:cart")) == "cart"
    for stale in ("cat:v:1234567890:1", "cat:v:-1:1", "cat:v:1", "cat:zz", "menu:nope", "old:button", None):
        assert await router.propagate_event("callback_query", _press(stale)) == "stale", stale


async def test_a_group_only_router_never_takes_private_updates() -> None:
    router = _build(_tree())
    assert await router.propagate_event("callback_query", _press("menu:cart")) == "cart"
    assert await router.propagate_event("callback_query", _press("menu:cart", GROUP)) == "group"
    private = Message(message_id=2, date=0, chat=PRIVATE, from_user=USER, text="hi")  # type: ignore[arg-type]
    in_group = Message(message_id=3, date=0, chat=GROUP, from_user=USER, text="hi")  # type: ignore[arg-type]
    assert await router.propagate_event("message", private) == "message"
    assert await router.propagate_event("message", in_group) == "group"
    unknown = CallbackQuery(id="q", from_user=USER, chat_instance="c", data="menu:cart")  # no message with it
    assert await router.propagate_event("callback_query", unknown) == "cart"


async def test_router_filters_and_handlers_are_coroutines() -> None:
    """aiogram runs a synchronous filter (a magic `F.…` filter included) in a worker thread."""
    root = setup_routers()
    for router in root.chain_tail:
        for observer in (router.message, router.callback_query):
            for handler in observer.handlers:
                for flt in handler.filters or []:
                    assert flt.awaitable and flt.magic is None, (router.name, handler.callback, flt.callback)


def test_each_dispatcher_gets_its_own_routers() -> None:
    first, second = Dispatcher(), Dispatcher()
    first.include_router(setup_routers())
    second.include_router(setup_routers())  # a router belongs to one parent: a new tree each time
    names = [r.name for r in first.sub_routers[0].sub_routers]
    assert names[:3] == ["private_presses", "group", "start"] and names[-1] == "common"
    assert not set(map(id, first.chain_tail)) & set(map(id, second.chain_tail))


async def test_unknown_and_malformed_presses_get_the_stale_answer(shop: Harness) -> None:
    await shop.send(5, "/start")
    for data in (
        "something:old",
        "cat:v:99999999999999999999:1",
        "cat:v:-1:1",
        "cat:v:x:1",
        "cat:c:",
        "cat:p:1:c:1.1",
        "cat:p:1:a:notacursor",
        "cat:q:1",
        "crt:pg:123456",
        "crt:d:1:-1",
        "crt:zz",
        "crt:",
        "cat::5",
        "chk::nairobi",
        "menu:nope",
        "menu:",
        "chk:nope",
        "pay:m:",
        "pay:zz:HL-ABC123",
        "pay:m:HL-A:B",
        "ord:v:",
        "ord:x:HL-ABC123",
        ":",
        "",
    ):
        await shop.press(5, data)
        assert shop.last_answer is not None and "expired" in shop.last_answer.params["text"], data


async def test_a_private_press_skips_the_routers_that_cannot_take_it(shop: Harness) -> None:
    """A press in a private chat goes straight to the features that own buttons: the group and admin
    routers are not even entered. A press none of them owns still reaches the fallback through the
    full list (the stale-button answer), and a group's press still reaches the group router."""
    entered: list[str] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def record(handler, event, data):  # type: ignore[no-untyped-def]
            entered.append(name)
            return await handler(event, data)

        return record

    for router in shop.shop.dp.chain_tail:
        if router.name in ("group", "admin", "catalog", "common"):
            router.callback_query.outer_middleware(recorder(router.name))
    await shop.send(5, "/start")
    catalogue = await shop.press(5, MENU_CATALOG)
    assert entered == ["catalog"] and catalogue.method == "editMessageText"
    entered.clear()
    await shop.press(5, "something:old")
    assert entered[-1] == "common" and shop.last_answer.params["text"].startswith("This button has expired")
