"""Phone numbers, normalised with `phonenumbers`; Kenyan mobiles in the 2547XXXXXXXX form M-Pesa wants."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType


class InvalidPhone(ValueError):
    """`reason` is a locale key the bot shows when it asks again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_phone(raw: str, region: str = "KE") -> str:
    """E.164 digits without '+': `0712 345 678` → `254712345678`; foreign numbers keep their code."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("phone.error.empty")
    if text[0].isdigit() and text.startswith("254"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        raise InvalidPhone("phone.error.unreadable") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("phone.error.invalid")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")


def is_kenyan_mobile(msisdn: str | None) -> bool:
    """True for numbers M-Pesa can prompt: Kenyan mobiles (2547…, 2541…)."""
    if not msisdn:
        return False
    try:
        number = phonenumbers.parse("+" + msisdn.lstrip("+"), None)
    except NumberParseException:
        return False
    return (
        number.country_code == 254
        and phonenumbers.is_valid_number(number)
        and phonenumbers.number_type(number) in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
    )


def mask_phone(msisdn: str | None) -> str:
    """For logs and admin views: never a full number in the logs."""
    if not msisdn:
        return "-"
    digits = msisdn.lstrip("+")
    return digits[:4] + "*" * max(len(digits) - 7, 3) + digits[-3:]
