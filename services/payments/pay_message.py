"""The one live payment message per order. Every message the bot sends with an order's pay buttons
(the payment screen, M-Pesa's "check your phone", a card's pay link, "Try again" after a failure) is
recorded here as the order's `pay_message_id`: the message it replaces loses its buttons at once,
and the latest loses them when the order stops awaiting payment (`orders.close_pay_message`). So a
chat never holds pay buttons for an order that cannot be paid, nor two live screens for one order.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Order
from services import orders as order_sm
from services.i18n import t
from services.notifications import enqueue

log = logging.getLogger(__name__)


async def record_pay_message(session: AsyncSession, public_id: str, chat_id: int, message_id: int, lang: str) -> bool:
    """`message_id` in `chat_id` now carries the pay buttons of order `public_id`. Under the order's
    row lock (so a concurrent state change either sees this id or is seen here): while the order
    awaits payment the id is recorded and the message recorded before loses its buttons; once it no
    longer does, this message loses its buttons right away. The edits are queued in the caller's
    transaction. True when the message was recorded as the live one."""
    stmt = select(Order).where(Order.public_id == public_id).with_for_update(of=Order)
    order = (await session.execute(stmt.execution_options(populate_existing=True))).unique().scalar_one_or_none()
    if order is None:
        return False
    if order.state != order_sm.AWAITING_PAYMENT:
        _take_buttons_off(session, chat_id, message_id, order_sm.pay_closed_text(order, lang))
        log.info("payments.pay_message_closed_at_once", extra={"order": public_id, "state": order.state})
        return False
    previous, order.pay_message_id = order.pay_message_id, message_id
    if previous is not None and previous != message_id:
        _take_buttons_off(session, chat_id, previous, t("pay.moved", lang, order=public_id))
    return True


async def record_pay_message_apart(
    session_factory: async_sessionmaker[AsyncSession], public_id: str, chat_id: int, message_id: int, lang: str
) -> bool:
    """`record_pay_message` in a short transaction of its own: for a handler that holds no session
    (it waited on a payment provider before sending the message)."""
    async with session_factory() as session, session.begin():
        return await record_pay_message(session, public_id, chat_id, message_id, lang)


def _take_buttons_off(session: AsyncSession, chat_id: int, message_id: int, text: str) -> None:
    """Queue the edit that replaces the message's text and drops its keyboard. No dedup key: each is
    queued once, with the change that made it, and a message may be recorded again (in place)."""
    enqueue(session, chat_id, text, kind="pay_closed", edit_message_id=message_id)
