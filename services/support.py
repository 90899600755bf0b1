"""Customers talking to a person: a customer's message is relayed to the admin group ("💬 Talk to
us", or free text typed outside any flow) and an admin's Telegram reply to that relayed copy goes
back to the customer.

`support_messages` ties each relayed copy (its message id in the admin group) to its customer, so a
reply finds who to answer. The same rows count a customer's recent relays: at most `RELAY_LIMIT` in
`RELAY_WINDOW`, so one person (or a script) cannot flood the admins' group; the count lives in the
database, so every web process sees the same one. No aiogram here: the handler sends the relay and
hands its message id to `record_relay`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Customer, SupportMessage, utcnow
from services.i18n import t
from services.markup import Markup, cut
from services.notifications import enqueue
from services.phones import mask_phone

RELAY_LIMIT = 5
RELAY_WINDOW = timedelta(minutes=10)
TEXT_MAX = 3000  # the relay (name, phone and the text) stays within one Telegram message


async def may_relay(session: AsyncSession, customer_id: int, now: datetime | None = None) -> bool:
    """Fewer than `RELAY_LIMIT` of this customer's messages went to the admins in the last `RELAY_WINDOW`."""
    since = (now or utcnow()) - RELAY_WINDOW
    # The customer's row is held until our commit (PostgreSQL): a burst of messages is counted one
    # after another, each seeing the relays before it, instead of all passing one count together.
    await session.execute(select(Customer.id).where(Customer.id == customer_id).with_for_update())
    recent = (
        await session.execute(
            select(func.count())
            .select_from(SupportMessage)
            .where(SupportMessage.customer_id == customer_id, SupportMessage.created_at >= since)
        )
    ).scalar_one()
    return int(recent) < RELAY_LIMIT


def relay_text(customer: Customer, text: str) -> Markup:
    """The admins' copy of a customer's message: who (name, @username, a masked phone when we have
    one) and what they wrote, every value escaped, with how to answer."""
    who = t(
        "admin.support.who",
        None,
        name=cut(customer.first_name or str(customer.id), 64),
        customer_id=customer.id,
    )
    if customer.username:
        who += t("admin.support.username", None, username=cut(customer.username, 64))
    if customer.phone:
        who += t("admin.support.phone", None, phone=mask_phone(customer.phone))
    return t("admin.support.relay", None, who=who, text=cut(text, TEXT_MAX))


def record_relay(session: AsyncSession, customer_id: int, admin_chat_id: int, admin_message_id: int) -> SupportMessage:
    """Remember which customer the admin group's message `admin_message_id` came from."""
    row = SupportMessage(customer_id=customer_id, admin_chat_id=admin_chat_id, admin_message_id=admin_message_id)
    session.add(row)
    return row


async def customer_of(session: AsyncSession, admin_chat_id: int, admin_message_id: int) -> Customer | None:
    """The customer whose relayed message is `admin_message_id` in `admin_chat_id`, if it is one."""
    stmt = (
        select(Customer)
        .join(SupportMessage, SupportMessage.customer_id == Customer.id)
        .where(SupportMessage.admin_chat_id == admin_chat_id, SupportMessage.admin_message_id == admin_message_id)
    )
    return (await session.execute(stmt)).scalars().first()


def queue_reply(session: AsyncSession, customer: Customer, text: str) -> None:
    """An admin's answer, to the customer's chat in their language, through the outbox (retried,
    within Telegram's limits; dropped if they blocked the bot)."""
    enqueue(
        session,
        customer.chat_id,
        t("support.reply", customer.language, text=cut(text, TEXT_MAX)),
        kind="support_reply",
    )
