"""A Daraja stand-in: OAuth, STK push, STK query, and callbacks POSTed like Daraja posts them,
with configurable result codes, delays, duplicates and no-shows."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiohttp import web

from tests.standins import StandIn

CONSUMER_KEY = "test-consumer-key-123"
CONSUMER_SECRET = "test-consumer-secret-456"
SHORTCODE = "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
CALLBACK_TOKEN = "cb-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@dataclass
class Plan:
    """What happens after the next push(es)."""

    result_code: int = 0
    delay: float = 0.0
    copies: int = 1  # duplicates
    no_show: bool = False  # never call back
    amount_override: int | None = None
    query_processing_times: int = 0  # query answers "being processed" this many times first


@dataclass
class Push:
    body: dict[str, Any]
    checkout_id: str
    plan: Plan
    pushed_at: float = 0.0  # loop time of the push: the customer "finishes" plan.delay seconds later
    queries: int = 0
    callbacks_sent: list[int] = field(default_factory=list)


class DarajaStandIn(StandIn):
    def __init__(self) -> None:
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.pushes: list[Push] = []
        self.plan = Plan()
        self.push_error: tuple[int, dict[str, Any]] | None = None
        self.query_error: tuple[int, dict[str, Any]] | None = None  # every query answers this (an outage)
        self.query_delay = 0.0  # seconds before a query is answered (a slow Daraja)
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.redeliver = False  # keep re-sending a callback (every 0.5 s, up to a minute) until it gets a 200
        self.till: str | None = None  # set for a buy-goods merchant: PartyB must be this till
        self.oauth_calls = 0
        self.push_hang = 0.0  # seconds a push is held before its answer (accepted, but the answer is late)
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/oauth/v1/generate", self.oauth)
        app.router.add_post("/mpesa/stkpush/v1/processrequest", self.push)
        app.router.add_post("/mpesa/stkpushquery/v1/query", self.query)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    async def oauth(self, request: web.Request) -> web.Response:
        self.oauth_calls += 1
        expected = "Basic " + base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected or request.query.get("grant_type") != "client_credentials":
            return web.json_response({"errorCode": "400.008.01", "errorMessage": "Invalid Authentication"}, status=400)
        self.tokens_issued += 1
        token = f"tok{self.tokens_issued}x{'y' * 20}"
        self.valid_tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": "3599"})

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self.valid_tokens

    def _check_push(self, body: dict[str, Any]) -> str | None:
        ts = str(body.get("Timestamp", ""))
        if not re.fullmatch(r"\d{14}", ts):
            return "Timestamp"
        try:  # Kenyan time (UTC+3), give or take a couple of minutes of clock skew
            sent = datetime.strptime(ts, "%Y%m%d%H%M%S").replace(tzinfo=ZoneInfo("Africa/Nairobi"))
        except ValueError:
            return "Timestamp"
        if abs(datetime.now(ZoneInfo("Africa/Nairobi")) - sent) > timedelta(minutes=2):
            return "Timestamp"
        if body.get("Password") != base64.b64encode(f"{SHORTCODE}{PASSKEY}{ts}".encode()).decode():
            return "Password"
        if not isinstance(body.get("Amount"), int) or body["Amount"] < 1:
            return "Amount"
        if not re.fullmatch(r"254[17]\d{8}", str(body.get("PartyA"))) or body.get("PhoneNumber") != body.get("PartyA"):
            return "PhoneNumber"
        if len(str(body.get("AccountReference", ""))) > 12 or len(str(body.get("TransactionDesc", ""))) > 13:
            return "AccountReference"
        if body.get("TransactionType") != ("CustomerBuyGoodsOnline" if self.till else "CustomerPayBillOnline"):
            return "TransactionType"
        if body.get("PartyB") != (self.till or SHORTCODE):
            return "PartyB"
        if not str(body.get("CallBackURL", "")).startswith("http"):
            return "CallBackURL"
        if body.get("BusinessShortCode") != SHORTCODE:
            return "BusinessShortCode"
        return None

    async def push(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}, status=401)
        if self.push_error:
            status, body = self.push_error
            return web.json_response(body, status=status)
        body = await request.json()
        bad = self._check_push(body)
        if bad:
            self.errors.append(bad)
            return web.json_response(
                {"requestId": "r", "errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {bad}"},
                status=400,
            )
        n = next(self._ids)
        push = Push(body, f"ws_CO_2511202612{n:06d}", self.plan, asyncio.get_running_loop().time())
        self.pushes.append(push)
        if not push.plan.no_show:
            for _ in range(push.plan.copies):
                task = asyncio.create_task(self._callback(push))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self.push_hang:
            await asyncio.sleep(self.push_hang)
        return web.json_response(
            {
                "MerchantRequestID": f"29115-{n}",
                "CheckoutRequestID": push.checkout_id,
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            }
        )

    def callback_body(self, push: Push, result_code: int | None = None, amount: int | None = None) -> dict[str, Any]:
        code = push.plan.result_code if result_code is None else result_code
        cb: dict[str, Any] = {
            "MerchantRequestID": f"29115-{push.checkout_id[-6:]}",
            "CheckoutRequestID": push.checkout_id,
            "ResultCode": code,
            "ResultDesc": "The service request is processed successfully."
            if code == 0
            else "Request cancelled by user",
        }
        if code == 0:
            paid = amount if amount is not None else (push.plan.amount_override or push.body["Amount"])
            cb["CallbackMetadata"] = {
                "Item": [
                    {"Name": "Amount", "Value": paid},
                    {"Name": "MpesaReceiptNumber", "Value": f"RLA{push.checkout_id[-6:]}X"},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": 20261125133416},
                    {"Name": "PhoneNumber", "Value": int(push.body["PartyA"])},
                ]
            }
        return {"Body": {"stkCallback": cb}}

    async def _callback(self, push: Push) -> None:
        await asyncio.sleep(push.plan.delay)
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(120 if self.redeliver else 1):
                try:
                    resp = await http.post(push.body["CallBackURL"], json=self.callback_body(push))
                    push.callbacks_sent.append(resp.status_code)
                    if resp.status_code == 200:
                        return
                except httpx.HTTPError:
                    push.callbacks_sent.append(0)
                await asyncio.sleep(0.5)

    async def query(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}, status=401)
        body = await request.json()
        await asyncio.sleep(self.query_delay)
        if self.query_error:
            status, error = self.query_error
            return web.json_response(error, status=status)
        push = next((p for p in self.pushes if p.checkout_id == body.get("CheckoutRequestID")), None)
        if push is None:
            return web.json_response(
                {"errorCode": "400.002.02", "errorMessage": "Invalid CheckoutRequestID"}, status=400
            )
        push.queries += 1
        # As Daraja: "being processed" until the customer has finished (when the plan calls back), then
        # the plan's result for this push, whatever any callback (ours or forged) said.
        finishing = asyncio.get_running_loop().time() < push.pushed_at + push.plan.delay
        if finishing or push.queries <= push.plan.query_processing_times:
            return web.json_response(
                {"requestId": "q", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"},
                status=500,
            )
        return web.json_response(
            {
                "ResponseCode": "0",
                "ResponseDescription": "accepted",
                "MerchantRequestID": "m",
                "CheckoutRequestID": push.checkout_id,
                "ResultCode": str(push.plan.result_code),
                "ResultDesc": "done",
            }
        )

    async def settle(self) -> None:
        """Wait until every scheduled callback was delivered."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
