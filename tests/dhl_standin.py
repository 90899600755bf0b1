"""A DHL Shipment Tracking – Unified API stand-in with realistic bodies, 404s, 401s and its own rate limit."""
from __future__ import annotations

import time
from collections import deque
from typing import Any

from aiohttp import web

from tests.standins import StandIn

API_KEY = "dhl-test-api-key-0123456789"


def event(code: str, description: str, place: str, ts: str) -> dict[str, Any]:
    return {"timestamp": ts, "location": {"address": {"addressLocality": place}}, "statusCode": code,
            "status": description.upper(), "description": description}


PRE_TRANSIT = [event("pre-transit", "Shipment information received", "NAIROBI - KENYA", "2026-11-25T08:00:00Z")]
IN_TRANSIT = [event("transit", "Arrived at DHL Sort Facility", "LEIPZIG - GERMANY", "2026-11-26T03:10:00Z"),
              event("transit", "Departed Facility in NAIROBI - KENYA", "NAIROBI - KENYA", "2026-11-25T22:40:00Z")] + PRE_TRANSIT
DELIVERED = [event("delivered", "Delivered - Signed for by: J SMITH", "LONDON - UNITED KINGDOM",
                   "2026-11-28T11:05:00Z")] + IN_TRANSIT
FAILURE = [event("failure", "Shipment on hold - customs", "LEIPZIG - GERMANY", "2026-11-26T09:00:00Z")] + IN_TRANSIT


class DhlStandIn(StandIn):
    def __init__(self, per_second: int = 1000, total: int | None = None) -> None:
        self.shipments: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[str] = []
        self.per_second, self.total = per_second, total
        self.recent: deque[float] = deque()
        self.answered_429 = 0
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/track/shipments", self.track)

    async def track(self, request: web.Request) -> web.Response:
        if request.headers.get("DHL-API-Key") != API_KEY:
            return web.json_response({"status": 401, "title": "Unauthorized", "detail": "Invalid API key"}, status=401,
                                     content_type="application/problem+json")
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= 1:
            self.recent.popleft()
        if len(self.recent) >= self.per_second or (self.total is not None and len(self.calls) >= self.total):
            self.answered_429 += 1
            return web.json_response({"status": 429, "title": "Too many requests"}, status=429,
                                     headers={"Retry-After": "2"}, content_type="application/problem+json")
        self.recent.append(now)
        number = request.query.get("trackingNumber", "")
        self.calls.append(number)
        events = self.shipments.get(number)
        if events is None:
            return web.json_response({"status": 404, "title": "No result found",
                                      "detail": f"No shipment with given tracking number {number} found."},
                                     status=404, content_type="application/problem+json")
        return web.json_response({"shipments": [{
            "id": number, "service": request.query.get("service", "express"),
            "origin": {"address": {"addressLocality": "NAIROBI - KENYA", "countryCode": "KE"}},
            "destination": {"address": {"addressLocality": "LONDON - UNITED KINGDOM", "countryCode": "GB"}},
            "status": events[0], "events": events, "details": {"product": {"productName": "EXPRESS WORLDWIDE"}}}]})
