"""Shipping zones: where we deliver, in which currency the order is priced, and who carries it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Zone:
    code: str
    currency: str
    shipping: int  # minor units in `currency`
    carrier: str  # default carrier
    tracked: bool  # polled automatically (DHL)

    @property
    def text_key(self) -> str:
        return f"zone.{self.code}"


ZONES: dict[str, Zone] = {
    "nairobi": Zone("nairobi", "KES", 300_00, "Local courier", tracked=False),
    "kenya": Zone("kenya", "KES", 600_00, "G4S", tracked=False),
    "intl": Zone("intl", "USD", 35_00, "DHL", tracked=True),
}


def get_zone(code: str) -> Zone:
    try:
        return ZONES[code]
    except KeyError:
        raise ValueError(f"unknown shipping zone {code!r}") from None
