"""Makes the Bot API stand-in behave like Telegram under load: 429 with retry_after past ~30/s
overall or 1/s per chat (20/min per group), and scripted 403 / 5xx / flood-wait 429 / timeouts for chosen
chats. A hung request is answered 504 after `hang_seconds` (the client has long given up), so it is
recorded as rejected and never counts as a delivery."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from typing import Any

from aiohttp import web

from tests.standins import BotAPIStandIn


class TelegramLimits:
    def __init__(
        self,
        botapi: BotAPIStandIn,
        per_second: int = 30,
        per_chat_seconds: float = 1.0,
        group_per_minute: int = 20,
        hang_seconds: float = 1.0,
    ) -> None:
        self.per_second, self.per_chat_seconds, self.group_per_minute = per_second, per_chat_seconds, group_per_minute
        self.recent: deque[float] = deque()
        self.per_chat: dict[int, deque[float]] = defaultdict(deque)
        self.answered_429 = 0
        self.blocked: set[int] = set()
        self.failing: dict[int, int] = {}  # chat -> number of 500s still to answer
        self.hanging: dict[int, int] = {}  # chat -> number of requests to leave unanswered (timeouts)
        self.flood: dict[int, float] = {}  # chat -> retry_after of one 429 for that chat alone
        self.hang_seconds = hang_seconds
        botapi.responder = self.respond

    def _too_fast(self, chat_id: int, now: float) -> bool:
        while self.recent and now - self.recent[0] >= 1.0:
            self.recent.popleft()
        window, limit = (60.0, self.group_per_minute) if chat_id < 0 else (self.per_chat_seconds, 1)
        times = self.per_chat[chat_id]
        while times and now - times[0] >= window:
            times.popleft()
        return len(self.recent) >= self.per_second or len(times) >= limit

    async def respond(self, method: str, params: dict[str, Any]) -> web.Response | None:
        if method != "sendMessage":
            return None
        chat_id = int(params["chat_id"])
        if self.hanging.get(chat_id):
            self.hanging[chat_id] -= 1
            await asyncio.sleep(self.hang_seconds)
            return web.json_response({"ok": False, "error_code": 504, "description": "Gateway Timeout"}, status=504)
        if chat_id in self.blocked:
            return web.json_response(
                {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, status=403
            )
        if self.failing.get(chat_id):
            self.failing[chat_id] -= 1
            return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
        if chat_id in self.flood:
            self.answered_429 += 1
            retry_after = self.flood.pop(chat_id)
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {retry_after}",
                    "parameters": {"retry_after": retry_after},
                },
                status=429,
            )
        now = time.monotonic()
        if self._too_fast(chat_id, now):
            self.answered_429 += 1
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
                status=429,
            )
        self.recent.append(now)
        self.per_chat[chat_id].append(now)
        return None
