"""The Swahili catalogue (`locales/sw/*.po`) against the English one it translates: every text a
customer can read exists in both, with the same {placeholders} and the same HTML tags, each .po
parses cleanly, no translation is empty, and every template formats. A Swahili-speaking customer
(Telegram's `language_code` "sw") gets it through the production language middleware.

Texts only the shop's admins read stay English on purpose: ADMIN_ONLY lists them, key by key, so a
new English key must be translated or classified here before the tests pass again."""

from __future__ import annotations

import ast
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from services.i18n import LOCALES_DIR, catalogue, plain, t
from tests.harness import Harness
from tests.standins import html_problem

ROOT = Path(__file__).resolve().parent.parent
LANG = "sw"
CODE_DIRS = ("handlers", "services", "bot", "webhooks")

# Texts of the admin group and nothing else, so they are not translated. Derived from their uses:
# - every `admin.*` key is rendered by handlers/admin.py (the admin group's commands, buttons and
#   replies, including the refusals services/admin.py raises, rendered by `refusal` in English) or
#   sent through `alert_admins` (services/payments/common.py, services/admin.py, bot/serve.py), all
#   with `lang=None`; services/admin.py is imported by handlers/admin.py only;
# - every `dhl.*` key is an `alert_admins` text of services/dhl.py, also with `lang=None`.
# What an admin's action tells the customer (shipped, delivered, cancelled and the refund) is
# `order.status.*` / `refund.*` in orders.po, rendered in the customer's language, so it is translated.
# `test_admin_only_keys_are_rendered_in_english_only` checks the `lang=None` part on the code.
ADMIN_ONLY = frozenset(
    {
        # alerts to the admin group (alert_admins)
        "admin.alert.no_payments",
        "admin.alert.new_order",
        "admin.alert.new_order_item",
        "admin.alert.low_stock",
        "admin.alert.payment_anomaly",
        "admin.alert.refund_failed",
        # /paid and the unpayable-order alert (services/payments/manual.py)
        "admin.manual_pay.unpayable",
        "admin.manual_pay.told_paybill",
        "admin.manual_pay.told_wait",
        "admin.manual_pay.usage",
        "admin.manual_pay.bad_code",
        "admin.manual_pay.not_found",
        "admin.manual_pay.code_used",
        "admin.manual_pay.not_unpaid",
        "admin.manual_pay.paid",
        "admin.manual_pay.late_paid",
        "admin.manual_pay.refund_due",
        "admin.manual_pay.already",
        "admin.manual_pay.bad_amount",
        "admin.manual_pay.wrong_amount",
        "admin.manual_pay.not_kes",
        "admin.manual_pay.paid_before",
        "admin.manual_pay.prompt_open",
        "dhl.alert.bad_key",
        "dhl.alert.failure",
        "dhl.alert.gave_up",
        # the admin commands' usage, help and refusals
        "admin.refused",
        "admin.help",
        "admin.unknown_sku",
        "admin.order_not_found",
        "admin.usage.restock",
        "admin.usage.stock",
        "admin.usage.orders",
        "admin.usage.order",
        "admin.usage.ship",
        "admin.usage.delivered",
        "admin.usage.cancel",
        "admin.more",
        # /restock, /stock
        "admin.restock.done",
        "admin.restock.below_zero",
        "admin.stock.title",
        "admin.stock.line",
        "admin.stock.inactive",
        "admin.stock.more",
        "admin.stock.none",
        # customers' messages relayed to the admin group, and the admin's answer sent
        "admin.support.relay",
        "admin.support.who",
        "admin.support.username",
        "admin.support.phone",
        "admin.support.answered",
        "admin.support.text_only",
        # states as admins say them, and the admin group's command menu
        "admin.state.awaiting_payment",
        "admin.state.processing",
        "admin.state.shipped",
        "admin.state.in_transit",
        "admin.state.delivered",
        "admin.state.cancelled",
        "admin.state.expired",
        "admin.state.return_requested",
        "admin.state.returned",
        "admin.commands.help",
        "admin.commands.orders",
        "admin.commands.order",
        "admin.commands.ship",
        "admin.commands.delivered",
        "admin.commands.cancel",
        "admin.commands.paid",
        "admin.commands.restock",
        "admin.commands.stock",
        "admin.commands.report",
        "admin.commands.export",
        "admin.commands.audit",
        "admin.commands.promo",
        "admin.commands.broadcast",
        "admin.commands.review",
        # /orders, /order
        "admin.orders.count",
        "admin.orders.count_one",
        "admin.orders.items",
        "admin.orders.items_one",
        "admin.order.event_placed",
        "admin.order.username",
        "admin.order.shipped_with",
        "admin.order.not_shipped",
        "admin.order.not_shipped_carrier",
        "admin.order.refund.refunded",
        "admin.order.refund.refund_pending",
        "admin.order.refund.manual_reversal_owed",
        "admin.order.no_payments",
        "admin.order.no_events",
        "admin.cancel.no_receipt",
        "admin.orders.title",
        "admin.orders.line",
        "admin.orders.none",
        "admin.order.detail",
        "admin.order.item",
        "admin.order.payment",
        "admin.order.event",
        "admin.order.event_note",
        "admin.order.earlier_events",
        # /ship (and its reply prompt)
        "admin.ship.done",
        "admin.ship.done_dhl",
        "admin.ship.not_processing",
        "admin.ship.bad_waybill",
        "admin.ship.intl_is_dhl",
        "admin.ship.bad_tracking",
        "admin.ship.bad_carrier",
        "admin.ship.prompt",
        "admin.ship.placeholder",
        "admin.ship.hint_dhl",
        "admin.ship.hint_courier",
        # /delivered
        "admin.delivered.done",
        "admin.delivered.done_dhl",
        "admin.delivered.not_shipped",
        # /cancel (the admin's confirmation and outcome; the customer gets order.status.cancelled)
        "admin.cancel.not_allowed",
        "admin.cancel.already",
        "admin.cancel.none",
        "admin.cancel.refunded",
        "admin.cancel.refund_pending",
        "admin.cancel.manual_reversal_owed",
        "admin.cancel.confirm",
        "admin.cancel.confirm_button",
        "admin.cancel.link_open",
        "admin.cancel.payment_processing",
        "admin.cancel.prompt_open",
        # /report, /export orders, /audit (locales/en/reports.po): figures, the CSV's caption and the
        # audit log, read by the shop's admins in their group only, rendered with lang=None
        "admin.usage.report",
        "admin.report.period.today",
        "admin.report.period.week",
        "admin.report.period.month",
        "admin.report.text",
        "admin.report.revenue_line",
        "admin.report.top_line",
        "admin.report.units",
        "admin.report.units_one",
        "admin.export.lines",
        "admin.export.lines_one",
        "admin.audit.actions",
        "admin.audit.actions_one",
        "admin.report.refunded_line",
        "admin.report.refund_owed_line",
        "admin.report.none",
        "admin.usage.export",
        "admin.export.caption",
        "admin.export.none",
        "admin.usage.audit",
        "admin.audit.title",
        "admin.audit.title_order",
        "admin.audit.line",
        "admin.audit.none",
        "admin.audit.none_order",
        # /broadcast (the prompt, the preview's question and buttons, the progress message)
        "admin.broadcast.prompt",
        "admin.broadcast.placeholder",
        "admin.broadcast.unsupported",
        "admin.broadcast.empty",
        "admin.broadcast.too_long",
        "admin.broadcast.confirm",
        "admin.broadcast.send_button",
        "admin.broadcast.cancel_button",
        "admin.broadcast.cancelled",
        "admin.broadcast.not_draft",
        "admin.broadcast.progress",
        "admin.broadcast.done",
        # returns (locales/en/returns.po): the request posted to the admin group, its buttons, the
        # Reject… prompt and the outcomes (the customer's texts are returns.* and translated)
        "admin.return.alert",
        "admin.return.line",
        "admin.return.whole",
        "admin.return.partial",
        "admin.return.approve_button",
        "admin.return.reject_button",
        "admin.return.approved.refunded",
        "admin.return.approved.refund_pending",
        "admin.return.approved.manual_reversal_owed",
        "admin.return.approved.none",
        "admin.return.already_decided",
        "admin.return.not_found",
        "admin.return.reject_prompt",
        "admin.return.reject_placeholder",
        "admin.return.rejected",
        # reviews (locales/en/reviews.po): the note of each new comment, /review hide|show
        "admin.reviews.new_comment",
        "admin.usage.review",
        "admin.reviews.hidden",
        "admin.reviews.shown",
        "admin.reviews.already_hidden",
        "admin.reviews.already_shown",
        "admin.reviews.not_found",
        # /promo add|list|off (locales/en/promo.po): the admins' promo codes, and their parse errors
        "admin.usage.promo",
        "admin.promo.bad.syntax",
        "admin.promo.bad.code",
        "admin.promo.bad.percent",
        "admin.promo.bad.currency",
        "admin.promo.bad.amount",
        "admin.promo.bad.option",
        "admin.promo.bad.twice",
        "admin.promo.bad.missing",
        "admin.promo.bad.min_currency",
        "admin.promo.bad.date",
        "admin.promo.bad.past",
        "admin.promo.bad.uses",
        "admin.promo.exists",
        "admin.promo.not_found",
        "admin.promo.added",
        "admin.promo.disabled",
        "admin.promo.title",
        "admin.promo.line",
        "admin.promo.none",
        "admin.promo.no_limit",
        "admin.promo.state.active",
        "admin.promo.state.off",
        "admin.promo.state.ended",
        "admin.promo.state.used_up",
    }
)
ADMIN_PREFIXES = ("admin.", "dhl.")

_TAG = re.compile(r"<[^<>]*>")


def _po_files(lang: str) -> dict[str, Path]:
    return {p.name: p for p in sorted((LOCALES_DIR / lang).glob("*.po"))}


def _messages(path: Path) -> list[tuple[str, str]]:
    """(key, text) of each message of one .po file, the header left out."""
    with path.open("rb") as fh:
        po = read_po(fh, locale=None, abort_invalid=True)
    return [(str(m.id), str(m.string)) for m in po if m.id]


def _keys(lang: str) -> dict[str, str]:
    """Each key of the language and the .po file that holds it."""
    return {key: name for name, path in _po_files(lang).items() for key, _ in _messages(path)}


def _texts(lang: str) -> dict[str, str]:
    return {key: text for path in _po_files(lang).values() for key, text in _messages(path)}


def _placeholders(template: str) -> Counter[tuple[str, str, str | None]]:
    """Each {field} of a template with its format spec and conversion, counted."""
    return Counter(
        (name, spec or "", conversion)
        for _, name, spec, conversion in string.Formatter().parse(template)
        if name is not None
    )


def _tags(template: str) -> Counter[str]:
    return Counter(_TAG.findall(template))


def _dummies(template: str) -> dict[str, Any]:
    return {name: 7 for _, name, _, _ in string.Formatter().parse(template) if name}


# --- the two catalogues hold the same customer texts -------------------------------------------------


def test_every_customer_text_is_translated() -> None:
    english, swahili = _keys("en"), _keys(LANG)
    missing = sorted(set(english) - ADMIN_ONLY - set(swahili))
    assert not missing, f"English keys a customer can read with no {LANG} translation: {missing}"


def test_no_translation_without_an_english_text() -> None:
    english, swahili = _keys("en"), _keys(LANG)
    extra = sorted(set(swahili) - set(english))
    assert not extra, f"{LANG} keys English lacks (a typo, or a key removed from en): {extra}"


def test_translations_mirror_the_english_files() -> None:
    """Same file names, each key in the file of the same name as in English."""
    english, swahili = _keys("en"), _keys(LANG)
    assert set(_po_files(LANG)) <= set(_po_files("en"))
    moved = {key: (name, english[key]) for key, name in swahili.items() if key in english and english[key] != name}
    assert not moved, f"keys in a different file than in English (sw file, en file): {moved}"


def test_admin_only_keys_are_admin_keys_english_has() -> None:
    """The list stays honest: no stale entry, and only the admin group's prefixes."""
    english = _keys("en")
    stale = sorted(ADMIN_ONLY - set(english))
    assert not stale, f"ADMIN_ONLY keys English no longer has: {stale}"
    assert all(key.startswith(ADMIN_PREFIXES) for key in ADMIN_ONLY)


def _lang_of_key_calls() -> list[tuple[str, int, str, ast.expr | None]]:
    """Each `t(...)`/`plain(...)` of the bot's code whose key is a literal (or an f-string) with an
    admin prefix: (file, line, key as written, the language argument or None when left out)."""
    found = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                    continue
                if node.func.id not in ("t", "plain"):
                    continue
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    key = first.value
                elif isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
                    key = str(first.values[0].value) + "…"
                else:
                    continue
                if key.startswith(ADMIN_PREFIXES):
                    lang = node.args[1] if len(node.args) > 1 else None
                    found.append((str(path.relative_to(ROOT)), node.lineno, key, lang))
    return found


def test_admin_only_keys_are_rendered_in_english_only() -> None:
    """An admin-only text is never rendered with a reader's language: if one were, a customer (or a
    Swahili-speaking admin) would be meant to read it in their language, and it would need translating."""
    calls = _lang_of_key_calls()
    assert len(calls) > 30  # the scan sees the admin texts (it would pass vacuously otherwise)
    with_lang = [
        (where, line, key)
        for where, line, key, lang in calls
        if lang is not None and not (isinstance(lang, ast.Constant) and lang.value is None)
    ]
    assert not with_lang, f"admin texts rendered in a reader's language: {with_lang}"


# --- each translation matches its English text -------------------------------------------------------


def test_placeholders_match_english() -> None:
    english, swahili = _texts("en"), _texts(LANG)
    differ = {
        key: (sorted(_placeholders(english[key])), sorted(_placeholders(text)))
        for key, text in swahili.items()
        if key in english and _placeholders(english[key]) != _placeholders(text)
    }
    assert not differ, f"placeholders differ (en, {LANG}): {differ}"


def test_html_tags_match_english() -> None:
    english, swahili = _texts("en"), _texts(LANG)
    differ = {
        key: (sorted(_tags(english[key]).elements()), sorted(_tags(text).elements()))
        for key, text in swahili.items()
        if key in english and _tags(english[key]) != _tags(text)
    }
    assert not differ, f"HTML tags differ (en, {LANG}): {differ}"


# --- the files themselves ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_po_files(LANG)))
def test_po_file_parses_and_is_complete(name: str) -> None:
    path = LOCALES_DIR / LANG / name
    with path.open("rb") as fh:
        po = read_po(fh, locale=None, abort_invalid=True)  # raises on a malformed file
    assert po.locale_identifier == LANG, "header must say Language: sw"
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n"Language: {}\\n"\n'
    assert header.format("en") in (LOCALES_DIR / "en" / name).read_text(encoding="utf-8")
    assert header.format(LANG) in path.read_text(encoding="utf-8"), "the header as English writes it"
    msgids = re.findall(r'^msgid "(.+)"$', path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert msgids, f"{name} holds no message"
    assert len(msgids) == len(set(msgids)), (
        f"duplicate keys in {name}: {sorted(k for k in msgids if msgids.count(k) > 1)}"
    )
    empty = [str(m.id) for m in po if m.id and not str(m.string).strip()]
    assert not empty, f"empty msgstr in {name}: {empty}"
    assert not [m for m in po if m.fuzzy and m.id], "fuzzy entries are skipped by the loader"


def test_no_key_in_two_files() -> None:
    seen: Counter[str] = Counter(key for path in _po_files(LANG).values() for key, _ in _messages(path))
    assert not [key for key, n in seen.items() if n > 1]


def test_every_template_formats_into_valid_telegram_html() -> None:
    """Each Swahili text, filled with dummy values the way `t` and `plain` fill them, is HTML Telegram
    accepts; and the loader serves the Swahili text, not the English fallback."""
    texts = _texts(LANG)
    assert set(catalogue(LANG)) == set(texts)
    for key, template in texts.items():
        values = _dummies(template)
        rendered = t(key, LANG, **values)
        assert rendered == template.format(**values), key
        assert html_problem(str(rendered)) is None, (key, html_problem(str(rendered)))
        assert plain(key, LANG, **values)
        if key in ("menu.cart", "cart.title"):
            assert "Kikapu" in rendered


# --- a Swahili-speaking customer through the bot -----------------------------------------------------

SW_USER = 9801


async def _send_as_swahili_speaker(shop: Harness, text: str) -> Any:
    user = shop.user(SW_USER, first_name="Akinyi", language_code=LANG)
    entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else None
    message: dict[str, Any] = {
        "message_id": SW_USER * 10 + len(shop.botapi.calls),
        "date": 1_700_000_000,
        "chat": {"id": SW_USER, "type": "private"},
        "from": user,
        "text": text,
    }
    if entities:
        message["entities"] = entities
    await shop.feed({"message": message})
    return shop.botapi.last(SW_USER)


async def test_swahili_customer_is_served_in_swahili(shop: Harness) -> None:
    welcome = await _send_as_swahili_speaker(shop, "/start")
    assert welcome.text.startswith("Karibu, Akinyi! 👋") and "duka litawasiliana nawe kupanga" in welcome.text
    labels = [label for label, _ in welcome.buttons]
    assert "🛒 Kikapu" in labels and "📦 Oda zangu" in labels and "🛍 Bidhaa zetu" in labels
    cart = await _send_as_swahili_speaker(shop, "/cart")
    assert "Kikapu chako kiko tupu" in cart.text and cart.button("Bidhaa zetu") == "menu:catalog"
    english = await shop.send(SW_USER + 1, "/start")  # a customer whose Telegram speaks English
    assert english.text.startswith("Karibu, Wanjiru! 👋") and "the shop will contact you" in english.text
