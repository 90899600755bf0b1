"""Finds English on a screen meant to be in another language, from the English catalogue itself.

For every English template whose translation differs (or is missing, so the bot would fall back to
English), the template is cut at its placeholders, HTML tags and entities into literal fragments; a
fragment of meaningful length (two words or more, or one word of 8 letters or more, brand words not
counted) that no template of the other language contains (a brand or a command the translation keeps)
is English the customer should not see. A sent text or button label containing one is flagged."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from services.i18n import catalogue
from tests.standins import Call

_CUTS = re.compile(r"\{[^{}]*\}|<[^>]*>|&#?\w+;|\n")
_EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")  # punctuation, emoji, digits at either end
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
# Names that are the same in every language: not English evidence on their own.
BRAND_WORDS = frozenset(
    {"hacklab", "hardware", "m-pesa", "mpesa", "stripe", "dhl", "express", "kes", "usd", "telegram", "g4s", "pin"}
)


@dataclass(frozen=True)
class Finding:
    where: str  # "sendMessage text", "button", "callback answer"…
    fragment: str
    key: str
    text: str


def _meaningful(fragment: str) -> bool:
    words = [w for w in _WORD.findall(fragment) if len(w) >= 2 and w.lower() not in BRAND_WORDS]
    return len(words) >= 2 or any(len(w) >= 8 for w in words)


def _squash(text: str) -> str:
    return " ".join(text.split())


@cache
def english_fragments(lang: str = "sw") -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    """(fragment, key, pattern) for every English literal that a `lang` screen must not show."""
    english, other = catalogue("en"), catalogue(lang)
    kept = " ".join(_squash(template) for template, _ in other.values())  # what the translation kept as is
    found: dict[str, str] = {}
    for key, (template, _) in english.items():
        translated = other.get(key)
        if translated is not None and translated[0] == template:
            continue  # the same in both languages ("🌐 Language / Lugha", a brand)
        for piece in _CUTS.split(template):
            fragment = _EDGES.sub("", _squash(piece))
            if fragment and _meaningful(fragment) and fragment not in kept:
                found.setdefault(fragment, key)
    return tuple(
        (fragment, key, re.compile(r"(?<!\w)" + re.escape(fragment) + r"(?!\w)"))
        for fragment, key in sorted(found.items(), key=lambda item: -len(item[0]))
    )


def english_in(texts: Iterable[tuple[str, str]], lang: str = "sw") -> list[Finding]:
    """The English fragments in (where, text) pairs."""
    findings = []
    for where, text in texts:
        squashed = _squash(text)
        for fragment, key, pattern in english_fragments(lang):
            if pattern.search(squashed):
                findings.append(Finding(where, fragment, key, text))
    return findings


def shown(calls: Iterable[Call]) -> list[tuple[str, str]]:
    """Everything a person reads in these Bot API calls: texts and captions, button labels (inline and
    reply keyboards), callback answers and input placeholders."""
    out: list[tuple[str, str]] = []
    for call in calls:
        if call.text:
            out.append((f"{call.method} text", call.text))
        out.extend(("button", label) for label, _ in call.buttons)
        placeholder = (call.params.get("reply_markup") or {}).get("input_field_placeholder")
        if placeholder:
            out.append(("input placeholder", str(placeholder)))
    return out
