"""`storefront console`: chat with your own shop in the terminal — no BOT_TOKEN, no network.

The shop runs as it does in production (the same dispatcher, handlers, middlewares, database,
migrations and demo catalogue, the notification sender and the scheduled jobs), except that
Telegram is an in-process stand-in (`ConsoleSession`) and M-Pesa is simulated (`SimulatedMpesa`),
and it says so. You are one person: a customer in a private chat with the bot and, after
`/as admin` (or `--admin`), an administrator in the admin group, so the whole life of an order —
browse, pay, ship, the customer's notifications — can be tried from one terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from aiogram.methods import TelegramMethod
from aiogram.types import InlineKeyboardMarkup, Update
from pydantic import SecretStr
from sqlalchemy import func, inspect, select

from bot.config import Settings
from bot.console_payments import SimulatedMpesa
from bot.console_session import BOT_USER, Button, ConsoleSession, Shown
from bot.console_view import Screen
from bot.runtime import Shop, build_shop
from db.models import Customer
from db.session import make_engine

log = logging.getLogger(__name__)

CONSOLE_USER_ID = 777000001
CONSOLE_GROUP_ID = -1007770000001  # the admin group when ADMIN_CHAT_ID is not set
CONSOLE_TOKEN = "777000000:console-in-process-no-network"  # never sent anywhere: there is no network
USER = {"id": CONSOLE_USER_ID, "is_bot": False, "first_name": "Console", "last_name": "Customer", "language_code": "en"}
HELP = """\
Type as you would in Telegram: /start, /cart, free text. Buttons are numbered: type the number to press one
(the last keyboard shown), or #label to press the button so labelled (or else the first whose label
contains it, newest message first; e.g. #Cart).
\\12 sends the text "12" instead of pressing. /as admin — act in the admin group (/restock, /ship, /orders …);
/as customer — back to your private chat. ? — this help. /quit (or Ctrl-D) — leave."""


def console_settings(settings: Settings) -> Settings:
    """The shop's settings with Telegram and the outside world taken out: a stand-in token, no Redis
    or public URL, an admin group whether or not one is configured, and M-Pesa's query asked two
    seconds after a prompt (a simulated customer pays at once; the real default waits a minute)."""
    return settings.model_copy(
        update={
            "bot_token": SecretStr(CONSOLE_TOKEN),
            "admin_chat_id": settings.admin_chat_id or CONSOLE_GROUP_ID,
            "redis_url": None,
            "public_base_url": None,
            "mpesa_query_after_seconds": 2,
            "job_interval_override_seconds": 2.0,
        }
    )


class ConsoleTransport:
    """The outbox sender's transport: notifications go through the bot, so they show like any message."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    async def send(self, chat_id: int, text: str, reply_markup: dict[str, Any] | None) -> None:
        await self.shop.bot.send_message(chat_id, text, reply_markup=_markup(reply_markup))

    async def send_photo(self, chat_id: int, photo: str, caption: str, reply_markup: dict[str, Any] | None) -> None:
        await self.shop.bot.send_photo(chat_id, photo, caption=caption, reply_markup=_markup(reply_markup))

    async def edit_text(self, chat_id: int, message_id: int, text: str, reply_markup: dict[str, Any] | None) -> None:
        await self.shop.bot.edit_message_text(
            text, chat_id=chat_id, message_id=message_id, reply_markup=_markup(reply_markup)
        )


def _markup(reply_markup: dict[str, Any] | None) -> InlineKeyboardMarkup | None:
    return InlineKeyboardMarkup.model_validate(reply_markup) if reply_markup else None


class Console:
    """Turns what is typed into the updates Telegram would deliver, and feeds them to the dispatcher."""

    def __init__(self, shop: Shop, session: ConsoleSession, screen: Screen, *, admin: bool) -> None:
        self.shop, self.session, self.screen = shop, session, screen
        self.admin = admin
        self.asking_contact = False
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1_000_000)  # apart from the bot's own message ids

    @property
    def chat_id(self) -> int:
        return self.session.admin_chat_id if self.admin else CONSOLE_USER_ID

    def prompt(self) -> str:
        if self.asking_contact:
            return "phone number to share> "
        return "admin> " if self.admin else "you> "

    async def handle(self, line: str) -> bool:
        """One line typed; False when it asks to leave."""
        line = line.strip()
        if line in ("/quit", "/exit"):
            return False
        if not line:
            return True
        if self.asking_contact:
            self.asking_contact = False
            await self.feed({"message": self.message(contact={"phone_number": line, **_contact_name()})})
        elif line == "?":
            self.screen.notice(HELP)
        elif line.startswith("/as "):
            self.switch(line[4:].strip().lower())
        elif line.startswith("\\"):
            await self.send_text(line[1:])
        elif line.startswith("#") or line.isdigit():
            await self.press_typed(line)
        else:
            await self.send_text(line)
        return True

    def switch(self, who: str) -> None:
        if who not in ("admin", "customer"):
            self.screen.notice("(/as admin or /as customer)")
            return
        self.admin = who == "admin"
        where = f"the admin group ({self.chat_id})" if self.admin else "your private chat with the shop"
        self.screen.notice(f"(you now type in {where})")

    async def press_typed(self, line: str) -> None:
        found = self.find_button(line)
        if found is None:
            if line.isdigit():  # no such button: the number was meant as text
                await self.send_text(line)
            else:
                self.screen.notice(f"(no button matching {line[1:]!r} here)")
            return
        await self.press(*found)

    def find_button(self, line: str) -> tuple[Button, Shown | None] | None:
        """`7`: the 7th button of the last keyboard shown in this chat. `#cart`: the first button
        whose label contains "cart" there, else on earlier messages (newest first), else the reply keyboard."""
        log = self.session.chat(self.chat_id)
        if line.isdigit():
            n = int(line)
            return (log.keyboard[n - 1], log.keyboard_on) if 1 <= n <= len(log.keyboard) else None
        words = line[1:].strip().lower()
        candidates: list[tuple[Button, Shown | None]] = [(b, log.keyboard_on) for b in log.keyboard]
        for shown in reversed(log.messages.values()):
            candidates += [(b, shown) for row in shown.rows for b in row]
        candidates += [(b, None) for b in log.reply_keyboard]
        exact = (found for found in candidates if words in (_bare(found[0].label), found[0].label.lower()))
        within = (found for found in candidates if words and words in found[0].label.lower())
        return next(exact, None) or next(within, None)

    async def press(self, button: Button, on: Shown | None) -> None:
        if button.url:
            self.screen.notice(f"(this button opens {button.url})")
        elif button.contact:
            self.asking_contact = True
            self.screen.notice("(Telegram would share your phone number: type the number to share)")
        elif button.data is not None and on is not None:
            await self.feed({"callback_query": self.callback_query(button.data, on)})
        else:  # a reply keyboard's button sends its label
            await self.send_text(button.label)

    async def send_text(self, text: str) -> None:
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        log = self.session.chat(self.chat_id)
        prompt = log.messages.get(log.force_reply_to) if log.force_reply_to else None
        if prompt is not None and not text.startswith("/"):  # answering a ForceReply prompt
            content["reply_to_message"] = self.session.message_json(prompt)
            log.force_reply_to = None
        await self.feed({"message": self.message(**content)})

    def message(self, **content: Any) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": CONSOLE_USER_ID, "type": "private", "first_name": "Console"}
        if self.admin:
            chat = {"id": self.chat_id, "type": "supergroup", "title": "admin group"}
        return {"message_id": next(self._message_ids), "date": int(time.time()), "chat": chat, "from": USER, **content}

    def callback_query(self, data: str, on: Shown) -> dict[str, Any]:
        return {
            "id": f"console-{next(self._update_ids)}",
            "from": USER,
            "chat_instance": f"console{on.chat_id}",
            "data": data,
            "message": self.session.message_json(on),
        }

    async def feed(self, raw: dict[str, Any]) -> None:
        """Deliver one update as Telegram would; a method the handlers return is executed, as in polling."""
        raw["update_id"] = next(self._update_ids)
        bot = self.shop.bot
        try:
            result = await self.shop.dp.feed_update(bot, Update.model_validate(raw, context={"bot": bot}))
            if isinstance(result, TelegramMethod):
                await bot(result)
        except Exception as exc:  # the console stays open: show it, log it, go on
            log.exception("console.update_failed")
            self.screen.notice(f"(the shop failed on that: {type(exc).__name__}; see the log above)")


def _bare(label: str) -> str:
    """A label without its leading emoji: "🛒 Cart" → "cart", so #cart presses it before "Add 1 to cart"."""
    first, _, rest = label.partition(" ")
    return (rest if rest and not first.isalnum() else label).lower()


def _contact_name() -> dict[str, Any]:
    return {"first_name": USER["first_name"], "user_id": CONSOLE_USER_ID}


async def other_customers(settings: Settings) -> int:
    """Customers in the database besides the console's: a live shop's database, which the console
    must not touch (it simulates payments and shows every pending notification in this terminal)."""
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda sync: inspect(sync).has_table(Customer.__tablename__)):
                return 0  # a new database: nobody's yet
            query = select(func.count()).select_from(Customer).where(Customer.id != CONSOLE_USER_ID)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def run_console(settings: Settings, demo: Path, *, admin: bool, stdin: TextIO, stdout: TextIO) -> int:
    from bot import serve

    if count := await other_customers(settings):  # checked before migrating: a live shop's schema is not ours
        print(
            f"console: this database has {count} real customer(s): it is a live shop's, and the console simulates "
            "payments. Give it a SQLite file of its own: storefront console --database sqlite+aiosqlite:///./console.db",
            file=stdout,
        )
        return 2
    await serve.upgrade_db(settings)
    await serve.load_demo_if_empty(settings, demo)
    settings = console_settings(settings)
    assert settings.admin_chat_id is not None
    screen = Screen(stdout, ansi=stdout.isatty())
    session = ConsoleSession(screen, CONSOLE_USER_ID, settings.admin_chat_id)
    shop = build_shop(settings, providers={"mpesa": SimulatedMpesa(screen.notice)}, bot_session=session)
    console = Console(shop, session, screen, admin=admin)
    background = start_background(shop)
    screen.notice(
        f"HackLab storefront console — {BOT_USER['first_name']} runs here, against {_database(settings)}. "
        "Telegram and M-Pesa are simulated in this process; nothing is sent anywhere.\n" + HELP
    )
    try:
        await repl(console, stdin)
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await shop.close()
    return 0


def _database(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


def start_background(shop: Shop) -> list[asyncio.Task[None]]:
    """What `storefront worker` runs, in this process: the notification sender (to the console) and
    the scheduled jobs (reservation expiry, M-Pesa reconciliation), but not the DHL poll (network)."""
    from bot.jobs import build_scheduler, job_factories
    from services.outbox_sender import run_sender

    scheduler = build_scheduler(shop, job_factories(carrier=False))

    async def jobs() -> None:
        scheduler.start()
        try:
            await asyncio.Event().wait()
        finally:
            scheduler.shutdown(wait=False)

    sender = run_sender(shop, transport=ConsoleTransport(shop))
    return [asyncio.create_task(jobs()), asyncio.create_task(sender)]


async def repl(console: Console, stdin: TextIO) -> None:
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:  # a daemon thread: a blocked read never holds up leaving
        for line in iter(stdin.readline, ""):
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="console-input", daemon=True).start()
    while True:
        console.screen.prompt(console.prompt())
        line = await lines.get()
        console.screen.prompt_answered()
        if line is None:
            console.screen.notice("\n(bye)")
            return
        if not await console.handle(line):
            console.screen.notice("(bye)")
            return
