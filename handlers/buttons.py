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
  cat:v|q|a|h:<product>:<qty>            open a card / change its quantity in place / add to cart /
                                         the quantity shown (answered only)
  cat:t|n|s|b:<product>                  type a quantity / notify me when back in stock / stop that alert /
                                         back to the category page holding the product
  cat:m                                  main menu from a card (works from a photo card)
  crt:d|i|r|ry:<product>:<page>          fewer / more / remove a cart line (asks) / remove it (confirmed)
  crt:pg:<page>, crt:at:<product>        a cart page, the cart page holding a product's line
  crt:clr, crt:cq|cy:<page>              clear the cart: ask (crt:clr is page 0), confirmed
  chk:start|x|ok, chk:z:<zone>           begin checkout, cancel, confirm; choose a delivery zone
  chk:pc|pr|sm                           type a promo code, remove it, back to the summary
  chk:ep|ee|ea                           from the summary: change the phone, the email, the address
  pay:o|x|m|s|mq:<order>                 offer payment again, cancel unpaid (asks), M-Pesa, card, M-Pesa status
  pay:mr|mn|xy|k:<order>                 M-Pesa again / to another number, cancel confirmed, keep the order
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
    SHOWN = "h"  # the quantity between − and +: answered, changes nothing


class Card(CallbackData, prefix="cat"):
    action: CardAction
    product_id: Id
    qty: Qty


class ProductAction(StrEnum):
    TYPE_QUANTITY = "t"
    NOTIFY_ME = "n"
    STOP_NOTIFY = "s"  # undo Notify me
    BACK = "b"  # the category page the product is on


class ProductButton(CallbackData, prefix="cat"):
    action: ProductAction
    product_id: Id


class CardMainMenu(CallbackData, prefix="cat"):
    action: Literal["m"]


# --- cart ------------------------------------------------------------------------------------------


class LineAction(StrEnum):
    FEWER = "d"
    MORE = "i"
    REMOVE = "r"  # asks first
    REMOVE_CONFIRMED = "ry"


class CartLine(CallbackData, prefix="crt"):
    action: LineAction
    product_id: Id
    page: CartPageNo


class CartPage(CallbackData, prefix="crt"):
    action: Literal["pg"]
    page: CartPageNo


class CartClear(CallbackData, prefix="crt"):
    action: Literal["clr"]


class ClearAction(StrEnum):
    ASK = "cq"
    CONFIRMED = "cy"


class CartClearStep(CallbackData, prefix="crt"):
    """Clear the cart from `page`: ask first, then empty it; Keep goes back to that page."""

    action: ClearAction
    page: CartPageNo


class CartAt(CallbackData, prefix="crt"):
    """The cart page holding this product's line (the first page when it is not in the cart)."""

    action: Literal["at"]
    product_id: Id


# --- checkout, payment, orders ---------------------------------------------------------------------


class CheckoutAction(StrEnum):
    START = "start"
    CANCEL = "x"
    CONFIRM = "ok"
    PROMO = "pc"  # type a promo code
    PROMO_REMOVE = "pr"  # drop the promo code
    SUMMARY = "sm"  # back to the summary (from the promo code prompt)
    EDIT_PHONE = "ep"  # from the summary: type the phone number again
    EDIT_EMAIL = "ee"  # … the email address
    EDIT_ADDRESS = "ea"  # … the address (or the town and branch)


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
    MPESA_RETRY = "mr"  # the prompt again, to the number last prompted
    MPESA_NUMBER = "mn"  # the prompt to another number (asked for)
    CANCEL_CONFIRM = "xy"  # yes, cancel the unpaid order
    KEEP = "k"  # keep it: the payment screen again


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
