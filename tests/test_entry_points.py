"""Entry points an attacker can reach: the Telegram route exists only in webhook mode and always wants
the secret; health says nothing about configuration; the bind address is configurable; database errors
carry no bound values."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from bot import serve
from db.models import Product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness, make_settings
from tests.webserver import free_port, serve_shop

SKU = "LAP-TP-T480"

pytestmark = pytest.mark.faults  # forged input and abuse through the real entry points


def forged_admin_update(update_id: int, command: str) -> dict:  # type: ignore[type-arg]
    """What an attacker posts: a command 'from' an admin, in the admin group."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": ADMIN_CHAT_ID, "type": "supergroup", "title": "Shop admins"},
            "from": {"id": ADMIN_USER_ID, "is_bot": False, "first_name": "Boss"},
            "text": command,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(command.split()[0])}],
        },
    }


async def stock_of(shop: Harness, sku: str) -> int:
    async with shop.session_factory() as session:
        return (await session.execute(select(Product.stock).where(Product.sku == sku))).scalar_one()


async def test_polling_mode_serves_no_telegram_route(shop: Harness) -> None:
    """Without PUBLIC_BASE_URL the bot long-polls: a forged /restock posted to the port is not an update."""
    await shop.load_demo()
    before = await stock_of(shop, SKU)
    assert shop.shop is not None and not shop.settings.webhook_mode
    async with serve_shop(shop.shop) as base, httpx.AsyncClient(base_url=base) as http:
        for n, headers in enumerate(({}, {"X-Telegram-Bot-Api-Secret-Token": shop.settings.webhook_secret})):
            reply = await http.post(
                "/telegram", json=forged_admin_update(n + 1, f"/restock {SKU} 500"), headers=headers
            )
            assert reply.status_code == 404
        assert (await http.get("/healthz")).status_code == 200  # the server itself is up
    assert await stock_of(shop, SKU) == before
    assert shop.botapi.calls == []


async def test_webhook_mode_without_a_configured_secret_still_demands_one(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    """No TELEGRAM_WEBHOOK_SECRET: the route uses the secret derived from the token (the one setWebhook
    registers), never none."""
    harness = await Harness(engine, botapi, public_base_url="https://shop.example").start()
    try:
        await harness.load_demo()
        before = await stock_of(harness, SKU)
        assert harness.shop is not None and harness.settings.telegram_webhook_secret is None
        async with serve_shop(harness.shop) as base, httpx.AsyncClient(base_url=base) as http:
            forged = await http.post("/telegram", json=forged_admin_update(1, f"/restock {SKU} 500"))
            guessed = await http.post(
                "/telegram",
                json=forged_admin_update(2, f"/restock {SKU} 500"),
                headers={"X-Telegram-Bot-Api-Secret-Token": "guess"},
            )
            odd = await http.post(
                "/telegram",
                json=forged_admin_update(4, f"/restock {SKU} 500"),
                headers={"X-Telegram-Bot-Api-Secret-Token": "sécret-é".encode()},
            )
            assert (forged.status_code, guessed.status_code, odd.status_code) == (401, 401, 401)
            assert await stock_of(harness, SKU) == before
            real = await http.post(
                "/telegram",
                json=forged_admin_update(3, f"/restock {SKU} 5"),
                headers={"X-Telegram-Bot-Api-Secret-Token": harness.settings.webhook_secret},
            )
            assert real.status_code == 200
        assert await stock_of(harness, SKU) == before + 5
    finally:
        await harness.stop()


async def test_healthz_says_alive_only_and_readyz_checks_the_database(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    from bot.runtime import build_shop
    from db.session import make_engine

    up = await Harness(
        engine,
        botapi,
        public_base_url="https://shop.example",
        stripe_secret_key="sk_test_x",
        stripe_webhook_secret="whsec_x",
    ).start()
    try:
        assert up.shop is not None
        up.shop.providers["stripe"] = object()  # configured providers must not show
        async with serve_shop(up.shop) as base, httpx.AsyncClient(base_url=base) as http:
            health, ready = await http.get("/healthz"), await http.get("/readyz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    finally:
        await up.stop()

    settings = make_settings(engine, botapi, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    down = build_shop(settings, engine=make_engine(settings.database_url), providers={})
    try:
        async with serve_shop(down) as base, httpx.AsyncClient(base_url=base) as http:
            health, ready = await http.get("/healthz"), await http.get("/readyz")
        assert (health.status_code, ready.status_code) == (200, 503)
        assert "nobody" not in ready.text and "5432" not in ready.text
    finally:
        await down.close()


async def test_readyz_wants_the_schema_at_the_head_revision(empty_database, botapi) -> None:  # type: ignore[no-untyped-def]
    """A database that answers but whose schema is not the one this code expects (never migrated, or a
    migration behind, as while the release step has not run yet) is not ready; at the head it is."""
    from alembic.script import ScriptDirectory

    from bot.runtime import build_shop
    from db.migrate import alembic_config, head_revision, upgrade
    from db.session import make_engine

    head = head_revision()
    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head).down_revision
    assert isinstance(previous, str)  # the test needs a migration before the head
    engine = make_engine(empty_database)
    settings = make_settings(engine, botapi, database_url=empty_database)
    shop = build_shop(settings, engine=engine, providers={})
    try:
        async with serve_shop(shop) as base, httpx.AsyncClient(base_url=base) as http:
            never = await http.get("/readyz")
            await upgrade(engine, previous)
            behind = await http.get("/readyz")
            await upgrade(engine)
            current = await http.get("/readyz")
    finally:
        await shop.close()
    assert (never.status_code, behind.status_code, current.status_code) == (503, 503, 200)
    for answer in (never, behind):
        assert answer.json() == {"status": "unavailable"}  # which revision is no business of the caller
    assert current.json() == {"status": "ok"}


async def test_the_server_binds_to_HOST(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = make_settings(engine, botapi, public_base_url="https://shop.example", host="127.0.0.2", port=port)
    task = asyncio.create_task(serve.run_web(settings))
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    answer = await http.get(f"http://127.0.0.2:{port}/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the server did not come up on 127.0.0.2")
            assert answer.status_code == 200
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_database_errors_carry_no_bound_values(engine) -> None:  # type: ignore[no-untyped-def]
    """An error's text is what reaches logs and tracebacks: the statement, never a customer's email."""
    from db.session import make_engine, make_sessionmaker

    own = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        factory = make_sessionmaker(own)
        insert = text(
            "INSERT INTO customers (id, chat_id, first_name, language, email, unreachable, created_at) "
            "VALUES (:id, :id, 'A', 'en', :email, false, CURRENT_TIMESTAMP)"
        )
        async with factory() as session, session.begin():
            await session.execute(insert, {"id": 77, "email": "first@example.com"})
        with pytest.raises(IntegrityError) as err:
            async with factory() as session, session.begin():
                await session.execute(insert, {"id": 77, "email": "wanjiru.private@example.com"})
        assert "wanjiru.private@example.com" not in str(err.value)
        assert "hidden due to hide_parameters" in str(err.value)
    finally:
        await own.dispose()


# --- Telegram's own menus, set at start-up -----------------------------------------------------------


async def test_polling_start_sets_the_command_menus_and_the_menu_button(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(engine, botapi, port=free_port())  # no PUBLIC_BASE_URL: long polling
    task = asyncio.create_task(serve.run_web(settings))
    try:
        for _ in range(200):
            if botapi.sent(method="getUpdates"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the bot did not start polling")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    menus = {
        (c.params.get("scope", {}).get("type"), c.params.get("language_code")): c.params["commands"]
        for c in botapi.sent(method="setMyCommands")
    }
    english, swahili, admins = menus[("default", None)], menus[("default", "sw")], menus[("chat", None)]
    assert [c["command"] for c in english] == [
        "start",
        "catalog",
        "cart",
        "orders",
        "search",
        "track",
        "language",
        "help",
    ]
    assert {c["command"]: c["description"] for c in english}["cart"] == "Your cart"
    assert {c["command"]: c["description"] for c in swahili}["cart"] == "Kikapu chako"
    assert [c["command"] for c in swahili] == [c["command"] for c in english]
    (admin_call,) = [c for c in botapi.sent(method="setMyCommands") if c.params["scope"]["type"] == "chat"]
    assert admin_call.params["scope"]["chat_id"] == ADMIN_CHAT_ID
    assert {"orders", "ship", "cancel", "paid", "report", "help"} <= {c["command"] for c in admins}
    (button,) = botapi.sent(method="setChatMenuButton")
    assert button.params["menu_button"] == {"type": "commands"}


async def test_menus_failing_are_logged_and_the_shop_serves_on(engine, botapi, caplog) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    async def refuse(method: str, params: dict) -> web.Response | None:  # type: ignore[type-arg]
        if method in ("setMyCommands", "setChatMenuButton"):
            return web.json_response({"ok": False, "error_code": 500, "description": "Internal"}, status=500)
        return None

    botapi.responder = refuse
    settings = make_settings(engine, botapi, admin_chat_id=None)
    shop = await Harness(engine, botapi, admin_chat_id=None).start()
    try:
        await serve.set_menus(shop.shop.bot, settings)  # type: ignore[union-attr]
        assert "Karibu" in (await shop.send(ADMIN_USER_ID, "/start")).text
    finally:
        await shop.stop()
    failed = [r for r in caplog.records if r.getMessage() == "telegram.menu_failed"]
    assert [r.method for r in failed] == ["setMyCommands", "setMyCommands", "setChatMenuButton"]  # type: ignore[attr-defined]
    assert not [
        c for c in botapi.calls if c.method == "setMyCommands" and c.params.get("scope", {}).get("type") == "chat"
    ]
