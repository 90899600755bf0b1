"""The cart as a customer sees it: lines, subtotals, changes, caps, price changes, long carts, stale
buttons, and a cart that outlives the bot process."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update

from db.changes import catalogue_written
from db.models import CartItem, Category, Product
from handlers.cart import paginate
from services import cart as cart_service
from services import catalog
from tests.harness import Harness

USER = 7101


async def _add(shop: Harness, sku: str, qty: int) -> None:
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
        product = await catalog.get_product(session, sku=sku)
        await cart_service.add(session, USER, product, qty)


async def _set(shop: Harness, sku: str, **values: object) -> None:
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.sku == sku).values(**values))
        catalogue_written(session)  # as the shop's own stock moves do


def _line_buttons(screen, label: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [d for text, d in screen.buttons if text == label]


async def test_empty_cart_points_to_the_catalogue(shop: Harness) -> None:
    reply = await shop.send(USER, "/cart")
    assert "empty" in reply.text and reply.button("Catalogue") == "menu:catalog"
    assert "Checkout" not in [label for label, _ in reply.buttons]
    screen = await shop.press(USER, "menu:cart")
    assert screen.method == "editMessageText" and "empty" in screen.text


async def test_cart_lines_subtotals_and_changes(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "LAP-TP-T480", 1)
    await _add(shop, "ACC-LEN-65W", 2)
    screen = await shop.send(USER, "/cart")
    assert "Lenovo ThinkPad T480" in screen.text and "1 × KES 42,000 = KES 42,000\n" in screen.text
    assert "2 × KES 3,200 = KES 6,400\n" in screen.text
    assert "Subtotal: <b>KES 48,400</b>\n" in screen.text
    assert "$" not in screen.text and "USD" not in screen.text  # the second currency comes with the zone
    assert screen.button("Checkout") == "chk:start" and screen.button("Clear") == "crt:cq:0"
    assert [label for label, _ in screen.buttons][:4] == ["− 1", "1. ×1", "+ 1", "🗑 Remove"]
    screen = await shop.press(USER, _line_buttons(screen, "+ 1")[0])
    assert screen.method == "editMessageText" and "Subtotal: <b>KES 90,400</b>" in screen.text
    screen = await shop.press(USER, _line_buttons(screen, "− 1")[1])
    assert "1 × KES 3,200 = KES 3,200" in screen.text and "Subtotal: <b>KES 87,200</b>" in screen.text
    await shop.press(USER, _line_buttons(screen, "− 1")[1])  # at 1: said, not removed
    assert shop.last_answer.params["text"] == "1 is the least you can order — use 🗑 Remove to take it out."
    assert "1 × KES 3,200" in shop.botapi.last(USER).text
    screen = await shop.press(USER, _line_buttons(screen, "🗑 Remove")[1])
    assert screen.text == "Remove 1 × <b>Lenovo 65 W USB-C charger</b> from your cart?"
    assert [label for label, _ in screen.buttons] == ["Yes, remove it", "Keep"]
    screen = await shop.press(USER, screen.button("Yes, remove it"))
    assert "Removed Lenovo 65 W" in shop.last_answer.params["text"] and "65 W" not in screen.text
    assert "Subtotal: <b>KES 84,000</b>" in screen.text
    await _add(shop, "ACC-LEN-65W", 1)
    screen = await shop.press(USER, "menu:cart")
    screen = await shop.press(USER, screen.button("Clear"))
    assert screen.text == "Empty your cart? 3 items will be removed."
    assert [label for label, _ in screen.buttons] == ["Yes, empty it", "Keep"]
    screen = await shop.press(USER, screen.button("Yes, empty it"))
    assert "empty" in screen.text and shop.last_answer.params["text"] == "Cart cleared."
    async with shop.session_factory() as session:
        assert (await session.execute(select(CartItem))).scalars().all() == []


async def test_line_opens_its_product_card(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "ACC-LEN-65W", 3)
    screen = await shop.send(USER, "/cart")
    card = await shop.press(USER, screen.button("1. ×3"))
    assert "Lenovo 65 W USB-C charger" in card.text and "In your cart: 3" in card.text
    assert card.button("Add 3 to cart")


async def test_quantities_are_capped_by_stock(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "WS-DL-T5820", 5)  # only 2 in stock
    screen = await shop.send(USER, "/cart")
    assert "2 × KES 145,000 = KES 290,000" in screen.text
    screen = await shop.press(USER, _line_buttons(screen, "+ 1")[0])
    assert shop.last_answer.params["show_alert"] in (True, "true")
    assert "Only 2 × Dell Precision T5820" in shop.last_answer.params["text"]
    assert "2 × KES 145,000 = KES 290,000" in screen.text
    await _set(shop, "WS-DL-T5820", stock=1)  # stock fell since: flagged, and − caps to what is left
    screen = await shop.send(USER, "/cart")
    assert "only 1 left in stock" in screen.text
    await _set(shop, "WS-DL-T5820", stock=0)
    screen = await shop.send(USER, "/cart")
    assert "sold out for now" in screen.text
    screen = await shop.press(USER, _line_buttons(screen, "− 1")[0])  # fewer of a sold-out item is fine
    assert "1 × KES 145,000 = KES 145,000" in screen.text
    await shop.press(USER, _line_buttons(screen, "+ 1")[0])
    assert "out of stock" in shop.last_answer.params["text"]


async def test_price_change_since_adding_is_shown(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "NET-TPL-SG108E", 1)
    await _add(shop, "ACC-LEN-65W", 1)
    await _set(shop, "NET-TPL-SG108E", price_kes=5900_00)
    await _set(shop, "ACC-LEN-65W", price_kes=3500_00, price_usd=27_00)
    screen = await shop.send(USER, "/cart")
    assert "price changed since you added it: KES 5,200 → KES 5,900\n" in screen.text
    assert "price changed since you added it: KES 3,200 → KES 3,500\n" in screen.text and "$" not in screen.text
    assert "Subtotal: <b>KES 9,400</b>" in screen.text  # at today's prices


async def test_gone_product_is_flagged_and_left_out_of_the_subtotal(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "ACC-LEN-65W", 1)
    await _add(shop, "LAP-TP-T480", 1)
    await _set(shop, "LAP-TP-T480", active=False)
    screen = await shop.send(USER, "/cart")
    assert "no longer available — please remove it" in screen.text
    assert "Subtotal: <b>KES 3,200</b>" in screen.text
    screen = await shop.press(USER, _line_buttons(screen, "🗑 Remove")[1])
    screen = await shop.press(USER, screen.button("Yes, remove it"))
    assert "ThinkPad" not in screen.text


async def _long_cart(shop: Harness) -> None:
    """30 lines whose names triple in length once HTML-escaped: several cart pages."""
    async with shop.session_factory() as session, session.begin():
        cat = Category(slug="many", name="Many")
        session.add(cat)
        await session.flush()
        for i in range(30):  # names that triple in length once HTML-escaped
            session.add(
                Product(
                    sku=f"LONG-{i}",
                    category_id=cat.id,
                    name=f"{i:02d} " + "<&>" * 65,
                    description="x",
                    price_kes=1000_00,
                    price_usd=8_00,
                    stock=5,
                )
            )
    async with shop.session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER)
        for p in (
            (await session.execute(select(Product).where(Product.sku.like("LONG-%")).order_by(Product.sku)))
            .unique()
            .scalars()
        ):
            await cart_service.add(session, USER, p, 1)


async def test_long_carts_paginate_within_telegram_limits(shop: Harness) -> None:
    await _long_cart(shop)
    screen = await shop.send(USER, "/cart")
    assert "Page 1 of " in screen.text and "Subtotal: <b>KES 30,000</b>" in screen.text
    pages = int(screen.text.split("Page 1 of ")[1].split()[0])
    assert pages >= 4
    seen: list[str] = []
    for n in range(1, pages + 1):
        assert f"Page {n} of {pages}" in screen.text and len(screen.text) <= 4096
        pager = [label for label, d in screen.buttons if d.startswith("crt:pg:")]
        assert pager == (["◀ Previous"] if n > 1 else []) + [f"{n}/{pages}"] + (["Next ▶"] if n < pages else [])
        seen += [label.split(".")[0] for label, d in screen.buttons if d.startswith("cat:v:")]
        if n < pages:
            screen = await shop.press(USER, screen.button("Next ▶"))
    assert seen == [str(i) for i in range(1, 31)]  # every line once, in order
    back = await shop.press(USER, screen.button("◀ Previous"))
    assert f"Page {pages - 1} of {pages}" in back.text


async def test_clear_and_remove_ask_first_and_keep_returns_to_the_same_page(shop: Harness) -> None:
    await _long_cart(shop)
    await shop.send(USER, "/cart")
    page2 = await shop.press(USER, shop.botapi.last(USER).button("Next ▶"))
    assert "Page 2 of " in page2.text and page2.button("Clear") == "crt:cq:1"
    ask = await shop.press(USER, page2.button("Clear"))
    assert ask.text == "Empty your cart? 30 items will be removed."
    kept = await shop.press(USER, ask.button("Keep"))
    assert (kept.text, kept.buttons) == (page2.text, page2.buttons)  # the same page, unchanged
    first_line = next(d for label, d in page2.buttons if label == "🗑 Remove")
    ask = await shop.press(USER, first_line)
    assert ask.text.startswith("Remove 1 × <b>") and ask.text.endswith("</b> from your cart?")
    kept = await shop.press(USER, ask.button("Keep"))
    assert (kept.text, kept.buttons) == (page2.text, page2.buttons)
    async with shop.session_factory() as session:
        assert len((await session.execute(select(CartItem))).scalars().all()) == 30
    await shop.press(USER, first_line)
    after = await shop.press(USER, shop.botapi.last(USER).button("Yes, remove it"))
    assert "Page 2 of " in after.text and "Subtotal: <b>KES 29,000</b>" in after.text
    ask = await shop.press(USER, "crt:clr")  # Clear on a cart sent before it asked: asks too
    assert ask.text == "Empty your cart? 29 items will be removed." and ask.button("Keep") == "crt:pg:0"


async def test_one_item_clear_question_and_the_card_returns_to_the_cart_page_holding_it(shop: Harness) -> None:
    await shop.load_demo()
    await _long_cart(shop)
    screen = await shop.send(USER, "/cart")
    screen = await shop.press(USER, screen.button("Next ▶"))
    card = await shop.press(USER, next(d for _, d in screen.buttons if d.startswith("cat:v:")))
    back = await shop.press(USER, card.button("Cart"))
    assert "Page 2 of " in back.text and (back.text, back.buttons) == (screen.text, screen.buttons)
    await shop.press(USER, "crt:cy:0")
    await _add(shop, "ACC-LEN-65W", 1)
    ask = await shop.press(USER, (await shop.send(USER, "/cart")).button("Clear"))
    assert ask.text == "Empty your cart? 1 item will be removed."


async def test_stock_shortfall_at_confirm_reads_as_one_sentence(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "WS-DL-T5820", 2)
    zones = await shop.press(USER, (await shop.send(USER, "/cart")).button("Checkout"))
    reply = await shop.press(USER, next(d for _, d in zones.buttons if d == "chk:z:nairobi"))
    for answer in ("0712345678", "a@example.com", "Plot 12, Ngong Road, Nairobi"):
        if any(d == "chk:ok" for _, d in reply.buttons):
            break
        reply = await shop.send(USER, answer)
    await _set(shop, "WS-DL-T5820", stock=1)
    refused = await shop.press(USER, "chk:ok", message=reply)
    assert refused.text.startswith(
        "Your order was not placed. Only 1 × Dell Precision T5820 (Xeon W-2135, 64 GB, 1 TB NVMe) is left in stock."
    )
    assert "Sorry" not in refused.text


def test_paginate_respects_budget_and_line_count() -> None:
    assert paginate(["a" * 10] * 20, budget=100, per_page=8) == [
        list(range(0, 8)),
        list(range(8, 16)),
        list(range(16, 20)),
    ]
    assert paginate(["a" * 60, "b" * 60, "c"], budget=100) == [[0], [1, 2]]
    assert paginate(["a" * 500], budget=100) == [[0]]  # one oversized line still gets a page


async def test_stale_cart_buttons(shop: Harness) -> None:
    await shop.load_demo()
    await _add(shop, "ACC-LEN-65W", 1)
    screen = await shop.send(USER, "/cart")
    await shop.press(USER, screen.button("Clear"))
    await shop.press(USER, "crt:cy:0")
    after = await shop.press(USER, _line_buttons(screen, "+ 1")[0], message=screen)  # a line that is gone
    assert shop.last_answer.params["text"] == "That item is no longer in your cart."
    assert "empty" in after.text
    await shop.press(USER, "crt:pg:7", message=screen)  # a page that no longer exists: the last one
    assert "empty" in shop.botapi.last(USER).text and shop.last_answer is not None


async def test_cart_survives_a_restart(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    first = await Harness(engine, botapi).start()
    await first.load_demo()
    card = await first.send(USER, "/start p_ACC-LEN-65W")
    await first.press(USER, card.button("Add 1 to cart"))
    await first.stop()
    second = await Harness(engine, botapi).start()
    try:
        assert "Lenovo 65 W USB-C charger" in (await second.send(USER, "/cart")).text
    finally:
        await second.stop()


async def test_one_statement_add_caps_like_the_long_way(session_factory) -> None:  # type: ignore[no-untyped-def]
    """`try_add` (the Add to cart button, no transaction around it) caps by the live stock and the
    line limit, counts what was there, and gives up (None) where `add` would have to say why."""
    from db.session import autocommit_sessionmaker
    from tests.factories import make_product

    big = await make_product(session_factory, "BIG-1", stock=500)
    few = await make_product(session_factory, "FEW-1", stock=3)
    gone = await make_product(session_factory, "GONE-1", stock=5)
    async with session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
        await session.execute(update(Product).where(Product.id == gone).values(active=False))
    factory = autocommit_sessionmaker(session_factory)
    async with factory() as session:
        assert await cart_service.try_add(session, USER, big, 60) == (0, 60)
        assert await cart_service.try_add(session, USER, big, 60) == (60, cart_service.MAX_LINE_QTY)
        assert await cart_service.try_add(session, USER, few, 2) == (0, 2)
        assert await cart_service.try_add(session, USER, few, 2) == (2, 3)
        assert await cart_service.try_add(session, USER, gone, 1) is None
    async with session_factory() as session, session.begin():  # stock fell below the line since
        await session.execute(update(Product).where(Product.id == few).values(stock=1))
    async with factory() as session:
        assert await cart_service.try_add(session, USER, few, 1) == (3, 1)
    async with session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.id == few).values(stock=0))
    async with factory() as session:
        assert await cart_service.try_add(session, USER, few, 1) is None  # sold out: the long way says so
    async with session_factory() as session:  # committed statement by statement, with the prices seen
        rows = {
            (r.product_id, r.quantity, r.seen_price_kes) for r in (await session.execute(select(CartItem))).scalars()
        }
        assert rows == {(big, cart_service.MAX_LINE_QTY, 1000_00), (few, 1, 1000_00)}


@pytest.mark.pg_only
async def test_presses_at_the_same_instant_add_up(session_factory) -> None:  # type: ignore[no-untyped-def]
    """Ten presses of Add at once for one customer: no duplicate-key error, every unit counted."""
    from db.session import autocommit_sessionmaker
    from tests.factories import make_product

    pid = await make_product(session_factory, "HOT-1", stock=50)
    async with session_factory() as session, session.begin():
        await cart_service.ensure_customer(session, USER, USER, "Wanjiru")
    factory = autocommit_sessionmaker(session_factory)

    async def press() -> cart_service.Added | None:
        async with factory() as session:
            return await cart_service.try_add(session, USER, pid, 2)

    results = await asyncio.gather(*(press() for _ in range(10)))
    assert all(r is not None for r in results) and max(r.now for r in results if r) == 20
    async with session_factory() as session:
        assert await cart_service.quantity_in_cart(session, USER, pid) == 20


async def test_registering_a_customer_in_one_statement(session_factory) -> None:  # type: ignore[no-untyped-def]
    """What `ensure_customer` does for a customer, without loading the row: created on first
    contact, the chat followed when it moves, reachable again once they write; nothing else touched."""
    from db.models import Customer

    async with session_factory() as session, session.begin():
        await cart_service.register_customer(session, USER, USER, "Wanjiru" * 30, "wanjiru", "sw-KE-long")
    async with session_factory() as session, session.begin():
        customer = await session.get(Customer, USER)
        assert (customer.chat_id, customer.first_name, customer.username, customer.language, customer.unreachable) == (
            USER,
            ("Wanjiru" * 30)[:128],
            "wanjiru",
            "sw-KE-lo",
            False,
        )
        customer.unreachable, customer.phone = True, "254712345678"
    async with session_factory() as session, session.begin():
        await cart_service.register_customer(session, USER, USER + 1, "Other name", None, "en")
        await cart_service.register_customer(session, USER, -100, "Group", None, "en")  # not a private chat
    async with session_factory() as session:
        customer = await session.get(Customer, USER)
        assert (customer.chat_id, customer.unreachable, customer.first_name, customer.phone, customer.language) == (
            USER + 1,
            False,
            ("Wanjiru" * 30)[:128],
            "254712345678",
            "sw-KE-lo",
        )
