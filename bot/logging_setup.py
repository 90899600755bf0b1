"""Structured log lines (`event key=value …`, or one JSON object a line with LOG_FORMAT=json) with a
last-line-of-defence redactor: bot tokens, bearer tokens, secrets and full phone numbers never reach the
log, whoever logged them."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"(/webhooks/mpesa/)[^/\s\"'?]+"), r"\1<token>"),  # the callback URL's secret segment
    (
        re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}"),
        "<bot-token>",
    ),  # also inside /bot<token>/ URLs  # Telegram bot token
    (re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 <redacted>"),
    (re.compile(r"\b(sk|rk|whsec|pk)_(test|live)?_?[A-Za-z0-9]{8,}\b"), "<stripe-secret>"),
    (
        re.compile(r"(?<!\d)(?:\+?254|0)(7|1)\d{8}(?!\d)"),
        lambda m: m.group(0)[:-9] + m.group(1) + "*****" + m.group(0)[-3:],
    ),
    (re.compile(r"(?i)(passkey|password|secret|api[_-]?key|token)([\"'=: ]+)[^\s\"',&]+"), r"\1\2<redacted>"),
]


def redact(text: str) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class StructuredFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STD)
        line = f"{base} {extras}" if extras else base
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line with the text line's fields: `asctime`, `levelname`, `name`, `message` (the
    event), each extra under its own key, and `exc_info` (the traceback) when there is one. These base
    keys are LogRecord attributes, so no extra can take their place (logging refuses such extras).

    The redactor runs on each value as the text formatter sees it (an extra as `key=value`, so a
    `token=…` extra is caught by its name) before serialising, which keeps every line valid JSON. An
    extra stays a JSON number or boolean unless redacting its text changed it (a phone number as int)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "name": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STD:
                entry[key] = _redacted_extra(key, value)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _redacted_extra(key: str, value: object) -> object:
    pair = f"{key}={value}"
    cleaned = redact(pair)
    if cleaned == pair and (value is None or isinstance(value, bool | int | float | str)):
        return value
    prefix = f"{key}="
    return cleaned[len(prefix) :] if cleaned.startswith(prefix) else cleaned


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": StructuredFormatter, "json": JsonFormatter}


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
