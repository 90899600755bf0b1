"""`storefront` command line: run | web | worker | console | db upgrade | catalog import FILE."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings
from bot.logging_setup import setup_logging
from bot.loop import run as run_loop

log = logging.getLogger("storefront")
# The console's orders are simulated: they live in a file of their own, never in the shop's DATABASE_URL.
CONSOLE_DATABASE = "sqlite+aiosqlite:///./console.db"
DEMO_CATALOG = Path(__file__).resolve().parent.parent / "catalog" / "demo.yaml"
NO_TOKEN_CONSOLE = (
    "BOT_TOKEN is not set: opening the console — chat with your shop here. Set BOT_TOKEN to run the real bot."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="storefront", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="web server (or long polling) and background worker in one process")
    run.add_argument(
        "--console-if-no-token",
        action="store_true",
        help="without BOT_TOKEN, open the console instead of stopping (what `make run` does)",
    )
    sub.add_parser("web", help="aiohttp server: Telegram webhook, payment webhooks, health")
    sub.add_parser("worker", help="scheduled jobs and the notification sender")
    console = sub.add_parser("console", help="chat with your shop in this terminal: no BOT_TOKEN, no network")
    console.add_argument("--admin", action="store_true", help="start in the admin group rather than as a customer")
    console.add_argument(
        "--database",
        default=CONSOLE_DATABASE,
        help=f"the console's own database (default {CONSOLE_DATABASE}; never DATABASE_URL, which is the live shop's)",
    )
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    cat = sub.add_parser("catalog", help="catalogue")
    cat_sub = cat.add_subparsers(dest="action", required=True)
    imp = cat_sub.add_parser("import", help="upsert products by SKU from a CSV or YAML file (all or nothing)")
    imp.add_argument("file", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        if args.command in ("run", "web") and not settings.bot_token.get_secret_value():
            if not getattr(args, "console_if_no_token", False):
                raise ConfigError(
                    "configuration error: BOT_TOKEN: is required to serve the bot (get one from @BotFather)"
                )
            print(NO_TOKEN_CONSOLE, flush=True)
            args = argparse.Namespace(command="console", admin=False, database=CONSOLE_DATABASE)
    except ConfigError as exc:
        print(exc.line, file=sys.stderr)
        return 2
    # The console's terminal is the shop's screen: only warnings and errors are logged there.
    setup_logging("WARNING" if args.command == "console" else settings.log_level, settings.log_format)
    try:
        return run_loop(_dispatch(args, settings))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # an outside service refused us: one line, not a traceback
        line, code = unavailable(exc, settings)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return code


def unavailable(exc: BaseException, settings: Settings) -> tuple[str | None, int]:
    """The one line (and exit code) for a service the shop cannot work without: the Bot API
    (a rejected token is a configuration error, 2; unreachable is 1, for the supervisor to retry)
    and the database. Never the token, a password or a statement's parameters."""
    from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramUnauthorizedError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    api = settings.telegram_api_url
    if isinstance(exc, TelegramUnauthorizedError):
        return f"startup error: BOT_TOKEN: the Bot API at {api} rejected the token (401 Unauthorized)", 2
    if isinstance(exc, TelegramNetworkError):
        return f"startup error: cannot reach the Bot API at {api}: {exc.message}", 1
    if isinstance(exc, TelegramAPIError):
        return f"startup error: the Bot API at {api} answered: {exc.message}", 1
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        return f"startup error: database {database}: {reason}", 1
    if isinstance(exc, OSError):
        return f"startup error: cannot reach the database {database}: {exc.strerror or exc}", 1
    return None, 1


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from bot import serve

    if args.command == "db":
        await serve.upgrade_db(settings)
        print("database is at the latest schema")
        return 0
    if args.command == "catalog":
        return await serve.import_catalog(settings, args.file)
    if args.command == "console":  # the only way in to the simulated Telegram and payments
        from bot.console import run_console

        settings = settings.model_copy(update={"database_url": args.database})
        return await run_console(settings, DEMO_CATALOG, admin=args.admin, stdin=sys.stdin, stdout=sys.stdout)
    await serve.upgrade_db(settings)
    await serve.load_demo_if_empty(settings, DEMO_CATALOG)
    if args.command == "web":
        await serve.run_web(settings)
    elif args.command == "worker":
        await serve.run_worker(settings)
    else:
        await serve.run_all(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
