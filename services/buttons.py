"""Callback data of the customer buttons that services put on messages they queue (order status,
back in stock, payment failed). Services do not import aiogram: these produce the same strings as
the factories in handlers/buttons.py (tests/test_buttons.py holds them to it)."""

from __future__ import annotations


def view_order(public_id: str) -> str:
    """`OrderButton(action=VIEW, public_id=…)`: the order's detail."""
    return f"ord:v:{public_id}"


def view_product(product_id: int, qty: int = 1) -> str:
    """`Card(action=VIEW, product_id=…, qty=…)`: the product card."""
    return f"cat:v:{product_id}:{qty}"


def offer_payment(public_id: str) -> str:
    """`Pay(action=OFFER, public_id=…)`: the payment methods for the order, again."""
    return f"pay:o:{public_id}"


def rate(product_id: int, stars: int) -> str:
    """`Rate(action="r", product_id=…, stars=…)`: give the product that many stars (1-5)."""
    return f"rev:r:{product_id}:{stars}"
