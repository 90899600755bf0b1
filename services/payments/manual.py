"""Orders no one can pay online: the admin group hears of each, the customer may be told how to pay
by hand (Lipa na M-Pesa to the shop's Paybill, MPESA_MANUAL_PAYBILL), and an admin records the
money with `/paid <order> <receipt code>`, which settles it as any M-Pesa payment (the state machine,
the customer's receipt, the new-order alert).

The receipt code is the payment's reference; it is stored as the attempt's `checkout_request_id`
("manual:<code>"), whose unique index keeps one code from paying two orders.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer, Order, Outbox, Payment
from services import audit
from services import orders as order_sm
from services.admin import state_name, unit_of_work
from services.errors import DomainError, InvalidInput, NotFound
from services.i18n import t
from services.markup import Markup, cut
from services.money import format_money, parse_amount
from services.notifications import alert_admins
from services.payments import common
from services.payments.pay_message import record_pay_message
from services.phones import format_phone

log = logging.getLogger(__name__)

RECEIPT_CODE = re.compile(r"^[A-Z0-9]{10}$")  # an M-Pesa transaction code, e.g. RLA4B7C9XZ
MANUAL_REF = "manual:"
# The orders /paid may settle: unpaid, or ended unpaid (money that came late revives them, when the
# stock is still there, as a late payment does).
SETTLEABLE = (order_sm.AWAITING_PAYMENT, order_sm.EXPIRED, order_sm.CANCELLED)
PAID_BEFORE = (common.PAID, common.REFUND_DUE, common.REFUNDED)  # money came in for these payments


@dataclass(frozen=True, slots=True)
class Paybill:
    """What the customer types on the phone: Lipa na M-Pesa → Paybill → business → account → amount."""

    business: str
    account: str
    amount: str


def paybill_for(order: Order, settings: Settings, lang: str | None = None) -> Paybill | None:
    """The manual M-Pesa instructions for a KES order, when the shop has a Paybill for them."""
    if not settings.mpesa_manual_paybill or order.currency != "KES":
        return None
    return Paybill(
        business=settings.mpesa_manual_paybill,
        account=f"{settings.mpesa_manual_account_prefix}{order.public_id}",
        amount=format_money(order.total, order.currency, lang),
    )


async def record_offer(
    session: AsyncSession, order: Order, chat_id: int, message_id: int, lang: str, *, payable: bool, settings: Settings
) -> None:
    """The payment screen for `order` was sent as `message_id`: it becomes the order's live payment
    message (`pay_message.record_pay_message`) and, for an order no one can pay online, the admin
    group hears of it once, in the same transaction."""
    await record_pay_message(session, order.public_id, chat_id, message_id, lang)
    if not payable:
        await _announce_unpayable(session, order, settings)


def announcer(payable: Callable[[Order], bool], settings: Settings) -> Callable[[AsyncSession, Order], Awaitable[None]]:
    """For `orders.checkout(on_placed=…)`: a new order no one can pay online (`payable` says) is
    posted to the admin group in the transaction that places it, so no crash or failed send in
    between can leave it unknown to the shop."""

    async def announce(session: AsyncSession, order: Order) -> None:
        if not payable(order):
            await _announce_unpayable(session, order, settings)

    return announce


async def _announce_unpayable(session: AsyncSession, order: Order, settings: Settings) -> None:
    key = f"unpayable:{order.id}"
    if (
        settings.admin_chat_id is None
        or (await session.execute(select(exists().where(Outbox.dedup_key == key)))).scalar()
    ):
        return
    customer = await session.get(Customer, order.customer_id)  # not `order.customer`: a new order's is not loaded
    text = unpayable_alert(order, customer, settings)
    alert_admins(session, settings.admin_chat_id, text, kind="unpayable", dedup_key=key)
    log.info("payments.unpayable_announced", extra={"order": order.public_id})


def unpayable_alert(order: Order, customer: Customer | None, settings: Settings) -> Markup:
    """The admin group's message about an order that cannot be paid online: who, what, how much,
    and what the customer was told."""
    items = Markup("\n").join(t("admin.alert.new_order_item", None, qty=i.quantity, name=i.name) for i in order.items)
    paybill = paybill_for(order, settings)
    told = (
        t("admin.manual_pay.told_paybill", None, **_paybill_values(paybill), order=order.public_id)
        if paybill is not None
        else t("admin.manual_pay.told_wait", None, order=order.public_id)
    )
    return t(
        "admin.manual_pay.unpayable",
        None,
        order=order.public_id,
        items=items,
        total=format_money(order.total, order.currency),
        customer=cut(customer.first_name, 64) if customer is not None else str(order.customer_id),
        phone=format_phone(order.phone),
        told=told,
    )


def _paybill_values(paybill: Paybill) -> dict[str, str]:
    return {"paybill": paybill.business, "account": paybill.account, "amount": paybill.amount}


def customer_instructions(order: Order, settings: Settings, lang: str) -> Markup | None:
    """The customer's manual M-Pesa instructions (None when the shop has no Paybill for the order)."""
    paybill = paybill_for(order, settings, lang)
    return t("pay.manual.paybill", lang, **_paybill_values(paybill)) if paybill is not None else None


@unit_of_work
async def mark_paid(
    session: AsyncSession,
    public_id: str,
    code: str,
    amount: str,
    actor: str,
    settings: Settings,
    *,
    name: str = "",
) -> tuple[Order, str]:
    """An admin saw the money arrive: settle the order with M-Pesa receipt `code` for `amount` (as
    the M-Pesa message shows it: the admin checks it, we compare it with the total). Returns the
    order and what happened: paid | late_paid | refund_due (late, and its stock is gone) | already
    (this code was recorded for this order before: nothing done again)."""
    code = code.strip().upper()
    if not RECEIPT_CODE.match(code):
        raise InvalidInput("admin.manual_pay.bad_code", code=code[:20])
    received = parse_amount(amount)
    if received is None:
        raise InvalidInput("admin.manual_pay.bad_amount", amount=amount[:20])
    try:
        order = await order_sm.get_order(session, public_id, for_update=True)
    except NotFound:
        raise DomainError("admin.manual_pay.not_found", order=public_id.strip().upper()[:20]) from None
    used = await _payment_with_code(session, code)
    if used is not None:
        if used.order_id == order.id and used.checkout_request_id == MANUAL_REF + code:
            return order, "already"
        raise DomainError("admin.manual_pay.code_used", code=code, other=used.order.public_id)
    _refuse_unsettleable(order, received)
    if await _has_paid_payment(session, order):  # paid before (and refunded, or owed back): not again by hand
        raise DomainError("admin.manual_pay.paid_before", order=order.public_id)
    if order.state == order_sm.AWAITING_PAYMENT and await order_sm.mpesa_prompt_open(session, order):
        raise DomainError("admin.manual_pay.prompt_open", order=order.public_id)  # it could be paid twice
    payment = Payment(
        order=order,
        provider="mpesa",
        state=common.PENDING,
        amount=order.total,
        currency=order.currency,
        phone=order.phone,
        checkout_request_id=MANUAL_REF + code,
    )
    session.add(payment)
    try:
        await session.flush()
    except IntegrityError:  # the same code recorded for another order this very moment
        raise DomainError("admin.manual_pay.code_used", code=code, other="-") from None
    outcome = await common.settle_paid(
        session,
        payment,
        amount=order.total,
        currency=order.currency,
        reference=code,
        raw={"manual": actor},
        actor=actor,
        admin_chat_id=settings.admin_chat_id,
        low_stock_threshold=settings.low_stock_threshold,
        zone=settings.shop_zone,
    )
    audit.record(session, actor, name, "paid", f"M-Pesa {code} (by hand); {outcome}", order_id=order.id)
    return order, outcome


async def _payment_with_code(session: AsyncSession, code: str) -> Payment | None:
    """The payment that already carries M-Pesa receipt `code`: recorded by hand, or received from a
    prompt (Daraja's receipt number), for any order."""
    stmt = select(Payment).where(or_(Payment.checkout_request_id == MANUAL_REF + code, Payment.receipt_number == code))
    return (await session.execute(stmt.limit(1))).unique().scalars().first()


def _refuse_unsettleable(order: Order, received: int) -> None:
    """Only an unpaid (or lapsed, never refunded) KES order, for exactly its total, is paid by hand:
    M-Pesa moves shillings, and a short payment is the shop's to chase, not to ship."""
    if order.state not in SETTLEABLE or order.refund_status:
        raise DomainError("admin.manual_pay.not_unpaid", order=order.public_id, state=state_name(order.state))
    if order.currency != "KES":
        raise DomainError(
            "admin.manual_pay.not_kes", order=order.public_id, total=format_money(order.total, order.currency)
        )
    if received != order.total:
        raise DomainError(
            "admin.manual_pay.wrong_amount",
            order=order.public_id,
            total=format_money(order.total, order.currency),
            received=format_money(received, order.currency),
        )


async def _has_paid_payment(session: AsyncSession, order: Order) -> bool:
    stmt = select(exists().where(Payment.order_id == order.id, Payment.state.in_(PAID_BEFORE)))
    return bool((await session.execute(stmt)).scalar())
