"""Checkout as the customer goes through it: zone, phone, email, address, summary, confirm."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CartItem, Customer, Order, OrderEvent, Product
from services import cart as cart_service
from services import catalog
from services import orders as order_service
from services.errors import DomainError, InvalidInput
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
from tests.standins import Call
from tests.test_db_reads import statements_sent

USER = 7201


async def fill_cart(shop: Harness, *items: tuple[str, int]) -> None:
    await shop.load_demo()
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
        for sku, qty in items:
            await cart_service.add(session, USER, await catalog.get_product(session, sku=sku), qty)


async def go_to_phone(shop: Harness, zone: str = "Nairobi") -> None:
    cart = await shop.send(USER, "/cart")
    zones = await shop.press(USER, cart.button("Checkout"))
    assert "where should we deliver" in zones.text
    assert [label for label, _ in zones.buttons][:3] == [
        "Nairobi Metro · 24 h · KES 300",
        "Rest of Kenya · 3–5 days · KES 600",
        "International · 3–7 days · $35",
    ]
    ask = await shop.press(USER, zones.button(zone))
    assert "phone number" in ask.text and ask.buttons[0] == ("📱 Share my phone", "contact")


async def test_full_checkout_places_order_and_reserves_stock(shop: Harness) -> None:
    await fill_cart(shop, ("LAP-TP-T480", 1), ("ACC-LEN-65W", 2))
    await go_to_phone(shop)
    email_q = await shop.share_contact(USER, "+254712345678")
    assert "email" in email_q.text
    addr_q = await shop.send(USER, "wanjiru@example.com")
    assert "delivery address" in addr_q.text
    summary = await shop.send(USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    assert "Please confirm your order" in summary.text
    assert "• 1 × Lenovo ThinkPad T480" in summary.text and "Subtotal: KES 48,400" in summary.text
    assert "Delivery: KES 300" in summary.text and "Total: KES 48,700" in summary.text
    assert "📱 +254 712 345 678" in summary.text  # shown as people read it, stored as E.164 digits
    offer = await shop.press(USER, summary.button("Confirm"))
    assert "is placed: KES 48,700" in offer.text
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
        assert order.state == "awaiting_payment" and order.public_id in offer.text
        assert (order.currency, order.subtotal, order.shipping, order.total) == ("KES", 48400_00, 300_00, 48700_00)
        assert sorted((i.sku, i.unit_price, i.quantity) for i in order.items) == [
            ("ACC-LEN-65W", 3200_00, 2),
            ("LAP-TP-T480", 42000_00, 1),
        ]
        t480 = await catalog.get_product(session, sku="LAP-TP-T480")
        assert (t480.stock, t480.reserved, t480.sold) == (7, 1, 0)
        assert (await session.execute(select(CartItem))).scalars().all() == []
        events = (await session.execute(select(OrderEvent))).scalars().all()
        assert [(e.from_state, e.to_state, e.actor) for e in events] == [(None, "awaiting_payment", f"customer:{USER}")]
        customer = await session.get(Customer, USER)
        assert (customer.phone, customer.email) == ("254712345678", "wanjiru@example.com")
    await shop.press(USER, "chk:ok", message=summary)
    assert "already finished" in shop.last_answer.params["text"]
    async with shop.session_factory() as session:
        assert len((await session.execute(select(Order))).unique().scalars().all()) == 1


async def test_international_orders_are_priced_in_usd(shop: Harness) -> None:
    await fill_cart(shop, ("STO-SS-870-1T", 2))
    await go_to_phone(shop, "International")
    await shop.send(USER, "+44 7911 123456")
    await shop.send(USER, "buyer@example.co.uk")
    summary = await shop.send(USER, "221B Baker Street, London NW1 6XE, United Kingdom")
    assert "Subtotal: $173" in summary.text and "Delivery: $35" in summary.text and "Total: $208" in summary.text
    await shop.press(USER, summary.button("Confirm"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert (order.currency, order.total, order.zone, order.carrier, order.phone) == (
        "USD",
        208_00,
        "intl",
        "DHL",
        "447911123456",
    )


async def test_bad_inputs_are_reasked_with_the_reason(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    assert "isn't a phone number" in (await shop.send(USER, "call me maybe")).text
    assert "isn't a valid number" in (await shop.send(USER, "0712")).text
    assert "your own" in (await shop.share_contact(USER, "+254700000001", contact_user_id=999)).text
    await shop.send(USER, "0712 345 678")
    assert "doesn't look right" in (await shop.send(USER, "not-an-email")).text
    await shop.send(USER, "a@example.com")
    assert "too short" in (await shop.send(USER, "Nbi")).text
    assert "under 500" in (await shop.send(USER, "x" * 600)).text
    assert "Please confirm" in (await shop.send(USER, "Plot 12, Ngong Road, Nairobi")).text


async def test_cancel_at_every_step_keeps_the_cart(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    for steps in ([], ["zone"], ["zone", "phone"], ["zone", "phone", "email"]):
        cart = await shop.send(USER, "/cart")
        zones = await shop.press(USER, cart.button("Checkout"))
        if "zone" in steps:
            await shop.press(USER, zones.button("Nairobi"))
        if "phone" in steps:
            await shop.send(USER, "0712345678")
        if "email" in steps:
            await shop.send(USER, "a@example.com")
        if steps:
            reply = await shop.send(USER, "/cancel")
        else:
            reply = await shop.press(USER, zones.button("Cancel"))
        assert "cart is just as you left it" in reply.text
        assert "Sent to the shop" in (await shop.send(USER, "hello")).text  # out of the flow: to a person
    async with shop.session_factory() as session:
        assert len((await session.execute(select(CartItem))).scalars().all()) == 1
        assert (await session.execute(select(Order))).first() is None


async def test_sold_out_between_cart_and_confirm(shop: Harness) -> None:
    await fill_cart(shop, ("WS-DL-T5820", 2))
    await go_to_phone(shop)
    await shop.send(USER, "0712345678")
    await shop.send(USER, "a@example.com")
    summary = await shop.send(USER, "Plot 12, Ngong Road, Nairobi")
    async with shop.session_factory() as session, session.begin():
        product = await catalog.get_product(session, sku="WS-DL-T5820")
        product.stock = 1
    with statements_sent(shop.engine) as seen:
        reply = await shop.press(USER, summary.button("Confirm"))
    assert "not placed" in reply.text and "Only 1 × Dell Precision T5820" in reply.text
    # refused by the lock-free read, before any transaction: on PostgreSQL that read goes on the driver
    # connection (db/driver_read.py), so SQLAlchemy sends nothing at all
    if shop.engine.dialect.name == "postgresql":
        assert seen == []
    else:
        assert len(seen) == 1 and seen[0].autocommit and "FOR UPDATE" not in seen[0].sql
    async with shop.session_factory() as session:
        assert (await session.execute(select(Order))).first() is None
        product = await catalog.get_product(session, sku="WS-DL-T5820")
        assert (product.stock, product.reserved) == (1, 0)
        assert len((await session.execute(select(CartItem))).scalars().all()) == 1


async def test_empty_cart_checkout_offers_the_catalogue(shop: Harness) -> None:
    await fill_cart(shop)  # the demo catalogue, an empty cart
    typed = await shop.send(USER, "/checkout")
    assert typed.text == "🛒 Your cart is empty — browse the catalogue to add something."
    assert typed.button("🛍 Browse catalogue") == "menu:catalog" and "where should we deliver" not in typed.text
    catalogue = await shop.press(USER, typed.button("Browse catalogue"))
    assert catalogue.button("Networking").startswith("cat:c:")
    assert "I didn't get that" in (await shop.send(USER, "0712345678")).text  # not in the flow
    async with shop.session_factory() as session, session.begin():  # a cart screen that went stale
        await cart_service.add(session, USER, await catalog.get_product(session, sku="ACC-LEN-65W"), 1)
    cart = await shop.send(USER, "/cart")
    async with shop.session_factory() as session, session.begin():
        await cart_service.clear(session, USER)
    pressed = await shop.press(USER, cart.button("Checkout"))
    assert pressed.method == "editMessageText" and pressed.params["message_id"] == cart.result["message_id"]
    assert "Your cart is empty — browse the catalogue" in pressed.text
    assert pressed.button("Browse catalogue") == "menu:catalog"


# --- helpers for the tests below -------------------------------------------------------------------

TELEGRAM_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "blockquote",
}


def assert_telegram_html(text: str) -> None:
    """Telegram rejects a message whose HTML has unknown or unbalanced tags (the customer would get an
    error instead); the stand-in does not parse, so we check what we send."""
    from html.parser import HTMLParser

    class Check(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.open: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
            assert tag in TELEGRAM_TAGS, f"<{tag}> is not Telegram HTML in {text!r}"
            self.open.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.open and self.open.pop() == tag, f"unbalanced </{tag}> in {text!r}"

    checker = Check()
    checker.feed(text)
    checker.close()
    assert not checker.open, f"unclosed {checker.open} in {text!r}"
    assert len(text) <= 4096


async def go_to_summary(shop: Harness, address: str = "Plot 12, Ngong Road, Nairobi") -> Call:
    await go_to_phone(shop)
    await shop.send(USER, "0712345678")
    await shop.send(USER, "a@example.com")
    return await shop.send(USER, address)


async def orders_and_cart(shop: Harness) -> tuple[int, int]:
    async with shop.session_factory() as session:
        orders = (await session.execute(select(func.count(Order.id)))).scalar_one()
        lines = (await session.execute(select(func.count()).select_from(CartItem))).scalar_one()
    return orders, lines


# --- more of the flow ------------------------------------------------------------------------------


async def test_checkout_command_and_saved_details_are_one_tap(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    async with shop.session_factory() as session, session.begin():
        customer = await session.get(Customer, USER)
        customer.phone, customer.email = "254712345678", "saved@example.com"
    zones = await shop.send(USER, "/checkout")
    assert "where should we deliver" in zones.text
    ask = await shop.press(USER, zones.button("Rest of Kenya"))
    assert [label for label, _ in ask.buttons] == ["📱 Share my phone", "+254 712 345 678", "✖ Cancel checkout"]
    email_q = await shop.send(USER, ask.buttons[1][0])  # the one-tap saved number arrives as its text
    assert "email" in email_q.text
    assert [label for label, _ in email_q.buttons] == ["saved@example.com", "✖ Cancel checkout"]
    addr_q = await shop.send(USER, email_q.buttons[0][0])
    assert addr_q.params["reply_markup"] == {"remove_keyboard": True}
    summary = await shop.send(USER, "Kenyatta Ave 4, Nakuru")
    assert "saved@example.com" in summary.text and "Delivery: KES 600" in summary.text


async def test_cancel_by_reply_button_removes_the_keyboard_and_at_confirm_keeps_the_cart(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    reply = await shop.send(USER, "✖ Cancel checkout")  # the reply keyboard's own Cancel button
    assert "cart is just as you left it" in reply.text
    assert reply.params["reply_markup"] == {"remove_keyboard": True}
    summary = await go_to_summary(shop)
    cancelled = await shop.press(USER, summary.button("Cancel"))
    assert "cart is just as you left it" in cancelled.text and cancelled.button("Cart") == "menu:cart"
    await shop.press(USER, "chk:ok", message=summary)  # the old summary's Confirm is now stale
    assert "already finished" in shop.last_answer.params["text"]
    assert await orders_and_cart(shop) == (0, 1)


async def test_start_mid_checkout_removes_the_reply_keyboard_and_keeps_the_cart(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)  # the share-phone reply keyboard is showing
    before = len(shop.botapi.calls)
    welcome = await shop.send(USER, "/start")
    sent = [c for c in shop.botapi.calls[before:] if c.method == "sendMessage"]
    assert len(sent) == 2 and "cart is just as you left it" in sent[0].text
    assert sent[0].params["reply_markup"] == {"remove_keyboard": True}
    assert welcome is sent[1] and welcome.button("Catalogue") == "menu:catalog"
    assert await orders_and_cart(shop) == (0, 1)
    before = len(shop.botapi.calls)
    again = await shop.send(USER, "/start")  # outside a flow: only the welcome
    assert [c for c in shop.botapi.calls[before:] if c.method == "sendMessage"] == [again]
    assert again.button("Catalogue") == "menu:catalog"


async def test_non_text_input_mid_checkout_is_reasked(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    await shop.feed({"message": shop._message(USER, None, location={"latitude": -1.28, "longitude": 36.82})})
    assert "share or type your phone number" in shop.botapi.last(USER).text
    zones_again = await shop.send(USER, "0712345678")
    assert "email" in zones_again.text


async def test_stale_zone_button_after_cancel(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    zones = await shop.press(USER, (await shop.send(USER, "/cart")).button("Checkout"))
    await shop.send(USER, "/cancel")
    await shop.press(USER, zones.button("Nairobi"), message=zones)
    assert "expired" in shop.last_answer.params["text"]  # a friendly "this button is old"
    assert "I didn't get that" in (await shop.send(USER, "0712345678")).text  # not silently in the flow


async def test_cart_line_over_stock_blocks_checkout_with_its_name(shop: Harness) -> None:
    await fill_cart(shop, ("WS-DL-T5820", 2))
    async with shop.session_factory() as session, session.begin():
        (await catalog.get_product(session, sku="WS-DL-T5820")).stock = 1
    await shop.press(USER, (await shop.send(USER, "/cart")).button("Checkout"))
    answer = shop.last_answer.params
    assert (
        str(answer["show_alert"]).lower() == "true"
        and "Dell Precision T5820" in answer["text"]
        and "only 1 left" in answer["text"]
    )
    typed = await shop.send(USER, "/checkout")
    assert "Dell Precision T5820" in typed.text and "only 1 left" in typed.text
    assert "Sent to the shop" in (await shop.send(USER, "hello")).text  # not in the flow: to a person


async def test_price_change_after_the_summary_is_quoted_again_before_placing(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    summary = await go_to_summary(shop)
    assert "Total: KES 3,500" in summary.text
    async with shop.session_factory() as session, session.begin():
        (await catalog.get_product(session, sku="ACC-LEN-65W")).price_kes = 3500_00
    requote = await shop.press(USER, summary.button("Confirm"))
    assert "prices changed" in requote.text and "Total: KES 3,800" in requote.text
    assert await orders_and_cart(shop) == (0, 1)  # nothing reserved, cart untouched
    async with shop.session_factory() as session:
        assert (await catalog.get_product(session, sku="ACC-LEN-65W")).reserved == 0
    offer = await shop.press(USER, requote.button("Confirm"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert order.total == 3800_00 and order.public_id in offer.text


@pytest_asyncio.fixture
async def roomy_shop(engine, botapi) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    """A shop whose customers may reserve 100 units at once (the default limit is 20)."""
    harness = await Harness(engine, botapi, max_reserved_units_per_customer=100).start()
    yield harness
    await harness.stop()


async def test_user_text_is_escaped_and_long_carts_fit_one_message(roomy_shop: Harness) -> None:
    shop = roomy_shop  # 80 lines of one unit
    await shop.load_demo()
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
        for n in range(80):
            pid = await _product(session, f"CBL-{n:03d}", f"Cable <{n}> & adapter " + "x" * 60)
            await cart_service.add(session, USER, await session.get(Product, pid), 1)
    summary = await go_to_summary(shop, address="<b>Flat 3</b> & Co, Moi Ave, Mombasa")
    assert_telegram_html(summary.text)
    assert "&lt;b&gt;Flat 3&lt;/b&gt; &amp; Co" in summary.text and "Cable &lt;0&gt; &amp; adapter" in summary.text
    assert "more" in summary.text and "Total: KES 80,300" in summary.text  # 80 × 1,000 + 300, all counted
    offer = await shop.press(USER, summary.button("Confirm"))
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert len(order.items) == 80 and order.public_id in offer.text
    detail = await shop.send(USER, f"/track {order.public_id}")
    assert_telegram_html(detail.text)
    assert "more" in detail.text


async def _product(session, sku: str, name: str) -> int:  # type: ignore[no-untyped-def]
    product = Product(
        sku=sku,
        category_id=(await catalog.get_product(session, sku="ACC-LEN-65W")).category_id,
        name=name,
        description="",
        price_kes=1000_00,
        price_usd=8_00,
        stock=5,
    )
    session.add(product)
    await session.flush()
    return product.id


async def test_sold_out_message_escapes_the_product_name(shop: Harness) -> None:
    await fill_cart(shop, ("WS-DL-T5820", 2))
    summary = await go_to_summary(shop)
    async with shop.session_factory() as session, session.begin():
        product = await catalog.get_product(session, sku="WS-DL-T5820")
        product.name, product.stock = "Dell <Precision> & T5820", 0
    reply = await shop.press(USER, summary.button("Confirm"))
    assert_telegram_html(reply.text)
    assert "Dell &lt;Precision&gt; &amp; T5820" in reply.text and "not placed" in reply.text
    assert "Dell <Precision> & T5820" in shop.last_answer.params["text"]  # alerts are plain text
    assert await orders_and_cart(shop) == (0, 1)


async def test_concurrent_confirms_of_one_cart_place_one_order(session_factory) -> None:  # type: ignore[no-untyped-def]
    """A double-pressed Confirm handled by two processes at once (or Redis-backed state read twice)."""
    pid = await make_product(session_factory, "DBL-1", stock=5)
    async with session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER)
        await cart_service.set_quantity(session, USER, await session.get(Product, pid), 2)

    async def confirm() -> str:
        try:
            async with session_factory() as session, session.begin():
                order = await order_service.place_order(
                    session,
                    USER,
                    zone_code="nairobi",
                    phone="254712345678",
                    email="a@example.com",
                    address="Plot 1, Ngong Rd",
                    reservation_minutes=30,
                )
                return order.public_id
        except InvalidInput as exc:
            return exc.key

    results = await asyncio.gather(*(confirm() for _ in range(6)))
    assert len([r for r in results if r.startswith("HL-")]) == 1
    assert set(results) - {r for r in results if r.startswith("HL-")} <= {"cart.empty", "checkout.cart_changed"}
    assert await stock_of(session_factory, pid) == (3, 2, 0)
    async with session_factory() as session:
        assert (await session.execute(select(func.count(Order.id)))).scalar_one() == 1


async def test_refuse_early_answers_a_sold_out_cart_before_any_transaction(engine, session_factory) -> None:  # type: ignore[no-untyped-def]
    """What place_order would refuse, refused from a lock-free read (no transaction) with the
    same reason, leaving the session without a transaction and nothing changed."""
    short, gone = (
        await make_product(session_factory, "EARLY-1", stock=1),
        await make_product(session_factory, "EARLY-2"),
    )
    async with session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER)
        await cart_service.set_quantity(session, USER, await session.get(Product, short), 1)
        await session.execute(update(Product).where(Product.id == short).values(stock=0))

    async def refusal(refuse: Callable[..., Awaitable[object]]) -> tuple[str, dict[str, object]]:
        async with session_factory() as session:
            with pytest.raises(DomainError) as caught:
                await refuse(session)
            return caught.value.key, caught.value.values

    def placing(session: AsyncSession) -> Awaitable[object]:
        return order_service.place_order(
            session,
            USER,
            zone_code="nairobi",
            phone="254712345678",
            email="a@example.com",
            address="Plot 1, Ngong Rd",
            reservation_minutes=30,
        )

    with statements_sent(engine) as seen:
        early = await refusal(lambda s: order_service.refuse_early(s, USER))
    assert early == await refusal(placing) == ("error.out_of_stock", {"name": "Product EARLY-1"})
    if engine.dialect.name == "postgresql":  # the read went on the driver connection (db/driver_read.py)
        assert seen == []
    else:
        assert len(seen) == 1 and seen[0].autocommit
    assert await stock_of(session_factory, short) == (0, 0, 0) and await orders_and_cart_rows(session_factory) == (0, 1)

    async with session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.id == short).values(active=False))
    assert (await refusal(lambda s: order_service.refuse_early(s, USER)))[0] == "error.product_gone"
    async with session_factory() as session, session.begin():
        await cart_service.clear(session, USER)
    assert (await refusal(lambda s: order_service.refuse_early(s, USER)))[0] == "cart.empty"

    async with session_factory() as session:  # a cart that can be placed passes, and then is placed
        async with session.begin():
            await cart_service.set_quantity(session, USER, await session.get(Product, gone), 2)
        await order_service.refuse_early(session, USER)
        assert not session.in_transaction()
        async with session.begin():
            order = await placing(session)
        await session.commit()
    assert order.total > 0 and await stock_of(session_factory, gone) == (8, 2, 0)


async def orders_and_cart_rows(session_factory) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return (
            (await session.execute(select(func.count(Order.id)))).scalar_one(),
            (await session.execute(select(func.count()).select_from(CartItem))).scalar_one(),
        )


async def test_confirm_from_a_customer_this_process_has_not_seen_places_the_order(shop: Harness) -> None:
    """Confirm after a restart or from another web process: the customer is registered first, in
    the update's transaction, so the early read runs inside it (the session path) and the order is
    placed in a savepoint of that same transaction."""
    await fill_cart(shop, ("LAP-TP-T480", 1))
    summary = await go_to_summary(shop)
    customers = next(m for m in shop.shop.dp.callback_query.middleware if type(m).__name__ == "CustomerMiddleware")
    customers._checked.clear()  # as a fresh process starts
    with statements_sent(shop.engine) as seen:
        offer = await shop.press(USER, summary.button("Confirm"))
    assert "is placed" in offer.text and seen and not any(s.autocommit for s in seen)
    assert await orders_and_cart(shop) == (1, 0)
    async with shop.session_factory() as session:
        assert (await catalog.get_product(session, sku="LAP-TP-T480")).reserved == 1


# --- per-customer limits and public ids ------------------------------------------------------------


async def unpaid_orders(shop: Harness, *quantities: int, customer: int = USER) -> list[Order]:
    """Orders placed (and left unpaid) by `customer`, one per quantity of a product of their own."""
    pid = await make_product(shop.session_factory, f"HELD-{customer}", stock=100)
    return [await make_order(shop.session_factory, customer, [(pid, qty)]) for qty in quantities]


@pytest.mark.faults
async def test_fourth_unpaid_order_is_refused_until_one_is_paid(shop: Harness) -> None:
    await fill_cart(shop)  # demo catalogue and the customer
    held = await unpaid_orders(shop, 1, 1, 1)  # MAX_OPEN_ORDERS_PER_CUSTOMER defaults to 3
    async with shop.session_factory() as session, session.begin():
        await cart_service.add(session, USER, await catalog.get_product(session, sku="ACC-LEN-65W"), 1)
    summary = await go_to_summary(shop)
    reply = await shop.press(USER, summary.button("Confirm"))
    assert "not placed" in reply.text and "You already have 3 unpaid orders" in reply.text
    assert "/orders" in reply.text and "30 minutes" in reply.text and "cart is unchanged" in reply.text
    assert reply.button("My orders") == "menu:orders" and reply.button("Cart") == "menu:cart"
    assert "You already have 3 unpaid orders" in shop.last_answer.params["text"]
    assert await orders_and_cart(shop) == (3, 1)
    async with shop.session_factory() as session:
        assert (await catalog.get_product(session, sku="ACC-LEN-65W")).reserved == 0
    async with shop.session_factory() as session, session.begin():  # one is paid: room for another
        await order_service.transition(
            session, await order_service.get_order(session, held[0].public_id), "processing", "system:test"
        )
    offer = await shop.press(USER, (await go_to_summary(shop)).button("Confirm"))
    assert "is placed" in offer.text and await orders_and_cart(shop) == (4, 0)


async def test_units_held_by_unpaid_orders_are_capped_with_this_order_included(shop: Harness) -> None:
    await fill_cart(shop)
    await unpaid_orders(shop, 15)  # MAX_RESERVED_UNITS_PER_CUSTOMER defaults to 20
    pid = await make_product(shop.session_factory, "BULK-1", stock=50)
    async with shop.session_factory() as session, session.begin():
        await cart_service.set_quantity(session, USER, await session.get(Product, pid), 6)
    reply = await shop.press(USER, (await go_to_summary(shop)).button("Confirm"))
    assert "not placed" in reply.text and "already hold 15 items" in reply.text and "at most 20" in reply.text
    assert await stock_of(shop.session_factory, pid) == (50, 0, 0) and await orders_and_cart(shop) == (1, 1)
    async with shop.session_factory() as session, session.begin():
        await cart_service.set_quantity(session, USER, await session.get(Product, pid), 5)  # 15 + 5: at the limit
    offer = await shop.press(USER, (await go_to_summary(shop)).button("Confirm"))
    assert "is placed" in offer.text and await stock_of(shop.session_factory, pid) == (45, 5, 0)


async def test_one_order_over_the_units_limit_is_refused_by_the_shops_setting(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, max_reserved_units_per_customer=4).start()
    try:
        await fill_cart(shop, ("ACC-LEN-65W", 5))
        reply = await shop.press(USER, (await go_to_summary(shop)).button("Confirm"))
        assert "not placed" in reply.text and "at most 4 items" in reply.text and "this order has 5" in reply.text
        assert await orders_and_cart(shop) == (0, 1)
    finally:
        await shop.stop()


@pytest.mark.faults
async def test_a_public_id_collision_retries_with_a_new_id(shop: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await fill_cart(shop)
    [taken] = await unpaid_orders(shop, 1, customer=USER + 1)
    async with shop.session_factory() as session, session.begin():
        await cart_service.add(session, USER, await catalog.get_product(session, sku="ACC-LEN-65W"), 2)
    summary = await go_to_summary(shop)
    drawn = iter([taken.public_id, taken.public_id, "HL-FRESH2"])
    monkeypatch.setattr(order_service, "new_public_id", lambda: next(drawn))
    offer = await shop.press(USER, summary.button("Confirm"))
    assert "HL-FRESH2" in offer.text and "is placed" in offer.text
    async with shop.session_factory() as session:
        order = await order_service.get_order(session, "HL-FRESH2", customer_id=USER)
        assert [(i.sku, i.quantity) for i in order.items] == [("ACC-LEN-65W", 2)]
        assert len(await order_service.events_of(session, order.id)) == 1
        assert (await catalog.get_product(session, sku="ACC-LEN-65W")).reserved == 2
    assert await orders_and_cart(shop) == (2, 0)


# --- Kenyan numbers, town and branch, P.O. Boxes -----------------------------------------------------

KENYAN_FORMS = ("0712345678", "712345678", "+254712345678", "254 712 345 678")
NOT_KENYAN = "That isn't a Kenyan number"


async def test_kenyan_zones_take_a_kenyan_number_in_every_form_people_type(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    for zone in ("Nairobi", "Rest of Kenya"):
        for typed in KENYAN_FORMS:
            await go_to_phone(shop, zone)
            assert "Your email address" in (await shop.send(USER, typed)).text, (zone, typed)
            async with shop.session_factory() as session:
                assert (await session.get(Customer, USER)).phone == "254712345678"  # E.164 digits
            await shop.send(USER, "/cancel")
    await go_to_phone(shop, "Rest of Kenya")
    assert "Your email address" in (await shop.share_contact(USER, "+254712345678")).text


async def test_a_foreign_number_is_refused_inside_kenya_and_taken_abroad(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    for zone in ("Nairobi", "Rest of Kenya"):
        await go_to_phone(shop, zone)
        refused = await shop.send(USER, "+44 7911 123456")
        assert refused.text.startswith(NOT_KENYAN)
        assert "Please type a Kenyan number: 07… or 01…, or +254…" in refused.text
        assert refused.buttons[0] == ("📱 Share my phone", "contact") and refused.buttons[-1][0] == "✖ Cancel checkout"
        assert (await shop.share_contact(USER, "+447911123456")).text.startswith(NOT_KENYAN)
        assert "Your email address" in (await shop.send(USER, "0712 345 678")).text
        await shop.send(USER, "/cancel")
    await go_to_phone(shop, "International")
    assert "with its country code" in shop.botapi.last(USER).text
    assert "Your email address" in (await shop.send(USER, "+44 7911 123456")).text
    await shop.send(USER, "buyer@example.co.uk")
    summary = await shop.send(USER, "221B Baker Street, London NW1 6XE, United Kingdom")
    assert "📱 +44 7911 123456" in summary.text


async def test_a_saved_number_is_offered_only_where_it_can_be_used(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    async with shop.session_factory() as session, session.begin():
        (await session.get(Customer, USER)).phone = "447911123456"
    ask = await shop.press(USER, (await shop.send(USER, "/checkout")).button("Nairobi"))
    assert [label for label, _ in ask.buttons] == ["📱 Share my phone", "✖ Cancel checkout"]
    await shop.send(USER, "/cancel")
    ask = await shop.press(USER, (await shop.send(USER, "/checkout")).button("International"))
    assert [label for label, _ in ask.buttons] == ["📱 Share my phone", "+44 7911 123456", "✖ Cancel checkout"]


PO_BOXES = ("P.O. Box 123, Nakuru", "PO Box 55 Eldoret", "P. O. Box 9, Kisumu", "Box 123 Nakuru", "S.L.P. 45, Nakuru")


async def test_rest_of_kenya_asks_for_town_and_branch_and_refuses_a_po_box(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop, "Rest of Kenya")
    await shop.send(USER, "0712345678")
    ask = await shop.send(USER, "a@example.com")
    assert "Which town, and which G4S branch should we send it to? e.g. Nakuru, Westside Mall branch" in ask.text
    assert "street" not in ask.text and ask.params["reply_markup"] == {"remove_keyboard": True}
    for box in PO_BOXES:
        refused = await shop.send(USER, box)
        assert "Couriers can't deliver to a P.O. Box" in refused.text, box
        assert "Which town, and which G4S branch" in refused.text, box
    assert "both the town and the G4S branch" in (await shop.send(USER, "Nakuru")).text
    await shop.feed({"message": shop._message(USER, None, location={"latitude": -0.3, "longitude": 36.07})})
    assert "town and the courier branch" in shop.botapi.last(USER).text
    summary = await shop.send(USER, "Nakuru, Westside Mall branch")
    assert "Please confirm" in summary.text and "🏠 Nakuru, Westside Mall branch" in summary.text


async def test_nairobi_keeps_the_street_address_and_refuses_a_po_box(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop, "Nairobi")
    await shop.send(USER, "0712345678")
    ask = await shop.send(USER, "a@example.com")
    assert "building, street, area and town" in ask.text and "branch" not in ask.text
    for box in ("P.O. Box 4567-00100, Nairobi", "po box 12 Nairobi", "S.L.P. 3000 Nairobi", "Box 30 Westlands"):
        refused = await shop.send(USER, box)
        assert "Couriers can't deliver to a P.O. Box — please type a street address" in refused.text, box
    assert "Please confirm" in (await shop.send(USER, "Plot 12, Ngong Road, Nairobi")).text


async def test_dhl_abroad_refuses_a_po_box_too(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop, "International")
    await shop.send(USER, "+44 7911 123456")
    await shop.send(USER, "a@example.com")
    refused = await shop.send(USER, "PO Box 77, London")
    assert "Couriers can't deliver to a P.O. Box — please type a street address" in refused.text
    assert "Please confirm" in (await shop.send(USER, "221B Baker Street, London NW1 6XE")).text


async def test_swahili_customer_reads_the_new_checkout_texts_in_swahili(shop: Harness) -> None:
    shop.language_codes[USER] = "sw"
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    assert (await shop.send(USER, "/cancel")).text == "Hakuna cha kughairi kwa sasa."
    zones = await shop.send(USER, "/checkout")
    await shop.press(USER, zones.button("Sehemu zingine"))
    assert "Sehemu zingine za Kenya ✓" in shop.botapi.last(USER, methods=("editMessageText",)).text
    assert "Hiyo si namba ya Kenya" in (await shop.send(USER, "+44 7911 123456")).text
    await shop.send(USER, "0712345678")
    assert "tawi lipi la G4S" in (await shop.send(USER, "a@example.com")).text
    assert "S.L.P." in (await shop.send(USER, "S.L.P. 45, Nakuru")).text
    summary = await shop.send(USER, "Nakuru, tawi la Westside Mall")
    assert [label for label, _ in summary.buttons][2:5] == ["✏️ Simu", "✏️ Email", "✏️ Anwani"]


# --- the summary's edit buttons, the zone shown as chosen ------------------------------------------------


async def test_summary_edit_buttons_change_one_field_and_keep_everything_else(shop: Harness) -> None:
    from tests.test_promo import create_code, enter_code

    await create_code(shop, "SAVE10 10%")
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop, "Rest of Kenya")
    await shop.send(USER, "0712345678")
    await shop.send(USER, "a@example.com")
    summary = await enter_code(shop, await shop.send(USER, "Nakuru, Westside Mall branch"), "SAVE10")
    assert [label for label, _ in summary.buttons] == [
        "✅ Confirm order",
        "✖ Remove code SAVE10",
        "✏️ Phone",
        "✏️ Email",
        "✏️ Address",
        "✖ Cancel checkout",
    ]
    ask = await shop.press(USER, summary.button("✏️ Phone"), message=summary)
    assert "Your phone number for the courier" in ask.text and ask.buttons[0] == ("📱 Share my phone", "contact")
    assert (await shop.send(USER, "+44 7911 123456")).text.startswith(NOT_KENYAN)  # still a Kenyan zone
    before = len(shop.botapi.calls)
    summary = await shop.send(USER, "0722 000 111")
    note = next(c for c in shop.botapi.calls[before:] if c.method == "sendMessage")
    assert note.text == "✓ Phone number updated." and note.params["reply_markup"] == {"remove_keyboard": True}
    for kept in ("📱 +254 722 000 111", "✉️ a@example.com", "🏠 Nakuru, Westside Mall branch", "Delivery: KES 600"):
        assert kept in summary.text, kept
    assert "Promo code SAVE10" in summary.text and "Where should we deliver" not in summary.text
    await shop.press(USER, summary.button("✏️ Email"), message=summary)
    summary = await shop.send(USER, "b@example.com")
    assert "✉️ b@example.com" in summary.text and "📱 +254 722 000 111" in summary.text
    ask = await shop.press(USER, summary.button("✏️ Address"), message=summary)
    assert "Which town, and which G4S branch" in ask.text
    assert "P.O. Box" in (await shop.send(USER, "P.O. Box 1, Eldoret")).text
    summary = await shop.send(USER, "Eldoret, Zion Mall branch")
    assert "🏠 Eldoret, Zion Mall branch" in summary.text and "Promo code SAVE10" in summary.text
    await shop.press(USER, summary.button("Confirm"), message=summary)
    async with shop.session_factory() as session:
        order = (await session.execute(select(Order))).unique().scalar_one()
    assert (order.zone, order.phone, order.email, order.address, order.promo_code) == (
        "kenya",
        "254722000111",
        "b@example.com",
        "Eldoret, Zion Mall branch",
        "SAVE10",
    )


async def test_an_edit_button_of_a_finished_checkout_is_stale(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    summary = await go_to_summary(shop)
    await shop.press(USER, summary.button("Cancel"), message=summary)
    await shop.press(USER, "chk:ep", message=summary)
    assert "already finished" in shop.last_answer.params["text"]
    assert "I didn't get that" in (await shop.send(USER, "0712345678")).text


async def test_the_chosen_zone_replaces_the_zone_buttons(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    zones = await shop.press(USER, (await shop.send(USER, "/cart")).button("Checkout"))
    before = len(shop.botapi.calls)
    ask = await shop.press(USER, zones.button("Nairobi"))
    [edit] = [c for c in shop.botapi.calls[before:] if c.method.startswith("editMessage")]
    assert edit.method == "editMessageText" and edit.params["message_id"] == zones.params["message_id"]
    assert edit.text == "🚚 Delivery: Nairobi Metro ✓" and edit.buttons == []
    assert "Your phone number" in ask.text
    await shop.press(USER, "chk:z:kenya", message=zones)  # an old zone button (another device's screen)
    assert "expired" in shop.last_answer.params["text"]
    await shop.send(USER, "0712345678")
    await shop.send(USER, "a@example.com")
    summary = await shop.send(USER, "Plot 12, Ngong Road, Nairobi")
    assert "Delivery: KES 300 — Nairobi Metro" in summary.text


# --- /cancel with nothing to cancel ---------------------------------------------------------------------


async def test_cancel_outside_any_flow_says_there_is_nothing_to_cancel(shop: Harness) -> None:
    await shop.send(USER, "/start")
    reply = await shop.send(USER, "/cancel")
    assert reply.text == "There's nothing to cancel right now."
    assert reply.button("🛍 Browse catalogue") == "menu:catalog" and reply.button("Menu") == "menu:main"
    assert (await shop.send(ADMIN_USER_ID, "/cancel")).text == "There's nothing to cancel right now."  # in private
    in_group = await shop.send(ADMIN_USER_ID, "/cancel HL-NOPE99 wrong item", chat_id=ADMIN_CHAT_ID)
    assert "No order HL-NOPE99" in in_group.text  # the admin group's /cancel ORDER is still the admins'
