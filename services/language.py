"""The customer's language: the one they chose (/language) wins over their Telegram client's, is kept
on their row (so it survives restarts and moves between processes) and is the one the outbox's later
messages (shipped, delivered…) are written in."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Customer
from services.errors import InvalidInput
from services.i18n import available_languages, plain


def language_names() -> list[tuple[str, str]]:
    """(code, name) of every language we have a catalogue for, each named in itself ("Kiswahili")."""
    return [(code, plain("language.name", code)) for code in available_languages()]


async def choose_language(session: AsyncSession, customer_id: int, lang: str) -> str:
    """Remember `lang` as the customer's own choice; one statement. InvalidInput for a language we
    have no catalogue for (a forged or outdated button)."""
    if lang not in available_languages():
        raise InvalidInput("language.unknown")
    await session.execute(
        update(Customer).where(Customer.id == customer_id).values(language=lang, language_chosen=True)
    )
    return lang
