"""Times as people read them, in the shop's time zone (SHOP_TIMEZONE).

Timestamps are stored in UTC; a customer reads them in the shop's zone and relative to today there:
"17:45 today", "09:10 tomorrow", "4 Dec, 09:10" (the words and patterns come from
`locales/<lang>/time.po`, month names from Babel's locale data, so a Swahili reader gets "4 Des").
Admins read an absolute time with the zone named, in English: "2 Dec 17:45 EAT".

`now` is a parameter (the caller's clock) so that "today" is decided once per message and tests can
fix it; the zone is the caller's too (`settings.shop_zone`), never a global.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from functools import cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_skeleton

from services.i18n import DEFAULT_LANG, plain

# The shop is Kenyan: its languages are read with Kenya's locale data (en_KE: "4 Dec", 24-hour clock;
# sw_KE: "4 Des"). A language Babel has no Kenyan variant of uses its own data.
REGION = "KE"
ADMIN_LOCALE = "en_KE"


@cache
def babel_locale(lang: str | None) -> Locale:
    code = (lang or DEFAULT_LANG).split("-")[0].lower()
    for candidate in (f"{code}_{REGION}", code, f"{DEFAULT_LANG}_{REGION}"):
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(ADMIN_LOCALE)


def _local(when: datetime, zone: tzinfo) -> datetime:
    """`when` in `zone`; a naive value is UTC (as the database stores it)."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(zone)


def _day(local: datetime, today: date, lang: str | None) -> str:
    """ "4 Dec" (or "4 Dec 2025" in another year) in the language's month names."""
    skeleton = "MMMd" if local.year == today.year else "yMMMd"
    return format_skeleton(skeleton, local, locale=babel_locale(lang))


def _offset_days(local: datetime, now: datetime | None, zone: tzinfo) -> tuple[int, date]:
    today = _local(now or datetime.now(UTC), zone).date()
    return (local.date() - today).days, today


def customer_time(when: datetime, zone: tzinfo, lang: str | None, now: datetime | None = None) -> str:
    """A moment for a customer: "17:45 today", "09:10 tomorrow", "22:05 yesterday", else "4 Dec, 09:10"."""
    local = _local(when, zone)
    clock = local.strftime("%H:%M")
    days, today = _offset_days(local, now, zone)
    if days == 0:
        return plain("time.today_at", lang, time=clock)
    if days == 1:
        return plain("time.tomorrow_at", lang, time=clock)
    if days == -1:
        return plain("time.yesterday_at", lang, time=clock)
    return plain("time.date_at", lang, date=_day(local, today, lang), time=clock)


def customer_date(when: datetime, zone: tzinfo, lang: str | None, now: datetime | None = None) -> str:
    """A day for a customer: "today", "yesterday", "tomorrow", else "4 Dec" ("4 Dec 2025" in another year)."""
    local = _local(when, zone)
    days, today = _offset_days(local, now, zone)
    named = {0: "time.today", 1: "time.tomorrow", -1: "time.yesterday"}.get(days)
    return plain(named, lang) if named else _day(local, today, lang)


def receipt_time(when: datetime, zone: tzinfo, lang: str | None) -> str:
    """A moment on a receipt: absolute, with the year and the zone named, in the reader's language:
    "3 Dec 2026, 09:12 EAT"."""
    local = _local(when, zone)
    day = format_skeleton("yMMMd", local, locale=babel_locale(lang))
    return f"{day}, {local.strftime('%H:%M')} {local.tzname() or zone}"


def admin_time(when: datetime, zone: tzinfo, now: datetime | None = None) -> str:
    """A moment for the admin group, absolute and with the zone named: "2 Dec 17:45 EAT"."""
    local = _local(when, zone)
    _, today = _offset_days(local, now, zone)
    pattern = "d MMM HH:mm" if local.year == today.year else "d MMM y HH:mm"
    return f"{format_datetime(local, pattern, locale=ADMIN_LOCALE)} {local.tzname() or zone}"
