"""Paying by M-Pesa: the STK prompt, a Kenyan number when we don't have one, "Try again" (the same
number at once), "Use another number", and "Check payment status"."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from aiogram import F
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, MaybeInaccessibleMessageUnion, Message, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.models import Customer, Order, utcnow
from handlers.buttons import Pay, PayAction
from handlers.filters import Buttons, Text
from handlers.payments import own_order_apart, send_pay_message
from handlers.render import kb
from handlers.routing import Routes
from services.errors import DomainError
from services.i18n import plain, t
from services.money import format_money
from services.payments import mpesa_flow
from services.payments.mpesa import MpesaError
from services.phones import InvalidPhone, is_kenyan_mobile, mask_phone, normalize_phone

log = logging.getLogger(__name__)
router = Routes("pay_mpesa")
router.callback_query.filter(Buttons(Pay))
QUERY_MIN_INTERVAL = timedelta(seconds=5)


class MpesaPhone(StatesGroup):
    waiting = State()


def _kenyan_number(order: Order, customer: Customer | None) -> str | None:
    for candidate in (order.phone, customer.phone if customer is not None else None):
        if is_kenyan_mobile(candidate):
            return candidate
    return None


@router.callback_query(Pay.filter(F.action == PayAction.MPESA))
async def pay_with_mpesa(
    query: CallbackQuery,
    callback_data: Pay,
    event_from_user: User,
    state: FSMContext,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Takes no session: the prompt is a slow HTTP call, and the flow opens its own short ones."""
    await _prompt(query, callback_data.public_id, event_from_user, state, lang, providers, settings, session_factory)


@router.callback_query(Pay.filter(F.action == PayAction.MPESA_RETRY))
async def retry_mpesa(
    query: CallbackQuery,
    callback_data: Pay,
    event_from_user: User,
    state: FSMContext,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """ "Try again" after a failed prompt: the number last prompted gets a new prompt at once."""
    try:
        _, last = await mpesa_flow.last_attempt(session_factory, callback_data.public_id, event_from_user.id)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return
    number = last.phone if last is not None and is_kenyan_mobile(last.phone) else None
    await _prompt(
        query, callback_data.public_id, event_from_user, state, lang, providers, settings, session_factory, number
    )


@router.callback_query(Pay.filter(F.action == PayAction.MPESA_NUMBER))
async def other_number(
    query: CallbackQuery,
    callback_data: Pay,
    event_from_user: User,
    state: FSMContext,
    lang: str,
    providers: dict[str, Any],
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """ "Use another number": ask for it; the typed number gets the prompt (typed_mpesa_phone)."""
    found = await own_order_apart(query, session_factory, event_from_user.id, lang, callback_data.public_id)
    if found is None or query.message is None:
        return
    order, _ = found
    if "mpesa" not in providers or order.currency != "KES":
        await query.answer(t("mpesa.unavailable", lang), show_alert=True)
        return
    await query.answer()
    await state.set_state(MpesaPhone.waiting)
    await state.update_data(order=order.public_id)
    await query.message.answer(t("mpesa.ask_other_phone", lang))


async def _prompt(
    query: CallbackQuery,
    public_id: str,
    user: User,
    state: FSMContext,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    number: str | None = None,
) -> None:
    """Prompt `number` (else the order's or the customer's Kenyan number; asked for when neither is)."""
    found = await own_order_apart(query, session_factory, user.id, lang, public_id)
    if found is None or query.message is None:
        return
    order, customer = found
    if "mpesa" not in providers or order.currency != "KES":
        await query.answer(t("mpesa.unavailable", lang), show_alert=True)
        return
    msisdn = number or _kenyan_number(order, customer)
    await query.answer()
    if msisdn is None:
        await state.set_state(MpesaPhone.waiting)
        await state.update_data(order=order.public_id)
        await query.message.answer(t("mpesa.ask_phone", lang))
        return
    await _push(query.message, order.public_id, user.id, msisdn, lang, providers, settings, session_factory, state)


@router.message(StateFilter(MpesaPhone.waiting), Text())
async def typed_mpesa_phone(
    message: Message,
    event_from_user: User,
    state: FSMContext,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    try:
        msisdn = normalize_phone(message.text or "")
    except InvalidPhone as exc:
        await message.answer(t("mpesa.phone_invalid", lang, reason=t(exc.reason, lang)))
        return
    if not is_kenyan_mobile(msisdn):
        await message.answer(t("mpesa.phone_not_kenyan", lang))
        return
    order_id = (await state.get_data()).get("order", "")
    await state.clear()
    await _push(message, order_id, event_from_user.id, msisdn, lang, providers, settings, session_factory, state)


async def _push(
    message: MaybeInaccessibleMessageUnion,
    order_id: str,
    customer_id: int,
    msisdn: str,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    state: FSMContext,
) -> None:
    """Prompt `msisdn`; each answer with buttons becomes the order's live payment message."""
    try:
        payment = await mpesa_flow.start_stk(
            session_factory, providers["mpesa"], order_id, customer_id, msisdn, settings
        )
    except (mpesa_flow.PromptStillLive, mpesa_flow.PushUncertain) as exc:  # a prompt may be on the phone: wait or check
        markup = kb([(t("mpesa.check_status", lang), _button(PayAction.MPESA_STATUS, order_id))])
        await send_pay_message(message, order_id, t(exc.key, lang, **exc.values), markup, lang, session_factory)
        return
    except mpesa_flow.PhonePromptLimit as exc:  # that number had its prompts this hour: another may be typed
        await state.set_state(MpesaPhone.waiting)
        await state.update_data(order=order_id)
        await message.answer(t(exc.key, lang, **exc.values))
        return
    except DomainError as exc:
        await message.answer(t(exc.key, lang, **exc.values))
        return
    except MpesaError as exc:
        markup = kb(
            [(t("pay.button.try_again", lang), _button(PayAction.MPESA_RETRY, order_id))],
            [(t("mpesa.button.other_number", lang), _button(PayAction.MPESA_NUMBER, order_id))],
        )
        await send_pay_message(message, order_id, t("mpesa.push_failed", lang), markup, lang, session_factory)
        log.info("mpesa.push_failed_told_customer", extra={"order": order_id, "code": exc.code})
        return
    text = t(
        "mpesa.check_phone",
        lang,
        phone=mask_phone(msisdn),
        total=format_money(payment.amount, "KES", lang),
        order=order_id,
    )
    markup = kb(
        [(t("mpesa.check_status", lang), _button(PayAction.MPESA_STATUS, order_id))],
        [(t("pay.button.cancel_order", lang), _button(PayAction.CANCEL, order_id))],
    )
    await send_pay_message(message, order_id, text, markup, lang, session_factory)


def _button(action: PayAction, public_id: str) -> str:
    return Pay(action=action, public_id=public_id).pack()


@router.callback_query(Pay.filter(F.action == PayAction.MPESA_STATUS))
async def check_status(
    query: CallbackQuery,
    callback_data: Pay,
    event_from_user: User,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Takes no session: the query to Daraja is a slow HTTP call, and the flow opens its own."""
    try:
        order, payment = await mpesa_flow.last_attempt(session_factory, callback_data.public_id, event_from_user.id)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return
    if payment is None:
        await query.answer(t("mpesa.no_attempt", lang), show_alert=True)
        return
    state = payment.state
    # Daraja rate-limits the query: a button pressed again within seconds reuses the last answer.
    asked_lately = payment.query_attempts > 0 and utcnow() - payment.updated_at < QUERY_MIN_INTERVAL
    if state == "pending" and "mpesa" in providers and not asked_lately:
        state = await mpesa_flow.query_and_settle(session_factory, providers["mpesa"], payment.id, settings)
        state = {"duplicate": "paid", "late_paid": "paid"}.get(state, state)
    await query.answer(
        plain(
            f"mpesa.status.{state if state in ('paid', 'failed', 'pending') else 'other'}", lang, order=order.public_id
        ),
        show_alert=True,
    )
