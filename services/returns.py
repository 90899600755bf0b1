"""Returns: a buyer sends back some or all of a delivered order, an admin approves or rejects.

- Within RETURN_DAYS of delivery (the first time the order reached `delivered`, from its order events:
  a rejected request puts the order back in `delivered` without restarting the window) the buyer
  chooses lines and quantities and gives a reason: `request_return` moves the order delivered →
  return_requested (the state machine's compare-and-set, so a double submission makes one request),
  writes the request and its lines, tells the buyer and posts the request to the admin group with
  Approve / Reject buttons.
- `approve` decides with a compare-and-set on the request (requested → approved; a second admin, a
  double tap or another process finds it decided and does nothing), then, in the same transaction:
  the order return_requested → returned, the returned units back on the shelf (sold → stock), the
  refund through the one refund path /cancel uses (services/admin.refund_payment: Stripe for cards,
  a recorded M-Pesa reversal owed), the audit row and the buyer's message.
- Refund amount: the returned lines at the price paid (less their share of a promo discount); the
  whole order's total, shipping included, only when the whole order comes back
  (then the whole payment is refunded, exactly as a cancel would). A partial refund leaves the
  payment `paid` and is recorded on the request (`refund_amount`, `refund_status`, Stripe's refund id).
- `reject` (requested → rejected, with the admin's optional reason) puts the order back to delivered.
- One approved return per order: `returned` is final.

Each action is one unit of work (services.admin.unit_of_work): the caller commits when it returns.
No aiogram here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer, Order, OrderEvent, OrderItem, Payment, ReturnLine, ReturnRequest, utcnow
from db.session import execute_dml
from services import admin, audit, buttons, inventory
from services import orders as sm
from services.errors import DomainError, InvalidInput, NotFound
from services.i18n import t
from services.markup import Markup, cut
from services.money import format_money
from services.notifications import alert_admins, enqueue, inline_keyboard

log = logging.getLogger(__name__)

REQUESTED, APPROVED, REJECTED = "requested", "approved", "rejected"
REASON_MAX = 500
NOTE_MAX = 500


class ReturnRefused(DomainError):
    """The order cannot be returned now; the key says why (not delivered, window over, …)."""

    key = "returns.refused.not_delivered"


# --- the window -----------------------------------------------------------------------------------


async def delivered_at(session: AsyncSession, order_id: int) -> datetime | None:
    """When the order first reached `delivered` (its order events), None if it never did."""
    return (
        await session.execute(
            select(func.min(OrderEvent.created_at)).where(
                OrderEvent.order_id == order_id, OrderEvent.to_state == sm.DELIVERED
            )
        )
    ).scalar_one_or_none()


async def deadline_of(session: AsyncSession, order: Order, days: int, now: datetime | None = None) -> datetime:
    """Until when the order may be returned; raises ReturnRefused (saying why) when it may not now."""
    if order.state == sm.RETURN_REQUESTED:
        raise ReturnRefused("returns.refused.pending", order=order.public_id)
    if order.state == sm.RETURNED:
        raise ReturnRefused("returns.refused.returned", order=order.public_id)
    delivered = await delivered_at(session, order.id) if order.state == sm.DELIVERED else None
    if delivered is None:
        raise ReturnRefused("returns.refused.not_delivered", order=order.public_id)
    deadline = delivered + timedelta(days=days)
    if (now or datetime.now(UTC)) > deadline:
        raise ReturnRefused("returns.refused.window_over", order=order.public_id, until=deadline, days=days)
    return deadline


async def returnable(session: AsyncSession, customer_id: int, public_id: str, days: int) -> tuple[Order, datetime]:
    """The customer's order (NotFound if not theirs) and its return deadline, or ReturnRefused."""
    order = await sm.get_order(session, public_id, customer_id=customer_id)
    return order, await deadline_of(session, order, days)


def chosen_lines(order: Order, quantities: dict[int, int]) -> list[tuple[OrderItem, int]]:
    """The order's lines with a quantity chosen (0 < q ≤ bought), in the order's line order.
    A line that is not the order's, or a quantity out of range, is refused."""
    items = {i.id: i for i in order.items}
    if any(item_id not in items for item_id in quantities):
        raise InvalidInput("returns.stale")
    lines = [(items[item_id], qty) for item_id, qty in sorted(quantities.items()) if qty > 0]
    if not lines:
        raise InvalidInput("returns.nothing_chosen")
    if any(qty > item.quantity for item, qty in lines):
        raise InvalidInput("returns.stale")
    return lines


def is_whole(order: Order, lines: list[tuple[OrderItem, int]]) -> bool:
    chosen = {item.id: qty for item, qty in lines}
    return all(chosen.get(i.id, 0) == i.quantity for i in order.items)


def refund_amount(order: Order, lines: list[tuple[OrderItem, int]]) -> int:
    """What was paid for the lines: their prices less their share of a promo discount (the share rounded
    up, so a refund never exceeds what was paid); the whole order's total when every unit comes back."""
    if is_whole(order, lines):
        return order.total
    amount = sum(item.unit_price * qty for item, qty in lines)
    if order.discount and order.subtotal:
        amount -= -(-order.discount * amount // order.subtotal)
    return max(amount, 0)


# --- the buyer asks -------------------------------------------------------------------------------


@admin.unit_of_work
async def request_return(
    session: AsyncSession,
    customer_id: int,
    public_id: str,
    quantities: dict[int, int],
    reason: str,
    settings: Settings,
) -> ReturnRequest:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("returns.reason_empty")
    if len(reason) > REASON_MAX:
        raise InvalidInput("returns.reason_too_long", n=len(reason), max=REASON_MAX)
    order, _ = await returnable(session, customer_id, public_id, settings.return_days)
    lines = chosen_lines(order, quantities)
    whole = is_whole(order, lines)
    units = sum(qty for _, qty in lines)
    # The state machine's compare-and-set: a second submission of the same order finds it moved.
    await sm.transition(
        session, order, sm.RETURN_REQUESTED, f"customer:{customer_id}", f"return of {units} unit(s)", notify=False
    )
    request = ReturnRequest(
        order_id=order.id,
        customer_id=customer_id,
        state=REQUESTED,
        reason=reason,
        whole_order=whole,
        currency=order.currency,
        refund_amount=refund_amount(order, lines),
        lines=[ReturnLine(order_item_id=item.id, quantity=qty) for item, qty in lines],
    )
    session.add(request)
    await session.flush()
    await _tell_buyer(
        session,
        customer_id,
        f"return:{request.id}:requested",
        lambda lang: t(
            "returns.received",
            lang,
            order=order.public_id,
            lines=_customer_lines(order, lines, lang),
            reason=reason,
            amount=format_money(request.refund_amount, order.currency, lang),
        ),
    )
    customer = await session.get(Customer, customer_id)  # loaded by _tell_buyer: no second query
    paid = await admin.paid_payment(session, order.id)
    alert_admins(
        session,
        settings.admin_chat_id,
        t(
            "admin.return.alert",
            None,
            request=request.id,
            order=order.public_id,
            name=cut((customer.first_name if customer else "") or "-", 64),
            lines=_admin_lines(order, lines),
            reason=cut(reason, REASON_MAX),
            amount=format_money(request.refund_amount, order.currency),
            whole=t("admin.return.whole") if whole else t("admin.return.partial"),
            provider=paid.provider if paid is not None else "-",
        ),
        kind="return_request",
        reply_markup=inline_keyboard(
            [
                [
                    (t("admin.return.approve_button"), buttons.approve_return(request.id)),
                    (t("admin.return.reject_button"), buttons.reject_return(request.id)),
                ]
            ]
        ),
        dedup_key=f"return:{request.id}:alert",
    )
    log.info("return.requested", extra={"order": order.public_id, "request": request.id, "units": units})
    return request


# --- the admins decide ----------------------------------------------------------------------------


async def get_request(session: AsyncSession, request_id: int) -> ReturnRequest:
    request = await session.get(ReturnRequest, request_id)
    if request is None:
        raise NotFound("admin.return.not_found", request=request_id)
    return request


async def _decide(session: AsyncSession, request_id: int, to_state: str, actor: str, note: str | None) -> ReturnRequest:
    """requested → `to_state`, a compare-and-set that holds the row (PostgreSQL: until our commit;
    a concurrent decider waits, then finds it decided). Refuses a request decided already."""
    result = await execute_dml(
        session,
        update(ReturnRequest)
        .where(ReturnRequest.id == request_id, ReturnRequest.state == REQUESTED)
        .values(state=to_state, decided_by=audit.admin_id_of(actor), decided_at=utcnow(), decision_note=note)
        .execution_options(synchronize_session=False),
    )
    request = await get_request(session, request_id)
    await session.refresh(request)
    if result.rowcount != 1:
        raise DomainError("admin.return.already_decided", request=request_id, state=request.state)
    return request


@admin.unit_of_work
async def approve(
    session: AsyncSession,
    request_id: int,
    actor: str,
    providers: dict[str, Any],
    settings: Settings,
    *,
    name: str = "",
) -> tuple[ReturnRequest, Order, Payment | None]:
    """Approve: the order returned, the lines restocked, the refund made or recorded, the buyer told."""
    request = await _decide(session, request_id, APPROVED, actor, None)
    order = await session.get(Order, request.order_id)
    if order is None:  # the request's foreign key cascades: cannot happen
        raise NotFound("admin.return.not_found", request=request_id)
    await session.refresh(order)
    lines = [(line.item, line.quantity) for line in request.lines]
    units = sum(qty for _, qty in lines)
    await sm.transition(session, order, sm.RETURNED, actor, f"return #{request.id}: {units} unit(s)", notify=False)
    await inventory.return_sold(session, [(item.product_id, qty) for item, qty in lines])
    paid = await admin.paid_payment(session, order.id)
    outcome = "none"
    if paid is not None:
        outcome, refund_id = await admin.refund_payment(
            session,
            order,
            paid,
            providers,
            settings,
            amount=None if request.whole_order else request.refund_amount,
            key=f"return-{request.id}",
        )
        request.refund_reference = refund_id
    request.refund_status = outcome
    order.refund_status = outcome if outcome != "none" else None
    money = format_money(request.refund_amount, request.currency)
    audit.record(
        session,
        actor,
        name,
        "return_approve",
        f"return #{request.id}: "
        + ", ".join(f"{qty}× {item.sku}" for item, qty in lines)
        + f" restocked; refund: {outcome} {money}"
        + (f" via {paid.provider}" if paid is not None else ""),
        order_id=order.id,
    )
    await _tell_buyer(
        session,
        order.customer_id,
        f"return:{request.id}:approved",
        lambda lang: t(
            "returns.approved",
            lang,
            order=order.public_id,
            lines=_customer_lines(order, lines, lang),
            refund=t(
                f"returns.refund.{outcome}", lang, amount=format_money(request.refund_amount, order.currency, lang)
            ),
        ),
        lambda lang: inline_keyboard([[(t("orders.button.view", lang), buttons.view_order(order.public_id))]]),
    )
    log.info("return.approved", extra={"order": order.public_id, "request": request.id, "refund": outcome})
    return request, order, paid


@admin.unit_of_work
async def reject(
    session: AsyncSession, request_id: int, reason: str | None, actor: str, *, name: str = ""
) -> tuple[ReturnRequest, Order]:
    """Reject (with the admin's reason, optional): the order back to delivered, the buyer told why."""
    reason = (reason or "").strip()[:NOTE_MAX] or None
    request = await _decide(session, request_id, REJECTED, actor, reason)
    order = await session.get(Order, request.order_id)
    if order is None:
        raise NotFound("admin.return.not_found", request=request_id)
    await session.refresh(order)
    note = f"return #{request.id} rejected" + (f": {reason}" if reason else "")
    await sm.transition(session, order, sm.DELIVERED, actor, note, notify=False)
    audit.record(session, actor, name, "return_reject", note, order_id=order.id)
    await _tell_buyer(
        session,
        order.customer_id,
        f"return:{request.id}:rejected",
        lambda lang: t(
            "returns.rejected",
            lang,
            order=order.public_id,
            reason=t("returns.rejected_reason", lang, reason=reason)
            if reason
            else t("returns.rejected_no_reason", lang),
        ),
    )
    log.info("return.rejected", extra={"order": order.public_id, "request": request.id})
    return request, order


async def _tell_buyer(
    session: AsyncSession,
    customer_id: int,
    dedup_key: str,
    text: Callable[[str], Markup],
    markup: Callable[[str], dict[str, Any]] | None = None,
) -> None:
    """A step of the return told to the buyer in their language, through the outbox (in this transaction)."""
    customer = await session.get(Customer, customer_id)
    if customer is None or customer.unreachable:
        return
    lang = customer.language
    reply_markup = markup(lang) if markup is not None else None
    enqueue(session, customer.chat_id, text(lang), kind="return", dedup_key=dedup_key, reply_markup=reply_markup)


# --- rendering helpers (texts from the catalogue) -----------------------------------------------


def _customer_lines(order: Order, lines: list[tuple[OrderItem, int]], lang: str) -> Markup:
    return Markup("\n").join(
        t(
            "returns.line",
            lang,
            qty=qty,
            name=cut(item.name, 100),
            amount=format_money(item.unit_price * qty, order.currency, lang),
        )
        for item, qty in lines[:30]
    )


def _admin_lines(order: Order, lines: list[tuple[OrderItem, int]]) -> Markup:
    return Markup("\n").join(
        t(
            "admin.return.line",
            None,
            qty=qty,
            of=item.quantity,
            name=cut(item.name, 100),
            sku=item.sku,
            amount=format_money(item.unit_price * qty, order.currency),
        )
        for item, qty in lines[:30]
    )
