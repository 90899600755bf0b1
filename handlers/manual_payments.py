"""`/paid <ORDER_ID> <RECEIPT> <AMOUNT>` in the admin group: an admin records M-Pesa money paid by hand
(to the shop's Paybill) for an order no one could pay online. Only admins, only in the group; anyone
else's /paid is refused by the admin router (handlers/admin.py lists it among the admin-only commands)."""

from __future__ import annotations

from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from handlers.admin import AdminOnly, InAdminGroup, refusal
from handlers.routing import Routes
from services.errors import DomainError
from services.i18n import t
from services.payments import manual

router = Routes("manual_payments")


@router.message(Command("paid", ignore_case=True), InAdminGroup(), AdminOnly(fresh=True))  # money: asked afresh
async def paid_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    args = (command.args or "").split()
    if len(args) < 3:
        await message.reply(t("admin.manual_pay.usage"))
        return
    actor = f"admin:{message.from_user.id if message.from_user else 0}"
    name = message.from_user.full_name if message.from_user else ""
    try:
        order, outcome = await manual.mark_paid(
            session, args[0], args[1], "".join(args[2:]), actor, settings, name=name
        )
    except DomainError as exc:
        await message.reply(refusal(exc))
        return
    await message.reply(t(f"admin.manual_pay.{outcome}", None, order=order.public_id, code=args[1].strip().upper()))
