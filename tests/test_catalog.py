"""Browsing the catalogue as a customer: categories, keyset pages, product card, photo cards, deep link,
stale buttons, typed quantities, Notify me and the 64-byte callback limit."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db.changes import catalogue_written
from db.models import Category, Product, StockWatch, utcnow
from services import cart as cart_service
from services import catalog
from tests.harness import Harness
from tests.standins import Call

USER = 7001


def products_on(screen: Call) -> list[str]:
    return [data for _, data in screen.buttons if data.startswith("cat:v:")]


def labels(screen: Call) -> list[str]:
    return [label for label, _ in screen.buttons]


async def add_products(shop: Harness, category: str, count: int, *, prefix: str = "X") -> None:
    """`count` more products in `category`, created through the import service like an operator would."""
    rows = [
        catalog.ProductRow(
            sku=f"{prefix}-{i:03d}",
            category=category,
            name=f"Extra item {i:03d}",
            description="Spare part",
            price_kes=1000 + i,
            price_usd="8.00",
            stock=3,
        )
        for i in range(count)
    ]
    async with shop.session_factory() as session, session.begin():
        await catalog.import_rows(session, rows)


async def set_product(shop: Harness, sku: str, **values: object) -> None:
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.sku == sku).values(**values))
        catalogue_written(session)  # as the shop's own stock moves do


async def test_categories_list_with_counts_and_edit_in_place(shop: Harness) -> None:
    await shop.load_demo()
    menu = await shop.send(USER, "/start")
    screen = await shop.press(USER, "menu:catalog")
    assert screen is not None and screen.method == "editMessageText"
    assert screen.params["message_id"] == menu.result["message_id"]
    assert "Refurbished laptops (7)" in labels(screen) and "Accessories (4)" in labels(screen)
    assert screen.button("Cart") == "menu:cart" and screen.button("Menu") == "menu:main"
    assert shop.last_answer is not None  # every press is answered


async def test_category_pages_forward_and_back_across_many_products(shop: Harness) -> None:
    await shop.load_demo()
    await add_products(shop, "Workstations", 14)  # 3 demo + 14 = 17 products: pages of 6, 6, 5
    first = await shop.send(USER, "/catalog")
    page = await shop.press(USER, first.button("Workstations (17)"))
    pages = [products_on(page)]
    assert "Workstations" in page.text
    while "Next ▶" in labels(page):
        n = len(pages)
        assert [label for label, d in page.buttons if d.startswith(("cat:p:", "cat:c:"))] == (
            ["◀ Previous"] if n > 1 else []
        ) + [f"{n}/3", "Next ▶"]
        page = await shop.press(USER, page.button("Next ▶"))
        assert page.method == "editMessageText" and page.params["message_id"] == first.result["message_id"]
        pages.append(products_on(page))
    assert [label for label, d in page.buttons if d.startswith("cat:p:")] == ["◀ Previous", "3/3"]
    assert [len(p) for p in pages] == [6, 6, 5]
    seen = [d for p in pages for d in p]
    assert len(set(seen)) == 17
    async with shop.session_factory() as session:
        newest_first = [
            p.id
            for p in (
                await session.execute(
                    select(Product)
                    .join(Category)
                    .where(Category.name == "Workstations")
                    .order_by(Product.created_at.desc(), Product.id.desc())
                )
            )
            .unique()
            .scalars()
        ]
    assert [int(d.split(":")[2]) for d in seen] == newest_first
    for expected in reversed(pages[:-1]):
        page = await shop.press(USER, page.button("◀ Previous"))
        assert products_on(page) == expected
    assert "◀ Previous" not in labels(page) and "1/3" in labels(page)


async def test_page_size_comes_from_settings(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, page_size=4).start()
    try:
        await shop.load_demo()
        await shop.send(USER, "/catalog")
        page = await shop.press(USER, shop.botapi.last(USER).button("Refurbished laptops"))
        assert len(products_on(page)) == 4
        page = await shop.press(USER, page.button("Next ▶"))
        assert len(products_on(page)) == 3 and "Next ▶" not in labels(page) and "2/2" in labels(page)
    finally:
        await shop.stop()


async def test_keyset_pages_cover_every_product_exactly_once(session) -> None:  # type: ignore[no-untyped-def]
    cat = Category(slug="bulk", name="Bulk")
    session.add(cat)
    await session.flush()
    base = utcnow()
    for i in range(23):  # some share a timestamp: the id breaks the tie
        session.add(
            Product(
                sku=f"B-{i}",
                category_id=cat.id,
                name=f"Item {i}",
                price_kes=100,
                price_usd=1,
                stock=1,
                created_at=base - timedelta(seconds=i // 3),
            )
        )
    await session.commit()
    seen, cursor, pages = [], None, 0
    while True:
        page = await catalog.category_page(session, cat.id, after=cursor, size=5)
        seen += [p.sku for p in page.products]
        pages += 1
        if not page.next_cursor:
            break
        back = await catalog.category_page(session, cat.id, before=page.next_cursor, size=5)
        assert [p.sku for p in back.products] == [p.sku for p in page.products]
        cursor = page.next_cursor
    assert pages == 5 and len(seen) == 23 and len(set(seen)) == 23


async def test_product_card_texts_buttons_quantity_and_add_to_cart(shop: Harness) -> None:
    await shop.load_demo()
    await shop.send(USER, "/catalog")
    cat = await shop.press(USER, shop.botapi.last(USER).button("Workstations"))
    card = await shop.press(USER, cat.button("Precision T5820"))
    assert card.method == "editMessageText" and card.params["message_id"] == cat.params["message_id"]
    assert "<b>Dell Precision T5820" in card.text and "💰 KES 145,000\n" in card.text and "$" not in card.text
    assert "2 in stock" in card.text and "SKU: <code>WS-DL-T5820</code>" in card.text
    assert labels(card) == [
        "− 1",
        "1",
        "+ 1",
        "🛒 Add 1 to cart",
        "✍ Type a quantity",
        "⬅ Back",
        "🛒 Cart",
        "⬅ Categories",
        "⬅ Menu",
    ]
    assert card.button("Back").startswith("cat:b:") and card.button("Categories") == "menu:catalog"
    assert card.button("Menu") == "cat:m"
    card = await shop.press(USER, card.button("+"))
    assert card.method == "editMessageText" and card.button("Add 2 to cart")
    assert not shop.last_answer.params.get("show_alert")
    card = await shop.press(USER, card.button("+"))  # a third: only 2 in stock
    assert shop.last_answer.params["show_alert"] and "Only 2 in stock" in shop.last_answer.params["text"]
    assert card.button("Add 2 to cart")
    card = await shop.press(USER, card.button("Add 2 to cart"))
    assert "Added 2" in shop.last_answer.params["text"] and "In your cart: 2" in card.text
    await shop.press(USER, card.button("Add 2 to cart"))
    assert shop.last_answer.params.get("show_alert") and "Only 2" in shop.last_answer.params["text"]
    async with shop.session_factory() as session:
        assert await cart_service.quantity_in_cart(session, USER, int(card.button("Add").split(":")[2])) == 2
    menu = await shop.press(USER, card.button("Menu"))
    assert "What would you like to do?" in menu.text and menu.button("Catalogue") == "menu:catalog"


async def test_out_of_stock_offers_notify_me_and_watchers_are_taken_once(shop: Harness) -> None:
    await shop.load_demo()
    reply = await shop.send(USER, "/start p_ACC-LOG-MXK")
    assert "Out of stock" in reply.text
    assert not any("Add" in label or label == "+" for label in labels(reply))
    await shop.press(USER, reply.button("Notify me"))
    assert "back in stock" in shop.last_answer.params["text"] and shop.last_answer.params["show_alert"]
    await shop.press(USER, reply.button("Notify me"))  # twice is still one watch
    async with shop.session_factory() as session, session.begin():
        assert len((await session.execute(select(StockWatch))).scalars().all()) == 1
        product = await catalog.get_product(session, sku="ACC-LOG-MXK")
        assert [c.id for c, _ in await catalog.take_watchers(session, product.id)] == [USER]
    async with shop.session_factory() as session:  # the watch ends when its message is sent (tests/test_admin.py)
        assert [w.customer_id for w in (await session.execute(select(StockWatch))).scalars()] == [USER]


async def test_notify_me_becomes_stop_alert_and_back(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_ACC-LOG-MXK")
    watching = await shop.press(USER, card.button("Notify me"))
    assert "back in stock" in shop.last_answer.params["text"]
    assert labels(watching)[0] == "🔕 Stop alert" and "Notify me" not in labels(watching)
    assert labels(await shop.send(USER, "/start p_ACC-LOG-MXK"))[0] == "🔕 Stop alert"  # opened anew
    again = await shop.press(USER, "cat:v:" + card.button("Notify me").split(":")[2] + ":1")
    assert labels(again)[0] == "🔕 Stop alert"
    stopped = await shop.press(USER, again.button("Stop alert"))
    assert shop.last_answer.params["text"] == "Alert removed — we won't message you about it."
    assert labels(stopped)[0] == "🔔 Notify me"
    async with shop.session_factory() as session:
        assert (await session.execute(select(StockWatch))).first() is None


async def test_quantity_shown_and_minus_at_one_are_answered(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_NET-MT-HAPAC3")
    before = len(shop.botapi.calls)
    await shop.press(USER, card.button("− 1"))
    assert shop.last_answer.params["text"] == "1 is the least you can order."
    assert [c.method for c in shop.botapi.calls[before:]] == ["answerCallbackQuery"]  # the card stays
    card = await shop.press(USER, card.button("+ 1"))
    card = await shop.press(USER, card.button("+ 1"))
    await shop.press(USER, card.button("3"))
    assert shop.last_answer.params["text"] == "3 in your selection — use − and + to change it."
    assert shop.botapi.last(USER).button("Add 3 to cart")


async def test_back_from_a_card_returns_to_the_page_it_came_from(shop: Harness) -> None:
    await shop.load_demo()
    await add_products(shop, "Workstations", 14)  # pages of 6, 6, 5
    await shop.send(USER, "/catalog")
    page = await shop.press(USER, shop.botapi.last(USER).button("Workstations (17)"))
    page = await shop.press(USER, page.button("Next ▶"))
    assert "2/3" in labels(page)
    card = await shop.press(USER, products_on(page)[-1])
    card = await shop.press(USER, card.button("+ 1"))  # the card changed in place: Back still knows
    back = await shop.press(USER, card.button("Back"))
    assert products_on(back) == products_on(page) and "2/3" in labels(back)
    page3 = await shop.press(USER, back.button("Next ▶"))
    card = await shop.press(USER, products_on(page3)[0])
    assert products_on(await shop.press(USER, card.button("Back"))) == products_on(page3)


async def test_deep_link_opens_product_and_unknown_or_hidden_sku_falls_back(shop: Harness) -> None:
    await shop.load_demo()
    reply = await shop.send(USER, "/start p_NET-MT-HAPAC3")
    assert "MikroTik hAP ac³" in reply.text and reply.button("Add 1 to cart").startswith("cat:a:")
    assert "Karibu" in (await shop.send(USER, "/start p_NOPE-123")).text
    await set_product(shop, "NET-MT-HAPAC3", active=False)
    assert "Karibu" in (await shop.send(USER, "/start p_NET-MT-HAPAC3")).text


async def test_photo_card_is_a_photo_edited_by_caption(shop: Harness) -> None:
    await shop.load_demo()
    await set_product(
        shop, "STO-SS-870-1T", photo_url="https://img.example/870.jpg", description="Fast SATA SSD. " * 200
    )
    reply = await shop.send(USER, "/start p_STO-SS-870-1T")
    assert reply.method == "sendPhoto" and reply.params["photo"] == "https://img.example/870.jpg"
    assert "Samsung 870 EVO" in reply.text and len(reply.text) <= 1024 and "…" in reply.text
    assert "KES" in reply.text and "in stock" in reply.text  # the description was shortened, not the facts
    card = await shop.press(USER, reply.button("+"))
    assert card.method == "editMessageCaption" and card.params["message_id"] == reply.result["message_id"]
    assert card.button("Add 2 to cart")
    listing = await shop.press(USER, card.button("Back"))  # a photo can't become text: new message, old one gone
    assert listing.method == "sendMessage" and "Storage" in listing.text
    assert shop.botapi.sent(USER, "deleteMessage")[-1].params["message_id"] == reply.result["message_id"]
    again = await shop.press(USER, listing.button("870 EVO"))
    assert again.method == "sendPhoto"
    menu = await shop.press(USER, again.button("Menu"))
    assert menu.method == "sendMessage" and "What would you like to do?" in menu.text


async def test_long_description_fits_a_text_card(shop: Harness) -> None:
    await shop.load_demo()
    await set_product(shop, "ACC-LEN-65W", description="<&> " * 3000)
    reply = await shop.send(USER, "/start p_ACC-LEN-65W")
    assert reply.method == "sendMessage" and len(reply.text) <= 4096 and reply.text.count("&lt;") > 100
    assert "in stock" in reply.text


async def test_stale_buttons_get_a_friendly_answer(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_LAP-TP-T480")
    await set_product(shop, "LAP-TP-T480", active=False)
    for label in ("Add 1 to cart", "+", "Type a quantity"):
        await shop.press(USER, card.button(label), message=card)
        assert shop.last_answer.params["show_alert"] in (True, "true")
        assert shop.last_answer.params["text"] == "Sorry, this product is no longer available."
    await shop.press(USER, "cat:v:99999:1", message=card)
    assert "no longer available" in shop.last_answer.params["text"]
    screen = await shop.press(USER, "cat:c:99999", message=card)
    assert "no products" in shop.last_answer.params["text"] and "pick a category" in screen.text
    await shop.press(USER, "something:old")
    assert "expired" in shop.last_answer.params["text"]
    await shop.press(USER, "cat:v:99999999999999999999:1")  # too long to be an id: not a database error
    assert "expired" in shop.last_answer.params["text"]


async def test_sold_out_since_the_card_was_shown(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_WS-DL-T5820")
    await set_product(shop, "WS-DL-T5820", stock=0)
    after = await shop.press(USER, card.button("Add 1 to cart"), message=card)
    assert shop.last_answer.params["show_alert"] and "out of stock" in shop.last_answer.params["text"]
    assert after.button("Notify me").startswith("cat:n:")  # the card was redrawn
    await shop.press(USER, card.button("+"), message=card)
    assert "just sold out" in shop.last_answer.params["text"]


async def test_stale_page_cursor_starts_the_category_over(shop: Harness) -> None:
    await shop.load_demo()
    await shop.send(USER, "/catalog")
    page1 = await shop.press(USER, shop.botapi.last(USER).button("Refurbished laptops"))
    page2 = await shop.press(USER, page1.button("▶"))
    async with shop.session_factory() as session, session.begin():
        await session.execute(
            update(Product)
            .where(Product.id.in_([int(d.split(":")[2]) for d in products_on(page2)]))
            .values(active=False)
        )
        catalogue_written(session)
    again = await shop.press(USER, page1.button("▶"), message=page1)
    assert products_on(again) == products_on(page1) and not shop.last_answer.params.get("show_alert")
    await shop.press(USER, page1.button("▶").rsplit(":", 1)[0] + ":99999999999999999999.1")  # forged cursor
    assert not shop.last_answer.params.get("show_alert")


async def test_typed_quantity_is_validated(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_ACC-LEN-65W")
    ask = await shop.press(USER, card.button("Type a quantity"))
    assert "How many" in ask.text and "Send a number from 1 to 30" in ask.text
    assert "“two” isn't a whole number" in (await shop.send(USER, "two")).text
    assert "“1.5” isn't a whole number" in (await shop.send(USER, "1.5")).text
    assert "0 isn't more than zero" in (await shop.send(USER, "0")).text
    assert "-3 isn't more than zero" in (await shop.send(USER, "-3")).text
    assert "“&lt;b&gt;” isn't" in (await shop.send(USER, "<b>")).text
    await shop.feed(
        {
            "message": shop._message(
                USER,
                None,
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
        }
    )
    assert "type the quantity as a number" in shop.botapi.last(USER).text
    done = await shop.send(USER, "3")
    assert "3 × Lenovo 65 W USB-C charger" in done.text and done.button("Cart").startswith("crt:at:")
    assert "I didn't get that" in (await shop.send(USER, "3")).text  # the flow is over


async def test_typed_quantity_is_capped_and_can_be_left(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_WS-DL-T5820")  # 2 in stock
    await shop.press(USER, card.button("Type a quantity"))
    reply = await shop.send(USER, "50")
    assert reply.text == "Only 2 in stock. Send a number from 1 to 2 — or /cancel."
    async with shop.session_factory() as session:  # refused: nothing put in the cart, the question stays
        assert await cart_service.quantity_in_cart(session, USER, int(card.button("Add").split(":")[2])) == 0
    assert "your cart now holds 2 × Dell Precision T5820" in (await shop.send(USER, "2")).text
    await shop.press(USER, card.button("Type a quantity"), message=card)
    left = await shop.send(USER, "/cancel")
    product_id = card.button("Add 1 to cart").split(":")[2]
    assert "nothing added" in left.text and left.button("Back to product") == f"cat:v:{product_id}:1"
    assert "I didn't get that" in (await shop.send(USER, "4")).text
    await shop.press(USER, card.button("Type a quantity"), message=card)
    cart = await shop.send(USER, "/cart")  # another command leaves the question and still runs
    assert "Your cart" in cart.text and "2 × KES 145,000 = KES 290,000" in cart.text
    assert "I didn't get that" in (await shop.send(USER, "1")).text


async def test_typed_quantity_sets_the_line_within_stock(shop: Harness) -> None:
    """ "How many … would you like?" answered with 2 means 2 in the cart, whatever was there; more than
    the stock is refused with the range and nothing changes until a number in range comes."""
    await shop.load_demo()
    await set_product(shop, "NET-MT-HAPAC3", stock=9)
    card = await shop.send(USER, "/start p_NET-MT-HAPAC3")
    product_id = int(card.button("Add 1 to cart").split(":")[2])
    card = await shop.press(USER, card.button("+ 1"))
    card = await shop.press(USER, card.button("+ 1"))
    await shop.press(USER, card.button("Add 3 to cart"))
    ask = await shop.press(USER, shop.botapi.last(USER).button("Type a quantity"))
    assert "Send a number from 1 to 9" in ask.text
    refused = await shop.send(USER, "500")
    assert refused.text == "Only 9 in stock. Send a number from 1 to 9 — or /cancel."
    assert "isn't more than zero. Please send a number from 1 to 9" in (await shop.send(USER, "0")).text
    assert "isn't a whole number. Please send a number from 1 to 9" in (await shop.send(USER, "lots")).text
    async with shop.session_factory() as session:
        assert await cart_service.quantity_in_cart(session, USER, product_id) == 3
    done = await shop.send(USER, "2")
    assert "your cart now holds 2 × MikroTik hAP ac³" in done.text
    async with shop.session_factory() as session:
        assert await cart_service.quantity_in_cart(session, USER, product_id) == 2  # set, not 3 + 2
    cart = await shop.press(USER, done.button("Cart"))
    assert "2 × KES " in cart.text


async def test_every_callback_fits_64_bytes(shop: Harness) -> None:
    """Walk every catalogue and cart screen the demo catalogue produces and measure each button."""
    await shop.load_demo()
    await shop.send(USER, "/start p_ACC-LEN-65W")
    await shop.press(USER, shop.botapi.last(USER).button("Add 1 to cart"))
    todo, done = ["menu:catalog", "menu:cart"], set()
    while todo:
        data = todo.pop()
        if data in done:
            continue
        done.add(data)
        screen = await shop.press(USER, data)
        for _, found in screen.buttons if screen else []:
            if found.startswith(("cat:c:", "cat:p:", "cat:v:", "cat:q:", "crt:pg:")) and found not in done:
                todo.append(found)
    datas = {d for call in shop.botapi.calls for _, d in call.buttons if d and not d.startswith("http")}
    assert len(datas) > 80 and any(d.startswith("cat:p:") for d in datas) and "chk:start" in datas
    assert max(len(d.encode()) for d in datas) <= 64
    assert all(c.params.get("callback_query_id") for c in shop.botapi.sent(method="answerCallbackQuery"))
    assert len(shop.botapi.sent(method="answerCallbackQuery")) == len(done) + 1  # + the first Add
