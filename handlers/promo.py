"""/promo in the admin group: `add`, `list`, `off` (services/promos.py does the work).

  /promo add CODE 10% [min KES 5000] [until 2026-12-31] [uses 100]
  /promo add CODE KES 500 [min KES 5000] [until …] [uses …]     (or USD 5)
  /promo list
  /promo off CODE

Only admins, only in the admin group (`AdminOnly`); /promo from anyone else, anywhere, is refused like
the other admin-only commands. Arguments are parsed strictly: a wrong one is named, with the usage.
Creating and switching off write the audit log in the same transaction (committed with the update).
"""

from __future__ import annotations

import logging

from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import PromoCode
from handlers.admin import AdminOnly, fit_lines, refusal, refuse_command
from handlers.routing import Routes
from services import promos
from services.errors import DomainError
from services.i18n import t
from services.markup import Markup
from services.money import format_money

log = logging.getLogger(__name__)

PROMO = Command("promo", ignore_case=True)
router = Routes("promo")
router.message.filter(PROMO)


def _actor(message: Message) -> str:
    return f"admin:{message.from_user.id if message.from_user else 0}"


def _state(promo: PromoCode) -> Markup:
    return t(f"admin.promo.state.{promos.status(promo)}")


def _values(promo: PromoCode, settings: Settings) -> dict[str, object]:
    return {
        "code": promo.code,
        "discount": promos.describe(promo),
        "min": format_money(promo.min_amount, promo.min_currency)
        if promo.min_amount is not None and promo.min_currency
        else "—",
        "until": promos.last_day_of(promo.ends_at, settings.shop_zone).isoformat() if promo.ends_at else "—",
        "used": promo.used,
        "limit": promo.uses_limit if promo.uses_limit is not None else t("admin.promo.no_limit"),
    }


async def _run(message: Message, args: list[str], session: AsyncSession, settings: Settings) -> str:
    what = args[0].lower() if args else ""
    actor = _actor(message)
    name = message.from_user.full_name if message.from_user else ""
    if what == "add":
        spec = promos.parse_add(args[1:], promos.shop_today(settings.shop_zone))
        admin_id = message.from_user.id if message.from_user else 0
        promo = await promos.create(session, spec, settings.shop_zone, actor, name=name, admin_id=admin_id)
        values = _values(promo, settings)
        return t("admin.promo.added", None, **{**values, "uses": values["limit"]})
    if what == "off" and len(args) == 2:
        promo = await promos.disable(session, args[1], actor, name=name)
        return t("admin.promo.disabled", None, code=promo.code, used=promo.used)
    if what == "list" and len(args) == 1:
        codes = await promos.all_codes(session)
        if not codes:
            return t("admin.promo.none")
        lines = [t("admin.promo.line", None, state=_state(p), **_values(p, settings)) for p in codes]
        return fit_lines(t("admin.promo.title", None, zone=settings.shop_zone.key), lines)
    return t("admin.usage.promo")


@router.message(PROMO, AdminOnly())
async def promo_command(message: Message, command: CommandObject, session: AsyncSession, settings: Settings) -> None:
    args = (command.args or "").split()
    try:
        text = await _run(message, args, session, settings)
    except promos.PromoArgsError as exc:  # refused before anything was written
        text = Markup("\n\n").join([refusal(exc), t("admin.usage.promo")])
    except DomainError as exc:
        log.info("admin.refused_action", extra={"command": "promo", "reason": exc.key})
        text = refusal(exc)
    await message.reply(text)


router.message(PROMO)(refuse_command)  # anywhere else, or not an admin: never a customer command
