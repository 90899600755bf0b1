"""Broadcasts: news the admins send to every customer who wants it, and customers' news opt-out.

An admin's message becomes a draft (what was previewed in the admin group); Confirm turns it into one
outbox row per recipient, written in the same transaction as the draft's move to "sending", so a
broadcast is either queued whole or not at all. The rows are BULK priority: order updates and admin
alerts overtake them (services/outbox_sender.py claims by priority). Each row's text is the admin's
HTML with an opt-out footer in the recipient's language.

The audience is every customer with a private chat who has not blocked the bot (`unreachable`, set by
the sender on a 403) and has not said /stop_news. The sender counts each row as it settles it (sent,
failed, or dropped because the customer blocked the bot meanwhile); `report_progress`, a scheduled
job, edits the progress message in the admin group through the outbox when the counts moved, and
finishes the broadcast when every row is settled. No aiogram here.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, Insert, String, and_, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Broadcast, Customer, Outbox, TZDateTime, table_of, utcnow
from services.admin import unit_of_work
from services.errors import DomainError
from services.i18n import DEFAULT_LANG, available_languages, t
from services.markup import Markup, visible_len
from services.notifications import BULK, enqueue

log = logging.getLogger(__name__)

KIND = "broadcast"
PROGRESS_KIND = "broadcast_progress"
TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024  # Telegram's, counted after entity parsing
DRAFT, SENDING, DONE, CANCELLED = "draft", "sending", "done", "cancelled"


# --- the audience -----------------------------------------------------------------------------------


def _audience() -> ColumnElement[bool]:
    return and_(Customer.chat_id > 0, Customer.unreachable.is_(False), Customer.news_opt_out.is_(False))


async def audience_size(session: AsyncSession) -> int:
    """How many customers a broadcast confirmed now would go to."""
    return int((await session.execute(select(func.count()).select_from(Customer).where(_audience()))).scalar_one())


async def set_news(session: AsyncSession, customer_id: int, *, wanted: bool) -> None:
    """/stop_news (False) and /start_news (True): broadcasts only; order updates are not affected."""
    await session.execute(update(Customer).where(Customer.id == customer_id).values(news_opt_out=not wanted))
    log.info("broadcast.news_opt_out" if not wanted else "broadcast.news_opt_in", extra={"customer_id": customer_id})


# --- the message ------------------------------------------------------------------------------------


def footer(lang: str | None) -> Markup:
    """The opt-out line every broadcast message ends with, in the reader's language."""
    return t("broadcast.footer", lang)


def message_for(html: str, lang: str | None) -> str:
    """The admin's HTML (as Telegram rendered their message: markup meant as such) and the footer."""
    return html + str(footer(lang))


def _room(photo: str | None) -> int:
    """Visible characters the admin's text may have: the limit less the longest footer."""
    limit = CAPTION_LIMIT if photo else TEXT_LIMIT
    return limit - max(visible_len(footer(lang)) for lang in available_languages())


@unit_of_work
async def draft(session: AsyncSession, *, created_by: int, chat_id: int, html: str, photo: str | None) -> Broadcast:
    """What an admin sent after /broadcast, kept until Confirm or Cancel. Refused (a DomainError)
    when empty or too long to take the footer within Telegram's limit."""
    if not html.strip() and photo is None:
        raise DomainError("admin.broadcast.empty")
    room = _room(photo)
    if visible_len(html) > room:
        raise DomainError("admin.broadcast.too_long", limit=f"{room:,}", over=f"{visible_len(html) - room:,}")
    broadcast = Broadcast(created_by=created_by, chat_id=chat_id, html=html, photo=photo, state=DRAFT)
    session.add(broadcast)
    await session.flush()
    log.info("broadcast.drafted", extra={"broadcast_id": broadcast.id, "photo": photo is not None})
    return broadcast


async def _claim(session: AsyncSession, broadcast_id: int, to_state: str, **values: object) -> Broadcast:
    """Move a draft on (compare-and-set: pressed twice, or by two admins, it moves once)."""
    moved = (
        await session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.state == DRAFT)
            .values(state=to_state, **values)
            .returning(Broadcast.id)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if moved is None:
        raise DomainError("admin.broadcast.not_draft")
    broadcast = await session.get(Broadcast, broadcast_id, populate_existing=True)
    assert broadcast is not None
    return broadcast


@unit_of_work
async def confirm(session: AsyncSession, broadcast_id: int, *, progress_message_id: int | None) -> Broadcast:
    """Queue the draft to its audience: one outbox row per recipient, in this transaction. The
    progress is shown by editing `progress_message_id` in the broadcast's chat."""
    now = utcnow()
    broadcast = await _claim(session, broadcast_id, SENDING, started_at=now, progress_message_id=progress_message_id)
    languages = available_languages()
    for lang in languages:
        # A customer whose language the shop lacks reads the default language's footer.
        if lang == DEFAULT_LANG:
            of_lang: ColumnElement[bool] = Customer.language.not_in([x for x in languages if x != lang])
        else:
            of_lang = Customer.language == lang
        await session.execute(_queue(broadcast, message_for(broadcast.html, lang), now, of_lang))
    total = (
        await session.execute(select(func.count(Outbox.id)).where(Outbox.broadcast_id == broadcast.id))
    ).scalar_one()
    broadcast.total = int(total)
    if broadcast.total == 0:
        broadcast.state, broadcast.finished_at = DONE, now
    await session.flush()
    log.info("broadcast.queued", extra={"broadcast_id": broadcast.id, "recipients": broadcast.total})
    return broadcast


def _queue(broadcast: Broadcast, text: str, now: datetime, of_lang: ColumnElement[bool]) -> Insert:
    """INSERT … SELECT: the outbox rows of one language's recipients, written by the database."""
    when = literal(now, TZDateTime())
    rows = (
        select(
            Customer.chat_id,
            literal(KIND, String()),
            literal(text, String()),
            literal(broadcast.photo, String()),
            literal(BULK),
            literal(broadcast.id),
            literal("pending", String()),
            literal(0),
            when,
            when,
        )
        .where(_audience(), of_lang)
        .order_by(Customer.id)
    )
    columns = [
        "chat_id",
        "kind",
        "text",
        "photo",
        "priority",
        "broadcast_id",
        "state",
        "attempts",
        "next_attempt_at",
        "created_at",
    ]
    return insert(table_of(Outbox)).from_select(columns, rows)


@unit_of_work
async def cancel(session: AsyncSession, broadcast_id: int) -> Broadcast:
    """Drop the draft: nothing is sent."""
    broadcast = await _claim(session, broadcast_id, CANCELLED, finished_at=utcnow())
    log.info("broadcast.cancelled", extra={"broadcast_id": broadcast.id})
    return broadcast


# --- progress -----------------------------------------------------------------------------------------


def settled(broadcast: Broadcast) -> int:
    return broadcast.sent + broadcast.failed + broadcast.blocked


def progress_text(broadcast: Broadcast) -> Markup:
    """ "Sent 120 / 1,234 · failed 2 · blocked 5" while sending; the final tally once done."""
    key = "admin.broadcast.done" if broadcast.state == DONE else "admin.broadcast.progress"
    return t(
        key,
        None,
        id=broadcast.id,
        sent=f"{broadcast.sent:,}",
        total=f"{broadcast.total:,}",
        failed=f"{broadcast.failed:,}",
        blocked=f"{broadcast.blocked:,}",
    )


async def report_progress(session_factory: async_sessionmaker[AsyncSession]) -> int:
    """The scheduled job: for each broadcast being sent whose counts moved since last shown, edit its
    progress message (through the outbox; one edit pending at a time, so a slow admin group gets the
    latest counts rather than a queue of old ones), and finish the broadcasts whose rows are all
    settled with the final tally. Returns how many progress messages were queued."""
    queued = 0
    async with session_factory() as session, session.begin():
        sending = (await session.execute(select(Broadcast).where(Broadcast.state == SENDING))).scalars().all()
        for broadcast in sending:
            done = settled(broadcast)
            finished = done >= broadcast.total
            if not finished and (done == broadcast.reported or await _edit_pending(session, broadcast)):
                continue
            if finished:
                broadcast.state, broadcast.finished_at = DONE, utcnow()
                log.info(
                    "broadcast.done",
                    extra={
                        "broadcast_id": broadcast.id,
                        "sent": broadcast.sent,
                        "failed": broadcast.failed,
                        "blocked": broadcast.blocked,
                    },
                )
            broadcast.reported = done
            enqueue(
                session,
                broadcast.chat_id,
                progress_text(broadcast),
                kind=PROGRESS_KIND,
                edit_message_id=broadcast.progress_message_id,
            )
            queued += 1
    return queued


async def _edit_pending(session: AsyncSession, broadcast: Broadcast) -> bool:
    pending = await session.execute(
        select(Outbox.id)
        .where(
            Outbox.state == "pending",
            Outbox.kind == PROGRESS_KIND,
            Outbox.chat_id == broadcast.chat_id,
            Outbox.edit_message_id == broadcast.progress_message_id,
        )
        .limit(1)
    )
    return pending.first() is not None
