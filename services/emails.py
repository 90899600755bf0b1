"""Email addresses, checked with `email_validator` and refused in the shop's own words.

The library explains a refusal in English and quotes the offending characters ("…invalid characters
before the @-sign: SPACE", "Codepoint U+…"): that text never reaches a customer. A refusal is one of
a few reasons, each a locale key (`email.error.*`), found by asking the library about the address's
parts separately; only the reason goes to the log, never the address nor the library's text (which
quotes it).
"""

from __future__ import annotations

import logging

from email_validator import EmailNotValidError, validate_email

log = logging.getLogger(__name__)

MAX_LENGTH = 254  # RFC 5321's limit on a whole address, which email_validator applies too
_SAMPLE_DOMAIN = "example.com"
_SAMPLE_LOCAL = "name"


class InvalidEmail(ValueError):
    """`reason` is a locale key the bot shows when it asks again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_email(raw: str) -> str:
    """The address as email_validator normalises it (no deliverability check: no DNS on the update's
    path), or InvalidEmail with the reason."""
    text = (raw or "").strip()
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        reason = _reason(text)
        log.debug("email.refused", extra={"reason": reason, "error": type(exc).__name__})
        raise InvalidEmail(reason) from None


def _reason(text: str) -> str:
    if not text:
        return "email.error.empty"
    if "@" not in text:
        return "email.error.no_at"
    if len(text) > MAX_LENGTH:
        return "email.error.too_long"
    local, _, domain = text.rpartition("@")
    if "@" in local:
        return "email.error.many_at"
    if not local or not _valid(f"{local}@{_SAMPLE_DOMAIN}"):
        return "email.error.local"
    if not domain or not _valid(f"{_SAMPLE_LOCAL}@{domain}"):
        return "email.error.domain"
    return "email.error.other"


def _valid(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True
