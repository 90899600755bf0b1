"""Button callback data: the strings messages already carry keep working, and the strings services
build (they do not import aiogram) are those of the handlers' factories."""

from __future__ import annotations

import pytest

from handlers.buttons import (
    Card,
    CardAction,
    CardMainMenu,
    CartClear,
    CartLine,
    CartPage,
    Category,
    CategoryPage,
    CheckoutAction,
    CheckoutStep,
    Direction,
    LineAction,
    Menu,
    MenuScreen,
    OrderAction,
    OrderButton,
    Pay,
    PayAction,
    ProductAction,
    ProductButton,
    ZoneChoice,
)
from services import buttons


def test_service_buttons_are_the_handlers_factories() -> None:
    assert buttons.view_order("HL-ABC123") == OrderButton(action=OrderAction.VIEW, public_id="HL-ABC123").pack()
    assert buttons.view_product(42) == Card(action=CardAction.VIEW, product_id=42, qty=1).pack()
    assert buttons.view_product(42, 3) == Card(action=CardAction.VIEW, product_id=42, qty=3).pack()
    assert buttons.offer_payment("HL-ABC123") == Pay(action=PayAction.OFFER, public_id="HL-ABC123").pack()


@pytest.mark.parametrize(
    ("factory", "packed"),
    [
        (Menu(screen=MenuScreen.CATALOG), "menu:catalog"),
        (Menu(screen=MenuScreen.CART), "menu:cart"),
        (Menu(screen=MenuScreen.ORDERS), "menu:orders"),
        (Menu(screen=MenuScreen.HELP), "menu:help"),
        (Menu(screen=MenuScreen.MAIN), "menu:main"),
        (Category(action="c", category_id=7), "cat:c:7"),
        (
            CategoryPage(action="p", category_id=7, direction=Direction.AFTER, cursor="1733142000123456.12"),
            "cat:p:7:a:1733142000123456.12",
        ),
        (CategoryPage(action="p", category_id=7, direction=Direction.BEFORE, cursor="1.2"), "cat:p:7:b:1.2"),
        (Card(action=CardAction.VIEW, product_id=12, qty=1), "cat:v:12:1"),
        (Card(action=CardAction.QUANTITY, product_id=12, qty=2), "cat:q:12:2"),
        (Card(action=CardAction.ADD, product_id=12, qty=3), "cat:a:12:3"),
        (ProductButton(action=ProductAction.TYPE_QUANTITY, product_id=12), "cat:t:12"),
        (ProductButton(action=ProductAction.NOTIFY_ME, product_id=12), "cat:n:12"),
        (CardMainMenu(action="m"), "cat:m"),
        (CartLine(action=LineAction.FEWER, product_id=12, page=0), "crt:d:12:0"),
        (CartLine(action=LineAction.MORE, product_id=12, page=1), "crt:i:12:1"),
        (CartLine(action=LineAction.REMOVE, product_id=12, page=2), "crt:r:12:2"),
        (CartPage(action="pg", page=2), "crt:pg:2"),
        (CartPage(action="pg", page=-1), "crt:pg:-1"),
        (CartClear(action="clr"), "crt:clr"),
        (CheckoutStep(action=CheckoutAction.START), "chk:start"),
        (CheckoutStep(action=CheckoutAction.CANCEL), "chk:x"),
        (CheckoutStep(action=CheckoutAction.CONFIRM), "chk:ok"),
        (ZoneChoice(action="z", zone="nairobi"), "chk:z:nairobi"),
        (Pay(action=PayAction.OFFER, public_id="HL-ABC123"), "pay:o:HL-ABC123"),
        (Pay(action=PayAction.CANCEL, public_id="HL-ABC123"), "pay:x:HL-ABC123"),
        (Pay(action=PayAction.MPESA, public_id="HL-ABC123"), "pay:m:HL-ABC123"),
        (Pay(action=PayAction.CARD, public_id="HL-ABC123"), "pay:s:HL-ABC123"),
        (Pay(action=PayAction.MPESA_STATUS, public_id="HL-ABC123"), "pay:mq:HL-ABC123"),
        (OrderButton(action=OrderAction.VIEW, public_id="HL-ABC123"), "ord:v:HL-ABC123"),
    ],
)
def test_packed_strings_are_the_ones_already_sent(factory: object, packed: str) -> None:
    assert factory.pack() == packed  # type: ignore[attr-defined]
    assert type(factory).unpack(packed) == factory  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("factory", "data"),
    [
        (Card, "cat:v:1234567890:1"),
        (Card, "cat:v:1:1000"),
        (Card, "cat:v:-1:1"),
        (Card, "cat:x:1:1"),
        (Category, "cat:t:1"),
        (CategoryPage, "cat:p:1:a:123456789012345678901.1"),
        (CategoryPage, "cat:p:1:c:1.1"),
        (CartPage, "crt:pg:10000"),
        (CartClear, "crt:"),
        (Category, "cat::5"),
        (CartPage, "crt::1"),
        (ZoneChoice, "chk::nairobi"),
        (CardMainMenu, "cat:"),
        (Pay, "pay:o:"),
        (Pay, "pay:o:" + "X" * 33),
        (ZoneChoice, "chk:x"),
    ],
)
def test_out_of_bounds_data_does_not_unpack(factory: type, data: str) -> None:
    with pytest.raises((TypeError, ValueError)):
        factory.unpack(data)
