"""Only a failure of ours may answer 5xx: with the database down, payment callbacks get 503 so the
provider retries; bad input still gets its 4xx first."""
from __future__ import annotations

import httpx

from bot.runtime import build_shop
from db.session import make_engine
from tests import daraja_standin as dj
from tests import stripe_standin as ss
from tests.harness import make_settings
from tests.webserver import serve_shop


async def test_database_down_is_503_not_500(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(engine, botapi, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
                             public_base_url="http://127.0.0.1:9", mpesa_base_url="http://127.0.0.1:9",
                             mpesa_consumer_key="k", mpesa_consumer_secret="s", mpesa_shortcode=dj.SHORTCODE,
                             mpesa_passkey=dj.PASSKEY, mpesa_callback_token=dj.CALLBACK_TOKEN,
                             stripe_secret_key=ss.SECRET_KEY, stripe_webhook_secret=ss.WEBHOOK_SECRET)
    shop = build_shop(settings, engine=make_engine(settings.database_url))
    callback = {"Body": {"stkCallback": {"MerchantRequestID": "m", "CheckoutRequestID": "ws_CO_1", "ResultCode": 1032,
                                         "ResultDesc": "cancelled"}}}
    event = {"id": "evt_1", "type": "checkout.session.completed", "data": {"object": {
        "id": "cs_test_1", "payment_status": "paid", "status": "complete", "amount_total": 100, "currency": "usd"}}}
    async with serve_shop(shop) as base, httpx.AsyncClient(base_url=base) as http:
        mpesa = await http.post(f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", json=callback)
        body, headers = ss.signed(event)
        stripe = await http.post("/webhooks/stripe", content=body, headers=headers)
        junk = await http.post(f"/webhooks/mpesa/{dj.CALLBACK_TOKEN}", json={"nope": 1})
        ready = await http.get("/readyz")
    assert (mpesa.status_code, stripe.status_code, junk.status_code, ready.status_code) == (503, 503, 400, 503)
    await shop.close()
