"""A refused input is answered in the shop's own words: no library's message (email_validator's,
phonenumbers') ever reaches a customer, whatever they type."""

from __future__ import annotations

import logging

import pytest

from db.models import Customer
from services.emails import InvalidEmail, normalize_email
from services.i18n import t
from tests.harness import Harness
from tests.test_checkout import USER, fill_cart, go_to_phone

# Phrases of email_validator's and phonenumbers' own messages.
LIBRARY_WORDING = (
    "@-sign",
    "Codepoint",
    "U+",
    "email address contains",
    "should have a period",
    "two periods",
    "not allowed",
    "string supplied",
    "NumberParseException",
    "Missing or invalid default region",
)

BAD_EMAILS = [
    ("wanjiru", "it has no @ sign."),
    ("wanjiru@gmail", "the part after the @ isn't a mail domain"),
    ("wanjiru@😀.com", "the part after the @ isn't a mail domain"),  # email_validator: "Codepoint U+1F600 …"
    ("wanjiru@-gmail.com", "the part after the @ isn't a mail domain"),
    ("wanjiru@[10.0.0.1]", "the part after the @ isn't a mail domain"),
    ("wan jiru@gmail.com", "the part before the @ is empty or has something"),  # "…before the @-sign: SPACE"
    ("wan..jiru@gmail.com", "the part before the @ is empty or has something"),
    ("wan\u200bjiru@gmail.com", "the part before the @ is empty or has something"),  # a zero-width space
    ("@gmail.com", "the part before the @ is empty or has something"),
    ("a@b@gmail.com", "it has more than one @ sign."),
    ("w@" + "a" * 250 + ".com", "it is too long for an email address."),
]


def assert_shops_words(text: str) -> None:
    for phrase in LIBRARY_WORDING:
        assert phrase not in text, (phrase, text)


async def test_bad_emails_get_the_shops_reason_and_no_library_text(
    shop: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    await shop.send(USER, "0712 345 678")
    caplog.set_level(logging.DEBUG, logger="services.emails")
    for typed, reason in BAD_EMAILS:
        reply = (await shop.send(USER, typed)).text
        assert reply.startswith("That email address doesn't look right: "), reply
        assert reason in reply and "Please type it again, e.g. name@example.com." in reply
        assert_shops_words(reply)
        assert typed not in reply  # the reply explains; it does not echo what was typed
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records if r.name == "services.emails")
    assert "email.refused" in logged and "jiru" not in logged and "gmail" not in logged  # never the address
    assert "Your delivery address" in (await shop.send(USER, "Wanjiru@Gmail.com")).text
    async with shop.session_factory() as session:
        assert (await session.get(Customer, USER)).email == "Wanjiru@gmail.com"  # the domain normalised


async def test_bad_phones_and_quantities_get_the_shops_words(shop: Harness) -> None:
    await fill_cart(shop, ("ACC-LEN-65W", 1))
    await go_to_phone(shop)
    for typed in ("call me maybe", "0712", "+", "+999 123", "1" * 300, "😀"):
        reply = (await shop.send(USER, typed)).text
        assert reply.startswith("That phone number doesn't work: "), reply
        assert_shops_words(reply)
    await shop.send(USER, "/cancel")
    card = await shop.send(USER, "/start p_ACC-LEN-65W")
    await shop.press(USER, card.button("Type a quantity"))
    for typed in ("two", "1e3", "٣", "0x10", "1_000"):
        reply = (await shop.send(USER, typed)).text
        assert "isn't a whole number" in reply, reply
        assert_shops_words(reply)
        assert "invalid literal" not in reply


def test_every_email_reason_has_english_and_swahili_words() -> None:
    reasons = {"email.error.empty"}
    for typed, _ in BAD_EMAILS:
        with pytest.raises(InvalidEmail) as refused:
            normalize_email(typed)
        reasons.add(refused.value.reason)
    with pytest.raises(InvalidEmail) as refused:
        normalize_email("   ")
    assert refused.value.reason == "email.error.empty"
    assert reasons >= {
        "email.error.no_at",
        "email.error.many_at",
        "email.error.local",
        "email.error.domain",
        "email.error.too_long",
    }
    for key in reasons | {"email.error.other"}:
        assert t(key, "en") != t(key, "sw")  # a Swahili text of its own, not the English fallback
    assert t("email.error.no_at", "sw") == "haina alama ya @."
    assert normalize_email("  Wanjiru@Gmail.COM ") == "Wanjiru@gmail.com"
