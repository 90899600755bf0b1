"""The callback data of every customer button, as aiogram `CallbackData` factories.

The packed strings are the ones the shop has always sent ("menu:cart", "cat:v:12:1", "pay:m:HL-ABC123"):
messages already in customers' chats carry them. Each factory is a prefix and an `action` field first,
then typed fields. Numbers are bounded, so a forged press never reaches the database as an
out-of-range integer: anything that does not unpack (wrong shape, a number out of range, an unknown
action, an empty field) matches no handler and gets the stale-button answer (handlers/common.py).

  menu:<screen>                          main menu buttons: catalog, cart, orders, help, main, lang, talk
  lang:<code>                            choose the language (one of locales/<code>)
  cat:c:<category>                       open a category (first page)
  cat:p:<category>:a|b:<cursor>          the page after / before a keyset cursor
  cat:v|q|a:<product>:<qty>              open a card / change its quantity in place / add to cart
  cat:t|n:<product>                      type a quantity / notify me when back in stock
  cat:m                                  main menu from a card (works from a photo card)
  crt:d|i|r:<product>:<page>             fewer / more / remove a cart line
  crt:pg:<page>, crt:clr                 a cart page, clear the cart
  chk:start|x|ok, chk:z:<zone>           begin checkout, cancel, confirm; choose a delivery zone
  chk:pc|pr|sm                           type a promo code, remove it, back to the summary
  pay:o|x|m|s|mq:<order>                 offer payment again, cancel unpaid, M-Pesa, card, M-Pesa status
  ord:v:<order>                          an order's detail
  ret:s|i|d|a|ok|x:<order>:<line>        return: begin, one more / one fewer of a line, everything,
                                         continue to the reason, cancel (line 0 when none is meant)
  rev:r:<product>:<stars>                rate a product 1-5 stars (the after-delivery question)
  rev:s|l:<product>                      no comment (skip) / the product's latest reviews
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from aiogram.filters.callback_data import CallbackData
from pydantic import Field, StringConstraints

Id = Annotated[int, Field(ge=0, le=999_999_999)]  # at most 9 digits: within every integer column
Qty = Annotated[int, Field(ge=0, le=999)]
CartPageNo = Annotated[int, Field(ge=-9999, le=9999)]
# A keyset cursor: microseconds since the epoch and a product id (services/catalog.py).
Cursor = Annotated[str, StringConstraints(pattern=r"^\d{1,20}\.\d{1,9}$")]
PublicId = Annotated[str, StringConstraints(min_length=1, max_length=32)]
ZoneCode = Annotated[str, StringConstraints(min_length=1, max_length=32)]
LanguageCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


class MenuScreen(StrEnum):
    CATALOG = "catalog"
    CART = "cart"
    ORDERS = "orders"
    HELP = "help"
    MAIN = "main"
    LANGUAGE = "lang"
    SUPPORT = "talk"


class Menu(CallbackData, prefix="menu"):
    screen: MenuScreen


class LanguageChoice(CallbackData, prefix="lang"):
    code: LanguageCode


# --- catalogue -------------------------------------------------------------------------------------


class Category(CallbackData, prefix="cat"):
    action: Literal["c"]
    category_id: Id


class Direction(StrEnum):
    AFTER = "a"
    BEFORE = "b"


class CategoryPage(CallbackData, prefix="cat"):
    action: Literal["p"]
    category_id: Id
    direction: Direction
    cursor: Cursor


class CardAction(StrEnum):
    VIEW = "v"  # a new screen (may become a photo)
    QUANTITY = "q"  # the card shown, edited in place
    ADD = "a"


class Card(CallbackData, prefix="cat"):
    action: CardAction
    product_id: Id
    qty: Qty


class ProductAction(StrEnum):
    TYPE_QUANTITY = "t"
    NOTIFY_ME = "n"


class ProductButton(CallbackData, prefix="cat"):
    action: ProductAction
    product_id: Id


class CardMainMenu(CallbackData, prefix="cat"):
    action: Literal["m"]


# --- cart ------------------------------------------------------------------------------------------


class LineAction(StrEnum):
    FEWER = "d"
    MORE = "i"
    REMOVE = "r"


class CartLine(CallbackData, prefix="crt"):
    action: LineAction
    product_id: Id
    page: CartPageNo


class CartPage(CallbackData, prefix="crt"):
    action: Literal["pg"]
    page: CartPageNo


class CartClear(CallbackData, prefix="crt"):
    action: Literal["clr"]


# --- checkout, payment, orders ---------------------------------------------------------------------


class CheckoutAction(StrEnum):
    START = "start"
    CANCEL = "x"
    CONFIRM = "ok"
    PROMO = "pc"  # type a promo code
    PROMO_REMOVE = "pr"  # drop the promo code
    SUMMARY = "sm"  # back to the summary (from the promo code prompt)


class CheckoutStep(CallbackData, prefix="chk"):
    action: CheckoutAction


class ZoneChoice(CallbackData, prefix="chk"):
    action: Literal["z"]
    zone: ZoneCode


class PayAction(StrEnum):
    OFFER = "o"  # offer the payment methods (again)
    CANCEL = "x"  # cancel the unpaid order
    MPESA = "m"
    CARD = "s"
    MPESA_STATUS = "mq"


class Pay(CallbackData, prefix="pay"):
    action: PayAction
    public_id: PublicId


class OrderAction(StrEnum):
    VIEW = "v"


class OrderButton(CallbackData, prefix="ord"):
    action: OrderAction
    public_id: PublicId


class ReturnAction(StrEnum):
    START = "s"
    MORE = "i"
    FEWER = "d"
    ALL = "a"
    NEXT = "ok"
    CANCEL = "x"


class ReturnStep(CallbackData, prefix="ret"):
    action: ReturnAction
    public_id: PublicId
    item: Id = 0  # an order line's id (OrderItem.id), for MORE / FEWER


# --- reviews ---------------------------------------------------------------------------------------

Stars = Annotated[int, Field(ge=1, le=5)]


class Rate(CallbackData, prefix="rev"):
    action: Literal["r"]
    product_id: Id
    stars: Stars


class ReviewAction(StrEnum):
    SKIP = "s"  # no comment after the stars
    LIST = "l"  # the product's latest visible reviews


class ReviewButton(CallbackData, prefix="rev"):
    action: ReviewAction
    product_id: Id


MENU_CATALOG = Menu(screen=MenuScreen.CATALOG).pack()
MENU_CART = Menu(screen=MenuScreen.CART).pack()
MENU_ORDERS = Menu(screen=MenuScreen.ORDERS).pack()
MENU_HELP = Menu(screen=MenuScreen.HELP).pack()
MENU_MAIN = Menu(screen=MenuScreen.MAIN).pack()
MENU_LANGUAGE = Menu(screen=MenuScreen.LANGUAGE).pack()
MENU_SUPPORT = Menu(screen=MenuScreen.SUPPORT).pack()
