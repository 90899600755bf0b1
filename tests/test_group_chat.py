"""Customer commands and buttons in a group get one short "let's talk in private" answer (not an
error, not a customer screen); plain chatter in a group gets nothing; admin commands are untouched."""

from __future__ import annotations

import pytest
from aiogram.types import CallbackQuery, Message
from aiohttp import web
from sqlalchemy import func, select

from db.models import Customer
from handlers import group
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
from tests.standins import BotAPIStandIn

GROUP = -100777
BUYER = 7171
PRIVATE = "Let's talk in private"
LINK = 'href="https://t.me/hacklab_shop_bot"'

pytestmark = pytest.mark.faults  # forged input and abuse through the real entry points


def said(shop: Harness, chat_id: int, since: int) -> list[str]:
    return [c.text for c in shop.botapi.calls[since:] if c.method == "sendMessage" and c.chat_id == chat_id]


async def say(shop: Harness, user_id: int, text: str, chat_id: int) -> None:
    """Like `shop.send`, for a message the bot may rightly leave unanswered."""
    msg = shop._message(user_id, chat_id, text=text)
    if text.startswith("/"):
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    await shop.feed({"message": msg})


async def customers(shop: Harness) -> int:
    async with shop.session_factory() as session:
        return (await session.execute(select(func.count(Customer.id)))).scalar_one()


@pytest.mark.parametrize(
    "text",
    [
        "/start",
        "/start p_LAP-TP-T480",
        "/cart",
        "/orders",
        "/checkout",
        "/catalog",
        "/help",
        "/track HL-ABC123",
        "/cancel",
        "/cart@hacklab_shop_bot",
    ],
)
async def test_customer_command_in_a_group_gets_one_private_chat_pointer(shop: Harness, text: str) -> None:
    await shop.load_demo()
    before = len(shop.botapi.calls)
    await shop.send(BUYER, text, chat_id=GROUP)
    replies = said(shop, GROUP, before)
    assert len(replies) == 1 and replies[0].startswith(PRIVATE) and LINK in replies[0]
    assert await customers(shop) == 0  # no customer screen, no registration from a group


async def test_chatter_other_bots_commands_and_unknown_commands_in_a_group_get_no_reply(shop: Harness) -> None:
    before = len(shop.botapi.calls)
    for text in ("hello everyone", "/start@some_other_bot", "/weather", "/cart@some_other_bot"):
        await say(shop, BUYER, text, GROUP)
    assert said(shop, GROUP, before) == []


async def test_customer_button_in_a_group_gets_an_alert(shop: Harness) -> None:
    msg = await shop.send(BUYER, "/start", chat_id=GROUP)  # any message of ours in the group
    for data in ("menu:cart", "menu:catalog", "cat:c:1:1", "chk:go", "pay:mpesa:HL-1", "old:button"):
        before = len(shop.botapi.calls)
        await shop.press(BUYER, data, chat_id=GROUP, message=msg)
        assert shop.last_answer is not None and shop.last_answer.params.get("show_alert") is True
        assert shop.last_answer.params["text"].startswith(PRIVATE) and "@hacklab_shop_bot" in shop.last_answer.text
        assert [c.method for c in shop.botapi.calls[before:]] == ["answerCallbackQuery"]  # nothing else shown


async def test_without_the_username_the_pointer_is_plain(engine, botapi: BotAPIStandIn) -> None:  # type: ignore[no-untyped-def]
    async def no_get_me(method: str, params: dict) -> web.Response | None:  # type: ignore[type-arg]
        return (
            web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
            if method == "getMe"
            else None
        )

    shop = await Harness(engine, botapi).start()
    botapi.responder = no_get_me
    reply = await shop.send(BUYER, "/cart", chat_id=GROUP)
    assert reply.text == "Let's talk in private: open a private chat with me and press Start."
    await shop.stop()


async def test_admin_group_keeps_admin_commands_and_points_customers_to_private(shop: Harness) -> None:
    assert "No orders are paid." in (await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)).text
    assert "Usage: /cancel" in (await shop.send(ADMIN_USER_ID, "/cancel", chat_id=ADMIN_CHAT_ID)).text
    assert "⛔" in (await shop.send(BUYER, "/orders", chat_id=ADMIN_CHAT_ID)).text  # admin command, not an admin
    assert (await shop.send(BUYER, "/cart", chat_id=ADMIN_CHAT_ID)).text.startswith(PRIVATE)
    assert "⛔" in (await shop.send(ADMIN_USER_ID, "/stock", chat_id=GROUP)).text  # admin-only: refused elsewhere
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    await shop.press(BUYER, "adm:cc:HL-NOPE22", chat_id=ADMIN_CHAT_ID, message=alert)
    assert "⛔" in shop.last_answer.params["text"]  # admin buttons still go to the admin router


async def test_private_chats_are_unchanged_and_never_enter_the_group_router(shop: Harness) -> None:
    assert "cart is empty" in (await shop.send(BUYER, "/cart")).text.lower()
    assert "Karibu" in (await shop.send(BUYER, "/start")).text
    msg = await shop.send(BUYER, "/start")
    await shop.press(BUYER, "old:button", message=msg)  # private: the stale-button answer, not the pointer
    assert shop.last_answer.params["text"] == "This button has expired. Please open the menu again with /start."

    # The group router's own first filter turns a private chat's message and press away, whatever they are.
    bot, built = shop.shop.bot, group.router.build()
    for chat_id, taken in ((BUYER, False), (GROUP, True), (ADMIN_CHAT_ID, True)):
        message = Message.model_validate(shop._message(BUYER, chat_id, text="/cart"), context={"bot": bot})
        press = CallbackQuery.model_validate(
            {
                "id": "1",
                "from": shop.user(BUYER),
                "chat_instance": "ci",
                "data": "menu:cart",
                "message": message.model_dump(),
            },
            context={"bot": bot},
        )
        assert (await built.message.check_root_filters(message))[0] is taken
        assert (await built.callback_query.check_root_filters(press))[0] is taken
