"""A DHL Shipment Tracking – Unified API stand-in: realistic bodies (events newest first), problem+json
404s for unknown numbers, 401 for a wrong key, its own rate limit (per second and in total) answered
with 429 + Retry-After, and injectable 5xx answers. Every request is recorded."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins import StandIn

API_KEY = "dhl-test-api-key-0123456789"
PROBLEM = "application/problem+json"


def event(code: str, description: str, place: str, ts: str) -> dict[str, Any]:
    """One Unified API event (the shape of `status` and of each `events[]` item)."""
    return {
        "timestamp": ts,
        "location": {"address": {"addressLocality": place}},
        "statusCode": code,
        "status": description.upper(),
        "description": description,
    }


PRE_TRANSIT = [event("pre-transit", "Shipment information received", "NAIROBI - KENYA", "2026-11-25T08:00:00Z")]
IN_TRANSIT = [
    event("transit", "Arrived at DHL Sort Facility", "LEIPZIG - GERMANY", "2026-11-26T03:10:00Z"),
    event("transit", "Departed Facility in NAIROBI - KENYA", "NAIROBI - KENYA", "2026-11-25T22:40:00Z"),
    *PRE_TRANSIT,
]
DELIVERED = [
    event("delivered", "Delivered - Signed for by: J SMITH", "LONDON - UNITED KINGDOM", "2026-11-28T11:05:00Z"),
    *IN_TRANSIT,
]
FAILURE = [event("failure", "Shipment on hold - customs", "LEIPZIG - GERMANY", "2026-11-26T09:00:00Z"), *IN_TRANSIT]
UNKNOWN = [event("unknown", "Status not available", "", "2026-11-26T09:00:00Z")]


@dataclass
class Request:
    tracking_number: str
    params: dict[str, str]
    status: int
    at: float


class DhlStandIn(StandIn):
    def __init__(self, per_second: int = 1000, total: int | None = None, retry_after: str = "2") -> None:
        self.shipments: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[str] = []  # tracking numbers answered 200/404 (within the limits, good key)
        self.requests: list[Request] = []  # every request, whatever the answer
        self.per_second, self.total, self.retry_after = per_second, total, retry_after
        self.errors: deque[int] = deque()  # statuses to answer next (e.g. 503), one per request
        self.recent: deque[float] = deque()
        self.answered_429 = 0
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/track/shipments", self.track)

    def answered(self, status: int) -> list[Request]:
        return [r for r in self.requests if r.status == status]

    async def track(self, request: web.Request) -> web.Response:
        number = request.query.get("trackingNumber", "")
        response = self._answer(request, number)
        self.requests.append(Request(number, dict(request.query), response.status, time.monotonic()))
        return response

    def _answer(self, request: web.Request, number: str) -> web.Response:
        if request.headers.get("DHL-API-Key") != API_KEY:
            return self._problem(401, "Unauthorized", "Invalid API key")
        if self.errors:
            return self._problem(self.errors.popleft(), "Service Unavailable", "try again later")
        if self._over_limit():
            self.answered_429 += 1
            return self._problem(429, "Too many requests", "rate limit exceeded", {"Retry-After": self.retry_after})
        self.calls.append(number)
        events = self.shipments.get(number)
        if events is None:
            return self._problem(404, "No result found", f"No shipment with given tracking number {number} found.")
        return web.json_response(
            {
                "shipments": [
                    {
                        "id": number,
                        "service": request.query.get("service", "express"),
                        "origin": {"address": {"addressLocality": "NAIROBI - KENYA", "countryCode": "KE"}},
                        "destination": {"address": {"addressLocality": "LONDON - UNITED KINGDOM", "countryCode": "GB"}},
                        "status": events[0],
                        "events": events,
                        "estimatedTimeOfDelivery": "2026-11-29T18:00:00Z",
                        "details": {"product": {"productName": "EXPRESS WORLDWIDE"}, "totalNumberOfPieces": 1},
                    }
                ]
            }
        )

    def _over_limit(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= 1:
            self.recent.popleft()
        if len(self.recent) >= self.per_second or (self.total is not None and len(self.calls) >= self.total):
            return True
        self.recent.append(now)
        return False

    @staticmethod
    def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"status": status, "title": title, "detail": detail}, status=status, headers=headers, content_type=PROBLEM
        )
