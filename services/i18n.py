"""User-facing texts, read from the gettext catalogues in `locales/<lang>/*.po`.

Message ids are short keys (`cart.empty`), the msgstr is the text with `{placeholders}`. Each feature
keeps its own .po file so the catalogue grows without merge fights; all files of a language are merged.
A missing translation falls back to English, a missing key raises (a typo must fail the tests).

Messages go out in Telegram's HTML parse mode, so `t` escapes every value it fills in (customer names,
addresses, imported product names, carrier texts, provider references…) and returns `Markup`: a
text already safe, which another `t` or a `Markup(...).join` takes as it is instead of escaping it
again. A value that is deliberately HTML must be `Markup` itself (built from safe parts). Texts Telegram
shows as they are — button labels, callback alerts, input placeholders — come from `plain`.
"""

from __future__ import annotations

from functools import cache, lru_cache
from html import escape
from pathlib import Path

from babel.messages.pofile import read_po
from markupsafe import Markup

from services.markup import to_plain

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DEFAULT_LANG = "en"


@cache
def catalogue(lang: str) -> dict[str, tuple[str, Markup]]:
    """The language's templates, each as it is (to format) and marked safe (to return as it is):
    they are ours, so their markup is meant."""
    texts: dict[str, tuple[str, Markup]] = {}
    folder = LOCALES_DIR / lang
    if not folder.is_dir():
        return texts
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as fh:
            for message in read_po(fh, locale=None):
                if message.id and message.string:
                    texts[str(message.id)] = (str(message.string), Markup(str(message.string)))
    return texts


def _template(key: str, lang: str | None) -> tuple[str, Markup]:
    lang = (lang or DEFAULT_LANG).split("-")[0].lower()
    text = catalogue(lang).get(key) or catalogue(DEFAULT_LANG).get(key)
    if text is None:
        raise KeyError(f"no text for {key!r} in the locale catalogue")
    return text


def t(key: str, lang: str | None = None, /, **values: object) -> Markup:
    """The text for `key` in `lang` (falling back to English), formatted with `values`, each escaped
    for HTML unless it is `Markup` already (another `t`, a fragment built safe); integers go in as
    they are. On every update's path, so kept cheap: `html.escape` per value (markupsafe's escape
    builds a Markup per value, ~3x the cost), and the result marked safe without Markup's checks."""
    template, safe = _template(key, lang)
    if not values:
        return safe
    for name, value in values.items():  # our own kwargs dict: replacing values in place is safe
        if type(value) is str:
            values[name] = escape(value)
        elif type(value) is not int and not isinstance(value, Markup):
            values[name] = escape(str(value))
    return str.__new__(Markup, template.format(**values))


def counted(key: str, n: int, lang: str | None = None, /, **values: object) -> Markup:
    """`key` with a count: its `_one` text when `n` is 1 ("1 order", "Empty your cart? 1 item…"),
    else `key` itself; both are given `n` and `values`."""
    return t(f"{key}_one" if n == 1 else key, lang, n=n, **values)


def plain(key: str, lang: str | None = None, /, **values: object) -> str:
    """The text for `key` as Telegram shows it without parsing (a button label, a callback alert, an
    input placeholder): values go in unescaped, and a template holding markup is read as plain text."""
    text = _template(key, lang)[0]
    if "<" in text or "&" in text:
        text = to_plain(text)
    return text.format(**values) if values else text


def supported_language(code: str | None) -> str:
    """One of our languages for a Telegram client's `language_code` ("sw", "sw-KE", "en-GB"…):
    its language when we have that catalogue, English otherwise."""
    lang = (code or DEFAULT_LANG).split("-")[0].lower()
    return lang if lang in available_languages() else DEFAULT_LANG


@lru_cache(maxsize=1)
def available_languages() -> tuple[str, ...]:
    """Cached: asked on every update, and the catalogues only change with a deploy."""
    return tuple(sorted(p.name for p in LOCALES_DIR.iterdir() if p.is_dir()))
