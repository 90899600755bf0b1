"""The skeleton stands: migrations, /start through the real dispatcher, fallback help, config errors."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import func, select

from db.models import Customer, Product
from tests.harness import Harness

USER = 5001


async def test_start_shows_welcome_and_menu(shop: Harness) -> None:
    reply = await shop.send(USER, "/start")
    assert reply.method == "sendMessage"
    assert "Karibu, Wanjiru" in reply.text
    assert [label for label, _ in reply.buttons] == [
        "🛍 Catalogue",
        "🛒 Cart",
        "📦 My orders",
        "❓ Help",
        "💬 Talk to us",
        "🌐 Language / Lugha",
    ]
    async with shop.session_factory() as session:
        customer = await session.get(Customer, USER)
    assert customer is not None and customer.chat_id == USER


async def test_free_text_goes_to_the_shop_and_unknown_commands_get_short_help(shop: Harness) -> None:
    reply = await shop.send(USER, "hello, do you sell phones?")
    assert "Sent to the shop — we'll reply here." in reply.text  # a person reads it (tests/test_support.py)
    reply = await shop.send(USER, "/nosuchcommand")
    assert "/help" in reply.text


async def test_demo_catalog_imports(shop: Harness) -> None:
    await shop.load_demo()
    async with shop.session_factory() as session:
        count = (await session.execute(select(func.count(Product.id)))).scalar_one()
    assert count >= 20


def test_bad_config_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "upgrade"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PORT": "eighty"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "configuration error: PORT: Input should be a valid integer, unable to parse string as an integer"
    ]
