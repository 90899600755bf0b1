"""Drives the shop as Telegram does, against the Bot API stand-in, so tests read like the conversation
a customer has: every update is POSTed to the production webhook handler (`webhooks.server`'s
/telegram route, with its secret header and update ids), and a Bot API call the webhook answers with
(a button press's answerCallbackQuery) is made to the stand-in, as Telegram would make it."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.runtime import Shop, build_providers, build_shop
from services import catalog
from tests import stripe_standin as st
from tests.standins import BotAPIStandIn, Call
from webhooks.server import MAX_BODY, add_telegram_route
from webhooks.telegram import TelegramWebhook

DEMO = Path(__file__).resolve().parent.parent / "catalog" / "demo.yaml"
TEST_TOKEN = "123456789:TEST_token_for_the_local_bot_api_stand_in"
ADMIN_CHAT_ID = -1001234567890
ADMIN_USER_ID = 4242


def make_settings(engine: AsyncEngine, botapi: BotAPIStandIn, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bot_token": TEST_TOKEN,
        "telegram_api_url": botapi.url,
        "database_url": engine.url.render_as_string(hide_password=False),
        "admin_chat_id": ADMIN_CHAT_ID,
        "admin_user_ids": [ADMIN_USER_ID],
        "public_base_url": None,
        "load_demo_catalog": False,
        # A test types faster than any person (a dozen updates in a few ms): the throttle tests set the real limits.
        "throttle_updates_per_second": 1000.0,
        "throttle_burst": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Harness:
    def __init__(
        self, engine: AsyncEngine, botapi: BotAPIStandIn, providers: dict[str, Any] | None = None, **settings: Any
    ) -> None:
        self.engine = engine
        self.botapi = botapi
        self.settings = make_settings(engine, botapi, **settings)
        self.providers = providers if providers is not None else {}
        self.shop: Shop | None = None
        self.webhook: TelegramWebhook | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        # The Telegram client's language of a user (the `language_code` Telegram sends), "en" unless set.
        self.language_codes: dict[int, str] = {}

    async def start(self) -> Harness:
        self.shop = build_shop(self.settings, engine=self.engine, providers=self.providers)
        # The /telegram route as `storefront web` serves it in webhook mode (same handler, secret and
        # body limit), whatever mode the settings say: tests feed updates through it either way.
        app = web.Application(client_max_size=MAX_BODY)
        self.webhook = add_telegram_route(app, self.shop)
        self._runner = web.AppRunner(app, access_log=None)  # as bot.serve runs it
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self._http = aiohttp.ClientSession(json_serialize=lambda v: orjson.dumps(v).decode())
        self._webhook_url = f"http://{host}:{port}/telegram"
        self._headers = {TelegramWebhook.SECRET_HEADER: self.settings.webhook_secret}
        self._botapi_base = f"{self.botapi.url}/bot{self.settings.bot_token.get_secret_value()}/"
        return self

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.shop is not None:
            await self.shop.bot.session.close()
            await self.shop.dp.storage.close()

    @property
    def session_factory(self):  # type: ignore[no-untyped-def]
        assert self.shop is not None
        return self.shop.session_factory

    async def load_demo(self, path: Path = DEMO) -> None:
        async with self.session_factory() as session, session.begin():
            await catalog.import_rows(session, catalog.parse_catalog(path))

    # --- what the customer does -------------------------------------------------------------------

    @staticmethod
    def user(user_id: int, first_name: str = "Wanjiru", language_code: str = "en") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}

    def _chat(self, chat_id: int, private: bool) -> dict[str, Any]:
        return (
            {"id": chat_id, "type": "private"}
            if private
            else {"id": chat_id, "type": "supergroup", "title": "Shop admins"}
        )

    async def feed(self, update: dict[str, Any]) -> None:
        """Deliver `update` to the webhook as Telegram does, and make the Bot API call its reply
        carries, if any. A reply other than 200 fails the test."""
        assert self._http is not None, "Harness.start() first"
        update.setdefault("update_id", next(self._update_ids))
        async with self._http.post(self._webhook_url, json=update, headers=self._headers) as resp:
            body = await resp.read()
        if resp.status != 200:
            raise AssertionError(f"the webhook answered {resp.status}: {body[:500]!r}")
        call = orjson.loads(body)
        method = call.pop("method", None)
        if method:  # Telegram executes it; what comes of it is not the webhook's business
            async with self._http.post(self._botapi_base + method, json=call) as done:
                await done.read()

    def _message(self, user_id: int, chat_id: int | None, **content: Any) -> dict[str, Any]:
        chat_id = chat_id if chat_id is not None else user_id
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id, chat_id > 0),
            "from": self.user(user_id, language_code=self.language_codes.get(user_id, "en")),
            **content,
        }

    async def send(self, user_id: int, text: str, *, chat_id: int | None = None) -> Call:
        """The customer types `text`; returns the bot's last message to that chat."""
        entities = None
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        msg = self._message(user_id, chat_id, text=text)
        if entities:
            msg["entities"] = entities
        await self.feed({"message": msg})
        return self.botapi.last(chat_id if chat_id is not None else user_id)

    async def inline_query(self, user_id: int, query: str, *, language_code: str = "en") -> Call:
        """The customer types `@bot <query>` in any chat; returns the bot's answerInlineQuery."""
        before = len(self.botapi.calls)
        user = {**self.user(user_id), "language_code": language_code}
        query_id = str(next(self._update_ids) + 20_000_000)
        await self.feed({"inline_query": {"id": query_id, "from": user, "query": query, "offset": ""}})
        answers = [c for c in self.botapi.calls[before:] if c.method == "answerInlineQuery"]
        assert answers, "the bot did not answer the inline query"
        assert answers[-1].params["inline_query_id"] == query_id
        return answers[-1]

    async def send_message(self, user_id: int, *, chat_id: int | None = None, **content: Any) -> Call:
        """The user sends a message with this content as Telegram delivers it (`text` with `entities`,
        `photo` sizes with a `caption` and `caption_entities`…); returns the bot's last message to that chat."""
        await self.feed({"message": self._message(user_id, chat_id, **content)})
        return self.botapi.last(chat_id if chat_id is not None else user_id)

    async def share_contact(self, user_id: int, phone: str, *, contact_user_id: int | None = None) -> Call:
        contact = {
            "phone_number": phone,
            "first_name": "Wanjiru",
            "user_id": contact_user_id if contact_user_id is not None else user_id,
        }
        await self.feed({"message": self._message(user_id, None, contact=contact)})
        return self.botapi.last(user_id)

    async def press(
        self, user_id: int, data: str, *, message: Call | None = None, chat_id: int | None = None
    ) -> Call | None:
        """The customer presses an inline button with `data` on `message` (default: the bot's last
        message in the chat). Returns the bot's last message/edit to the chat afterwards."""
        chat_id = chat_id if chat_id is not None else user_id
        message = message or self.botapi.last(chat_id)
        message_id = int(message.params.get("message_id") or self._message_id_of(message))
        before = len(self.botapi.calls)
        await self.feed(
            {
                "callback_query": {
                    "id": str(next(self._update_ids) + 10_000_000),
                    "from": self.user(user_id, language_code=self.language_codes.get(user_id, "en")),
                    "chat_instance": "ci",
                    "data": data,
                    "message": {
                        "message_id": message_id,
                        "date": int(time.time()),
                        "chat": self._chat(chat_id, chat_id > 0),
                        "from": BotAPIStandIn.BOT_USER,
                        **self._content_of(message),
                    },
                }
            }
        )
        self.last_answer = next(
            (c for c in reversed(self.botapi.calls[before:]) if c.method == "answerCallbackQuery"), None
        )
        try:
            return self.botapi.last(chat_id)
        except AssertionError:
            return None

    @staticmethod
    def _content_of(call: Call) -> dict[str, Any]:
        """A photo message (sendPhoto, or a caption edit) is pressed as a photo, so handlers that
        must edit its caption rather than its text see what Telegram would send them."""
        if call.method in ("sendPhoto", "editMessageCaption") or "caption" in call.params:
            return {"caption": call.text, "photo": [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]}
        return {"text": call.text or "."}

    @staticmethod
    def _message_id_of(call: Call) -> int:
        if isinstance(call.result, dict) and "message_id" in call.result:
            return int(call.result["message_id"])
        raise AssertionError(f"{call.method} returned no message to press a button on")


@asynccontextmanager
async def stripe_harness(engine: AsyncEngine, botapi: BotAPIStandIn) -> AsyncIterator[tuple[Harness, st.StripeStandIn]]:
    """The shop with the real Stripe gateway (`build_providers`) against the Stripe stand-in."""
    server = await st.StripeStandIn().start()
    shop = Harness(
        engine,
        botapi,
        stripe_secret_key=st.SECRET_KEY,
        stripe_webhook_secret=st.WEBHOOK_SECRET,
        stripe_api_base=server.url,
        shop_return_url="https://t.me/hacklab_shop_bot",
    )
    shop.providers = build_providers(shop.settings)
    await shop.start()
    try:
        yield shop, server
    finally:
        await shop.stop()
        await server.stop()
