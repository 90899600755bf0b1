"""Only a failure of ours may answer 5xx: with the database down, payment callbacks get 503 so the
provider retries; bad input still gets its 4xx first. The same for Telegram's updates."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bot.runtime import build_shop
from db.session import make_engine
from tests import daraja_standin as dj
from tests import stripe_standin as ss
from tests.harness import Harness, make_settings
from tests.test_db_reads import killing_the_reader
from tests.webserver import serve_shop


async def test_database_down_is_503_not_500(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        engine,
        botapi,
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        public_base_url="http://127.0.0.1:9",
        mpesa_base_url="http://127.0.0.1:9",
        mpesa_consumer_key="k",
        mpesa_consumer_secret="s",
        mpesa_shortcode=dj.SHORTCODE,
        mpesa_passkey=dj.PASSKEY,
        mpesa_callback_token=dj.CALLBACK_TOKEN,
        stripe_secret_key=ss.SECRET_KEY,
        stripe_webhook_secret=ss.WEBHOOK_SECRET,
    )
    shop = build_shop(settings, engine=make_engine(settings.database_url))
    callback = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "m",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": 1032,
                "ResultDesc": "cancelled",
            }
        }
    }
    event = {
        "id": "evt_1",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": "cs_test_1",
                "payment_status": "paid",
                "status": "complete",
                "amount_total": 100,
                "currency": "usd",
            }
        },
    }
    async with serve_shop(shop) as base, httpx.AsyncClient(base_url=base) as http:
        mpesa = await http.post(f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", json=callback)
        body, headers = ss.signed(event)
        stripe = await http.post("/webhooks/stripe", content=body, headers=headers)
        junk = await http.post(f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", json={"nope": 1})
        ready = await http.get("/readyz")
    assert (mpesa.status_code, stripe.status_code, junk.status_code, ready.status_code) == (503, 503, 400, 503)
    await shop.close()


TELEGRAM_SECRET = "s3cret_Token-for-tests"
CUSTOMER = 6101


def cart_command(update_id: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": CUSTOMER, "type": "private"},
            "from": {"id": CUSTOMER, "is_bot": False, "first_name": "Amina"},
            "text": "/cart",
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
        },
    }


@pytest.mark.pg_only
async def test_connection_killed_under_a_screen_is_503_and_the_redelivery_is_served(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    """The database connection dies under a browsing screen's statement (its backend terminated while
    the statement runs): Telegram gets 503, so it delivers the update again, and that delivery is
    answered on a working connection (the broken one is not handed out again)."""
    shop = Harness(engine, botapi, telegram_webhook_secret=TELEGRAM_SECRET, public_base_url="https://shop.example")
    await shop.start()
    assert shop.shop is not None
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    try:
        async with serve_shop(shop.shop) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.post("/telegram", json=cart_command(1), headers=headers)).status_code == 200
            sent = len(botapi.sent(CUSTOMER, "sendMessage"))
            async with killing_the_reader(engine, "cart_items") as killed:
                cut_off = await http.post("/telegram", json=cart_command(2), headers=headers)
            assert killed and cut_off.status_code == 503
            assert len(botapi.sent(CUSTOMER, "sendMessage")) == sent  # no apology: the update comes again
            again = await http.post("/telegram", json=cart_command(2), headers=headers)
            assert again.status_code == 200 and "empty" in botapi.last(CUSTOMER).text.lower()
            for update_id in range(3, 3 + engine.sync_engine.pool.size()):  # whichever connection comes next
                assert (await http.post("/telegram", json=cart_command(update_id), headers=headers)).status_code == 200
            assert len(botapi.sent(CUSTOMER, "sendMessage")) == sent + 1 + engine.sync_engine.pool.size()
    finally:
        await shop.stop()


async def test_polled_update_with_the_database_down_gets_the_apology(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    """In polling mode nobody delivers an update again, so the database out of reach is not left to a
    503: the customer is told something went wrong on our side, as for any failure of ours."""
    from aiogram.types import Update

    settings = make_settings(engine, botapi, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    assert not settings.webhook_mode
    shop = build_shop(settings, engine=make_engine(settings.database_url))
    try:
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": 77, "type": "private"},
                "from": {"id": 77, "is_bot": False, "first_name": "Wanjiru"},
                "text": "/cart",
            },
        }
        await shop.dp.feed_update(shop.bot, Update.model_validate(update, context={"bot": shop.bot}))
    finally:
        await shop.close()
    sent = [c for c in botapi.calls if c.method == "sendMessage"]
    assert [c.params["text"] for c in sent] == [
        "Sorry, something went wrong on our side. We've been notified — please try again in a moment."
    ]
