"""Paying by card: a Stripe Checkout link as an inline URL button."""

from __future__ import annotations

import logging
from typing import Any

from aiogram import F
from aiogram.types import CallbackQuery, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from handlers.buttons import Pay, PayAction
from handlers.filters import Buttons
from handlers.payments import own_order_apart, send_pay_message
from handlers.render import kb
from handlers.routing import Routes
from services.errors import DomainError
from services.i18n import t
from services.money import format_money
from services.payments.stripe import StripeFailure
from services.payments.stripe_flow import start_card_payment
from services.times import customer_time

log = logging.getLogger(__name__)
router = Routes("pay_card")
router.callback_query.filter(Buttons(Pay))


async def _return_url(query: CallbackQuery, settings: Settings) -> str:
    """Where Stripe sends the customer afterwards: SHOP_RETURN_URL, or a t.me deep link to this bot
    (getMe is cached by aiogram) when only the bare default is configured."""
    base = settings.shop_return_url.rstrip("/")
    if base in ("https://t.me", "http://t.me") and query.bot is not None:
        me = await query.bot.me()
        if me.username:
            return f"https://t.me/{me.username}"
    return base


@router.callback_query(Pay.filter(F.action == PayAction.CARD))
async def pay_by_card(
    query: CallbackQuery,
    callback_data: Pay,
    event_from_user: User,
    lang: str,
    providers: dict[str, Any],
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Takes no session: creating the link is a slow HTTP call, and the flow opens its own short ones."""
    found = await own_order_apart(query, session_factory, event_from_user.id, lang, callback_data.public_id)
    if found is None or query.message is None:
        return
    order, _ = found
    if "stripe" not in providers:
        await query.answer(t("stripe.unavailable", lang), show_alert=True)
        return
    await query.answer()
    try:
        payment = await start_card_payment(
            session_factory,
            providers["stripe"],
            order.public_id,
            event_from_user.id,
            settings,
            return_url=await _return_url(query, settings),
        )
    except DomainError as exc:
        await query.message.answer(t(exc.key, lang, **exc.values))
        return
    except StripeFailure:
        markup = kb([(t("pay.button.try_again", lang), Pay(action=PayAction.OFFER, public_id=order.public_id).pack())])
        await send_pay_message(query.message, order.public_id, t("stripe.failed", lang), markup, lang, session_factory)
        return
    until = customer_time(payment.expires_at, settings.shop_zone, lang) if payment.expires_at else "-"
    text = t(
        "stripe.pay_link",
        lang,
        order=order.public_id,
        total=format_money(payment.amount, payment.currency, lang),
        until=until,
    )
    markup = kb(
        [(t("stripe.pay_button", lang), payment.checkout_url or "")],
        [(t("pay.button.cancel_order", lang), Pay(action=PayAction.CANCEL, public_id=order.public_id).pack())],
    )
    await send_pay_message(query.message, order.public_id, text, markup, lang, session_factory)
