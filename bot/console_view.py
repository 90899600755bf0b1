"""How `storefront console` shows the bot in a terminal: Telegram's HTML as text a person reads (bold
in ANSI on a terminal, plain when piped), each message labelled with its chat, and its buttons
numbered row by row as Telegram lays them out, so they can be pressed by typing the number."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TextIO

from services.markup import to_plain

_LINK = re.compile(r"<a\s+href=\"([^\"]*)\"\s*>(.*?)</a>", re.S)
_STYLES = {"b": (1, 22), "strong": (1, 22), "i": (3, 23), "em": (3, 23), "u": (4, 24), "ins": (4, 24)}
_STYLE_TAG = re.compile(r"<(/?)(b|strong|i|em|u|ins)>")


def terminal_text(text: str, *, html: bool = True, ansi: bool = False) -> str:
    """What a reader sees of `text`: tags dropped (bold and italics kept as ANSI styles when `ansi`),
    a link's address written after its words, entities turned back into characters."""
    if not html:
        return text
    text = _LINK.sub(_link, text)
    if ansi:
        text = _STYLE_TAG.sub(lambda m: f"\033[{_STYLES[m.group(2)][1 if m.group(1) else 0]}m", text)
    return to_plain(text)


def _link(match: re.Match[str]) -> str:
    """A link's words and, unless they already show it or it only opens a Telegram profile, its address."""
    url, words = match.group(1), match.group(2)
    return words if url in words or url.startswith("tg://") else f"{words} ({url})"


class Screen:
    """The terminal: bot messages, the console's own notices, and the prompt. Output that arrives
    while the prompt waits (a notification sent by the outbox) is printed on a line of its own and
    the prompt shown again, so what was typed and what came stay apart."""

    def __init__(self, out: TextIO, *, ansi: bool) -> None:
        self.out = out
        self.ansi = ansi
        self._prompt: str | None = None

    def _write(self, block: str) -> None:
        if self._prompt is not None:
            self.out.write("\n")
        self.out.write(block.rstrip("\n") + "\n")
        if self._prompt is not None:
            self.out.write(self._prompt)
        self.out.flush()

    def message(self, label: str, text: str, rows: Sequence[Sequence[str]], *, note: str = "") -> None:
        """One bot message: `label` (which chat), `note` ("(edited)", "(photo)"), the text indented,
        then the numbered buttons, one keyboard row a line."""
        head = f"{label} {note}".rstrip()
        lines = [self._bold(head)]
        lines += ["  " + line for line in (text.splitlines() or [""])]
        number = 0
        for row in rows:
            cells = []
            for button in row:
                number += 1
                cells.append(f"[{number}] {button}")
            lines.append("    " + "   ".join(cells))
        self._write("\n".join(lines) + "\n")

    def notice(self, text: str) -> None:
        """The console speaking (not the bot): simulations, pop-up answers, hints."""
        self._write(self._dim(text))

    def prompt(self, text: str) -> None:
        self._prompt = text
        self.out.write(text)
        self.out.flush()

    def prompt_answered(self) -> None:
        self._prompt = None

    def _bold(self, text: str) -> str:
        return f"\033[1m{text}\033[0m" if self.ansi else text

    def _dim(self, text: str) -> str:
        return f"\033[2m{text}\033[0m" if self.ansi else text
