"""Our own failures: logged with the update id, answered with an apology, and the bot keeps serving."""

from __future__ import annotations

import logging

import pytest

from handlers import catalog as catalog_handlers
from tests.harness import Harness

USER = 7501


async def test_handler_exception_is_logged_apologised_and_survived(
    shop: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database exploded")

    await shop.load_demo()
    monkeypatch.setattr(catalog_handlers, "categories_screen", broken)
    with caplog.at_level(logging.ERROR):
        reply = await shop.send(USER, "/catalog")
    assert reply.text.startswith("Sorry, something went wrong on our side")
    record = next(r for r in caplog.records if r.getMessage() == "handler.error")
    assert record.update_id >= 1 and record.exc_info is not None
    await shop.press(USER, "menu:catalog", message=reply)
    assert "something went wrong" in shop.last_answer.params["text"]
    monkeypatch.undo()
    assert "Catalogue" in (await shop.send(USER, "/catalog")).text  # still serving


async def test_the_apology_is_in_the_customers_language(shop: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database exploded")

    await shop.load_demo()
    monkeypatch.setattr(catalog_handlers, "categories_screen", broken)
    shop.language_codes[USER + 1] = "sw"
    reply = await shop.send(USER + 1, "/catalog")
    assert reply.text.startswith("Samahani, kuna hitilafu upande wetu")
    await shop.press(USER + 1, "menu:catalog", message=reply)
    assert shop.last_answer.params["text"].startswith("Samahani")
