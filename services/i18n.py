"""User-facing texts, read from the gettext catalogues in `locales/<lang>/*.po`.

Message ids are short keys (`cart.empty`), the msgstr is the text with `{placeholders}`. Each feature
keeps its own .po file so the catalogue grows without merge fights; all files of a language are merged.
A missing translation falls back to English, a missing key raises (a typo must fail the tests).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DEFAULT_LANG = "en"


@lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    folder = LOCALES_DIR / lang
    if not folder.is_dir():
        return texts
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as fh:
            for message in read_po(fh, locale=None):
                if message.id and message.string:
                    texts[str(message.id)] = str(message.string)
    return texts


def t(key: str, lang: str | None = None, /, **values: object) -> str:
    """The text for `key` in `lang` (falling back to English), formatted with `values`."""
    lang = (lang or DEFAULT_LANG).split("-")[0].lower()
    text = catalogue(lang).get(key) or catalogue(DEFAULT_LANG).get(key)
    if text is None:
        raise KeyError(f"no text for {key!r} in the locale catalogue")
    return text.format(**values) if values else text


@lru_cache(maxsize=1)
def available_languages() -> tuple[str, ...]:
    """Cached: asked on every update, and the catalogues only change with a deploy."""
    return tuple(sorted(p.name for p in LOCALES_DIR.iterdir() if p.is_dir()))
