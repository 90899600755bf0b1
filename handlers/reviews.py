"""Reviews: the stars pressed under the after-delivery question, the optional comment typed after
them (or Skip), the Reviews screen of a card, and the admins' /review hide|show ID.

Buttons: `Rate` ("rev:r:<product>:<stars>") and `ReviewButton` ("rev:s|l:<product>"), handlers/buttons.py.
Whether the customer may review the product is decided by services/reviews.py on every press (a
delivered order of theirs holds it), never by the button. /review is an admin command (AdminOnly, in
the admin group); from anyone else, anywhere, it is refused like the other admin-only commands.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import F
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from db.models import Customer
from handlers.admin import AdminOnly, outcome, refuse_command
from handlers.buttons import Card, CardAction, Rate, ReviewAction, ReviewButton
from handlers.filters import AnyCommand, Buttons, NotCommand
from handlers.render import kb, show
from handlers.routing import Routes
from services import catalog, reviews
from services.cache import CatalogueMemo
from services.errors import DomainError, InvalidInput, NotFound
from services.i18n import plain, t
from services.markup import Markup, cut

log = logging.getLogger(__name__)
router = Routes("reviews")
router.callback_query.filter(Buttons(Rate, ReviewButton))


class ReviewFlow(StatesGroup):
    """Waiting for the comment on `product_id` (kept in the FSM data) after the customer's stars."""

    comment = State()


def _skip(product_id: int, lang: str) -> InlineKeyboardMarkup:
    return kb([(t("reviews.button.skip", lang), ReviewButton(action=ReviewAction.SKIP, product_id=product_id).pack())])


# --- the admins -----------------------------------------------------------------------------------------


@router.message(Command("review", ignore_case=True), AdminOnly())
async def review_command(message: Message, command: CommandObject, session: AsyncSession) -> None:
    """/review hide ID, /review show ID."""

    async def run() -> str:
        verb, raw = (command.args or "").split()
        if verb.lower() not in ("hide", "show"):
            raise ValueError(verb)
        hidden = verb.lower() == "hide"
        done = await reviews.set_hidden(
            session,
            reviews.parse_review_id(raw),
            hidden,
            actor,
            name=message.from_user.full_name if message.from_user else "",
        )
        return t(
            "admin.reviews.hidden" if hidden else "admin.reviews.shown",
            None,
            id=done.review_id,
            stars=done.stars,
            sku=done.sku,
            n=done.rating_count,
        )

    actor = f"admin:{message.from_user.id if message.from_user else 0}"
    await message.reply(await outcome("review", actor, run))


# anywhere else, or not an admin: never a customer command
router.message(Command("review", ignore_case=True))(refuse_command)


# --- stars and comment -----------------------------------------------------------------------------------


@router.callback_query(Rate.filter())
async def rate(
    query: CallbackQuery, callback_data: Rate, session: AsyncSession, customer_id: int, state: FSMContext, lang: str
) -> None:
    try:
        rated = await reviews.rate(session, customer_id, callback_data.product_id, callback_data.stars)
    except DomainError as exc:
        await query.answer(plain(exc.key, lang, **exc.values), show_alert=True)
        return
    await query.answer(plain("reviews.rated_alert", lang, name=cut(rated.product_name, 60), stars=rated.stars))
    await state.set_state(ReviewFlow.comment)
    await state.set_data({"product_id": callback_data.product_id})
    if isinstance(query.message, Message):
        key = "reviews.ask_comment_again" if rated.has_comment else "reviews.ask_comment"
        await query.message.answer(
            t(key, lang, name=cut(rated.product_name, 200), stars=rated.stars, max=reviews.MAX_COMMENT),
            reply_markup=_skip(callback_data.product_id, lang),
        )


@router.callback_query(ReviewButton.filter(F.action == ReviewAction.SKIP))
async def skip(query: CallbackQuery, callback_data: ReviewButton, state: FSMContext, lang: str) -> None:
    if await state.get_state() == ReviewFlow.comment.state:
        data = await state.get_data()
        if data.get("product_id") == callback_data.product_id:
            await state.clear()
    await query.answer()
    await show(query, t("reviews.skipped", lang))


@router.message(StateFilter(ReviewFlow.comment), AnyCommand())
async def other_command_leaves(message: Message, state: FSMContext) -> None:
    """Another command means the customer moved on: no comment, and that command runs."""
    await state.clear()
    raise SkipHandler


@router.message(StateFilter(ReviewFlow.comment), NotCommand())
async def typed_comment(
    message: Message, session: AsyncSession, state: FSMContext, customer: Customer, lang: str, settings: Settings
) -> None:
    product_id = int((await state.get_data()).get("product_id") or 0)
    try:
        done = await reviews.comment(session, customer, product_id, message.text, settings.admin_chat_id)
    except InvalidInput as exc:  # too long, or not text: still waiting for it
        await message.answer(t(exc.key, lang, **exc.values), reply_markup=_skip(product_id, lang))
        return
    except DomainError as exc:
        await state.clear()
        await message.answer(t(exc.key, lang, **exc.values))
        return
    await state.clear()
    await message.answer(t("reviews.comment_saved", lang, name=cut(done.product_name, 200), comment=done.comment))


# --- the Reviews screen of a card --------------------------------------------------------------------------


async def reviews_screen(session: AsyncSession, product_id: int, lang: str) -> tuple[str, InlineKeyboardMarkup] | None:
    """The product's latest visible reviews (None when the product is gone)."""
    try:
        product = await catalog.get_product(session, product_id)
    except NotFound:
        return None
    back = kb([(t("reviews.list.back", lang), Card(action=CardAction.VIEW, product_id=product_id, qty=1).pack())])
    rating = reviews.rating_line(product, lang)
    name = cut(product.name, 200)
    if rating is None:
        return t("reviews.list.none", lang, name=name), back
    lines = [t("reviews.list.title", lang, name=name, rating=rating)]
    for r in await reviews.latest(session, product_id):
        who, stars = cut(r.first_name or "-", 64), reviews.stars_text(r.stars)
        lines.append(
            t("reviews.list.line", lang, first_name=who, stars=stars, comment=r.comment)
            if r.comment
            else t("reviews.list.line_no_comment", lang, first_name=who, stars=stars)
        )
    return Markup("\n\n").join(lines), back


@router.callback_query(ReviewButton.filter(F.action == ReviewAction.LIST))
async def list_reviews(
    query: CallbackQuery, callback_data: ReviewButton, session: AsyncSession, lang: str, screens: CatalogueMemo[Any]
) -> None:
    product_id = callback_data.product_id
    screen = await screens.get(("reviews", product_id, lang), lambda: reviews_screen(session, product_id, lang))
    if screen is None:
        await query.answer(t("catalog.product_gone", lang), show_alert=True)
        return
    await query.answer()
    await show(query, *screen)
