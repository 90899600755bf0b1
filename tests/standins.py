"""Local stand-in HTTP servers. Tests never touch the internet: every external API is served here."""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web


class StandIn:
    """An aiohttp server on 127.0.0.1 and a free port; subclasses add routes in `routes()`."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=10 * 1024 * 1024)
        self.routes(self.app)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StandIn:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    result: Any = None
    content_type: str = ""
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # field -> (filename, content) uploaded

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(text, callback_data or url or 'contact') of every button, row by row."""
        markup = self.params.get("reply_markup") or {}
        out: list[tuple[str, str]] = []
        for row in markup.get("inline_keyboard", []) + markup.get("keyboard", []):
            for b in row:
                if isinstance(b, str):
                    out.append((b, ""))
                else:
                    out.append(
                        (
                            b["text"],
                            b.get("callback_data") or b.get("url") or ("contact" if b.get("request_contact") else ""),
                        )
                    )
        return out

    def button(self, label_part: str) -> str:
        """callback_data (or url) of the button labelled exactly `label_part` (ignoring a leading emoji),
        else of the first button whose text contains it."""
        for text, data in self.buttons:
            if text.lower() == label_part.lower() or text.lower().split(" ", 1)[-1] == label_part.lower():
                return data
        for text, data in self.buttons:
            if label_part.lower() in text.lower():
                return data
        raise AssertionError(f"no button containing {label_part!r} in {self.buttons}")


Responder = Callable[[str, dict[str, Any]], Awaitable[web.Response | None]]

# Telegram's HTML parse mode: these tags only, balanced; `<` only opens a tag; `&` only starts an entity.
TELEGRAM_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:=(?:\"[^\"<>]*\"|'[^'<>]*'|[^\s<>\"']+))?)*)\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")
_DOUBLE_ESCAPED = re.compile(r"&amp;(?:amp|lt|gt|quot|#[0-9]+|#x[0-9a-fA-F]+);")


def html_problem(text: str) -> str | None:
    """Why Telegram would refuse `text` in HTML parse mode ("can't parse entities: …"), else None."""
    stack: list[str] = []
    at = 0
    while at < len(text):
        ch = text[at]
        if ch == "&":
            entity = _ENTITY.match(text, at)
            if entity is None:
                return f"Can't find end of the entity starting at byte offset {at}"
            at = entity.end()
            continue
        if ch != "<":
            at += 1
            continue
        tag = _TAG.match(text, at)
        if tag is None:
            return f"Unexpected end of name token at byte offset {at}"
        closing, name = tag.group(1), tag.group(2).lower()
        if name not in TELEGRAM_TAGS:
            return f'Unsupported start tag "{name}" at byte offset {at}'
        if closing:
            if not stack or stack[-1] != name:
                return f"Unexpected end tag at byte offset {at}"
            stack.pop()
        else:
            stack.append(name)
        at = tag.end()
    if stack:
        return f'Can\'t find end tag corresponding to start tag "{stack[-1]}"'
    return None


def visible_text(text: str) -> str:
    """`text` as a reader sees it after Telegram parsed its HTML."""
    return html.unescape(_TAG.sub("", text))


class BotAPIStandIn(StandIn):
    """Implements the Bot API methods the shop calls and records every call.

    `responder` may return a response to inject failures (429, 403, 5xx); returning None falls back
    to the normal, successful answer.

    Like Telegram, a text or caption sent with parse_mode HTML that does not parse is refused with
    400 "can't parse entities" (recorded as `<method>:rejected`), and one longer than 4096 (caption
    1024) characters after parsing with "message is too long". Texts that show an entity escaped
    twice (`&amp;lt;`) are listed in `double_escaped` for tests to check.
    """

    BOT_USER: ClassVar[dict[str, Any]] = {
        "id": 900000001,
        "is_bot": True,
        "first_name": "HackLab Shop",
        "username": "hacklab_shop_bot",
    }

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.responder: Responder | None = None
        self.chat_member_status: dict[tuple[int, int], str] = {}
        self.pending_updates: list[list[dict[str, Any]]] = []  # batches served to getUpdates
        self._ids = itertools.count(1000)
        self.lock = asyncio.Lock()
        self.double_escaped: list[Call] = []
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/{method}", self.handle)
        app.router.add_get("/bot{token}/{method}", self.handle)

    async def _params(self, request: web.Request, files: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
        if request.content_type == "application/json":
            raw = await request.json()
        elif request.can_read_body:
            raw = dict(await request.post())
        else:
            raw = dict(request.query)
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, str) and value[:1] in "{[":
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            elif not isinstance(value, str) and hasattr(value, "filename"):
                files[key] = (value.filename, value.file.read())
                value = f"<file {value.filename}>"
            if key in ("chat_id", "message_id", "user_id") and isinstance(value, str) and value.lstrip("-").isdigit():
                value = int(value)
            params[key] = value
        return params

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        files: dict[str, tuple[str, bytes]] = {}
        params = await self._params(request, files)
        if self.responder is not None:
            injected = await self.responder(method, params)
            if injected is not None:
                self.calls.append(Call(method + ":rejected", params))
                return injected
        refused = self.refusal(method, params)
        if refused is not None:
            self.calls.append(Call(method + ":rejected", params))
            return web.json_response(
                {"ok": False, "error_code": 400, "description": f"Bad Request: {refused}"}, status=400
            )
        call = Call(method, params, content_type=request.content_type, files=files)
        if _DOUBLE_ESCAPED.search(call.text):
            self.double_escaped.append(call)
        call.result = self.result_for(method, params)
        self.calls.append(call)
        return web.json_response({"ok": True, "result": call.result})

    @staticmethod
    def refusal(method: str, params: dict[str, Any]) -> str | None:
        field = "caption" if "caption" in params else "text"
        if method not in (
            "sendMessage",
            "sendPhoto",
            "sendDocument",
            "editMessageText",
            "editMessageCaption",
        ) or not isinstance(params.get(field), str):
            return None
        text = params[field]
        if str(params.get("parse_mode", "")).lower() == "html":
            problem = html_problem(text)
            if problem is not None:
                return f"can't parse entities: {problem}"
            text = visible_text(text)
        if len(text) > (1024 if field == "caption" else 4096):
            return "message caption is too long" if field == "caption" else "message is too long"
        return None

    def result_for(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return self.BOT_USER
        if method == "getUpdates":
            return self.pending_updates.pop(0) if self.pending_updates else []
        if method in (
            "sendMessage",
            "sendPhoto",
            "sendDocument",
            "editMessageText",
            "editMessageCaption",
            "editMessageReplyMarkup",
            "editMessageMedia",
        ):
            chat_id = int(params.get("chat_id") or 0)
            message_id = int(params["message_id"]) if "message_id" in params else next(self._ids)
            msg: dict[str, Any] = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
                "from": self.BOT_USER,
            }
            if method == "sendDocument":
                msg["caption"] = params.get("caption", "")
                msg["document"] = {"file_id": "d", "file_unique_id": "ud"}
            elif method == "sendPhoto" or "caption" in params:
                msg["caption"] = params.get("caption", "")
                msg["photo"] = [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]
            else:
                msg["text"] = params.get("text", "")
            if (
                "reply_markup" in params
                and isinstance(params["reply_markup"], dict)
                and "inline_keyboard" in params["reply_markup"]
            ):
                msg["reply_markup"] = params["reply_markup"]
            return msg
        if method == "getChatMember":
            key = (int(params["chat_id"]), int(params["user_id"]))
            status = self.chat_member_status.get(key, "member")
            member: dict[str, Any] = {
                "status": status,
                "user": {"id": int(params["user_id"]), "is_bot": False, "first_name": "U"},
            }
            if status == "administrator":
                member.update(
                    dict.fromkeys(
                        (
                            "can_be_edited",
                            "is_anonymous",
                            "can_manage_chat",
                            "can_delete_messages",
                            "can_manage_video_chats",
                            "can_restrict_members",
                            "can_promote_members",
                            "can_change_info",
                            "can_invite_users",
                            "can_post_stories",
                            "can_edit_stories",
                            "can_delete_stories",
                            "can_send_welcome_messages",
                        ),
                        False,
                    )
                )
            elif status == "creator":
                member["is_anonymous"] = False
            return member
        if method == "getChatAdministrators":
            return [
                {"status": status, "user": {"id": uid, "is_bot": False, "first_name": "A"}}
                for (chat, uid), status in self.chat_member_status.items()
                if chat == int(params["chat_id"]) and status in ("administrator", "creator")
            ]
        return True

    # --- assertions helpers -----------------------------------------------------------------------

    def sent(self, chat_id: int | None = None, method: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if (chat_id is None or c.chat_id == chat_id) and (method is None or c.method == method)
        ]

    def last(
        self,
        chat_id: int | None = None,
        *,
        methods: tuple[str, ...] = (
            "sendMessage",
            "sendPhoto",
            "editMessageText",
            "editMessageCaption",
            "editMessageReplyMarkup",
            "editMessageMedia",
        ),
    ) -> Call:
        for call in reversed(self.calls):
            if call.method in methods and (chat_id is None or call.chat_id == chat_id):
                return call
        raise AssertionError(f"the bot sent nothing to chat {chat_id}")

    def clear(self) -> None:
        self.calls.clear()
