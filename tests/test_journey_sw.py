"""The whole customer journey in Swahili, with no English on any screen: a customer whose Telegram is
in Swahili browses, fills the cart, checks out, pays with M-Pesa (the Daraja stand-in) and is told
the order was paid, shipped and delivered (the outbox's messages, sent by the real sender). Every
text, caption, button label, callback answer and input placeholder the bot sent them is checked by
tests/english_detector.py, which knows English from the English catalogue.

Buttons are pressed by their callback data, not their labels, so the journey does not depend on the
wording of the translation. It can only pass with the whole Swahili catalogue: until
locales/sw/common.po exists (the translation branch) it is expected to fail."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from db.models import Order
from services.i18n import LOCALES_DIR
from services.outbox_sender import BotApiTransport, Limits, drain_lanes
from tests.english_detector import english_in, shown
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, TEST_TOKEN
from tests.standins import Call
from tests.test_mpesa import MpesaWorld, open_world

USER = 7451

pytestmark = pytest.mark.xfail(
    not (LOCALES_DIR / "sw" / "common.po").exists(),
    reason="needs locales/sw from the translation branch",
    strict=False,
)


def data_of(screen: Call | None, prefix: str, label: str | None = None) -> str:
    """The callback data of the button whose data starts with `prefix` (and whose label holds `label`)."""
    assert screen is not None
    for text, data in screen.buttons:
        if data.startswith(prefix) and (label is None or label in text):
            return data
    raise AssertionError(f"no button {prefix!r} {label or ''} in {screen.buttons}")


async def send_outbox(world: MpesaWorld) -> None:
    transport = BotApiTransport(world.shop.botapi.url, TEST_TOKEN)
    try:
        await asyncio.wait_for(
            drain_lanes(
                world.shop.session_factory,
                transport,
                Limits(max_attempts=2, backoff_first=0.05),
                until_empty=True,
                idle_seconds=0.05,
            ),
            30,
        )
    finally:
        await transport.aclose()


@pytest.fixture
async def world(engine, botapi):  # type: ignore[no-untyped-def]
    async with open_world(engine, botapi) as w:
        yield w


async def test_whole_journey_in_swahili_shows_no_english(world: MpesaWorld) -> None:
    shop, botapi = world.shop, world.shop.botapi
    shop.language_codes[USER] = "sw"
    await shop.load_demo()

    screen = await shop.send(USER, "/start")
    screen = await shop.press(USER, data_of(screen, "menu:catalog"))
    screen = await shop.press(USER, data_of(screen, "cat:c:", "Networking"))
    screen = await shop.press(USER, data_of(screen, "cat:v:", "UniFi U6 Lite"))
    assert screen is not None and "💰 KES 19,800\n" in screen.text and "US$" not in screen.text
    pid = data_of(screen, "cat:q:").split(":")[2]
    screen = await shop.press(USER, f"cat:q:{pid}:2")
    await shop.press(USER, data_of(screen, f"cat:a:{pid}:2"))
    screen = await shop.press(USER, "menu:cart")
    assert screen is not None and "KES 39,600" in screen.text
    screen = await shop.press(USER, data_of(screen, "chk:start"))
    screen = await shop.press(USER, data_of(screen, "chk:z:kenya"))
    await shop.share_contact(USER, "+254 712 345 678")
    await shop.send(USER, "wanjiru@example.com")
    screen = await shop.send(USER, "Milimani Rd, Nakuru Town, Nakuru")
    assert "KES 40,200" in screen.text
    screen = await shop.press(USER, data_of(screen, "chk:ok"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert screen is not None and order.public_id in screen.text

    screen = await shop.press(USER, data_of(screen, f"pay:m:{order.public_id}"))
    await world.daraja.settle()
    assert await world.state_of(order) == "processing"
    await shop.press(USER, data_of(screen, f"pay:mq:{order.public_id}"), message=screen)
    await send_outbox(world)  # "payment received"
    await shop.send(ADMIN_USER_ID, f"/ship {order.public_id} G4S-889", chat_id=ADMIN_CHAT_ID)
    await send_outbox(world)
    await shop.send(ADMIN_USER_ID, f"/delivered {order.public_id}", chat_id=ADMIN_CHAT_ID)
    await send_outbox(world)
    assert await world.state_of(order) == "delivered"
    screen = await shop.send(USER, f"/track {order.public_id}")
    assert "G4S-889" in screen.text
    screen = await shop.press(USER, data_of(await shop.send(USER, "/start"), "menu:orders"))
    assert screen is not None and order.public_id in screen.text
    await shop.send(USER, "/help")

    to_customer = botapi.sent(USER)
    notifications = [c.text for c in to_customer if order.public_id in c.text]
    assert len(notifications) >= 3  # placed / paid / shipped / delivered reached the chat
    answers = [c for c in botapi.calls if c.method == "answerCallbackQuery"]  # only the customer pressed
    findings = english_in(shown(to_customer) + shown(answers))
    assert not findings, "English on Swahili screens:\n" + "\n".join(
        sorted({f"{f.where}: {f.fragment!r} (from {f.key})" for f in findings})
    )
