"""A Stripe API stand-in (Checkout Sessions, refunds) and webhook events signed like Stripe signs them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from typing import Any

from aiohttp import web

from tests.standins import StandIn

SECRET_KEY = "sk_test_51StandInSecretKey000000"
WEBHOOK_SECRET = "whsec_standinwebhooksecret0000"


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) into nested dicts/lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: Any = value if last else ([] if parts[i + 1].isdigit() else {})
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append(None)
                if node[idx] is None or last:
                    node[idx] = nxt
                node = node[idx]
            else:
                if part not in node or last:
                    node[part] = nxt
                node = node[part]
    return root


class StripeStandIn(StandIn):
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, dict[str, Any]] = {}
        self.refunds: list[dict[str, Any]] = []
        self.creates = 0
        self.fail_creates = 0  # answer this many creates with a 500
        self.expires = 0  # expire requests answered (either way)
        self.down = False  # answer every API request with a 503 (Stripe unreachable; told not to retry)
        self.create_delay = 0.0  # seconds a create takes (so concurrent presses overlap)
        self.create_gate: asyncio.Event | None = None  # when set: creates wait for it (after `creating` is set)
        self.creating = asyncio.Event()
        self.expire_gate: asyncio.Event | None = None  # when set: expires wait for it (after `expiring` is set)
        self.expiring = asyncio.Event()
        self._ids = itertools.count(1)
        super().__init__()

    @web.middleware
    async def _outage(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        if self.down:
            return web.json_response(
                {"error": {"type": "api_error", "message": "Service unavailable"}},
                status=503,
                headers={"Stripe-Should-Retry": "false"},
            )
        return await handler(request)

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._outage)
        app.router.add_post("/v1/checkout/sessions", self.create)
        app.router.add_get("/v1/checkout/sessions/{id}", self.retrieve)
        app.router.add_post("/v1/checkout/sessions/{id}/expire", self.expire)
        app.router.add_post("/v1/refunds", self.refund)

    def _auth(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {SECRET_KEY}"

    @staticmethod
    def error(status: int, message: str, param: str | None = None) -> web.Response:
        return web.json_response(
            {"error": {"type": "invalid_request_error", "message": message, "param": param}}, status=status
        )

    async def create(self, request: web.Request) -> web.Response:
        if not self._auth(request):
            return self.error(401, "Invalid API Key provided")
        key = request.headers.get("Idempotency-Key")
        if key and key in self.by_key:
            return web.json_response(self.by_key[key])
        self.creating.set()
        if self.create_gate is not None:
            await self.create_gate.wait()
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if self.fail_creates > 0:
            self.fail_creates -= 1
            return self.error(500, "An unknown error occurred")
        form = parse_form(list((await request.post()).items()))
        now = int(time.time())
        expires = int(form.get("expires_at", now + 86400))
        if not now + 1800 - 5 <= expires <= now + 86400:
            return self.error(400, "expires_at must be within 30 minutes and 24 hours", "expires_at")
        items = form.get("line_items") or []
        currencies = {i["price_data"]["currency"] for i in items}
        if form.get("mode") != "payment" or not items or len(currencies) != 1 or not currencies <= {"kes", "usd"}:
            return self.error(400, "bad line_items or mode", "line_items")
        total = sum(int(i["price_data"]["unit_amount"]) * int(i["quantity"]) for i in items)
        self.creates += 1
        sid = f"cs_test_{next(self._ids):04d}"
        session = {
            "id": sid,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{sid}",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": total,
            "currency": currencies.pop(),
            "client_reference_id": form.get("client_reference_id"),
            "metadata": form.get("metadata", {}),
            "payment_intent": None,
            "expires_at": expires,
            "mode": "payment",
            "customer_email": form.get("customer_email"),
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "line_items_sent": items,
        }
        self.sessions[sid] = session
        if key:
            self.by_key[key] = session
        return web.json_response(session)

    async def retrieve(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        return web.json_response(session) if session else self.error(404, "No such checkout.session")

    async def expire(self, request: web.Request) -> web.Response:
        self.expires += 1
        if self.expire_gate is not None:
            self.expiring.set()
            await self.expire_gate.wait()
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return self.error(404, "No such checkout.session")
        if session["status"] != "open":
            return self.error(400, f"Only open sessions can be expired (this one is {session['status']})")
        session["status"] = "expired"
        return web.json_response(session)

    async def refund(self, request: web.Request) -> web.Response:
        if not self._auth(request):
            return self.error(401, "Invalid API Key provided")
        form = parse_form(list((await request.post()).items()))
        if not any(s["payment_intent"] == form.get("payment_intent") for s in self.sessions.values()):
            return self.error(400, "No such payment_intent", "payment_intent")
        refund = {
            "id": f"re_{len(self.refunds) + 1:04d}",
            "object": "refund",
            "status": "succeeded",
            "payment_intent": form["payment_intent"],
        }
        if "amount" in form:  # a partial refund
            refund["amount"] = int(form["amount"])
        self.refunds.append(refund)
        return web.json_response(refund)

    # --- the customer pays; Stripe sends events -------------------------------------------------------

    def pay(self, sid: str, *, amount: int | None = None, currency: str | None = None) -> dict[str, Any]:
        session = self.sessions[sid]
        session.update(status="complete", payment_status="paid", payment_intent=f"pi_{sid[-4:]}")
        if amount is not None:
            session["amount_total"] = amount
        if currency is not None:
            session["currency"] = currency
        return session

    def event(self, event_type: str, session: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {
            "id": event_id or f"evt_{next(self._ids):06d}",
            "object": "event",
            "type": event_type,
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": {k: v for k, v in session.items() if k != "line_items_sent"}},
        }


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def signed(event: dict[str, Any], **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": sign(body, **kwargs), "Content-Type": "application/json"}
