"""Reviews through the bot: the question after delivery (once), stars and comments from the buyer,
refusals of anyone else, the rating on cards, the Reviews screen, and the admins' /review hide|show."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.models import AuditEntry, Order, Outbox, Payment, Product, Review, utcnow
from services import orders as sm
from services.dhl import poll_cycle
from services.outbox_sender import BotApiTransport, Limits, drain_once
from tests import dhl_standin as ds
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, TEST_TOKEN, Harness
from tests.standins import Call, visible_text
from tests.test_dhl import client_for, settings_for

BUYER = 8101
OTHER_BUYER = 8102
THIRD_BUYER = 8103
STRANGER = 8199


@pytest.fixture
async def dhl() -> AsyncIterator[ds.DhlStandIn]:
    server = await ds.DhlStandIn().start()
    yield server
    await server.stop()


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID, chat: int = ADMIN_CHAT_ID) -> str:
    return (await shop.send(user, text, chat_id=chat)).text


async def paid(shop: Harness, buyer: int, product_ids: list[int], zone: str = "nairobi") -> Order:
    """An order of the buyer's for one of each product, placed as checkout places it and paid."""
    order = await make_order(shop.session_factory, buyer, [(pid, 1) for pid in product_ids], zone=zone)
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add(
            Payment(
                order_id=o.id, provider="mpesa", state="paid", amount=o.total, currency=o.currency, receipt_number="R1"
            )
        )
        await sm.transition(session, o, sm.PROCESSING, "system:test")
    return order


async def delivered(shop: Harness, buyer: int, product_ids: list[int]) -> Order:
    """Paid, then shipped and delivered by the admins' commands, as in production."""
    order = await paid(shop, buyer, product_ids)
    assert "shipped" in await admin(shop, f"/ship {order.public_id} G4S-{order.id}")
    assert "marked delivered" in await admin(shop, f"/delivered {order.public_id}")
    return order


async def send_outbox(shop: Harness) -> None:
    """Send every due outbox row to the Bot API stand-in, as the worker does."""
    transport = BotApiTransport(shop.botapi.url, TEST_TOKEN)
    try:
        for _ in range(20):
            if await drain_once(shop.session_factory, transport, Limits(per_chat_seconds=0, group_seconds=0)) == 0:
                break
    finally:
        await transport.aclose()


async def rows(shop: Harness, model, *where):  # type: ignore[no-untyped-def]
    async with shop.session_factory() as session:
        return list((await session.execute(select(model).where(*where))).scalars().all())


async def asks(shop: Harness, chat_id: int) -> list[Outbox]:
    return await rows(shop, Outbox, Outbox.kind == "review_ask", Outbox.chat_id == chat_id)


async def the_ask(shop: Harness, buyer: int) -> Call:
    """The question as the buyer's chat shows it, once the outbox is sent."""
    await send_outbox(shop)
    found = [c for c in shop.botapi.sent(buyer, "sendMessage") if any(d.startswith("rev:r:") for _, d in c.buttons)]
    assert len(found) == 1, [c.text for c in shop.botapi.sent(buyer)]
    return found[0]


async def aggregate(shop: Harness, product_id: int) -> tuple[int, int]:
    async with shop.session_factory() as session:
        p = await session.get(Product, product_id)
        return p.rating_sum, p.rating_count


async def card(shop: Harness, user: int, sku: str) -> Call:
    return await shop.send(user, f"/start p_{sku}")


# --- the question, once ---------------------------------------------------------------------------------


async def test_delivered_order_asks_once_then_rate_comment_and_edit(shop: Harness) -> None:
    a = await make_product(shop.session_factory, "REV-A")
    b = await make_product(shop.session_factory, "REV-B")
    order = await delivered(shop, BUYER, [a, b])
    assert "only shipped or on-the-way" in await admin(shop, f"/delivered {order.public_id}")  # twice: refused
    [row] = await asks(shop, BUYER)
    assert row.dedup_key == f"review_ask:{order.id}"

    ask = await the_ask(shop, BUYER)
    assert "How was your order" in ask.text and order.public_id in ask.text
    datas = [d for _, d in ask.buttons]
    assert datas == [
        f"cat:v:{a}:1",
        *(f"rev:r:{a}:{n}" for n in range(1, 6)),
        f"cat:v:{b}:1",
        *(f"rev:r:{b}:{n}" for n in range(1, 6)),
    ]
    assert ask.buttons[0][0] == "Product REV-A" and ask.buttons[1][0] == "1★"

    question = await shop.press(BUYER, f"rev:r:{a}:4", message=ask)
    assert shop.last_answer is not None and "Product REV-A: 4★" in shop.last_answer.params["text"]
    assert question is not None and "You gave Product REV-A 4★" in visible_text(question.text)
    assert question.button("Skip") == f"rev:s:{a}"
    saved = await shop.send(BUYER, "Works <b>great</b> & fast")
    assert "Works &lt;b&gt;great&lt;/b&gt; &amp; fast" in saved.text  # shown as typed, never as markup
    assert "Works <b>great</b> & fast" in visible_text(saved.text)
    [review] = await rows(shop, Review, Review.customer_id == BUYER)
    assert (review.product_id, review.stars, review.comment, review.order_id) == (
        a,
        4,
        "Works <b>great</b> & fast",
        order.id,
    )
    [note] = await rows(shop, Outbox, Outbox.kind == "review_comment")
    assert note.chat_id == ADMIN_CHAT_ID and f"#{review.id}" in note.text and "REV-A" in note.text
    assert "Works &lt;b&gt;great&lt;/b&gt;" in note.text and f"/review hide {review.id}" in note.text

    # Rating again replaces the stars; the comment stays until a new one replaces it.
    again = await shop.press(BUYER, f"rev:r:{a}:2", message=ask)
    assert again is not None and "now 2★" in visible_text(again.text) and "comment stays" in again.text
    await shop.send(BUYER, "Changed my mind")
    [review] = await rows(shop, Review, Review.customer_id == BUYER)
    assert (review.stars, review.comment) == (2, "Changed my mind")
    assert await aggregate(shop, a) == (2, 1)  # one review: its stars replaced, not added

    # The other product: stars, then Skip.
    await shop.press(BUYER, f"rev:r:{b}:5", message=ask)
    skipped = await shop.press(BUYER, f"rev:s:{b}")
    assert skipped is not None and "no comment" in skipped.text
    after_skip = await shop.send(BUYER, "hello")  # no longer taken as a comment
    assert "Thank you! Your comment" not in after_skip.text
    assert {(r.product_id, r.stars, r.comment) for r in await rows(shop, Review)} == {
        (a, 2, "Changed my mind"),
        (b, 5, None),
    }
    assert await aggregate(shop, b) == (5, 1)
    assert len(await asks(shop, BUYER)) == 1


async def test_dhl_delivery_then_admin_delivered_still_asks_once(shop: Harness, dhl: ds.DhlStandIn) -> None:
    settings = settings_for(dhl)
    client = client_for(settings)
    pid = await make_product(shop.session_factory, "REV-DHL")
    order = await paid(shop, BUYER, [pid], zone="intl")
    assert "shipped with DHL" in await admin(shop, f"/ship {order.public_id} 1234567890")
    dhl.shipments["1234567890"] = ds.DELIVERED
    try:
        await poll_cycle(shop.session_factory, client, settings, utcnow() + timedelta(seconds=1))
        await poll_cycle(shop.session_factory, client, settings, utcnow() + timedelta(days=1))
    finally:
        await client.aclose()
    [o] = await rows(shop, Order, Order.id == order.id)
    assert o.state == "delivered"
    assert "only shipped or on-the-way" in await admin(shop, f"/delivered {order.public_id}")
    [row] = await asks(shop, BUYER)
    assert row.dedup_key == f"review_ask:{order.id}"
    assert len((await the_ask(shop, BUYER)).buttons) == 6


async def test_only_unreviewed_products_are_asked_about_again(shop: Harness) -> None:
    a = await make_product(shop.session_factory, "REV-OLD")
    b = await make_product(shop.session_factory, "REV-NEW")
    first = await delivered(shop, BUYER, [a])
    await shop.press(BUYER, f"rev:r:{a}:5", message=await the_ask(shop, BUYER))
    second = await delivered(shop, BUYER, [a, b])
    third = await delivered(shop, BUYER, [a])  # nothing left to ask about
    by_key = {r.dedup_key: r for r in await asks(shop, BUYER)}
    assert set(by_key) == {f"review_ask:{first.id}", f"review_ask:{second.id}"} and third.id
    later = by_key[f"review_ask:{second.id}"]
    assert f"rev:r:{b}:5" in str(later.reply_markup) and f"rev:r:{a}:" not in str(later.reply_markup)


async def test_swahili_buyer_is_asked_in_swahili(shop: Harness) -> None:
    shop.language_codes[BUYER] = "sw"
    await shop.send(BUYER, "/start")
    pid = await make_product(shop.session_factory, "REV-SW")
    await delivered(shop, BUYER, [pid])
    ask = await the_ask(shop, BUYER)
    assert "Oda yako" in ask.text and "Tafadhali pima kila bidhaa" in ask.text and "How was" not in ask.text
    question = await shop.press(BUYER, f"rev:r:{pid}:5", message=ask)
    assert shop.last_answer is not None and "Asante" in shop.last_answer.params["text"]
    assert question is not None and "Umeipa" in question.text and question.button("Ruka") == f"rev:s:{pid}"
    too_long = await shop.send(BUYER, "x" * 501)
    assert "herufi 501" in too_long.text and "herufi 500" in too_long.text


# --- who may, what may be typed ------------------------------------------------------------------------


async def test_forged_stars_from_a_non_buyer_are_refused(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "REV-F")
    await shop.send(STRANGER, "/start")
    await shop.press(STRANGER, f"rev:r:{pid}:1")  # never bought it
    assert shop.last_answer is not None and "Only customers who have received" in shop.last_answer.params["text"]
    not_yet = await paid(shop, OTHER_BUYER, [pid])  # bought, paid, not delivered yet
    await admin(shop, f"/ship {not_yet.public_id} G4S-9")
    await shop.send(OTHER_BUYER, "/start")
    await shop.press(OTHER_BUYER, f"rev:r:{pid}:1")
    assert "Only customers who have received" in shop.last_answer.params["text"]
    assert await rows(shop, Review) == [] and await aggregate(shop, pid) == (0, 0)
    typed = await shop.send(STRANGER, "a comment nobody asked for")
    assert "saved" not in typed.text and await rows(shop, Review) == []


async def test_comment_too_long_or_not_text_is_refused_kindly(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "REV-L")
    await delivered(shop, BUYER, [pid])
    await shop.press(BUYER, f"rev:r:{pid}:3", message=await the_ask(shop, BUYER))
    refused = await shop.send(BUYER, "y" * 501)
    assert "501 characters long" in refused.text and "shorten it to 500" in refused.text
    assert refused.button("Skip") == f"rev:s:{pid}"
    sticker = await shop.send_message(
        BUYER,
        sticker={
            "file_id": "s",
            "file_unique_id": "s",
            "type": "regular",
            "width": 1,
            "height": 1,
            "is_animated": False,
            "is_video": False,
        },
    )
    assert "as a text message" in sticker.text
    [review] = await rows(shop, Review)
    assert review.comment is None  # still waiting for a comment that fits
    saved = await shop.send(BUYER, "z" * 500)
    assert "Your comment on" in saved.text
    [review] = await rows(shop, Review)
    assert review.comment == "z" * 500


async def test_a_command_leaves_the_comment_question(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "REV-C")
    await delivered(shop, BUYER, [pid])
    await shop.press(BUYER, f"rev:r:{pid}:3", message=await the_ask(shop, BUYER))
    cart = await shop.send(BUYER, "/cart")
    assert "cart" in cart.text.lower()
    await shop.send(BUYER, "not a comment")
    [review] = await rows(shop, Review)
    assert review.comment is None


# --- the card -------------------------------------------------------------------------------------------


async def test_card_shows_average_and_count_and_hidden_reviews_do_not_count(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "REV-CARD")
    first = await card(shop, STRANGER, "REV-CARD")
    assert "★" not in first.text and not any(d.startswith("rev:l:") for _, d in first.buttons)
    for buyer, stars in ((BUYER, 5), (OTHER_BUYER, 4), (THIRD_BUYER, 4)):
        await delivered(shop, buyer, [pid])
        await shop.press(buyer, f"rev:r:{pid}:{stars}", message=await the_ask(shop, buyer))
        await shop.send(buyer, f"comment of {buyer} <i>x</i>")
        shown = await card(shop, STRANGER, "REV-CARD")  # the card is cached; a review refreshes it
        assert ("★ 5.0 (1 review)", "★ 4.5 (2 reviews)", "★ 4.3 (3 reviews)")[
            [BUYER, OTHER_BUYER, THIRD_BUYER].index(buyer)
        ] in shown.text
    assert await aggregate(shop, pid) == (13, 3)

    listing = await shop.press(STRANGER, shown.button("Reviews"), message=shown)
    assert listing is not None and "★ 4.3 (3 reviews)" in listing.text
    assert visible_text(listing.text).count("comment of") == 3 and "Test" in listing.text
    assert f"comment of {THIRD_BUYER} &lt;i&gt;x&lt;/i&gt;" in listing.text
    assert listing.button("Back to the product") == f"cat:v:{pid}:1"

    [top] = await rows(shop, Review, Review.customer_id == BUYER)
    assert f"Review #{top.id} (5★ on REV-CARD) is hidden" in await admin(shop, f"/review hide {top.id}")
    assert "★ 4.0 (2 reviews)" in (await card(shop, STRANGER, "REV-CARD")).text
    listing = await shop.press(STRANGER, shown.button("Reviews"), message=shown)
    assert f"comment of {BUYER}" not in listing.text and visible_text(listing.text).count("comment of") == 2
    # The hidden review's author changes the stars: still hidden, still not counted.
    await shop.press(BUYER, f"rev:r:{pid}:1", message=await the_ask(shop, BUYER))
    assert await aggregate(shop, pid) == (8, 2)
    assert "is shown again" in await admin(shop, f"/review show {top.id}")
    assert "★ 3.0 (3 reviews)" in (await card(shop, STRANGER, "REV-CARD")).text
    assert await aggregate(shop, pid) == (9, 3)


# --- the admins ---------------------------------------------------------------------------------------------


async def test_review_hide_is_for_admins_only_and_audited(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "REV-ADM")
    await delivered(shop, BUYER, [pid])
    await shop.press(BUYER, f"rev:r:{pid}:2", message=await the_ask(shop, BUYER))
    [review] = await rows(shop, Review)
    refused = "Admin commands work only for shop admins"
    assert refused in (await shop.send(STRANGER, f"/review hide {review.id}", chat_id=ADMIN_CHAT_ID)).text
    assert refused in (await shop.send(BUYER, f"/review hide {review.id}")).text
    assert [r.hidden for r in await rows(shop, Review)] == [False] and await aggregate(shop, pid) == (2, 1)

    assert "is hidden" in await admin(shop, f"/review hide {review.id}")
    assert "already hidden" in await admin(shop, f"/review hide #{review.id}")
    assert "no review #999999" in await admin(shop, "/review hide 999999")
    for bad in ("/review", "/review delete 1", "/review hide x", "/review hide 1 2"):
        assert "Usage: /review" in await admin(shop, bad)
    assert [r.hidden for r in await rows(shop, Review)] == [True] and await aggregate(shop, pid) == (0, 0)
    [entry] = await rows(shop, AuditEntry, AuditEntry.action.like("review_%"))
    assert (entry.action, entry.admin_id, entry.product_id) == ("review_hide", ADMIN_USER_ID, pid)
    assert f"review {review.id}: 2★" in entry.detail
    assert "review_hide" in await admin(shop, "/audit")
    assert "/review hide" in await admin(shop, "/whatever")  # the admin help names it


async def test_two_presses_at_once_make_one_review_counted_once(shop: Harness) -> None:
    from services import reviews

    pid = await make_product(shop.session_factory, "REV-RACE")
    await delivered(shop, BUYER, [pid])

    async def press(stars: int) -> None:
        async with shop.session_factory() as session, session.begin():
            await reviews.rate(session, BUYER, pid, stars)

    for first, second in ((3, 5), (4, 1)):
        await asyncio.gather(press(first), press(second))
        [review] = await rows(shop, Review)
        assert review.stars in (first, second) and await aggregate(shop, pid) == (review.stars, 1)


async def test_back_to_delivered_after_a_rejected_return_does_not_ask_again(shop: Harness) -> None:
    """The state machine lets a rejected return put the order back to delivered; that is no new delivery,
    and a second question would collide with the first's dedup key and fail the whole transaction."""
    pid = await make_product(shop.session_factory, "REV-BACK", stock=3)
    order = await delivered(shop, 5801, [pid])
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, sm.RETURN_REQUESTED, "customer:5801")
    async with shop.session_factory() as session, session.begin():  # committed: no duplicate dedup key
        o = await sm.get_order(session, order.public_id)
        await sm.transition(session, o, sm.DELIVERED, "admin:test", "return rejected")
    assert len(await asks(shop, 5801)) == 1
