"""Checkout, as a guided flow: zone → phone → email → address → summary → Confirm.

The zone chosen replaces the zone buttons ("🚚 Delivery: Nairobi Metro ✓"). Inside Kenya the
recipient's number must be Kenyan; outside Nairobi the courier delivers to one of its branches, so
the address step asks for the town and the branch. No zone takes a P.O. Box (services/zones.py).
"Cancel" (button or /cancel) leaves at any step with the cart intact; /cancel outside any flow says
there is nothing to cancel. The summary's ✏️ buttons ask for one field again and come back to the
summary with everything else kept. Confirm places the order, which reserves the stock, then offers
payment.

On the summary, "🏷 Promo code" asks for a code; the summary comes back with the discount and the new
total, or with the reason the code does not apply (and without it). "Remove code" drops it. Confirm
claims a use of the code with the order (services/promos.py); a code that stopped applying since the
summary (switched off, ended, used up) places nothing: the summary comes back without it, with the
reason, for the customer to decide. Only the newest summary keeps its buttons.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import F
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InaccessibleMessage,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer
from handlers.buttons import (
    MENU_CART,
    MENU_CATALOG,
    MENU_MAIN,
    MENU_ORDERS,
    CheckoutAction,
    CheckoutStep,
    ZoneChoice,
)
from handlers.filters import Buttons, NotCommand, PrivateChat, SharedContact, Text, TextIn
from handlers.orders import join_bounded
from handlers.payments import offer_payment, payment_methods
from handlers.render import kb, show
from handlers.routing import Routes
from services import cart as cart_service
from services import orders as order_service
from services import promos
from services.emails import InvalidEmail, normalize_email
from services.errors import DomainError, InvalidInput
from services.i18n import plain, t
from services.markup import Markup, cut
from services.money import format_money
from services.payments import manual
from services.phones import InvalidPhone, WrongCountry, format_phone, is_of_country, normalize_phone
from services.zones import ADDRESS_MAX, ZONES, Zone, get_zone, normalize_address

log = logging.getLogger(__name__)
router = Routes("checkout")
router.callback_query.filter(Buttons(CheckoutStep))
ALERT_LIMIT = 200  # Telegram's limit for a callback answer's text
CANCEL = CheckoutStep(action=CheckoutAction.CANCEL).pack()
CONFIRM = CheckoutStep(action=CheckoutAction.CONFIRM).pack()
PROMO = CheckoutStep(action=CheckoutAction.PROMO).pack()
PROMO_REMOVE = CheckoutStep(action=CheckoutAction.PROMO_REMOVE).pack()
SUMMARY = CheckoutStep(action=CheckoutAction.SUMMARY).pack()
EDIT_PHONE = CheckoutStep(action=CheckoutAction.EDIT_PHONE).pack()
EDIT_EMAIL = CheckoutStep(action=CheckoutAction.EDIT_EMAIL).pack()
EDIT_ADDRESS = CheckoutStep(action=CheckoutAction.EDIT_ADDRESS).pack()
EMPTY_CART = "checkout.cart_empty"


class Checkout(StatesGroup):
    zone = State()
    phone = State()
    email = State()
    address = State()
    confirm = State()
    promo = State()  # waiting for a promo code typed from the summary


def zone_keyboard(lang: str) -> Any:
    rows = [
        [
            (
                t(f"zone.{z.code}", lang, price=format_money(z.shipping, z.currency, lang)),
                ZoneChoice(action="z", zone=z.code).pack(),
            )
        ]
        for z in ZONES.values()
    ]
    rows.append([(t("checkout.cancel", lang), CANCEL)])
    return kb(*rows)


def phone_keyboard(customer: Customer, zone: Zone, lang: str) -> ReplyKeyboardMarkup:
    """Share my phone, the saved number (one tap) when it suits the zone, and Cancel."""
    rows = [[KeyboardButton(text=plain("checkout.share_phone", lang), request_contact=True)]]
    if customer.phone and is_of_country(customer.phone, zone.country):
        rows.append([KeyboardButton(text=format_phone(customer.phone))])
    rows.append([KeyboardButton(text=plain("checkout.cancel", lang))])
    return ReplyKeyboardMarkup(keyboard=rows, resize_keyboard=True, one_time_keyboard=True)


def email_keyboard(customer: Customer, lang: str) -> ReplyKeyboardMarkup | ReplyKeyboardRemove:
    if not customer.email:
        return ReplyKeyboardRemove()
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=customer.email)], [KeyboardButton(text=plain("checkout.cancel", lang))]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


# --- entering and leaving ------------------------------------------------------------------------


def browse_keyboard(lang: str) -> Any:
    return kb([(t("checkout.browse_catalog", lang), MENU_CATALOG)], [(t("menu.back", lang), MENU_MAIN)])


async def _cannot_start(session: AsyncSession, customer: Customer) -> tuple[str, dict[str, Any]] | None:
    """Why checkout cannot begin (empty cart, a line over stock) as a text key and its values, for
    an alert (`plain`) or a message (`t`); None when it can."""
    lines = await cart_service.lines(session, customer.id)
    if not lines:
        return EMPTY_CART, {}
    problem = next((line for line in lines if not line.available), None)
    if problem is not None:
        return "checkout.line_unavailable", {"name": problem.product.name[:60], "n": max(problem.product.stock, 0)}
    return None


@router.callback_query(CheckoutStep.filter(F.action == CheckoutAction.START))
async def start_checkout(
    query: CallbackQuery, session: AsyncSession, customer: Customer, state: FSMContext, lang: str
) -> None:
    reason = await _cannot_start(session, customer)
    if reason is not None and reason[0] == EMPTY_CART:  # the cart screen was stale: offer the catalogue
        await query.answer()
        await show(query, t(EMPTY_CART, lang), browse_keyboard(lang))
        return
    if reason is not None:
        await query.answer(cut(plain(reason[0], lang, **reason[1]), ALERT_LIMIT), show_alert=True)
        return
    await query.answer()
    await state.set_state(Checkout.zone)
    await show(query, t("checkout.ask_zone", lang), zone_keyboard(lang))


@router.message(Command("checkout"))
async def checkout_command(
    message: Message, session: AsyncSession, customer: Customer, state: FSMContext, lang: str
) -> None:
    reason = await _cannot_start(session, customer)
    if reason is not None:
        await message.answer(
            t(reason[0], lang, **reason[1]), reply_markup=browse_keyboard(lang) if reason[0] == EMPTY_CART else None
        )
        return
    await state.set_state(Checkout.zone)
    await message.answer(t("checkout.ask_zone", lang), reply_markup=zone_keyboard(lang))


@router.callback_query(CheckoutStep.filter(F.action == CheckoutAction.CANCEL))
async def cancel_button(query: CallbackQuery, state: FSMContext, lang: str) -> None:
    await state.clear()
    await query.answer()
    await show(
        query, t("checkout.cancelled", lang), kb([(t("menu.cart", lang), MENU_CART), (t("menu.back", lang), MENU_MAIN)])
    )


@router.message(StateFilter(Checkout), Command("cancel"))
@router.message(StateFilter(Checkout), TextIn(lambda: _cancel_labels()))
async def cancel_typed(message: Message, state: FSMContext, lang: str) -> None:
    await state.clear()
    await message.answer(t("checkout.cancelled", lang), reply_markup=ReplyKeyboardRemove())


def _cancel_labels() -> set[str]:
    from services.i18n import available_languages

    return {plain("checkout.cancel", lang) for lang in available_languages()}


@router.message(Command("cancel"), PrivateChat(), StateFilter(None))
async def nothing_to_cancel(message: Message, lang: str) -> None:
    """/cancel outside any flow: say so, with the way on, rather than the generic help. (The admin
    group's /cancel ORDER is the admin router's, before this one; this takes private chats only.)"""
    await message.answer(t("checkout.nothing_to_cancel", lang), reply_markup=browse_keyboard(lang))


# --- the steps ------------------------------------------------------------------------------------


@router.callback_query(StateFilter(Checkout.zone), ZoneChoice.filter())
async def chose_zone(
    query: CallbackQuery, callback_data: ZoneChoice, customer: Customer, state: FSMContext, lang: str
) -> None:
    code = callback_data.zone
    if code not in ZONES:
        await query.answer(t("error.stale_button", lang), show_alert=True)
        return
    await query.answer()
    await state.update_data(zone=code)
    await state.set_state(Checkout.phone)
    # the zone buttons become the choice made: no stale zone buttons stay on screen
    await show(query, t("checkout.zone_chosen", lang, zone=t(f"zone.{code}.name", lang)))
    if query.message is not None:
        await _ask_phone(query.message, customer, ZONES[code], lang)


async def _ask_phone(message: Message | InaccessibleMessage, customer: Customer, zone: Zone, lang: str) -> None:
    key = "checkout.ask_phone" if zone.country == "KE" else "checkout.ask_phone_any"
    await message.answer(t(key, lang), reply_markup=phone_keyboard(customer, zone, lang))


async def _ask_address(message: Message | InaccessibleMessage, zone: Zone, lang: str) -> None:
    if zone.branch_pickup:
        text = t("checkout.ask_branch", lang, carrier=zone.carrier)
    else:
        text = t("checkout.ask_address", lang)
    await message.answer(text, reply_markup=ReplyKeyboardRemove())


async def _zone(state: FSMContext) -> Zone:
    return get_zone((await state.get_data())["zone"])


@router.message(StateFilter(Checkout.phone), SharedContact())
async def shared_contact(
    message: Message, session: AsyncSession, customer: Customer, state: FSMContext, lang: str
) -> None:
    contact = message.contact
    if contact is None or message.from_user is None or contact.user_id != message.from_user.id:
        await message.answer(
            t("checkout.contact_not_yours", lang), reply_markup=phone_keyboard(customer, await _zone(state), lang)
        )
        return
    await _accept_phone(message, session, customer, state, contact.phone_number, lang)


@router.message(StateFilter(Checkout.phone), Text())
async def typed_phone(
    message: Message, session: AsyncSession, customer: Customer, state: FSMContext, lang: str
) -> None:
    await _accept_phone(message, session, customer, state, message.text or "", lang)


async def _accept_phone(
    message: Message, session: AsyncSession, customer: Customer, state: FSMContext, raw: str, lang: str
) -> None:
    zone = await _zone(state)
    try:
        phone = normalize_phone(raw, country=zone.country)
    except WrongCountry:
        await message.answer(t("checkout.phone_not_kenyan", lang), reply_markup=phone_keyboard(customer, zone, lang))
        return
    except InvalidPhone as exc:
        await message.answer(
            t("checkout.phone_invalid", lang, reason=t(exc.reason, lang)),
            reply_markup=phone_keyboard(customer, zone, lang),
        )
        return
    customer.phone = phone
    await state.update_data(phone=phone)
    if await _back_to_summary(message, session, customer.id, state, lang, "checkout.updated.phone"):
        return
    await state.set_state(Checkout.email)
    await message.answer(t("checkout.ask_email", lang), reply_markup=email_keyboard(customer, lang))


@router.message(StateFilter(Checkout.email), Text())
async def typed_email(
    message: Message, session: AsyncSession, customer: Customer, state: FSMContext, lang: str
) -> None:
    try:
        email = normalize_email(message.text or "")
    except InvalidEmail as exc:
        await message.answer(t("checkout.email_invalid", lang, reason=t(exc.reason, lang)))
        return
    customer.email = email
    await state.update_data(email=email)
    if await _back_to_summary(message, session, customer.id, state, lang, "checkout.updated.email"):
        return
    await state.set_state(Checkout.address)
    await _ask_address(message, await _zone(state), lang)


@router.message(StateFilter(Checkout.address), Text())
async def typed_address(
    message: Message, session: AsyncSession, customer: Customer, state: FSMContext, lang: str
) -> None:
    try:
        address = normalize_address(await _zone(state), message.text or "")
    except InvalidInput as exc:
        await message.answer(t(exc.key, lang, **exc.values))
        return
    await state.update_data(address=address)
    if not await _back_to_summary(message, session, customer.id, state, lang, "checkout.updated.address"):
        await _show_summary(message, session, customer.id, state, lang)


async def _back_to_summary(
    message: Message, session: AsyncSession, customer_id: int, state: FSMContext, lang: str, updated: str
) -> bool:
    """After a field changed from the summary's ✏️ button: the summary again, everything else as it
    was (zone, promo code, the other fields). False when this is the first pass through the steps.
    The note goes with the reply keyboard's removal (the phone and email steps show one), which a
    message with inline buttons cannot carry."""
    if not (await state.get_data()).get("editing"):
        return False
    await state.update_data(editing=False)
    await message.answer(t(updated, lang), reply_markup=ReplyKeyboardRemove())
    await _show_summary(message, session, customer_id, state, lang)
    return True


# --- changing one field from the summary -----------------------------------------------------------

_EDITS = {
    CheckoutAction.EDIT_PHONE: "phone",
    CheckoutAction.EDIT_EMAIL: "email",
    CheckoutAction.EDIT_ADDRESS: "address",
}


@router.callback_query(CheckoutStep.filter(F.action.in_(set(_EDITS))))
async def edit_field(
    query: CallbackQuery, callback_data: CheckoutStep, customer: Customer, state: FSMContext, lang: str
) -> None:
    """✏️ on the summary: that one question again; its answer returns to the summary."""
    if await state.get_state() != Checkout.confirm.state:
        await query.answer(t("checkout.already_done", lang), show_alert=True)
        return
    await query.answer()
    await _drop_keyboard(query)
    field = _EDITS[callback_data.action]
    await state.update_data(editing=True)
    await state.set_state(getattr(Checkout, field))
    if not isinstance(query.message, Message):
        return
    zone = await _zone(state)
    if field == "phone":
        await _ask_phone(query.message, customer, zone, lang)
    elif field == "email":
        await query.message.answer(t("checkout.ask_email", lang), reply_markup=email_keyboard(customer, lang))
    else:
        await _ask_address(query.message, zone, lang)


# --- the promo code ----------------------------------------------------------------------------------


async def _drop_keyboard(query: CallbackQuery) -> None:
    """The summary (or prompt) pressed loses its buttons: only the newest summary is live."""
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)


@router.callback_query(CheckoutStep.filter(F.action == CheckoutAction.PROMO))
async def promo_button(query: CallbackQuery, state: FSMContext, lang: str) -> None:
    if await state.get_state() != Checkout.confirm.state:
        await query.answer(t("checkout.already_done", lang), show_alert=True)
        return
    await query.answer()
    await _drop_keyboard(query)
    await state.set_state(Checkout.promo)
    if query.message is not None:
        await query.message.answer(t("promo.ask", lang), reply_markup=kb([(t("promo.back_button", lang), SUMMARY)]))


@router.callback_query(CheckoutStep.filter(F.action.in_({CheckoutAction.PROMO_REMOVE, CheckoutAction.SUMMARY})))
async def promo_remove_or_back(
    query: CallbackQuery,
    callback_data: CheckoutStep,
    session: AsyncSession,
    customer_id: int,
    state: FSMContext,
    lang: str,
) -> None:
    if await state.get_state() not in (Checkout.confirm.state, Checkout.promo.state):
        await query.answer(t("checkout.already_done", lang), show_alert=True)
        return
    await query.answer()
    await _drop_keyboard(query)
    note = None
    if callback_data.action == CheckoutAction.PROMO_REMOVE:
        await state.update_data(promo=None)
        note = t("promo.removed", lang)
    if isinstance(query.message, Message):
        await _show_summary(query.message, session, customer_id, state, lang, note=note)


@router.message(StateFilter(Checkout.promo), Text())
async def typed_promo(message: Message, session: AsyncSession, customer_id: int, state: FSMContext, lang: str) -> None:
    """The code typed: the summary again, with it applied or with the reason it is not."""
    await state.update_data(promo=promos.normalize_code(message.text or "")[:40])
    await _show_summary(message, session, customer_id, state, lang, announce=True)


@router.message(StateFilter(Checkout), NotCommand())
async def unexpected_input(message: Message, state: FSMContext, lang: str) -> None:
    """Anything else mid-checkout (a sticker, a photo, text while buttons are expected)."""
    step = (await state.get_state() or "").rsplit(":", 1)[-1]
    if step == "address" and (await _zone(state)).branch_pickup:
        step = "branch"
    await message.answer(t(f"checkout.reask.{step}", lang))


async def _summary(
    session: AsyncSession, customer_id: int, data: dict[str, Any], lang: str
) -> tuple[str, order_service.Totals, promos.PromoRefused | None] | None:
    """The confirmation text, the totals it quotes and, when the customer's promo code does not
    apply, why (the totals are then without it). None when the cart emptied meanwhile."""
    lines = await cart_service.lines(session, customer_id)
    if not lines:
        return None
    zone = get_zone(data["zone"])
    totals = order_service.compute_totals([(line.product, line.quantity) for line in lines], zone)
    refused = None
    if data.get("promo"):
        try:
            applied = await promos.evaluate(session, data["promo"], totals.currency, totals.subtotal, lang=lang)
            totals = totals.with_promo(applied)
        except promos.PromoRefused as exc:
            refused = exc
    promo_line = (
        t(
            "promo.summary_line",
            lang,
            code=totals.promo_code,
            discount=format_money(totals.discount, zone.currency, lang),
        )
        if totals.promo_code
        else ""
    )
    items = join_bounded(
        [
            t(
                "checkout.summary_line",
                lang,
                qty=line.quantity,
                name=line.product.name,
                amount=format_money(
                    order_service.unit_price(line.product, zone.currency) * line.quantity, zone.currency, lang
                ),
            )
            for line in lines
        ],
        lang,
    )
    text = t(
        "checkout.summary",
        lang,
        items=items,
        zone=t(f"zone.{zone.code}.short", lang),
        subtotal=format_money(totals.subtotal, zone.currency, lang),
        shipping=format_money(totals.shipping, zone.currency, lang),
        promo=promo_line,
        total=format_money(totals.total, zone.currency, lang),
        phone=format_phone(data["phone"]),
        email=data["email"],
        address=cut(data["address"], ADDRESS_MAX),
    )
    return text, totals, refused


async def _show_summary(
    message: Message,
    session: AsyncSession,
    customer_id: int,
    state: FSMContext,
    lang: str,
    note: str | None = None,
    *,
    announce: bool = False,
) -> None:
    """Quote the order and wait for Confirm; the quoted total (and the promo code it includes) is
    kept so Confirm places exactly it. A code that does not apply is dropped, its reason shown above
    the summary; `announce`: a code just typed that applies is confirmed there too."""
    data = await state.get_data()
    quoted = await _summary(session, customer_id, data, lang)
    if quoted is None:
        await state.clear()
        await message.answer(t(EMPTY_CART, lang), reply_markup=browse_keyboard(lang))
        return
    text, totals, refused = quoted
    notes = [note] if note else []
    if refused is not None:
        notes.append(t("promo.not_applied", lang, reason=t(refused.key, lang, **refused.values)))
    elif announce and totals.promo_code:
        notes.append(
            t(
                "promo.applied",
                lang,
                code=totals.promo_code,
                discount=format_money(totals.discount, totals.currency, lang),
            )
        )
    await state.update_data(currency=totals.currency, total=totals.total, promo=totals.promo_code)
    await state.set_state(Checkout.confirm)
    promo_row = (
        (t("promo.remove_button", lang, code=totals.promo_code), PROMO_REMOVE)
        if totals.promo_code
        else (t("promo.button", lang), PROMO)
    )
    await message.answer(
        Markup("\n\n").join([*notes, text]),
        reply_markup=kb(
            [(t("checkout.confirm", lang), CONFIRM)],
            [promo_row],
            [
                (t("checkout.edit.phone", lang), EDIT_PHONE),
                (t("checkout.edit.email", lang), EDIT_EMAIL),
                (t("checkout.edit.address", lang), EDIT_ADDRESS),
            ],
            [(t("checkout.cancel", lang), CANCEL)],
        ),
    )


@router.callback_query(CheckoutStep.filter(F.action == CheckoutAction.CONFIRM))
async def confirm(
    query: CallbackQuery,
    session: AsyncSession,
    customer_id: int,
    state: FSMContext,
    lang: str,
    settings: Settings,
    providers: dict[str, Any],
) -> None:
    if await state.get_state() != Checkout.confirm.state:
        await query.answer(t("checkout.already_done", lang), show_alert=True)
        return
    data = await state.get_data()
    await state.clear()  # a second press of Confirm is now a stale button
    try:  # placed and committed before we say so
        order = await order_service.checkout(
            session,
            customer_id,
            quoted=(data.get("currency"), data.get("total")),
            zone_code=data["zone"],
            phone=data["phone"],
            email=data["email"],
            address=data["address"],
            reservation_minutes=settings.reservation_minutes,
            limits=order_service.Limits(
                settings.max_open_orders_per_customer, settings.max_reserved_units_per_customer
            ),
            promo_code=data.get("promo"),
            lang=lang,
            on_placed=manual.announcer(lambda order: bool(payment_methods(order, providers)), settings),
        )
    except promos.PromoRefused as exc:  # switched off, ended or used up since the summary: nothing placed
        log.info("checkout.promo_refused", extra={"reason": exc.key})
        await query.answer()
        await state.set_data({**data, "promo": None})
        if isinstance(query.message, Message):
            await query.message.edit_reply_markup(reply_markup=None)
            await _show_summary(
                query.message,
                session,
                customer_id,
                state,
                lang,
                note=t("promo.not_applied_at_confirm", lang, reason=t(exc.key, lang, **exc.values)),
            )
        return
    except order_service.QuoteChanged:
        log.info("checkout.quote_changed")
        await query.answer()
        await state.set_data(data)
        if isinstance(query.message, Message):
            await query.message.edit_reply_markup(reply_markup=None)
            await _show_summary(
                query.message, session, customer_id, state, lang, note=t("checkout.quote_changed", lang)
            )
        return
    except DomainError as exc:
        log.info("checkout.refused", extra={"reason": exc.key})
        await query.answer(cut(plain(exc.key, lang, **exc.values), ALERT_LIMIT), show_alert=True)
        if query.message is not None:
            buttons = [(t("menu.cart", lang), MENU_CART)]
            if isinstance(exc, order_service.LimitReached):  # paying an unpaid order is the way on
                buttons.append((t("menu.orders", lang), MENU_ORDERS))
            await query.message.answer(
                t("checkout.not_placed", lang, reason=t(exc.key, lang, **exc.values)), reply_markup=kb(buttons)
            )
        return
    await query.answer(plain("checkout.placed_toast", lang, order=order.public_id))
    if query.message is not None:
        if isinstance(query.message, Message):  # an inaccessible one cannot be edited
            await query.message.edit_reply_markup(reply_markup=None)
        await offer_payment(query.message, order, providers, lang, session=session, settings=settings)
