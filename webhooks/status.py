"""The order status page: GET /status (a form: order number and email), POST /status (the look-up),
GET /status/view?t=… (the result, by a signed link that expires after LINK_SECONDS).

- The answer to a wrong pair is one page, whether the order does not exist or the email is another's
  (services.order_status.lookup: same query, constant-time comparison); a right pair is answered with
  a 303 to the signed link, so the result is a GET a browser can reload (and a test can screenshot).
- Look-ups are limited per client address (LOOKUPS_PER_MINUTE, burst as large; an IPv6 client by its
  /64), the address as webhooks.common.client_address tells it behind TRUSTED_PROXIES; with REDIS_URL
  every web process shares the buckets.
- The form carries a CSRF token: an HMAC of a random cookie value (HttpOnly, SameSite=Strict) under a
  key derived from the bot's secrets; a POST without the matching pair gets 403 and no look-up.
- Pages are Jinja2 templates (webhooks/templates, autoescaped) with texts from the gettext catalogues
  (locales/<lang>/status.po), in the language of `?lang=`, else of Accept-Language, else English.
  Every page is sent with a strict Content-Security-Policy (no scripts, only our stylesheet by hash),
  no framing, no referrer and no caching. Nothing on them shows a phone number or an address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from aiohttp import web
from babel.dates import format_datetime
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from yarl import URL

from bot.runtime import Shop
from bot.throttle import Limiter, shared_redis
from services import order_status
from services.i18n import DEFAULT_LANG, available_languages, plain, t
from services.money import format_money
from webhooks.common import IPAddress, client_address

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
CSS = (TEMPLATES / "status.css").read_text(encoding="utf-8")
# The page's only style is its own <style> element, allowed by its hash: no 'unsafe-inline'.
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{CSS_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

COOKIE = "status_csrf"
LOOKUPS_PER_MINUTE = 10
LOOKUPS_PER_EMAIL_PER_HOUR = 20
LINK_SECONDS = 600
MAX_FORM = 4096  # two short fields and a token


def _signing_key(shop: Shop) -> bytes:
    """The page's own key, derived from the bot's secrets (the token and the webhook secret), so every web
    process agrees on it without another setting, and it is no other secret of ours."""
    settings = shop.settings
    material = settings.bot_token.get_secret_value() + "\0" + settings.webhook_secret
    return hashlib.sha256(b"status-page\0" + material.encode()).digest()


def _client_key(addr: IPAddress | None) -> int:
    """A limiter key: an IPv4 address itself, an IPv6 client by its /64 (one subscriber's usual share)."""
    if addr is None:
        return 0
    if isinstance(addr, IPv6Address):
        return (1 << 64) | (int(addr) >> 64)
    return int(addr)


def _email_key(email: str) -> int:
    """A limiter key for the address typed, as the look-up compares it (the address itself is not kept)."""
    digest = hashlib.sha256(order_status.normalize_email(email).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick_language(request: web.Request) -> str:
    """`?lang=` when we have it, else the first language of Accept-Language we have (by q), else English."""
    languages = available_languages()
    asked = request.query.get("lang", "").lower()
    if asked in languages:
        return asked
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(request.headers.get("Accept-Language", "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        code = tag.strip().split("-")[0].lower()
        if code in languages and quality > 0:
            ranked.append((-quality, position, code))
    return min(ranked)[2] if ranked else DEFAULT_LANG


class StatusPage:
    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.key = _signing_key(shop)
        bot_id = shop.settings.bot_token.get_secret_value().split(":", 1)[0]
        self.limiter = Limiter(
            LOOKUPS_PER_MINUTE / 60.0,
            LOOKUPS_PER_MINUTE,
            shared_redis(shop.dp.storage),
            key_prefix=f"status:{bot_id}:",
        )
        self.email_limiter = Limiter(
            LOOKUPS_PER_EMAIL_PER_HOUR / 3600.0,
            LOOKUPS_PER_EMAIL_PER_HOUR,
            shared_redis(shop.dp.storage),
            key_prefix=f"status-email:{bot_id}:",
        )

    def setup(self, app: web.Application) -> None:
        app.router.add_get("/status", self.form)
        app.router.add_post("/status", self.submit)
        app.router.add_get("/status/view", self.view)

    # --- tokens -----------------------------------------------------------------------------------

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self.key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def csrf_token(self, cookie: str) -> str:
        return self._mac("csrf", cookie)

    def link_token(self, public_id: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + LINK_SECONDS)
        return f"{public_id}.{expires}.{self._mac('view', f'{public_id}.{expires}')}"

    def _linked_order(self, token: str) -> str | None:
        """The public id a link token is for, while it is genuine and unexpired."""
        public_id, _, rest = token.partition(".")
        expires, _, mac = rest.partition(".")
        expected = self._mac("view", f"{public_id}.{expires}")
        if not expires.isdigit() or not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        return public_id if int(expires) >= time.time() else None

    # --- handlers ---------------------------------------------------------------------------------

    async def form(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get(COOKIE, "")
        fresh = not (16 <= len(cookie) <= 64 and cookie.isascii())
        if fresh:
            cookie = secrets.token_urlsafe(32)
        response = self._form(request, cookie, not_found=False)
        if fresh:
            self._set_cookie(request, response, cookie)
        return response

    async def submit(self, request: web.Request) -> web.Response:
        lang = pick_language(request)
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
        form = await request.post()
        cookie = request.cookies.get(COOKIE, "")
        sent = form.get("csrf")
        # Bytes: compare_digest refuses non-ASCII str (a 500 for anyone who sends "é").
        if (
            not cookie
            or not isinstance(sent, str)
            or not hmac.compare_digest(sent.encode(), self.csrf_token(cookie).encode())
        ):
            log.info("status.csrf_refused")
            return self._refusal(request, lang, "status.forbidden", 403)
        order_id, typed = form.get("order"), form.get("email")
        email = typed if isinstance(typed, str) else ""
        # Per address, and per email whatever the address: many addresses cannot guess one buyer's order ids.
        if not await self.limiter.allow(_client_key(self._client(request))) or not await self.email_limiter.allow(
            _email_key(email)
        ):
            log.info("status.rate_limited")
            response = self._refusal(request, lang, "status.too_many", 429)
            response.headers["Retry-After"] = str(-(-60 // LOOKUPS_PER_MINUTE))
            return response
        async with self.shop.session_factory() as session:
            found = await order_status.lookup(
                session,
                order_id if isinstance(order_id, str) else "",
                email,
            )
        if found is None:
            log.info("status.lookup", extra={"outcome": "no_match"})
            return self._form(request, cookie, not_found=True)
        log.info("status.lookup", extra={"outcome": "found", "order": found.public_id})
        target = URL("/status/view").with_query(t=self.link_token(found.public_id), lang=lang)
        raise web.HTTPSeeOther(location=str(target), headers=HEADERS)

    async def view(self, request: web.Request) -> web.Response:
        lang = pick_language(request)
        public_id = self._linked_order(request.query.get("t", ""))
        found = None
        if public_id is not None:
            async with self.shop.session_factory() as session:
                found = await order_status.by_public_id(session, public_id)
        if found is None:
            return self._refusal(request, lang, "status.link_expired", 403)
        zone = self.shop.settings.shop_zone
        return self._render(
            request,
            "result.html",
            lang,
            order=found,
            money=lambda amount: format_money(amount, found.currency, lang),
            updated=format_datetime(found.updated_at, "d MMM y, HH:mm", tzinfo=zone, locale=lang),
            zone=zone.key.rsplit("/", 1)[-1].replace("_", " "),
            back=str(URL("/status").with_query(lang=lang)),
        )

    # --- rendering --------------------------------------------------------------------------------

    def _client(self, request: web.Request) -> IPAddress | None:
        settings = self.shop.settings
        return client_address(request, settings.trusted_proxies, settings.client_ip_header)

    def _form(self, request: web.Request, cookie: str, *, not_found: bool) -> web.Response:
        lang = pick_language(request)
        return self._render(
            request,
            "form.html",
            lang,
            csrf=self.csrf_token(cookie),
            not_found=not_found,
            action=str(URL("/status").with_query(lang=lang)),
        )

    def _refusal(self, request: web.Request, lang: str, reason: str, status: int) -> web.Response:
        back = str(URL("/status").with_query(lang=lang))
        # The language links lead to the form: a refused request's own URL is not worth repeating.
        return self._render(request, "refusal.html", lang, status=status, here=URL("/status"), reason=reason, back=back)

    def _render(
        self,
        request: web.Request,
        template: str,
        lang: str,
        *,
        status: int = 200,
        here: URL | None = None,
        **context: Any,
    ) -> web.Response:
        here = request.rel_url if here is None else here
        languages = [(code, str(here.update_query(lang=code))) for code in available_languages()]
        html = ENV.get_template(template).render(
            lang=lang,
            css=Markup(CSS),  # our own stylesheet, read from the package
            languages=languages,
            tr=lambda key, **values: t(key, lang, **values),
            plain=lambda key, **values: plain(key, lang, **values),
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)

    def _set_cookie(self, request: web.Request, response: web.Response, value: str) -> None:
        base = self.shop.settings.public_base_url or ""
        response.set_cookie(
            COOKIE,
            value,
            path="/status",
            httponly=True,
            samesite="Strict",
            secure=request.secure or base.startswith("https://"),
        )


def setup(app: web.Application, shop: Shop) -> StatusPage:
    page = StatusPage(shop)
    page.setup(app)
    return page
