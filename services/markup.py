"""Telegram's HTML parse mode: turning a message into plain text, and shortening one safely.

Texts are built safe by construction (`services.i18n.t` escapes every value it is given and returns
`Markup`); this module is for the two places that must look inside a finished message: a message
Telegram still refuses ("can't parse entities") is sent again as plain text (`to_plain`), and a
message over Telegram's limit is cut between tags and entities, never inside one, with the tags that
are open at the cut closed (`clip`). No aiogram here: the bot's request middleware and the outbox
sender both use it.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup, escape

__all__ = ["Markup", "clip", "cut", "escape", "is_unparsable", "refusal_for_log", "to_plain", "visible_len"]

_TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^<>]*)?/?>")
_TOKEN = re.compile(r"<[^<>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z][a-zA-Z0-9]*);|[^<&]+|[<&]")
ELLIPSIS = "…"


def is_unparsable(description: str) -> bool:
    """Telegram's answer to markup it cannot parse (400 "Bad Request: can't parse entities: …")."""
    return "can't parse entities" in description.lower()


def refusal_for_log(description: str) -> str:
    """Telegram's refusal without what it quotes from the message (a tag name may be a customer's)."""
    return re.sub(r'"[^"]*"', '"…"', description)[:200]


def to_plain(text: str) -> str:
    """What the reader would have seen: tags dropped, entities turned back into characters. Text
    that only looked like markup (a stray `<` or `&`) is kept as it is."""
    return html.unescape(_TAG.sub("", text))


def visible_len(text: str) -> int:
    """Characters Telegram counts against its limits (they apply after entity parsing)."""
    return len(to_plain(text)) if ("<" in text or "&" in text) else len(text)


def cut(value: object, limit: int) -> str:
    """A raw value (a customer's address, a carrier's text) shortened before it is escaped, so a
    long field costs at most `limit` characters of the message and is never cut inside an entity."""
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def clip(text: str, limit: int) -> str:
    """`text` if Telegram would take it, else its first `limit - 1` visible characters and "…",
    cut between tags and entities and with every tag still open at the cut closed."""
    if len(text) <= limit or visible_len(text) <= limit:
        return text
    out: list[str] = []
    open_tags: list[str] = []
    budget = limit - len(ELLIPSIS)
    for match in _TOKEN.finditer(text):
        token = match.group()
        tag = _TAG.fullmatch(token) if token[0] == "<" and len(token) > 1 else None
        if tag is not None:
            if token[1] != "/":
                open_tags.append(tag.group(1).lower())
            elif open_tags and open_tags[-1] == tag.group(1).lower():
                open_tags.pop()
            out.append(token)
            continue
        size = 1 if token[0] == "&" and len(token) > 1 else len(token)
        if size > budget:
            if token[0] not in "<&":
                out.append(token[:budget])
            break
        out.append(token)
        budget -= size
    out.append(ELLIPSIS)
    out.extend(f"</{name}>" for name in reversed(open_tags))
    joined = "".join(out)
    return Markup(joined) if isinstance(text, Markup) else joined
