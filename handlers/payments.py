"""After checkout: offer the payment methods that fit the order (or, when none does, say what is
true: the shop was told, and how to pay it by hand when it has a Paybill); re-offer ("Try again");
let the customer cancel an unpaid order, after a confirmation. Provider flows live in pay_mpesa.py
and pay_card.py, the admin's /paid in manual_payments.py."""

from __future__ import annotations

import logging
from typing import Any

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
from handlers.render import kb
from handlers.routing import Routes
from services import orders as order_service
from services.errors import DomainError
from services.i18n import plain, t
from services.markup import Markup
from services.money import format_money
from services.payments import manual, pay_message, stripe_flow
from services.payments.common import PaymentNotAllowed, state_group
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


def _button(action: PayAction, public_id: str) -> str:
    return Pay(action=action, public_id=public_id).pack()


def payment_keyboard(order: Order, methods: list[str], lang: str) -> InlineKeyboardMarkup:
    labels = {"mpesa": ("pay.button.mpesa", PayAction.MPESA), "stripe": ("pay.button.card", PayAction.CARD)}
    rows = [
        [InlineKeyboardButton(text=t(labels[m][0], lang), callback_data=_button(labels[m][1], order.public_id))]
        for m in methods
    ]
    rows.append(
        [
            InlineKeyboardButton(
                text=t("pay.button.cancel_order", lang), callback_data=_button(PayAction.CANCEL, order.public_id)
            )
        ]
    )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def offer_text(order: Order, methods: list[str], lang: str, settings: Settings) -> Markup:
    """The payment screen. With no way to pay online: the Paybill instructions when the shop has
    them, else that the shop was told (only when there is an admin group to tell)."""
    values: dict[str, object] = {
        "order": order.public_id,
        "total": format_money(order.total, order.currency, lang),
        "until": customer_time(order.reserved_until, settings.shop_zone, lang),
    }
    if methods:
        return t("pay.offer", lang, **values)
    paybill = manual.customer_instructions(order, settings, lang)
    if paybill is not None:
        text = t("pay.manual", lang, paybill=paybill, **values)
    else:
        told = settings.admin_chat_id is not None
        text = t("pay.unavailable_told" if told else "pay.unavailable", lang, **values)
    contact = order_service.shop_contact(lang, settings.shop_phone, settings.shop_whatsapp)
    return Markup("\n").join([text, contact]) if contact is not None else text


async def offer_payment(
    message: MaybeInaccessibleMessageUnion,
    order: Order,
    providers: dict[str, Any],
    lang: str,
    *,
    session: AsyncSession,
    settings: Settings,
    in_place: bool = False,
) -> None:
    """Show the payment screen (`in_place`: in the pressed message, when it can be edited; else as
    a new message) and record it as the order's live payment message (the one before it, and later
    this one, lose their buttons); an order no one can pay online is posted to the admin group."""
    methods = payment_methods(order, providers)
    if not methods:
        log.warning("payments.unavailable", extra={"order": order.public_id})
    text, markup = offer_text(order, methods, lang, settings), payment_keyboard(order, methods, lang)
    if in_place and isinstance(message, Message):
        await message.edit_text(text, reply_markup=markup)
        sent = message
    else:
        sent = await message.answer(text, reply_markup=markup)
    await manual.record_offer(
        session, order, sent.chat.id, sent.message_id, lang, payable=bool(methods), settings=settings
    )


async def send_pay_message(
    message: MaybeInaccessibleMessageUnion,
    public_id: str,
    text: Markup,
    markup: InlineKeyboardMarkup,
    lang: str,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Send a message with the order's pay buttons (a provider's "check your phone", pay link or
    "Try again") and record it, in a short session after the provider call, as the order's live
    payment message: the one before it loses its buttons."""
    sent = await message.answer(text, reply_markup=markup)
    await pay_message.record_pay_message_apart(session_factory, public_id, sent.chat.id, sent.message_id, lang)


async def own_order(
    query: CallbackQuery,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    public_id: str,
    *,
    cancelling: bool = False,
) -> Order | None:
    """The order named in the button, if it is this customer's and still awaiting payment; otherwise
    answer the button press with the reason and return None."""
    try:
        order = await order_service.get_order(session, public_id, customer_id=customer.id)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return None
    return order if await _still_awaiting(query, order, lang, cancelling=cancelling) else None


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


async def _still_awaiting(query: CallbackQuery, order: Order, lang: str, *, cancelling: bool = False) -> bool:
    """True when the order still awaits payment; otherwise the press is answered with why not."""
    reason = not_awaiting(order, lang, cancelling=cancelling)
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
    await offer_payment(query.message, order, providers, lang, session=session, settings=settings)


@router.callback_query(Pay.filter(F.action == PayAction.CANCEL))
async def ask_to_cancel(
    query: CallbackQuery, callback_data: Pay, session: AsyncSession, customer: Customer, lang: str
) -> None:
    """One tap does not cancel: the order is cancelled only after "Yes, cancel it"."""
    order = await own_order(query, session, customer, lang, callback_data.public_id, cancelling=True)
    if order is None or query.message is None:
        return
    await query.answer()
    text = t("pay.cancel.confirm", lang, order=order.public_id)
    markup = kb(
        [(t("pay.button.cancel_yes", lang), _button(PayAction.CANCEL_CONFIRM, order.public_id))],
        [(t("pay.button.keep_order", lang), _button(PayAction.KEEP, order.public_id))],
    )
    if isinstance(query.message, Message):
        await query.message.edit_text(text, reply_markup=markup)
    else:
        await query.message.answer(text, reply_markup=markup)


@router.callback_query(Pay.filter(F.action == PayAction.KEEP))
async def keep_order(
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
    await query.answer()
    if query.message is not None:
        await offer_payment(query.message, order, providers, lang, session=session, settings=settings, in_place=True)


@router.callback_query(Pay.filter(F.action == PayAction.CANCEL_CONFIRM))
async def cancel_unpaid(
    query: CallbackQuery,
    callback_data: Pay,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
) -> None:
    order = await own_order(query, session, customer, lang, callback_data.public_id, cancelling=True)
    if order is None:
        return
    public_id = order.public_id
    try:
        outcome = await stripe_flow.cancel_unpaid(
            session, providers.get("stripe"), order, settings, f"customer:{customer.id}"
        )
    except (DomainError, StripeFailure) as exc:  # a card link could not be closed: nothing changed
        await query.answer()
        if query.message is not None:
            await query.message.answer(_cancel_failure(exc, public_id, lang))
        return
    if outcome == "prompt_open":  # a reservation is not released while a prompt for it can be paid
        log.info("payments.cancel_refused_prompt_open", extra={"order": public_id})
        await query.answer(plain("mpesa.cancel_prompt_open", lang, order=public_id), show_alert=True)
    elif outcome == "moved":  # its card payment was found just now
        await query.answer(not_awaiting(order, lang, cancelling=True), show_alert=True)
    else:
        await query.answer(plain("pay.cancelled", lang, order=public_id))
        if isinstance(query.message, Message):  # an inaccessible one cannot be edited
            await query.message.edit_text(order_service.pay_closed_text(order, lang), reply_markup=None)


def _cancel_failure(exc: DomainError | StripeFailure, public_id: str, lang: str) -> Markup:
    if isinstance(exc, PaymentNotAllowed) and exc.key.startswith("pay.error."):
        return t(exc.key.replace("pay.error.", "pay.cancel_refused.", 1), lang, order=public_id)
    if isinstance(exc, DomainError):
        return t(exc.key, lang, **{"order": public_id, **exc.values})
    return t("stripe.cancel_failed", lang, order=public_id)


def not_awaiting(order: Order, lang: str, *, cancelling: bool = False) -> str | None:
    """Why the order cannot be paid (or cancelled) any more, per state, as an alert's text; None
    while it awaits payment."""
    if order.state == order_service.AWAITING_PAYMENT:
        return None
    prefix = "pay.cancel_refused" if cancelling else "pay.error"
    return plain(f"{prefix}.{state_group(order.state)}", lang, order=order.public_id)
