"""Money: integer minor units with an explicit currency; formatting through babel.

Both KES and USD have two decimals (as Stripe counts them), so 1 unit = 100 minor units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from babel.numbers import format_currency

CURRENCIES = ("KES", "USD")
MINOR_PER_UNIT = 100

# The Babel locale that writes amounts for each of our languages (locales/<lang>): Swahili as
# written in Kenya. Anything else (a Babel locale already, "en_US") is used as it is.
BABEL_LOCALES = {"en": "en", "sw": "sw_KE"}


@dataclass(frozen=True, slots=True)
class Money:
    amount: int  # minor units
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError("money amounts are integers in minor units")
        if self.currency not in CURRENCIES:
            raise ValueError(f"unsupported currency {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError("cannot add different currencies")
        return Money(self.amount + other.amount, self.currency)

    def __mul__(self, qty: int) -> Money:
        return Money(self.amount * int(qty), self.currency)

    def format(self, locale: str = "en") -> str:
        return format_money(self.amount, self.currency, locale)


@lru_cache(maxsize=8192)
def format_money(amount: int, currency: str, locale: str = "en") -> str:
    """The amount as the customer reads it: `locale` is one of our language codes ("en", "sw") or a
    Babel locale. Separators and the dollar's symbol follow the locale ("$152" in English, "US$152"
    in Kenyan Swahili, where "$" alone is ambiguous); shillings are always "KES 45,000", as M-Pesa
    and Kenyan receipts write them, where Babel's Kenyan locales would say "Ksh45,000".

    Memoised: a catalogue shows the same few hundred prices over and over, and babel's formatting
    (pattern parsing, Decimal quantising, locale look-ups) showed up in every browsing profile."""
    value = Decimal(amount) / MINOR_PER_UNIT
    fmt = "¤#,##0" if amount % MINOR_PER_UNIT == 0 else "¤#,##0.00"
    if currency == "KES":  # the ISO code ("¤¤") and a space: "KES 45,000", not "KES45,000" nor "Ksh45,000"
        fmt = fmt.replace("¤", "¤¤ ")
    text = format_currency(value, currency, format=fmt, locale=BABEL_LOCALES.get(locale, locale), currency_digits=False)
    return text.replace("\xa0", " ")


def whole_units_up(amount: int) -> int:
    """Whole currency units, rounding cents up (M-Pesa takes whole shillings only)."""
    return -(-amount // MINOR_PER_UNIT)


def major_units(amount: int) -> str:
    """Minor units as a plain decimal string of major units, for files other programs read:
    3750000 → "37500.00" (no currency sign, no thousands separator)."""
    return f"{Decimal(amount) / MINOR_PER_UNIT:.2f}"


_TYPED_AMOUNT = re.compile(r"^(?:KES|KSH|KSHS)?\.?\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?$", re.IGNORECASE)


def parse_amount(text: str) -> int | None:
    """An amount as people type it from an M-Pesa message ("1300", "1,300.00", "Ksh1,300") in minor
    units; None when it is not one, or not positive."""
    match = _TYPED_AMOUNT.match(text.strip())
    if match is None:
        return None
    whole, cents = match.group(1).replace(",", ""), (match.group(2) or "").ljust(2, "0")
    minor = int(whole) * MINOR_PER_UNIT + int(cents)
    return minor if minor > 0 else None
