"""Entry points behind the CLI: migrate, import, and serve (web, worker or both)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable
from pathlib import Path

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault, MenuButtonCommands
from aiohttp import web

from bot.config import Settings
from bot.runtime import Shop, build_shop
from bot.speedups import settle_heap
from db.migrate import upgrade
from db.session import make_engine, make_sessionmaker
from services import catalog
from services.i18n import DEFAULT_LANG, available_languages, plain, t
from services.notifications import alert_admins
from services.outbox_sender import run_sender

log = logging.getLogger(__name__)


async def upgrade_db(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def import_catalog(settings: Settings, path: Path) -> int:
    if not await asyncio.to_thread(path.is_file):
        print(f"catalog import: no such file: {path}", file=sys.stderr)
        return 2
    try:
        rows = catalog.parse_catalog(path)
    except catalog.ImportError_ as exc:
        print(f"catalog import: {path.name}: {exc} — nothing was written", file=sys.stderr)
        return 1
    engine = make_engine(settings.database_url)
    try:
        await upgrade(engine)
        async with make_sessionmaker(engine)() as session, session.begin():
            created, updated = await catalog.import_rows(session, rows)
    finally:
        await engine.dispose()
    print(f"catalog import: {created} created, {updated} updated from {path.name}")
    return 0


async def load_demo_if_empty(settings: Settings, path: Path) -> None:
    if not settings.load_demo_catalog or not await asyncio.to_thread(path.is_file):
        return
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            if await catalog.catalog_is_empty(session):
                created, _ = await catalog.import_rows(session, catalog.parse_catalog(path))
                log.info("catalog.demo_loaded", extra={"products": created})
    finally:
        await engine.dispose()


async def announce_start(shop: Shop) -> None:
    """Warn the admin group when no payment provider is configured: customers cannot pay."""
    payment_providers = [p for p in ("mpesa", "stripe") if p in shop.providers]
    if payment_providers:
        return
    log.warning("payments.none_configured")
    async with shop.session_factory() as session, session.begin():
        alert_admins(session, shop.settings.admin_chat_id, t("admin.alert.no_payments"), kind="admin_alert")


# Telegram's own "/" menu: what customers see (every language we have), and what the admins see in
# their group. Descriptions come from the catalogues (commands.* and admin.commands.*).
CUSTOMER_MENU = ("start", "catalog", "cart", "orders", "search", "track", "language", "help")
ADMIN_MENU = (
    "help",
    "orders",
    "order",
    "ship",
    "delivered",
    "cancel",
    "paid",
    "restock",
    "stock",
    "report",
    "export",
    "audit",
    "promo",
    "broadcast",
    "review",
)


MENU_TIMEOUT = 10  # seconds per menu call: a slow Telegram delays start-up by this much at most, per call


async def set_menus(bot: Bot, settings: Settings) -> None:
    """Telegram's command menus and the chat's menu button. Each call stands alone and a failure is
    logged, never fatal: the shop works without them (they only help people find the commands)."""
    for lang in available_languages():
        commands = [BotCommand(command=c, description=plain(f"commands.{c}", lang)) for c in CUSTOMER_MENU]
        code = None if lang == DEFAULT_LANG else lang
        await _menu_call(
            "setMyCommands", bot.set_my_commands(commands, BotCommandScopeDefault(), code, request_timeout=MENU_TIMEOUT)
        )
    if settings.admin_chat_id is not None:
        admin = [BotCommand(command=c, description=plain(f"admin.commands.{c}")) for c in ADMIN_MENU]
        await _menu_call(
            "setMyCommands",
            bot.set_my_commands(
                admin, BotCommandScopeChat(chat_id=settings.admin_chat_id), request_timeout=MENU_TIMEOUT
            ),
        )
    await _menu_call(
        "setChatMenuButton", bot.set_chat_menu_button(menu_button=MenuButtonCommands(), request_timeout=MENU_TIMEOUT)
    )


async def _menu_call(method: str, call: Awaitable[bool]) -> None:
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - Telegram refused or unreachable: the bot serves without its menus
        log.warning("telegram.menu_failed", extra={"method": method, "error": type(exc).__name__})


async def _serve_http(shop: Shop) -> web.AppRunner:
    from webhooks.server import build_web_app

    runner = web.AppRunner(build_web_app(shop), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, shop.settings.host, shop.settings.port).start()
    log.info(
        "web.listening",
        extra={"host": shop.settings.host, "port": shop.settings.port, "telegram_route": shop.settings.webhook_mode},
    )
    return runner


async def run_web(settings: Settings, *, with_worker: bool = False) -> None:
    shop = build_shop(settings)
    try:  # the token and the Bot API first: nothing starts (jobs, payments) on a shop that cannot talk
        await shop.bot.get_me()
    except BaseException:
        await shop.close()
        raise
    runner = await _serve_http(shop)
    worker_task = asyncio.create_task(_worker_loop(shop)) if with_worker else None
    settle_heap()
    try:
        await announce_start(shop)
        await set_menus(shop.bot, settings)
        if settings.webhook_mode:
            await shop.bot.set_webhook(
                f"{settings.public_base_url}/telegram",
                secret_token=settings.webhook_secret,
                allowed_updates=shop.dp.resolve_used_update_types(),
                drop_pending_updates=False,
            )
            log.info("telegram.webhook_set")
            await asyncio.Event().wait()
        else:
            await shop.bot.delete_webhook(drop_pending_updates=False)
            log.info("telegram.polling")
            await shop.dp.start_polling(shop.bot, handle_signals=True, close_bot_session=False)
    finally:
        if worker_task:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
        await runner.cleanup()
        await shop.close()


async def run_worker(settings: Settings) -> None:
    shop = build_shop(settings)
    runner = await serve_worker_http(shop)
    settle_heap()
    try:
        await _worker_loop(shop)
    finally:
        if runner is not None:
            await runner.cleanup()
        await shop.close()


async def serve_worker_http(shop: Shop) -> web.AppRunner | None:
    """/healthz, /readyz and /metrics of the worker process on WORKER_PORT (none when it is unset)."""
    from webhooks.server import build_worker_app

    port = shop.settings.worker_port
    if port is None:
        return None
    host = shop.settings.worker_host
    runner = web.AppRunner(build_worker_app(shop), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:  # e.g. a second worker on this host: its work matters more than its metrics
        await runner.cleanup()
        log.warning("worker.http_unavailable", extra={"host": host, "port": port, "error": exc.strerror or str(exc)})
        return None
    log.info("worker.listening", extra={"host": host, "port": bound_port(runner) or port})
    return runner


def bound_port(runner: web.AppRunner) -> int | None:
    """The port the server really got (WORKER_PORT=0 asks for any free one)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


async def run_all(settings: Settings) -> None:
    await run_web(settings, with_worker=True)


async def _worker_loop(shop: Shop) -> None:
    from bot.jobs import build_scheduler

    scheduler = build_scheduler(shop)
    scheduler.start()
    sender = asyncio.create_task(run_sender(shop))  # the notification sender
    try:
        await asyncio.Event().wait()
    finally:
        scheduler.shutdown(wait=False)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
