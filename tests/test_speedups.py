"""bot/speedups.py keeps aiogram's behaviour: objects still know their Bot, Bot API calls carry the
same fields (as JSON, multipart still for uploads), and building the shop changes no library class."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram import Bot
from aiogram.types import BufferedInputFile, Message, Update

from bot.app import build_bot
from bot.config import Settings
from handlers.render import kb
from tests.standins import BotAPIStandIn

PRESS: dict[str, Any] = {
    "update_id": 7,
    "callback_query": {
        "id": "q1",
        "chat_instance": "c",
        "data": "cat:v:1:1",
        "from": {"id": 5, "is_bot": False, "first_name": "Wanjiru"},
        "message": {
            "message_id": 3,
            "date": 0,
            "chat": {"id": 5, "type": "private"},
            "text": "Pick one",
            "from": {"id": 9, "is_bot": True, "first_name": "Shop"},
            "reply_markup": {"inline_keyboard": [[{"text": "Pi 5", "callback_data": "cat:v:1:1"}]]},
        },
    },
}


def _bot() -> Bot:
    return build_bot(
        Settings(
            _env_file=None,
            bot_token="123456789:TEST_token_for_speedups",  # type: ignore[call-arg]
            telegram_api_url="http://127.0.0.1:9",
        )
    )


async def test_parsed_objects_carry_their_bot_at_every_depth() -> None:
    bot = _bot()
    try:
        update = Update.model_validate(PRESS, context={"bot": bot})
        query = update.callback_query
        assert query is not None and isinstance(query.message, Message)
        button = query.message.reply_markup.inline_keyboard[0][0]  # type: ignore[union-attr]
        for obj in (update, query, query.from_user, query.message, query.message.chat, button):
            assert obj.bot is bot
            assert obj.__pydantic_private__ == {"_bot": bot}
        built = Message(message_id=1, date=datetime.now(UTC), chat={"id": 1, "type": "private"})
        assert built.bot is None and built.as_(bot).bot is bot
        assert Message.model_construct().bot is None
        assert query.message.model_copy().bot is bot
    finally:
        await bot.session.close()


def _ours(value: Any) -> bool:
    """A function (or a wrapper of one) defined in this project."""
    module = getattr(value, "__module__", None) or getattr(getattr(value, "__func__", None), "__module__", "")
    return str(module).split(".")[0] in {"bot", "handlers", "services", "db", "webhooks"}


async def test_building_the_shop_assigns_nothing_to_library_classes(engine, botapi: BotAPIStandIn) -> None:  # type: ignore[no-untyped-def]
    """Every attribute of aiogram's, pydantic's and SQLAlchemy's classes is theirs after the bot and
    dispatcher are built, and every filter runs as aiogram set it up."""
    import sys

    from aiogram.dispatcher.event.handler import FilterObject

    from bot.app import build_dispatcher
    from db.session import make_sessionmaker
    from tests.harness import make_settings

    settings = make_settings(engine, botapi)
    bot = build_bot(settings)
    dp = build_dispatcher(settings, make_sessionmaker(engine))
    await bot.session.close()
    await dp.storage.close()
    patched = [
        f"{cls.__module__}.{cls.__qualname__}.{name}"
        for module_name, module in list(sys.modules.items())
        if module_name.split(".")[0] in {"aiogram", "pydantic", "sqlalchemy"}
        for cls in list(vars(module).values())
        if isinstance(cls, type)
        for name, value in list(vars(cls).items())
        if _ours(value) or _ours(getattr(value, "__func__", None))
    ]
    assert patched == []
    filters = [
        flt
        for router in dp.chain_tail
        for observer in router.observers.values()
        for handler in observer.handlers
        for flt in handler.filters or []
        if isinstance(flt, FilterObject)
    ]
    assert filters
    # A magic filter (F.text == …) is resolved as aiogram sets it up: its own, synchronous `resolve`.
    assert [flt for flt in filters if flt.magic is not None and (flt.awaitable or _ours(flt.callback))] == []


async def test_calls_go_as_json_and_uploads_as_multipart(botapi: BotAPIStandIn) -> None:
    settings = Settings(
        _env_file=None,
        bot_token="123456789:TEST_token_for_speedups",  # type: ignore[call-arg]
        telegram_api_url=botapi.url,
    )
    bot = build_bot(settings)
    try:
        markup = kb([("View order", "ord:v:HL-ABC234")])
        sent = await bot.send_message(42, "<b>Paid</b>", reply_markup=markup, disable_notification=False)
        await bot.ban_chat_member(-100, 7, until_date=datetime(2027, 1, 1, tzinfo=UTC))
        await bot.set_chat_photo(-100, BufferedInputFile(b"\x89PNG...", filename="logo.png"))
    finally:
        await bot.session.close()
    message, ban, photo = botapi.calls[-3:]
    assert message.content_type == "application/json"
    assert message.params["chat_id"] == 42 and message.params["text"] == "<b>Paid</b>"
    assert message.params["parse_mode"] == "HTML"  # the bot's defaults are still applied
    assert message.params["link_preview_options"] == {"is_disabled": True}
    assert message.params["disable_notification"] is False
    assert message.buttons == [("View order", "ord:v:HL-ABC234")]
    assert sent.message_id and sent.reply_markup is not None and sent.bot is bot
    assert ban.content_type == "application/json"
    assert ban.params["until_date"] == int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
    assert photo.content_type == "multipart/form-data" and photo.params["photo"].startswith("attach://")


async def test_nested_values_aiogram_must_prepare_still_arrive(botapi: BotAPIStandIn) -> None:
    """A default inside a nested object (a media caption's parse mode) is not plain JSON: such calls
    take aiogram's own preparation, and arrive as they always did."""
    from aiogram.types import InputMediaPhoto

    bot = build_bot(
        Settings(
            _env_file=None,
            bot_token="123456789:TEST_token_for_speedups",  # type: ignore[call-arg]
            telegram_api_url=botapi.url,
        )
    )
    try:
        await bot.edit_message_media(
            media=InputMediaPhoto(media="https://example.com/a.jpg", caption="<b>A</b>"), chat_id=42, message_id=3
        )
    finally:
        await bot.session.close()
    call = botapi.calls[-1]
    assert call.content_type == "application/json"
    assert call.params["media"] == {
        "type": "photo",
        "media": "https://example.com/a.jpg",
        "caption": "<b>A</b>",
        "parse_mode": "HTML",
    }


async def test_a_file_nested_in_a_call_goes_as_multipart(botapi: BotAPIStandIn) -> None:
    from aiogram.types import InputMediaPhoto

    bot = _bot_on(botapi)
    try:
        await bot.edit_message_media(
            media=InputMediaPhoto(media=BufferedInputFile(b"\x89PNG...", filename="a.png"), caption="<b>A</b>"),
            chat_id=42,
            message_id=3,
        )
    finally:
        await bot.session.close()
    call = botapi.calls[-1]
    assert call.content_type == "multipart/form-data"
    assert call.params["media"]["media"].startswith("attach://") and call.params["media"]["parse_mode"] == "HTML"


async def test_unread_replies_are_checked_not_parsed(botapi: BotAPIStandIn) -> None:
    from aiogram.exceptions import TelegramBadRequest
    from aiohttp import web

    from bot.speedups import results_unused

    bot = _bot_on(botapi)
    try:
        assert isinstance(await bot.send_message(42, "read back"), Message)
        with results_unused():
            assert await bot.send_message(42, "not read back") is True

            async def refuse(method: str, params: dict[str, Any]) -> Any:
                return web.json_response(
                    {"ok": False, "error_code": 400, "description": "Bad Request: message is not modified"}, status=400
                )

            botapi.responder = refuse
            with pytest.raises(TelegramBadRequest, match="not modified"):  # a refusal raises as usual
                await bot.send_message(42, "refused")

            async def ok_last(method: str, params: dict[str, Any]) -> Any:  # valid, if not Telegram's order
                return web.Response(
                    text='{"result": {"message_id": 5, "date": 0, "chat": {"id": 42, "type": "private"}}, "ok": true}',
                    content_type="application/json",
                )

            botapi.responder = ok_last
            assert isinstance(await bot.send_message(42, "parsed in full"), Message)
    finally:
        botapi.responder = None
        await bot.session.close()


def _bot_on(botapi: BotAPIStandIn) -> Bot:
    return build_bot(
        Settings(
            _env_file=None,
            bot_token="123456789:TEST_token_for_speedups",  # type: ignore[call-arg]
            telegram_api_url=botapi.url,
        )
    )


def test_a_pressed_messages_keyboard_is_left_out_and_nothing_else() -> None:
    import copy

    from webhooks.telegram import _without_pressed_keyboard

    press = _without_pressed_keyboard(copy.deepcopy(PRESS))
    assert "reply_markup" not in press["callback_query"]["message"]
    assert press["callback_query"]["message"]["text"] == "Pick one" and press["callback_query"]["data"] == "cat:v:1:1"
    text = {
        "update_id": 8,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": 5, "type": "private"},
            "reply_markup": {"inline_keyboard": []},
        },
    }
    assert _without_pressed_keyboard(copy.deepcopy(text)) == text  # only a button press's message
    for junk in ([], "x", {"callback_query": "x"}, {"callback_query": {"message": 3}}):
        assert _without_pressed_keyboard(junk) == junk
