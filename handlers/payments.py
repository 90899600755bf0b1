"""After checkout: offer the payment methods that fit the order; re-offer ("Try again"); let the
customer cancel an unpaid order. Provider flows live in pay_mpesa.py and pay_card.py."""

from __future__ import annotations

import logging
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import F
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MaybeInaccessibleMessageUnion,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.models import Customer, Order
from handlers.buttons import Pay, PayAction
from handlers.filters import Buttons
from handlers.routing import Routes
from services import orders as order_service
from services.errors import DomainError
from services.i18n import plain, t
from services.money import format_money
from services.payments import stripe_flow
from services.payments.stripe import StripeFailure
from services.times import customer_time

log = logging.getLogger(__name__)
router = Routes("payments")
router.callback_query.filter(Buttons(Pay))


def payment_methods(order: Order, providers: dict[str, Any]) -> list[str]:
    """M-Pesa for KES orders, card (Stripe) for KES and USD orders — only when configured."""
    methods = []
    if "mpesa" in providers and order.currency == "KES":
        methods.append("mpesa")
    if "stripe" in providers:
        methods.append("stripe")
    return methods


def payment_keyboard(order: Order, methods: list[str], lang: str) -> InlineKeyboardMarkup:
    labels = {"mpesa": ("pay.button.mpesa", PayAction.MPESA), "stripe": ("pay.button.card", PayAction.CARD)}
    rows = [
        [
            InlineKeyboardButton(
                text=t(labels[m][0], lang), callback_data=Pay(action=labels[m][1], public_id=order.public_id).pack()
            )
        ]
        for m in methods
    ]
    rows.append(
        [
            InlineKeyboardButton(
                text=t("pay.button.cancel_order", lang),
                callback_data=Pay(action=PayAction.CANCEL, public_id=order.public_id).pack(),
            )
        ]
    )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def offer_text(order: Order, methods: list[str], lang: str, zone: ZoneInfo) -> str:
    until = customer_time(order.reserved_until, zone, lang)
    key = "pay.offer" if methods else "pay.unavailable"
    return t(key, lang, order=order.public_id, total=format_money(order.total, order.currency, lang), until=until)


async def offer_payment(
    message: MaybeInaccessibleMessageUnion, order: Order, providers: dict[str, Any], lang: str, zone: ZoneInfo
) -> None:
    methods = payment_methods(order, providers)
    if not methods:
        log.warning("payments.unavailable", extra={"order": order.public_id})
    await message.answer(offer_text(order, methods, lang, zone), reply_markup=payment_keyboard(order, methods, lang))


async def own_order(
    query: CallbackQuery, session: AsyncSession, customer: Customer, lang: str, public_id: str
) -> Order | None:
    """The order named in the button, if it is this customer's and still awaiting payment; otherwise
    answer the button press with the reason and return None."""
    try:
        order = await order_service.get_order(session, public_id, customer_id=customer.id)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return None
    return order if await _still_awaiting(query, order, lang) else None


async def own_order_apart(
    query: CallbackQuery, session_factory: async_sessionmaker[AsyncSession], customer_id: int, lang: str, public_id: str
) -> tuple[Order, Customer | None] | None:
    """`own_order` read in a short session of its own, with the customer: for a handler that then
    waits on a payment provider (it holds no pooled connection meanwhile)."""
    try:
        order, customer = await order_service.order_apart(session_factory, public_id, customer_id)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return None
    return (order, customer) if await _still_awaiting(query, order, lang) else None


async def _still_awaiting(query: CallbackQuery, order: Order, lang: str) -> bool:
    """True when the order still awaits payment; otherwise the press is answered with why not."""
    reason = not_awaiting(order, lang)
    if reason is not None:
        await query.answer(reason, show_alert=True)
    return reason is None


@router.callback_query(Pay.filter(F.action == PayAction.OFFER))
async def reoffer(
    query: CallbackQuery,
    callback_data: Pay,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
) -> None:
    order = await own_order(query, session, customer, lang, callback_data.public_id)
    if order is None or query.message is None:
        return
    await query.answer()
    methods = payment_methods(order, providers)
    await query.message.answer(
        offer_text(order, methods, lang, settings.shop_zone), reply_markup=payment_keyboard(order, methods, lang)
    )


@router.callback_query(Pay.filter(F.action == PayAction.CANCEL))
async def cancel_unpaid(
    query: CallbackQuery,
    callback_data: Pay,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
) -> None:
    order = await own_order(query, session, customer, lang, callback_data.public_id)
    if order is None:
        return
    public_id = order.public_id
    try:
        outcome = await stripe_flow.cancel_unpaid(
            session, providers.get("stripe"), order, settings, f"customer:{customer.id}"
        )
    except (DomainError, StripeFailure) as exc:  # a card link could not be closed: nothing changed
        key, values = (exc.key, exc.values) if isinstance(exc, DomainError) else ("stripe.cancel_failed", {})
        await query.answer()
        if query.message is not None:
            await query.message.answer(t(key, lang, **{"order": public_id, **values}))
        return
    if outcome == "prompt_open":  # a reservation is not released while a prompt for it can be paid
        log.info("payments.cancel_refused_prompt_open", extra={"order": public_id})
        await query.answer(plain("mpesa.cancel_prompt_open", lang, order=public_id), show_alert=True)
    elif outcome == "moved":  # its card payment was found just now
        await query.answer(
            t("pay.error.not_awaiting", lang, order=public_id, state=t(f"state.{order.state}", lang)), show_alert=True
        )
    else:
        await query.answer(plain("pay.cancelled", lang, order=public_id))
        if isinstance(query.message, Message):  # an inaccessible one cannot be edited
            await query.message.edit_reply_markup(reply_markup=None)


def not_awaiting(order: Order, lang: str) -> str | None:
    """Why the order cannot be paid any more (an alert's text), or None while it awaits payment."""
    if order.state == order_service.AWAITING_PAYMENT:
        return None
    return plain("pay.error.not_awaiting", lang, order=order.public_id, state=plain(f"state.{order.state}", lang))
