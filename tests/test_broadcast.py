"""/broadcast in the admin group, through the production webhook and the outbox sender: the preview and
its audience, Send and Cancel, who gets it (and who does not), a customer blocking the bot meanwhile,
the progress message, /stop_news and /start_news, and order updates going out before a broadcast's tail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from sqlalchemy import insert, select

from db.models import Broadcast, Customer, Outbox, Payment, table_of
from services import broadcasts
from services import orders as sm
from services.outbox_sender import BotApiTransport, Limits, drain_lanes, drain_once
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, TEST_TOKEN, Harness
from tests.standins import BotAPIStandIn, html_problem

STRANGER = 6161
EN_FOOTER = "Send /stop_news to stop it"
SW_FOOTER = "Tuma /stop_news kuzisimamisha"
PHOTO_SIZES = [
    {"file_id": "small-id", "file_unique_id": "s", "width": 90, "height": 90},
    {"file_id": "large-id", "file_unique_id": "l", "width": 1280, "height": 1280},
]


def fast_limits() -> Limits:
    """Telegram's limits are the sender's own tests' business: here the stand-in takes anything."""
    return Limits(per_second=1000, window_max=1000, per_chat_seconds=0.01, group_seconds=0.01)


@pytest_asyncio.fixture
async def transport(botapi: BotAPIStandIn) -> AsyncIterator[BotApiTransport]:
    sender = BotApiTransport(botapi.url, TEST_TOKEN)
    yield sender
    await sender.aclose()


async def send_all(shop: Harness, transport: BotApiTransport) -> int:
    return await asyncio.wait_for(
        drain_lanes(shop.session_factory, transport, fast_limits(), until_empty=True, idle_seconds=0.02), 60
    )


async def add_customers(shop: Harness, ids: range | list[int], **values: Any) -> None:
    rows = [{"id": i, "chat_id": i, "first_name": "C", "language": "en", "unreachable": False} | values for i in ids]
    async with shop.session_factory() as session, session.begin():
        await session.execute(insert(table_of(Customer)), rows)


def block(botapi: BotAPIStandIn, chats: set[int]) -> None:
    """These customers blocked the bot: Telegram answers 403 to whatever is sent to them."""

    async def respond(method: str, params: dict[str, Any]) -> web.Response | None:
        if method in ("sendMessage", "sendPhoto") and int(params.get("chat_id", 0)) in chats:
            return web.json_response(
                {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, status=403
            )
        return None

    botapi.responder = respond


async def admin_says(shop: Harness, text: str, user: int = ADMIN_USER_ID) -> str:
    return (await shop.send(user, text, chat_id=ADMIN_CHAT_ID)).text


async def broadcast_rows(shop: Harness) -> list[Outbox]:
    async with shop.session_factory() as session:
        stmt = select(Outbox).where(Outbox.kind == "broadcast").order_by(Outbox.id)
        return list((await session.execute(stmt)).scalars().all())


async def the_broadcast(shop: Harness) -> Broadcast:
    async with shop.session_factory() as session:
        return (await session.execute(select(Broadcast))).scalar_one()


def group_edits(botapi: BotAPIStandIn) -> list[str]:
    return [c.text for c in botapi.sent(ADMIN_CHAT_ID, "editMessageText")]


# --- the whole flow -----------------------------------------------------------------------------------


async def test_broadcast_reaches_every_opted_in_reachable_customer_once(
    shop: Harness, botapi: BotAPIStandIn, transport: BotApiTransport
) -> None:
    english, swahili, gone, blocker = [3001, 3002, 3003, 3004], 3101, 3201, 3301
    await add_customers(shop, [*english, blocker])
    await add_customers(shop, [swahili], language="sw")
    await add_customers(shop, [gone], unreachable=True)  # blocked the bot before: skipped
    opted_out = 3401
    assert "no more news" in (await shop.send(opted_out, "/stop_news")).text  # registered and opted out

    prompt = await admin_says(shop, "/broadcast")
    assert "Send me the message" in prompt
    text = "Big sale on Raspberry Pi <3 & more"
    preview_question = await shop.send_message(
        ADMIN_USER_ID,
        chat_id=ADMIN_CHAT_ID,
        text=text,
        entities=[{"type": "bold", "offset": 0, "length": 8}, {"type": "italic", "offset": 12, "length": 12}],
    )
    html = "<b>Big sale</b> on <i>Raspberry Pi</i> &lt;3 &amp; more"
    preview = botapi.sent(ADMIN_CHAT_ID, "sendMessage")[-2]
    assert preview.text.startswith(html) and EN_FOOTER in preview.text  # as customers will see it
    assert preview_question.text == "Send this to <b>6</b> customers?"  # 4 + sw + the one who will block
    assert await broadcast_rows(shop) == []  # nothing queued before Send

    block(botapi, {blocker})
    progress = await shop.press(ADMIN_USER_ID, preview_question.button("Send"), chat_id=ADMIN_CHAT_ID)
    assert progress is not None and progress.method == "editMessageText"
    assert progress.text == "📣 Broadcast #1: sent 0 / 6 · failed 0 · blocked 0" and progress.buttons == []
    assert len(await broadcast_rows(shop)) == 6

    # Part of it goes out, the worker's job shows how far it got, once (no second edit while one is pending).
    assert await drain_once(shop.session_factory, transport, fast_limits(), batch=3) == 3
    assert await broadcasts.report_progress(shop.session_factory) == 1
    assert await broadcasts.report_progress(shop.session_factory) == 0
    await send_all(shop, transport)
    assert await broadcasts.report_progress(shop.session_factory) == 1  # all settled: the final tally
    await send_all(shop, transport)
    assert await broadcasts.report_progress(shop.session_factory) == 0  # done: nothing more to say

    assert group_edits(botapi) == [
        "📣 Broadcast #1: sent 0 / 6 · failed 0 · blocked 0",  # the press
        "📣 Broadcast #1: sent 3 / 6 · failed 0 · blocked 0",
        "✅ Broadcast #1 finished: sent 5 / 6 · failed 0 · blocked 1",
    ]
    assert {c.params["message_id"] for c in botapi.sent(ADMIN_CHAT_ID, "editMessageText")} == {
        progress.params["message_id"]
    }
    got = {c.chat_id: c.text for c in botapi.sent(method="sendMessage") if c.chat_id and c.chat_id > 0}
    received = [c.chat_id for c in botapi.sent(method="sendMessage") if c.chat_id in (*english, swahili)]
    assert sorted(received) == sorted([*english, swahili])  # each exactly once
    assert all(
        got[c].startswith(html) and got[c].endswith(EN_FOOTER + " — your order updates will still come.</i>")
        for c in english
    )
    assert got[swahili].startswith(html) and SW_FOOTER in got[swahili]
    assert all(html_problem(got[c]) is None for c in got)
    assert botapi.sent(gone) == [] and [c.method for c in botapi.sent(opted_out)] == ["sendMessage"]  # its reply
    assert [c.method for c in botapi.sent(blocker)] == ["sendMessage:rejected"]

    done = await the_broadcast(shop)
    assert (done.state, done.total, done.sent, done.failed, done.blocked) == ("done", 6, 5, 0, 1)
    async with shop.session_factory() as session:
        assert (await session.get(Customer, blocker)).unreachable  # type: ignore[union-attr]
        assert await broadcasts.audience_size(session) == 5  # next time: without the one who blocked


async def test_a_photo_with_a_caption_goes_as_a_photo(
    shop: Harness, botapi: BotAPIStandIn, transport: BotApiTransport
) -> None:
    await add_customers(shop, [3501, 3502])
    await admin_says(shop, "/broadcast")
    question = await shop.send_message(
        ADMIN_USER_ID,
        chat_id=ADMIN_CHAT_ID,
        photo=PHOTO_SIZES,
        caption="New: Pico W kits",
        caption_entities=[{"type": "underline", "offset": 5, "length": 6}],
    )
    caption = "New: <u>Pico W</u> kits"
    preview = botapi.sent(ADMIN_CHAT_ID, "sendPhoto")[-1]
    assert preview.params["photo"] == "large-id" and preview.text.startswith(caption) and EN_FOOTER in preview.text
    assert question.text == "Send this to <b>2</b> customers?"
    await shop.press(ADMIN_USER_ID, question.button("Send"), chat_id=ADMIN_CHAT_ID)
    await send_all(shop, transport)
    photos = botapi.sent(method="sendPhoto")[1:]  # after the preview
    assert sorted(c.chat_id for c in photos) == [3501, 3502]  # type: ignore[type-var]
    assert all(c.params["photo"] == "large-id" and c.text.startswith(caption) and EN_FOOTER in c.text for c in photos)
    assert [c for c in botapi.sent(method="sendMessage") if c.chat_id in (3501, 3502)] == []


async def test_a_caption_too_long_for_the_footer_is_refused(shop: Harness) -> None:
    await admin_says(shop, "/broadcast")
    reply = await shop.send_message(ADMIN_USER_ID, chat_id=ADMIN_CHAT_ID, photo=PHOTO_SIZES, caption="x" * 1000)
    assert "Too long by" in reply.text
    async with shop.session_factory() as session:
        assert (await session.execute(select(Broadcast))).first() is None


# --- cancel, and who may -----------------------------------------------------------------------------


async def test_cancel_sends_nothing(shop: Harness, botapi: BotAPIStandIn, transport: BotApiTransport) -> None:
    await add_customers(shop, range(10_000, 11_234))
    await admin_says(shop, "/broadcast")
    question = await admin_says(shop, "Flash sale tonight!")
    assert question == "Send this to <b>1,234</b> customers?"
    data = botapi.last(ADMIN_CHAT_ID)
    send, cancel = data.button("Send"), data.button("Cancel")
    cancelled = await shop.press(ADMIN_USER_ID, cancel, chat_id=ADMIN_CHAT_ID)
    assert cancelled is not None and cancelled.text == "Broadcast cancelled: nothing was sent."
    again = await shop.press(ADMIN_USER_ID, send, message=data, chat_id=ADMIN_CHAT_ID)  # a second admin, late
    assert again is not None and again.text == "This broadcast was already sent or cancelled."
    assert await send_all(shop, transport) == 0 and await broadcast_rows(shop) == []
    assert [c for c in botapi.calls if c.chat_id and c.chat_id > 0] == []
    assert (await the_broadcast(shop)).state == "cancelled"


async def test_only_admins_in_the_admin_group_may_broadcast(shop: Harness, botapi: BotAPIStandIn) -> None:
    await add_customers(shop, [3601])
    assert "⛔" in await admin_says(shop, "/broadcast", user=STRANGER)  # a group member, not an admin
    await shop.send(STRANGER, "Free stuff for everyone", chat_id=ADMIN_CHAT_ID)  # no state: ignored
    assert "⛔" in (await shop.send(3601, "/broadcast")).text  # a customer, in private
    assert "⛔" in (await shop.send(ADMIN_USER_ID, "/broadcast")).text  # an admin, but not in the group
    assert not [c for c in botapi.sent(ADMIN_CHAT_ID) if "Send this" in c.text]

    await admin_says(shop, "/broadcast")
    question = await admin_says(shop, "Real news")
    # The customer, and the admin: writing to the bot in private made them a customer (of the shop, too).
    assert "Send this to <b>2</b>" in question
    await shop.press(STRANGER, botapi.last(ADMIN_CHAT_ID).button("Send"), chat_id=ADMIN_CHAT_ID)
    assert shop.last_answer is not None and "⛔" in shop.last_answer.params["text"]
    assert await broadcast_rows(shop) == [] and (await the_broadcast(shop)).state == "draft"


# --- customers' choice ---------------------------------------------------------------------------------


async def paid_order(shop: Harness, buyer: int) -> str:
    pid = await make_product(shop.session_factory, f"BC-{buyer}", stock=5)
    order = await make_order(shop.session_factory, buyer, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add(Payment(order_id=o.id, provider="mpesa", state="paid", amount=o.total, currency=o.currency))
        await sm.transition(session, o, sm.PROCESSING, "system:test")
    return order.public_id


async def test_stop_news_keeps_order_updates(shop: Harness, botapi: BotAPIStandIn, transport: BotApiTransport) -> None:
    buyer = 3701
    await shop.send(buyer, "/start")
    assert "no more news" in (await shop.send(buyer, "/stop_news")).text
    order = await paid_order(shop, buyer)
    assert "shipped with G4S, tracking G4S-123" in await admin_says(shop, f"/ship {order} G4S-123 G4S")
    await send_all(shop, transport)
    told = [c.text for c in botapi.sent(buyer, "sendMessage")]
    assert any(order in text and "G4S-123" in text for text in told)  # the shipping update arrived

    await admin_says(shop, "/broadcast")
    assert "Send this to <b>0</b>" in await admin_says(shop, "News they do not want")
    assert "our news again" in (await shop.send(buyer, "/start_news")).text
    async with shop.session_factory() as session:
        assert await broadcasts.audience_size(session) == 1


# --- order updates first ---------------------------------------------------------------------------------


async def test_order_updates_overtake_a_broadcast(
    shop: Harness, botapi: BotAPIStandIn, transport: BotApiTransport
) -> None:
    """Two buyers who are also in the broadcast: the first customer (its news row is the oldest of all)
    and the last (its news row is in the tail). Their order updates are queued after the 60 news rows."""
    first_buyer, last_buyer = 20_000, 20_059
    await add_customers(shop, range(20_000, 20_060))
    await admin_says(shop, "/broadcast")
    await admin_says(shop, "Weekend offers")
    await shop.press(ADMIN_USER_ID, botapi.last(ADMIN_CHAT_ID).button("Send"), chat_id=ADMIN_CHAT_ID)
    orders = {buyer: await paid_order(shop, buyer) for buyer in (first_buyer, last_buyer)}
    news = await broadcast_rows(shop)
    async with shop.session_factory() as session:
        updates = (await session.execute(select(Outbox).where(Outbox.kind == "order_status"))).scalars().all()
    assert len(updates) == 2 and min(u.id for u in updates) > news[-1].id

    assert await drain_once(shop.session_factory, transport, fast_limits(), batch=10) == 10
    for buyer, order in orders.items():
        to_buyer = [c.text for c in botapi.sent(buyer, "sendMessage")]
        assert to_buyer and order in to_buyer[0], buyer  # the order update before the buyer's news
    assert [c.text for c in botapi.sent(last_buyer, "sendMessage")][1:] == []  # its news is in the tail…
    assert len([r for r in await broadcast_rows(shop) if r.state == "pending"]) == 52  # …which waits
    await send_all(shop, transport)
    for buyer in orders:
        to_buyer = [c.text for c in botapi.sent(buyer, "sendMessage")]
        assert len(to_buyer) == 2 and "Weekend offers" in to_buyer[1]
