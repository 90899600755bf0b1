"""Messages go out in Telegram's HTML parse mode: every outside value is escaped by the text layer,
a message Telegram still refuses is sent again as plain text, and long fields never break the markup.
The Bot API stand-in refuses what Telegram refuses (tests/standins.html_problem)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from db.models import Customer, Order, Outbox, Product
from services import catalog
from services.i18n import plain, t
from services.markup import Markup, clip, to_plain, visible_len
from services.notifications import enqueue
from services.outbox_sender import BotApiTransport, Limits, drain_once
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, TEST_TOKEN, Harness
from tests.standins import BotAPIStandIn, html_problem, visible_text
from tests.test_mpesa import open_world

USER = 9301
WATCHER = 9302
PWN = "<b>Pwn</b> & co"
PWN_HTML = "&lt;b&gt;Pwn&lt;/b&gt; &amp; co"


async def drain(session_factory, botapi: BotAPIStandIn) -> list[Outbox]:  # type: ignore[no-untyped-def]
    """Send every pending outbox row to the stand-in as the worker would; the rows afterwards."""
    transport = BotApiTransport(botapi.url, TEST_TOKEN)
    try:
        for _ in range(20):
            if await drain_once(session_factory, transport, Limits(per_chat_seconds=0, group_seconds=0)) == 0:
                break
    finally:
        await transport.aclose()
    async with session_factory() as session:
        return list((await session.execute(select(Outbox).order_by(Outbox.id))).scalars().all())


def rejected(botapi: BotAPIStandIn) -> list[str]:
    return [c.method for c in botapi.calls if c.method.endswith(":rejected")]


# --- criterion 1: every value escaped by the text layer ---------------------------------------------


def test_t_escapes_values_once_and_plain_does_not() -> None:
    assert t("admin.alert.new_order_item", None, qty=2, name=PWN) == f"• 2 × {PWN_HTML}"
    nested = t("admin.order.event_note", None, note=t("admin.alert.new_order_item", None, qty=1, name="&"))
    assert nested == ": • 1 × &amp;"  # a t() inside a t() is not escaped again
    assert t("admin.order.event_note", None, note=Markup("<b>kept</b>")) == ": <b>kept</b>"
    assert (
        t("admin.order.event_note", None, note=Markup("\n").join(["<i>", Markup("<b>x</b>")]))
        == ": &lt;i&gt;\n<b>x</b>"
    )
    assert isinstance(t("cart.empty"), Markup)
    assert plain("cart.added", "en", qty=1, name=PWN, total=1) == f"Added 1 × {PWN} to your cart (1 in cart)."
    assert plain("admin.usage.order") == "Usage: /order <ORDER_ID>"  # its markup read as plain text


async def test_imported_product_name_is_escaped_on_the_card_in_the_cart_and_when_back_in_stock(
    shop: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        'products:\n  - sku: PWN-1\n    category: "Tools & <Co>"\n'
        f'    name: "{PWN}"\n    description: "1 < 2 & <script>x</script>"\n'
        '    price_kes: 1000\n    price_usd: "8.00"\n    stock: 1\n',
        encoding="utf-8",
    )
    async with shop.session_factory() as session, session.begin():
        await catalog.import_rows(session, catalog.parse_catalog(path))

    await shop.send(USER, "/start")
    categories = await shop.press(USER, "menu:catalog")
    assert categories is not None
    page = await shop.press(USER, categories.button("Tools & <Co>"))  # labels are plain text
    assert page is not None and "Tools &amp; &lt;Co&gt;" in page.text
    card = await shop.press(USER, page.button(PWN))
    assert card is not None and PWN_HTML in card.text and "1 &lt; 2 &amp; &lt;script&gt;" in card.text
    await shop.press(USER, card.button("Add"))
    assert shop.last_answer is not None and PWN in shop.last_answer.params["text"]  # an alert: plain text
    cart = await shop.press(USER, "menu:cart")
    assert cart is not None and PWN_HTML in cart.text

    assert "0 free" in (await shop.send(ADMIN_USER_ID, "/restock PWN-1 -1", chat_id=ADMIN_CHAT_ID)).text
    await shop.send(WATCHER, "/start")
    await shop.press(WATCHER, "cat:n:" + card.button("Add").split(":")[2])
    assert (
        "Back-in-stock messages queued: 1"
        in (await shop.send(ADMIN_USER_ID, "/restock PWN-1 2", chat_id=ADMIN_CHAT_ID)).text
    )
    rows = await drain(shop.session_factory, shop.botapi)
    assert [(r.kind, r.state) for r in rows] == [("back_in_stock", "sent")]
    told = shop.botapi.last(WATCHER)
    assert PWN_HTML in told.text and told.params.get("parse_mode") == "HTML"
    assert rejected(shop.botapi) == [] and shop.botapi.double_escaped == []


async def test_customer_named_like_a_tag_in_the_new_order_alert_through_the_outbox(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    async with open_world(engine, botapi) as world:
        shop = world.shop
        await shop.feed(
            {
                "message": {  # first contact: the customer is registered with Telegram's first name
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": {"id": USER, "type": "private"},
                    "from": shop.user(USER, first_name="<i>"),
                    "text": "/start",
                    "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
                }
            }
        )
        pid = await make_product(shop.session_factory, "ALERT-1", stock=5)
        async with shop.session_factory() as session, session.begin():
            await session.execute(update(Product).where(Product.id == pid).values(name=PWN))
            assert (await session.get(Customer, USER)).first_name == "<i>"
        order = await make_order(shop.session_factory, USER, [(pid, 1)])
        await world.pay(order, customer=USER)
        assert await world.state_of(order) == "processing"
        rows = await drain(shop.session_factory, botapi)
    assert {r.kind: r.state for r in rows} == {"order_status": "sent", "pay_closed": "sent", "new_order": "sent"}
    alert = botapi.last(ADMIN_CHAT_ID)
    assert "Customer: &lt;i&gt;" in alert.text and PWN_HTML in alert.text
    assert alert.params.get("parse_mode") == "HTML" and rejected(botapi) == []


# --- criterion 2: a refused message goes again as plain text ------------------------------------------


def refuse_html_once(botapi: BotAPIStandIn, methods: tuple[str, ...]) -> list[str]:
    """Telegram refusing markup our own check passed: the first HTML call of `methods` gets a 400."""
    refused: list[str] = []

    async def respond(method: str, params: dict) -> web.Response | None:  # type: ignore[type-arg]
        if method in methods and params.get("parse_mode") == "HTML" and not refused:
            refused.append(method)
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 400,
                    "description": 'Bad Request: can\'t parse entities: Unsupported start tag "secret" at byte '
                    "offset 3",
                },
                status=400,
            )
        return None

    botapi.responder = respond
    return refused


@pytest.mark.parametrize("photo", [False, True])
@pytest.mark.faults
async def test_a_message_telegram_cannot_parse_is_sent_again_as_plain_text(
    shop: Harness, caplog: pytest.LogCaptureFixture, photo: bool
) -> None:
    pid = await make_product(shop.session_factory, "PLAIN-1", stock=3)
    async with shop.session_factory() as session, session.begin():
        await session.execute(
            update(Product)
            .where(Product.id == pid)
            .values(name="Tom & Jerry", photo_url="https://example.com/p.jpg" if photo else None)
        )
    method = "sendPhoto" if photo else "sendMessage"
    refused = refuse_html_once(shop.botapi, (method,))
    caplog.set_level(logging.WARNING, logger="bot.plain_fallback")
    reply = await shop.send(USER, "/start p_PLAIN-1")  # the deep link opens the card
    assert refused == [method] and reply.method == method
    first = next(c for c in shop.botapi.calls if c.method == method + ":rejected")
    assert "parse_mode" not in reply.params and reply.text == to_plain(first.text)
    assert "Tom & Jerry" in reply.text and "<b>" not in reply.text and reply.button("Add")
    warning = next(r for r in caplog.records if r.getMessage() == "telegram.unparsable_sent_as_plain_text")
    assert warning.method == method and "secret" not in warning.error  # type: ignore[attr-defined]
    assert "Jerry" not in str(warning.__dict__)


@pytest.mark.faults
async def test_an_outbox_message_telegram_cannot_parse_is_sent_as_plain_text(
    session_factory,
    botapi,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with session_factory() as session, session.begin():
        enqueue(session, 9401, "<b>Tom & Jerry</b> <3 <secret>", kind="order_status")
        enqueue(session, 9401, "<b>fine</b>", kind="order_status")
    caplog.set_level(logging.WARNING, logger="services.outbox_sender")
    rows = await drain(session_factory, botapi)
    assert [r.state for r in rows] == ["sent", "sent"]
    assert [c.method for c in botapi.calls] == ["sendMessage:rejected", "sendMessage", "sendMessage"]
    resent, fine = botapi.sent(9401, "sendMessage")
    assert resent.text == "Tom & Jerry <3 " and "parse_mode" not in resent.params
    assert fine.text == "<b>fine</b>" and fine.params["parse_mode"] == "HTML"
    warning = next(r for r in caplog.records if r.getMessage() == "outbox.unparsable_sent_as_plain_text")
    assert "Jerry" not in str(warning.__dict__) and "secret" not in str(warning.__dict__)


# --- criterion 3: long fields are cut before escaping; the final clip is safe --------------------------


async def test_admin_order_detail_with_a_500_character_address_of_ampersands_and_brackets(shop: Harness) -> None:
    pids = [await make_product(shop.session_factory, f"AMP-{n}", stock=5) for n in range(6)]
    async with shop.session_factory() as session, session.begin():
        for n, pid in enumerate(pids):
            await session.execute(update(Product).where(Product.id == pid).values(name=f"{n} " + "&<" * 60))
    order = await make_order(shop.session_factory, USER, [(pid, 1) for pid in pids])
    address = "&<" * 250
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Order).where(Order.id == order.id).values(address=address))
        await session.execute(
            update(Customer).where(Customer.id == USER).values(first_name="<&>" * 40, username="x" * 62)
        )
    reply = await shop.send(ADMIN_USER_ID, f"/order {order.public_id}", chat_id=ADMIN_CHAT_ID)
    assert rejected(shop.botapi) == [] and reply.method == "sendMessage"
    assert html_problem(reply.text) is None and len(visible_text(reply.text)) <= 4096
    assert "&amp;&lt;" * 250 in reply.text  # the whole address, escaped once
    assert "&lt;&amp;&gt;" * 21 in reply.text and "Subtotal" in reply.text
    assert shop.botapi.double_escaped == []


def test_clip_never_cuts_inside_an_entity_or_leaves_a_tag_open() -> None:
    text = Markup("<b>{}</b>\n<code>{}</code>").format("&" * 30, "<x>" * 30)
    for limit in range(1, 70):
        cut = clip(text, limit)
        assert html_problem(cut) is None and visible_len(cut) <= limit, (limit, cut)
        assert isinstance(cut, Markup)
    assert clip(text, 121) == text and clip(text, 120) != text  # 121 characters as Telegram counts them
    assert clip("<b>abcdef</b>", 4) == "<b>abc…</b>"


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="ab<>&\"' \n", max_size=80),
    st.text(alphabet="xy&<", max_size=40),
    st.integers(min_value=1, max_value=90),
)
def test_clip_of_any_escaped_message_is_valid_telegram_html(first: str, second: str, limit: int) -> None:
    message = t("admin.ship.prompt", None, order=first, hint=t("admin.ship.hint_courier", None, carrier=second))
    assert html_problem(message) is None
    cut = clip(message, limit)
    assert html_problem(cut) is None and len(visible_text(cut)) <= limit
