"""Returns: the buyer's "↩ Return items" (on a delivered order's detail) and /return ORDER_ID, and the
admin group's Approve / Reject… buttons on the request (services/returns.py does the work).

The buyer chooses lines and quantities with ➖/➕ (`ReturnStep`, "ret:<action>:<order>:<line>"); the
choice lives in the conversation state (`ReturnFlow`), then the reason is typed (at most
`returns.REASON_MAX` characters). What comes of the request reaches the buyer through the outbox.

Admins (`AdminOnly`, rights asked afresh before Approve, which refunds, and before a rejection):
`ReturnDecision` "adr:a|r:<request>". Reject… asks for the reason as a reply to its prompt ("-" for
none); the reply is taken from that admin in the admin group only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Any

from aiogram import Bot, F
from aiogram.filters import Command, CommandObject, Filter, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ForceReply, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer, Order
from handlers.admin import AdminOnly, is_admin, refusal
from handlers.buttons import Id, ReturnAction, ReturnStep
from handlers.filters import Buttons, PrivateChat, Text
from handlers.render import kb, send, show
from handlers.routing import Routes
from services import returns
from services.errors import DomainError
from services.i18n import plain, t
from services.markup import Markup, cut
from services.money import format_money
from services.times import customer_date

log = logging.getLogger(__name__)


class DecisionAction(StrEnum):
    APPROVE = "a"
    REJECT = "r"  # asks for the reason


class ReturnDecision(CallbackData, prefix="adr"):
    """The admin group's buttons on a return request (services/buttons.py writes the same strings)."""

    action: DecisionAction
    request: Id


class ReturnFlow(StatesGroup):
    choosing = State()  # ➖/➕ on the order's lines
    reason = State()  # waiting for the typed reason


class RejectFlow(StatesGroup):
    reason = State()  # waiting for the admin's reply to the Reject… prompt


class RejectReply(Filter):
    """A reply, in the admin group, to the bot's Reject… prompt this admin was shown."""

    async def __call__(self, message: Message, settings: Settings, state: FSMContext) -> bool | dict[str, Any]:
        if message.chat.id != settings.admin_chat_id or message.reply_to_message is None:
            return False
        if (message.text or "/").startswith("/") or await state.get_state() != RejectFlow.reason.state:
            return False
        data = await state.get_data()
        if data.get("prompt") != message.reply_to_message.message_id:
            return False
        return {"return_request": int(data.get("request", 0))}


router = Routes("returns")
router.callback_query.filter(Buttons(ReturnStep, ReturnDecision))


# --- the buyer --------------------------------------------------------------------------------------


def _refusal(exc: DomainError, lang: str, settings: Settings) -> str:
    """A refusal in the buyer's words: dates in the shop's zone, what they typed shortened."""
    values = {
        k: customer_date(v, settings.shop_zone, lang)
        if isinstance(v, datetime)
        else (cut(v, 24) if isinstance(v, str) else v)
        for k, v in exc.values.items()
    }
    return t(exc.key, lang, **values)


def _chosen(data: dict[str, Any], public_id: str) -> dict[int, int]:
    if data.get("return_order") != public_id:
        return {}
    return {int(k): int(v) for k, v in (data.get("return_qty") or {}).items()}


def choose_screen(
    order: Order, chosen: dict[int, int], deadline: datetime, lang: str, settings: Settings
) -> tuple[str, InlineKeyboardMarkup]:
    pid = order.public_id
    lines = [
        t("returns.choose_line", lang, name=cut(i.name, 100), chosen=chosen.get(i.id, 0), qty=i.quantity)
        for i in order.items[:20]
    ]
    picked = [(i, chosen[i.id]) for i in order.items if chosen.get(i.id)]
    amount = returns.refund_amount(order, picked) if picked else 0
    text = t(
        "returns.choose",
        lang,
        order=pid,
        until=customer_date(deadline, settings.shop_zone, lang),
        lines=Markup("\n").join(lines),
        amount=format_money(amount, order.currency, lang),
    )
    rows: list[list[tuple[str, str]]] = [
        [
            ("➖", ReturnStep(action=ReturnAction.FEWER, public_id=pid, item=i.id).pack()),
            (
                f"{cut(i.name, 24)} · {chosen.get(i.id, 0)}/{i.quantity}",
                ReturnStep(action=ReturnAction.MORE, public_id=pid, item=i.id).pack(),
            ),
            ("➕", ReturnStep(action=ReturnAction.MORE, public_id=pid, item=i.id).pack()),
        ]
        for i in order.items[:20]
    ]
    rows.append([(t("returns.button.all", lang), ReturnStep(action=ReturnAction.ALL, public_id=pid).pack())])
    rows.append(
        [
            (t("returns.button.next", lang), ReturnStep(action=ReturnAction.NEXT, public_id=pid).pack()),
            (t("returns.button.cancel", lang), ReturnStep(action=ReturnAction.CANCEL, public_id=pid).pack()),
        ]
    )
    return text, kb(*rows)


async def _begin(
    session: AsyncSession, customer: Customer, public_id: str, lang: str, settings: Settings, state: FSMContext
) -> tuple[str, InlineKeyboardMarkup | None]:
    try:
        order, deadline = await returns.returnable(session, customer.id, public_id, settings.return_days)
    except DomainError as exc:
        return _refusal(exc, lang, settings), None
    await state.set_state(ReturnFlow.choosing)
    await state.set_data({"return_order": order.public_id, "return_qty": {}})
    return choose_screen(order, {}, deadline, lang, settings)


@router.message(Command("return", ignore_case=True), PrivateChat())
async def return_command(
    message: Message,
    command: CommandObject,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    settings: Settings,
    state: FSMContext,
) -> None:
    args = (command.args or "").split()
    if not args:
        await message.answer(t("returns.usage", lang))
        return
    text, markup = await _begin(session, customer, args[0], lang, settings, state)
    await send(message, text, markup)


@router.callback_query(ReturnStep.filter(F.action == ReturnAction.START), PrivateChat())
async def start_button(
    query: CallbackQuery,
    callback_data: ReturnStep,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    settings: Settings,
    state: FSMContext,
) -> None:
    await query.answer()
    text, markup = await _begin(session, customer, callback_data.public_id, lang, settings, state)
    if isinstance(query.message, Message):
        await query.message.answer(text, reply_markup=markup)


@router.callback_query(
    ReturnStep.filter(F.action.in_({ReturnAction.MORE, ReturnAction.FEWER, ReturnAction.ALL, ReturnAction.NEXT})),
    PrivateChat(),
)
async def choose_button(
    query: CallbackQuery,
    callback_data: ReturnStep,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    settings: Settings,
    state: FSMContext,
) -> None:
    pid = callback_data.public_id
    try:
        order, deadline = await returns.returnable(session, customer.id, pid, settings.return_days)
    except DomainError as exc:
        await query.answer()
        await state.clear()
        await show(query, _refusal(exc, lang, settings))
        return
    chosen = _chosen(await state.get_data(), order.public_id)
    item = next((i for i in order.items if i.id == callback_data.item), None)
    action = callback_data.action
    if action == ReturnAction.NEXT:
        if not any(chosen.values()):
            await query.answer(plain("returns.nothing_chosen", lang), show_alert=True)
            return
        await query.answer()
        await state.set_state(ReturnFlow.reason)
        picked = [(i, chosen[i.id]) for i in order.items if chosen.get(i.id)]
        lines = Markup("\n").join(
            t(
                "returns.line",
                lang,
                qty=q,
                name=cut(i.name, 100),
                amount=format_money(i.unit_price * q, order.currency, lang),
            )
            for i, q in picked
        )
        await show(
            query,
            t("returns.ask_reason", lang, order=order.public_id, lines=lines, max=returns.REASON_MAX),
            kb([(t("returns.button.cancel", lang), ReturnStep(action=ReturnAction.CANCEL, public_id=pid).pack())]),
        )
        return
    await query.answer()
    if action == ReturnAction.ALL:
        chosen = {i.id: i.quantity for i in order.items}
    elif item is not None and action == ReturnAction.MORE:
        chosen[item.id] = min(item.quantity, chosen.get(item.id, 0) + 1)
    elif item is not None:
        chosen[item.id] = max(0, chosen.get(item.id, 0) - 1)
    await state.set_state(ReturnFlow.choosing)
    await state.set_data({"return_order": order.public_id, "return_qty": {str(k): v for k, v in chosen.items() if v}})
    await show(query, *choose_screen(order, chosen, deadline, lang, settings))


@router.callback_query(ReturnStep.filter(F.action == ReturnAction.CANCEL), PrivateChat())
async def cancel_button(query: CallbackQuery, lang: str, state: FSMContext) -> None:
    await query.answer()
    await state.clear()
    await show(query, t("returns.cancelled", lang))


@router.message(StateFilter(ReturnFlow.reason), PrivateChat(), Text())
async def reason_typed(
    message: Message,
    session: AsyncSession,
    customer: Customer,
    lang: str,
    settings: Settings,
    state: FSMContext,
) -> None:
    """The reason: the request is made; the buyer hears of it through the outbox."""
    reason = (message.text or "").strip()
    if len(reason) > returns.REASON_MAX:
        await message.answer(t("returns.reason_too_long", lang, n=len(reason), max=returns.REASON_MAX))
        return
    data = await state.get_data()
    public_id = str(data.get("return_order", ""))
    try:
        await returns.request_return(session, customer.id, public_id, _chosen(data, public_id), reason, settings)
    except DomainError as exc:
        await state.clear()
        await message.answer(_refusal(exc, lang, settings))
        return
    await state.clear()


class NotText(Filter):
    async def __call__(self, message: Message) -> bool:
        return message.text is None


@router.message(StateFilter(ReturnFlow.reason), PrivateChat(), NotText())
async def reason_not_text(message: Message, lang: str) -> None:
    await message.answer(t("returns.reason_as_text", lang, max=returns.REASON_MAX))


# --- the admins ---------------------------------------------------------------------------------------


def _actor(query: CallbackQuery | Message) -> str:
    return f"admin:{query.from_user.id if query.from_user else 0}"


def _name(query: CallbackQuery | Message) -> str:
    return query.from_user.full_name if query.from_user else ""


@router.callback_query(ReturnDecision.filter(F.action == DecisionAction.APPROVE), AdminOnly(fresh=True))
async def approve_button(
    query: CallbackQuery,
    callback_data: ReturnDecision,
    session: AsyncSession,
    settings: Settings,
    providers: dict[str, Any],
) -> None:
    """The result replaces the request's buttons; a refusal (decided already) is said under it."""
    await query.answer()
    message = query.message
    if not isinstance(message, Message):
        return
    actor = _actor(query)
    try:
        request, order, payment = await returns.approve(
            session, callback_data.request, actor, providers, settings, name=_name(query)
        )
    except DomainError as exc:
        log.info("admin.refused_action", extra={"command": "return_approve", "actor": actor, "reason": exc.key})
        await message.answer(refusal(exc))
        return
    text = t(
        f"admin.return.approved.{request.refund_status or 'none'}",
        None,
        request=request.id,
        order=order.public_id,
        units=sum(line.quantity for line in request.lines),
        amount=format_money(request.refund_amount, request.currency),
        receipt=(payment.receipt_number if payment else None) or "-",
    )
    await message.edit_text(text, reply_markup=None)


@router.callback_query(ReturnDecision.filter(F.action == DecisionAction.REJECT), AdminOnly())
async def reject_button(
    query: CallbackQuery, callback_data: ReturnDecision, session: AsyncSession, state: FSMContext
) -> None:
    """Reject… asks for the reason the buyer will read, as a reply ("-" for none)."""
    await query.answer()
    message = query.message
    if not isinstance(message, Message):
        return
    try:
        request = await returns.get_request(session, callback_data.request)
    except DomainError as exc:
        await message.answer(refusal(exc))
        return
    if request.state != returns.REQUESTED:
        await message.answer(t("admin.return.already_decided", None, request=request.id, state=request.state))
        return
    prompt = await message.answer(
        t("admin.return.reject_prompt", None, request=request.id),
        reply_markup=ForceReply(selective=True, input_field_placeholder=plain("admin.return.reject_placeholder")),
    )
    await state.set_state(RejectFlow.reason)
    await state.set_data({"request": request.id, "prompt": prompt.message_id})


@router.callback_query(ReturnDecision.filter())  # the router's filter let ours in: AdminOnly turned this one away
async def refuse_decision(query: CallbackQuery, callback_data: ReturnDecision) -> None:
    log.warning(
        "admin.refused_button",
        extra={"user_id": query.from_user.id, "action": f"return:{callback_data.action.value}"},
    )
    await query.answer(t("admin.refused"), show_alert=True)


@router.message(RejectReply())
async def reject_reply(
    message: Message, return_request: int, bot: Bot, session: AsyncSession, settings: Settings, state: FSMContext
) -> None:
    user_id = message.from_user.id if message.from_user else 0
    if not await is_admin(bot, settings, message.chat.id, user_id, fresh=True):
        log.warning("admin.refused", extra={"command": "return_reject", "user_id": user_id, "chat_id": message.chat.id})
        await state.clear()
        await message.reply(t("admin.refused"))
        return
    await state.clear()
    text = (message.text or "").strip()
    reason = None if text in ("-", "—") else text
    actor = _actor(message)
    try:
        request, order = await returns.reject(session, return_request, reason, actor, name=_name(message))
    except DomainError as exc:
        log.info("admin.refused_action", extra={"command": "return_reject", "actor": actor, "reason": exc.key})
        await message.reply(refusal(exc))
        return
    await message.reply(
        t("admin.return.rejected", None, request=request.id, order=order.public_id, reason=cut(reason or "-", 200))
    )
