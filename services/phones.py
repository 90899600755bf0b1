"""Phone numbers, normalised with `phonenumbers`; Kenyan mobiles in the 2547XXXXXXXX form M-Pesa wants."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

KENYA_CODE = 254
KENYAN_DIGITS = 9  # the national significant number: 712 345 678


class InvalidPhone(ValueError):
    """`reason` is a locale key the bot shows when it asks again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WrongCountry(InvalidPhone):
    """A valid number, but not of the country a delivery needs (a foreign number for a Kenyan zone)."""

    def __init__(self, country: str) -> None:
        super().__init__("phone.error.wrong_country")
        self.country = country


def normalize_phone(raw: str, region: str = "KE", *, country: str | None = None) -> str:
    """E.164 digits without '+': `0712 345 678` → `254712345678`; foreign numbers keep their code.
    With `country` (a region code, "KE"), a valid number of another country raises WrongCountry:
    a courier inside Kenya (and M-Pesa) needs a Kenyan number to call."""
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
    if country is not None and phonenumbers.region_code_for_number(number) != country:
        raise WrongCountry(country)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")


def is_of_country(msisdn: str | None, country: str | None) -> bool:
    """True when the stored number (E.164 digits) suits a delivery needing `country` (None: any)."""
    if not msisdn:
        return False
    try:
        normalize_phone("+" + msisdn.lstrip("+"), country=country)
    except InvalidPhone:
        return False
    return True


def format_phone(msisdn: str) -> str:
    """How a stored number (E.164 digits) is shown: "+254 712 345 678" (Kenyan mobiles in threes, as
    people read them here), other numbers in their international format."""
    try:
        number = phonenumbers.parse("+" + msisdn.lstrip("+"), None)
    except NumberParseException:
        return "+" + msisdn.lstrip("+")
    national = str(number.national_number)
    if number.country_code == KENYA_CODE and len(national) == KENYAN_DIGITS and national[0] in "71":
        return f"+{KENYA_CODE} {national[:3]} {national[3:6]} {national[6:]}"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


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
