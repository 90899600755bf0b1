"""The customer's language: Telegram's when we have it, their own choice (/language or the menu's
"🌐 Language / Lugha") once they made one, kept on their row across restarts and used by later
notifications; amounts written per locale; the English detector the Swahili journey relies on."""

from __future__ import annotations

import re

from sqlalchemy import select

from db.models import Customer, Outbox
from services import orders as sm
from services.i18n import catalogue, plain
from services.money import format_money
from tests.english_detector import BRAND_WORDS, english_fragments, english_in
from tests.harness import Harness
from tests.test_admin import BUYER, admin, paid_order

EN_USER, SW_USER = 7601, 7602


async def chosen(shop: Harness, user: int) -> tuple[str, bool]:
    async with shop.session_factory() as session:
        customer = await session.get(Customer, user)
        assert customer is not None
        return customer.language, customer.language_chosen


async def restarted(shop: Harness) -> Harness:
    """The same database, a new process: nothing remembered in memory."""
    await shop.stop()
    again = Harness(shop.engine, shop.botapi)
    again.language_codes = dict(shop.language_codes)
    return await again.start()


async def test_telegram_language_is_used_when_we_have_it(shop: Harness) -> None:
    shop.language_codes[SW_USER] = "sw-KE"
    picker = await shop.send(SW_USER, "/language")
    assert "Chagua lugha yako" in picker.text
    assert [label for label, _ in picker.buttons][:2] == ["English", "Kiswahili"]  # each named in itself
    shop.language_codes[EN_USER] = "fr"  # no French catalogue: English
    assert "Choose your language" in (await shop.send(EN_USER, "/language")).text
    assert await chosen(shop, SW_USER) == ("sw", False)  # registered, nothing chosen


async def test_choice_by_command_wins_and_survives_a_restart(shop: Harness) -> None:
    picker = await shop.send(EN_USER, "/language")
    assert "Choose your language" in picker.text
    screen = await shop.press(EN_USER, picker.button("Kiswahili"))
    assert shop.last_answer is not None and shop.last_answer.params["text"] == "Lugha: Kiswahili"
    assert screen is not None and "kuanzia sasa nitakuandikia kwa Kiswahili" in screen.text
    assert screen.button("Language / Lugha") == "menu:lang"  # the menu again, in the new language
    assert "Chagua lugha yako" in (await shop.send(EN_USER, "/language")).text
    assert await chosen(shop, EN_USER) == ("sw", True)

    shop = await restarted(shop)
    try:
        # The first update after the restart reaches a handler that needs no database: the
        # language is read with the customer's registration all the same.
        assert "Chagua lugha yako" in (await shop.send(EN_USER, "/language")).text
    finally:
        await shop.stop()


async def test_choice_by_menu_button(shop: Harness) -> None:
    menu = await shop.send(EN_USER, "/start")
    picker = await shop.press(EN_USER, menu.button("Language / Lugha"))
    assert picker is not None and "Choose your language" in picker.text
    await shop.press(EN_USER, picker.button("Kiswahili"))
    again = await shop.press(EN_USER, "menu:lang")
    assert again is not None and "Chagua lugha yako" in again.text
    shop = await restarted(shop)
    try:
        menu = await shop.send(EN_USER, "/start")
        again = await shop.press(EN_USER, menu.button("Language / Lugha"))
        assert again is not None and "Chagua lugha yako" in again.text
    finally:
        await shop.stop()


async def test_english_chosen_over_a_swahili_telegram(shop: Harness) -> None:
    shop.language_codes[SW_USER] = "sw"
    picker = await shop.send(SW_USER, "/language")
    assert "Chagua lugha yako" in picker.text
    screen = await shop.press(SW_USER, picker.button("English"))
    assert shop.last_answer is not None and shop.last_answer.params["text"] == "Language: English"
    assert screen is not None and "in English from now on" in screen.text
    assert "Choose your language" in (await shop.send(SW_USER, "/language")).text
    assert await chosen(shop, SW_USER) == ("en", True)
    shop = await restarted(shop)
    try:
        assert "Choose your language" in (await shop.send(SW_USER, "/language")).text
    finally:
        await shop.stop()


async def test_a_forged_language_gets_the_stale_button_answer(shop: Harness) -> None:
    await shop.send(EN_USER, "/language")
    await shop.press(EN_USER, "lang:xx")
    assert shop.last_answer is not None and "expired" in shop.last_answer.params["text"]
    assert await chosen(shop, EN_USER) == ("en", False)


def test_amounts_in_swahili() -> None:
    """Kenyan Swahili (sw_KE) writes the dollar as US$; shillings are "KES 45,000" in every language."""
    assert [format_money(a, c, "sw") for a, c in ((45_000_00, "KES"), (45_000_50, "KES"), (152_00, "USD"))] == [
        "KES 45,000",
        "KES 45,000.50",
        "US$152",
    ]
    assert [format_money(a, c, "en") for a, c in ((45_000_00, "KES"), (152_00, "USD"), (19_99, "USD"))] == [
        "KES 45,000",
        "$152",
        "$19.99",
    ]


async def test_product_card_amounts_follow_the_language(shop: Harness) -> None:
    await shop.load_demo()
    shop.language_codes[SW_USER] = "sw"
    sw = (await shop.send(SW_USER, "/start p_NET-UBNT-U6LITE")).text
    en = (await shop.send(EN_USER, "/start p_NET-UBNT-U6LITE")).text
    assert "💰 KES 19,800\n" in sw and "Zipo 10 kwenye stock" in sw and "US$" not in sw  # the shop's currency only
    assert "💰 KES 19,800\n" in en and "10 in stock" in en and "$" not in en


async def test_later_notifications_use_the_remembered_language(shop: Harness) -> None:
    """The customer chose Kiswahili: the messages queued for them later ("payment received" when the
    payment settles, "shipped" on the admin's /ship) are written in it, whatever language the update
    that caused them came in (the admin's is English), amounts included (US$ in Kenyan Swahili)."""
    picker = await shop.send(BUYER, "/language")
    await shop.press(BUYER, picker.button("Kiswahili"))
    order, _ = await paid_order(shop, zone="intl")
    await admin(shop, f"/ship {order.public_id} 1234567890")
    async with shop.session_factory() as session:
        rows = (
            (await session.execute(select(Outbox).where(Outbox.chat_id == BUYER).order_by(Outbox.id))).scalars().all()
        )
        fresh = await sm.get_order(session, order.public_id)
    paid, shipped = rows
    assert format_money(fresh.total, "USD", "sw") in paid.text and "US$" in paid.text  # English would say "$…"
    assert shipped.text == sm.status_message(fresh, "sw")
    assert paid.reply_markup is not None
    assert paid.reply_markup["inline_keyboard"][0][0]["text"] == plain("orders.button.view", "sw")


def test_the_detector_flags_english_and_passes_swahili() -> None:
    sentence = catalogue("en")["help.short"][0]  # no sw translation of it in this branch: English shown
    findings = english_in([("sendMessage text", sentence)])
    assert [f.key for f in findings] == ["help.short"]
    text, label = catalogue("sw")["language.changed"][0], catalogue("sw")["language.choose"][0]
    assert english_in([("sendMessage text", text), ("button", label), ("button", "🌐 Language / Lugha")]) == []
    # An English text with values filled in is still caught by its literal parts.
    assert {f.key for f in english_in([("t", "Language: English"), ("t", "🛒 Cart")])} >= {"language.saved"}
    # Fragments are phrases of the catalogue (two words or more) or long words, never a short word alone.
    for fragment, _, _ in english_fragments("sw"):
        words = [w for w in re.findall(r"[^\W\d_]{2,}", fragment) if w.lower() not in BRAND_WORDS]
        assert len(words) >= 2 or max(map(len, words)) >= 8, fragment
