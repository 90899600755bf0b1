"""Browsing the catalogue as a customer: categories, keyset pages, product card, deep link, stale buttons."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db.models import Category, Product, StockWatch, utcnow
from services import catalog
from tests.harness import Harness

USER = 7001


async def _category_id(shop: Harness, name: str) -> int:
    async with shop.session_factory() as session:
        return (await session.execute(select(Category.id).where(Category.name == name))).scalar_one()


async def test_categories_list_with_counts_and_edit_in_place(shop: Harness) -> None:
    await shop.load_demo()
    menu = await shop.send(USER, "/start")
    screen = await shop.press(USER, "menu:catalog")
    assert screen is not None and screen.method == "editMessageText"
    assert screen.params["message_id"] == menu.result["message_id"]
    labels = [label for label, _ in screen.buttons]
    assert "Refurbished laptops (7)" in labels and "Accessories (4)" in labels


async def test_category_pages_forward_and_back(shop: Harness) -> None:
    await shop.load_demo()
    await shop.send(USER, "/start")
    await shop.press(USER, "menu:catalog")
    page1 = await shop.press(USER, shop.botapi.last(USER).button("Refurbished laptops"))
    products1 = [b for b in page1.buttons if b[1].startswith("cat:v:")]
    assert len(products1) == 6  # PAGE_SIZE
    assert "◀" not in [label for label, _ in page1.buttons]
    page2 = await shop.press(USER, page1.button("▶"))
    products2 = [b for b in page2.buttons if b[1].startswith("cat:v:")]
    assert len(products2) == 1 and not set(products1) & set(products2)
    assert "▶" not in [label for label, _ in page2.buttons]
    back = await shop.press(USER, page2.button("◀"))
    assert [b for b in back.buttons if b[1].startswith("cat:v:")] == products1


async def test_keyset_pages_cover_every_product_exactly_once(session) -> None:  # type: ignore[no-untyped-def]
    cat = Category(slug="bulk", name="Bulk")
    session.add(cat)
    await session.flush()
    base = utcnow()
    for i in range(23):  # some share a timestamp: the id breaks the tie
        session.add(Product(sku=f"B-{i}", category_id=cat.id, name=f"Item {i}", price_kes=100, price_usd=1,
                            stock=1, created_at=base - timedelta(seconds=i // 3)))
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


async def test_product_card_quantity_and_add_to_cart(shop: Harness) -> None:
    await shop.load_demo()
    await shop.send(USER, "/start")
    await shop.press(USER, "menu:catalog")
    cat = await shop.press(USER, shop.botapi.last(USER).button("Workstations"))
    card = await shop.press(USER, cat.button("Precision T5820"))
    assert "Dell Precision T5820" in card.text and "KES 145,000" in card.text and "$1,119" in card.text
    assert "2 in stock" in card.text
    card = await shop.press(USER, card.button("+"))
    assert card.button("Add 2 to cart")
    plus_again = card.button("+")
    assert plus_again.endswith(":2")  # capped by the 2 in stock
    await shop.press(USER, card.button("Add 2 to cart"))
    assert "Added 2" in shop.last_answer.params["text"]
    await shop.press(USER, card.button("Add 2 to cart"), message=card)
    assert shop.last_answer.params.get("show_alert") and "Only 2" in shop.last_answer.params["text"]


async def test_out_of_stock_offers_notify_me(shop: Harness) -> None:
    await shop.load_demo()
    reply = await shop.send(USER, "/start p_ACC-LOG-MXK")
    assert "Out of stock" in reply.text
    assert not any("Add" in label for label, _ in reply.buttons)
    await shop.press(USER, reply.button("Notify me"))
    assert "back in stock" in shop.last_answer.params["text"]
    async with shop.session_factory() as session:
        assert (await session.execute(select(StockWatch))).scalars().all()


async def test_deep_link_opens_product_and_unknown_sku_falls_back(shop: Harness) -> None:
    await shop.load_demo()
    reply = await shop.send(USER, "/start p_NET-MT-HAPAC3")
    assert "MikroTik hAP ac³" in reply.text
    reply = await shop.send(USER, "/start p_NOPE-123")
    assert "Karibu" in reply.text


async def test_product_with_photo_is_sent_as_photo(shop: Harness) -> None:
    await shop.load_demo()
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.sku == "STO-SS-870-1T")
                              .values(photo_url="https://img.example/870.jpg"))
    reply = await shop.send(USER, "/start p_STO-SS-870-1T")
    assert reply.method == "sendPhoto" and reply.params["photo"] == "https://img.example/870.jpg"
    assert "Samsung 870 EVO" in reply.text


async def test_stale_buttons_get_a_friendly_answer(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_LAP-TP-T480")
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.sku == "LAP-TP-T480").values(active=False))
    await shop.press(USER, card.button("Add 1 to cart"))
    assert shop.last_answer.params["text"] == "Sorry, this product is no longer available."
    await shop.press(USER, "cat:c:99999")
    assert "no products" in shop.last_answer.params["text"]
    await shop.press(USER, "something:old")
    assert "expired" in shop.last_answer.params["text"]


async def test_typed_quantity_is_validated(shop: Harness) -> None:
    await shop.load_demo()
    card = await shop.send(USER, "/start p_ACC-LEN-65W")
    ask = await shop.press(USER, card.button("Type a quantity"))
    assert "How many" in ask.text
    for bad in ("two", "0", "-3", "1.5"):
        assert "whole number" in (await shop.send(USER, bad)).text
    done = await shop.send(USER, "3")
    assert "3 × Lenovo 65 W USB-C charger" in done.text
    assert "I didn't get that" in (await shop.send(USER, "3")).text  # the flow is over


async def test_every_callback_fits_64_bytes(shop: Harness) -> None:
    await shop.load_demo()
    await shop.send(USER, "/start")
    await shop.press(USER, "menu:catalog")
    for label, data in list(shop.botapi.last(USER).buttons):
        if data.startswith("cat:c:"):
            page = await shop.press(USER, data)
            for _, pdata in page.buttons:
                if pdata.startswith("cat:v:"):
                    await shop.press(USER, pdata)
    datas = {d for call in shop.botapi.calls for _, d in call.buttons if d and not d.startswith("http")}
    assert len(datas) > 40
    assert max(len(d.encode()) for d in datas) <= 64
