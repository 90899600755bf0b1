"""Shipping zones: where we deliver, in which currency the order is priced, who carries it, and what
the courier needs from the customer (a Kenyan number inside Kenya; a town and a branch to collect
from outside Nairobi)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.errors import InvalidInput

ADDRESS_MIN = 8
ADDRESS_MAX = 500

# A post office box in the forms people write it: "P.O. Box 123", "PO Box", "P. O. Box", "POBox",
# "Box 123", "Post Office Box", and Swahili "S.L.P. 123" (Sanduku la Posta). Couriers deliver to a
# door or a branch, never to a box.
_PO_BOX = re.compile(
    r"\bp\s*\.?\s*o\s*\.?\s*box\b|\bpost\s+office\s+box\b|\bbox\s*(no\.?\s*)?\d"
    r"|\bs\s*\.?\s*l\s*\.?\s*p\b|\bsanduku\s+la\s+posta\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Zone:
    code: str
    currency: str
    shipping: int  # minor units in `currency`
    carrier: str  # default carrier
    tracked: bool  # polled automatically (DHL)
    country: str | None = "KE"  # the recipient's number must be of this country (None: any)
    branch_pickup: bool = False  # the courier delivers to one of its branches in a town, not a door

    @property
    def text_key(self) -> str:
        return f"zone.{self.code}"


ZONES: dict[str, Zone] = {
    "nairobi": Zone("nairobi", "KES", 300_00, "Local courier", tracked=False),
    "kenya": Zone("kenya", "KES", 600_00, "G4S", tracked=False, branch_pickup=True),
    "intl": Zone("intl", "USD", 35_00, "DHL", tracked=True, country=None),
}


def get_zone(code: str) -> Zone:
    try:
        return ZONES[code]
    except KeyError:
        raise ValueError(f"unknown shipping zone {code!r}") from None


def normalize_address(zone: Zone, raw: str) -> str:
    """The address typed, on one line, or InvalidInput with the reason's text key: too short for a
    courier, too long, or a P.O. Box ("Box 123" and Swahili "S.L.P." too), which no courier, DHL
    included, delivers to. A branch-pickup zone's reasons ask for the town and the
    branch instead of a street address."""
    address = " ".join((raw or "").split())
    kind = "branch" if zone.branch_pickup else "address"
    if _PO_BOX.search(address):
        raise InvalidInput(f"checkout.{kind}_po_box", carrier=zone.carrier)
    if len(address) < ADDRESS_MIN:
        raise InvalidInput(f"checkout.{kind}_short", carrier=zone.carrier)
    if len(address) > ADDRESS_MAX:
        raise InvalidInput("checkout.address_long", max=ADDRESS_MAX)
    return address
