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


def retry_mpesa(public_id: str) -> str:
    """`Pay(action=MPESA_RETRY, public_id=…)`: the M-Pesa prompt again, to the number last prompted."""
    return f"pay:mr:{public_id}"


def other_mpesa_number(public_id: str) -> str:
    """`Pay(action=MPESA_NUMBER, public_id=…)`: ask for another number and prompt that one."""
    return f"pay:mn:{public_id}"


def start_return(public_id: str) -> str:
    """`ReturnStep(action=START, public_id=…)`: begin a return of the delivered order."""
    return f"ret:s:{public_id}:0"


def approve_return(request_id: int) -> str:
    """`ReturnDecision(action=APPROVE, request=…)`: the admin group's Approve on a return request."""
    return f"adr:a:{request_id}"


def reject_return(request_id: int) -> str:
    """`ReturnDecision(action=REJECT, request=…)`: the admin group's Reject… on a return request."""
    return f"adr:r:{request_id}"


def rate(product_id: int, stars: int) -> str:
    """`Rate(action="r", product_id=…, stars=…)`: give the product that many stars (1-5)."""
    return f"rev:r:{product_id}:{stars}"
