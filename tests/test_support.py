"""Reaching a person: "💬 Talk to us" and free text outside a flow go to the admin group, an admin's
reply comes back; /help says how else to reach the shop; the welcome names the ways to pay."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from bot.runtime import build_providers
from db.models import Customer, Outbox, SupportMessage
from services import support
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
from tests.standins import BotAPIStandIn, Call
from tests.test_payment_offer import configured

BUYER = 8181
STRANGER = 6161
ASK = "Write your message and we'll pass it to the shop."
SENT = "Sent to the shop — we'll reply here."


def relays(shop: Harness, since: int = 0) -> list[Call]:
    return [c for c in shop.botapi.calls[since:] if c.method == "sendMessage" and c.chat_id == ADMIN_CHAT_ID]


async def rows(shop: Harness) -> list[SupportMessage]:
    async with shop.session_factory() as session:
        return list((await session.execute(select(SupportMessage).order_by(SupportMessage.id))).scalars())


async def replies_to(shop: Harness, chat_id: int) -> list[str]:
    async with shop.session_factory() as session:
        stmt = select(Outbox.text).where(Outbox.chat_id == chat_id, Outbox.kind == "support_reply")
        return list((await session.execute(stmt.order_by(Outbox.id))).scalars())


async def admin_reply(
    shop: Harness, relayed: Call, text: str | None, user: int = ADMIN_USER_ID, **content: Any
) -> Call:
    """An admin answers (Telegram's reply) the relayed message in the admin group: with `text`, or
    with other `content` (a photo…) when `text` is None."""
    original = {
        "message_id": relayed.result["message_id"],
        "date": relayed.result["date"],
        "chat": {"id": ADMIN_CHAT_ID, "type": "supergroup", "title": "Shop admins"},
        "from": BotAPIStandIn.BOT_USER,
        "text": relayed.params["text"],
    }
    if text is not None:
        content["text"] = text
    return await shop.send_message(user, chat_id=ADMIN_CHAT_ID, reply_to_message=original, **content)


async def test_talk_to_us_relays_the_message_and_the_admins_reply_comes_back(shop: Harness) -> None:
    welcome = await shop.send(BUYER, "/start")
    assert welcome.button("Talk to us") == "menu:talk"
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Customer).where(Customer.id == BUYER).values(phone="254712345678"))
    ask = await shop.press(BUYER, "menu:talk", message=welcome)
    assert ask is not None and ask.text == ASK and ask.params["reply_markup"].get("force_reply") is True

    sent = await shop.send(BUYER, "Is the <b>T480</b> in stock & can I collect?")
    assert sent.text == SENT and sent.button("Catalogue") == "menu:catalog"
    (relayed,) = relays(shop)
    assert "Wanjiru" in relayed.text and f"id {BUYER}" in relayed.text
    assert "2547*****678" in relayed.text and "254712345678" not in relayed.text  # the phone, masked
    assert "Is the &lt;b&gt;T480&lt;/b&gt; in stock &amp; can I collect?" in relayed.params["text"]  # escaped
    (row,) = await rows(shop)
    assert (row.customer_id, row.admin_message_id) == (BUYER, relayed.result["message_id"])

    answered = await admin_reply(shop, relayed, "Yes — <come> by 5pm & ask for Otieno")
    assert answered.text == "✅ Sent to Wanjiru."
    assert await replies_to(shop, BUYER) == ["💬 The shop replied: Yes — &lt;come&gt; by 5pm &amp; ask for Otieno"]


async def test_only_admins_answer_and_only_replies_to_a_relayed_message(shop: Harness) -> None:
    await shop.send(BUYER, "Do you deliver to Kisumu?")
    (relayed,) = relays(shop)
    before = len(shop.botapi.calls)
    await admin_reply(shop, relayed, "sure thing", user=STRANGER)  # a group member, not an admin
    other = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    await admin_reply(shop, other, "a reply to the bot's /orders answer")
    assert await replies_to(shop, BUYER) == []
    assert not [c for c in relays(shop, before) if "Sent to" in c.text]


async def test_free_text_outside_a_flow_goes_to_the_shop_but_never_text_inside_one(shop: Harness) -> None:
    await shop.load_demo()
    assert (await shop.send(BUYER, "hello, do you have a ThinkPad X1?")).text == SENT
    assert len(relays(shop)) == 1
    # Inside a flow its step takes the text: the search question, here.
    await shop.send(BUYER, "/search")
    await shop.send(BUYER, "thinkpad")
    # A command typed after "Talk to us" runs, and the question is over.
    await shop.press(BUYER, "menu:talk", message=await shop.send(BUYER, "/start"))
    assert "Your cart is empty" in (await shop.send(BUYER, "/cart")).text
    # Digits alone (a quantity typed after its step ended, a phone number) get the help instead.
    assert "I didn't get that" in (await shop.send(BUYER, "0712345678")).text
    # A sticker after "Talk to us": asked for words.
    await shop.press(BUYER, "menu:talk", message=await shop.send(BUYER, "/start"))
    sticker: dict[str, Any] = {"file_id": "s", "file_unique_id": "su", "type": "regular", "width": 1, "height": 1}
    sticker.update(is_animated=False, is_video=False)
    assert "as text" in (await shop.send_message(BUYER, sticker=sticker)).text
    assert len(relays(shop)) == 1 and len(await rows(shop)) == 1


async def test_relays_are_limited_per_customer(shop: Harness) -> None:
    for n in range(support.RELAY_LIMIT):
        assert (await shop.send(BUYER, f"question number {n}")).text == SENT
    refused = await shop.send(BUYER, "one more question")
    assert "wait a few minutes" in refused.text and refused.button("Help") == "menu:help"
    assert len(relays(shop)) == support.RELAY_LIMIT
    assert (await shop.send(BUYER + 1, "someone else's question")).text == SENT  # a limit of their own


async def test_no_admin_group_says_so_instead_of_pretending(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, admin_chat_id=None).start()
    try:
        assert "couldn't reach the shop" in (await shop.send(BUYER, "hello there")).text
        assert await rows(shop) == []
    finally:
        await shop.stop()


async def test_swahili_customer_talks_to_us_in_swahili(shop: Harness) -> None:
    shop.language_codes[BUYER] = "sw"
    welcome = await shop.send(BUYER, "/start")
    ask = await shop.press(BUYER, welcome.button("Ongea nasi"), message=welcome)
    assert ask is not None and ask.text == "Andika ujumbe wako na tutaupeleka dukani."
    assert (await shop.send(BUYER, "Habari, mna laptop?")).text == "Umetumwa dukani — tutakujibu hapa."
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Customer).where(Customer.id == BUYER).values(language="sw", language_chosen=True))
    await admin_reply(shop, relays(shop)[0], "Ndiyo, tunazo")
    assert await replies_to(shop, BUYER) == ["💬 Duka limejibu: Ndiyo, tunazo"]


# --- /help: how to reach the shop, the returns policy ----------------------------------------------


async def test_help_shows_the_configured_contacts_and_returns(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(
        engine, botapi, shop_phone="+254 700 123456", shop_whatsapp="+254 711 000111", shop_hours="Mon–Sat 9:00–18:00"
    ).start()
    try:
        reply = await shop.send(BUYER, "/help")
        assert "📞 Phone: +254 700 123456" in reply.text and "🟢 WhatsApp: +254 711 000111" in reply.text
        assert "🕘 Open: Mon–Sat 9:00–18:00" in reply.text
        assert "Returns: within 14 days of delivery" in reply.text
        assert reply.button("Talk to us") == "menu:talk"
    finally:
        await shop.stop()


async def test_help_leaves_out_what_is_not_configured(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, shop_hours="Mon–Fri 8–17", return_days=1).start()
    try:
        reply = await shop.send(BUYER, "/help")
        assert "Phone:" not in reply.text and "WhatsApp:" not in reply.text and "🕘 Open: Mon–Fri 8–17" in reply.text
        assert "within 1 day of delivery" in reply.text
    finally:
        await shop.stop()
    shop = await Harness(engine, botapi, return_days=0).start()
    try:
        reply = await shop.send(BUYER, "/help")
        assert "Returns" not in reply.text and "Open:" not in reply.text and "Talk to us" in reply.text
    finally:
        await shop.stop()


# --- the welcome names the ways to pay this shop has ------------------------------------------------

DARAJA = {
    "mpesa_consumer_key": "k",
    "mpesa_consumer_secret": "s",
    "mpesa_shortcode": "174379",
    "mpesa_passkey": "p",
    "mpesa_callback_token": "t" * 32,
    "public_base_url": "https://shop.example",
}
STRIPE = {"stripe_secret_key": "sk_test_x", "stripe_webhook_secret": "whsec_x"}


async def welcome_with(engine, botapi, **settings: Any) -> str:  # type: ignore[no-untyped-def]
    """The welcome of a shop with these settings and, as in production, the payment clients they configure."""
    shop = Harness(engine, botapi, **settings)
    shop.providers = build_providers(shop.settings)
    await shop.start()
    try:
        return (await shop.send(BUYER, "/start")).text
    finally:
        for provider in shop.providers.values():
            await provider.aclose()
        await shop.stop()


async def test_the_welcome_names_only_the_configured_payments(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    assert "Pay with M-Pesa or card." in await welcome_with(engine, botapi, **DARAJA, **STRIPE)
    assert "Pay with M-Pesa. What" in await welcome_with(engine, botapi, **DARAJA)
    assert "Pay with M-Pesa. What" in await welcome_with(engine, botapi, mpesa_manual_paybill="247247")
    assert "Pay by card. What" in await welcome_with(engine, botapi, **STRIPE)
    neither = await welcome_with(engine, botapi)
    assert "the shop will contact you to arrange payment" in neither and "M-Pesa" not in neither


async def test_a_reply_is_matched_in_its_own_chat_and_only_words_are_passed_on(shop: Harness) -> None:
    """Message ids are numbered per chat: a relay recorded in a former admin group with the same id
    must not take an answer meant for today's customer."""
    await shop.send(BUYER + 1, "/start")
    await shop.send(BUYER, "Do you sell UPS batteries?")
    (relayed,) = relays(shop)
    async with shop.session_factory() as session, session.begin():
        session.add(
            SupportMessage(customer_id=BUYER + 1, admin_chat_id=-100999, admin_message_id=relayed.result["message_id"])
        )
    photo = [{"file_id": "p", "file_unique_id": "pu", "width": 1, "height": 1}]
    told = await admin_reply(shop, relayed, None, photo=photo)
    assert told.text == "Only a text reply is passed on to the customer: please write your answer as text."
    assert (await admin_reply(shop, relayed, "Yes, APC 650 VA")).text == "✅ Sent to Wanjiru."
    assert await replies_to(shop, BUYER) == ["💬 The shop replied: Yes, APC 650 VA"]
    assert await replies_to(shop, BUYER + 1) == []


async def test_the_welcome_names_what_the_payment_screen_offers(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    """The welcome reads the shop's payment clients, as the payment screen does: a shop whose M-Pesa
    is simulated (the console) or missing says so, whatever the settings hold."""
    shop = await Harness(engine, botapi, providers=configured("mpesa")).start()
    try:
        assert "Pay with M-Pesa. What" in (await shop.send(BUYER, "/start")).text
    finally:
        await shop.stop()
    configured_but_absent = await Harness(engine, botapi, providers={}, **DARAJA).start()
    try:
        welcome = (await configured_but_absent.send(BUYER, "/start")).text
        assert "the shop will contact you to arrange payment" in welcome and "M-Pesa" not in welcome
    finally:
        await configured_but_absent.stop()
