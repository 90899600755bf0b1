"""The order status page (GET/POST /status, GET /status/view) over HTTP against the real web app, on
SQLite and PostgreSQL: the right order number and email show the order (and never its phone number or
address), a wrong pair is one answer whatever was wrong, the CSRF token and the per-address limit
hold, names are escaped, the page speaks Swahili, and headless Chromium renders it."""

from __future__ import annotations

import asyncio
import os
import random
import re
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Product
from services import admin
from services import orders as sm
from tests.factories import make_order, make_product
from tests.harness import Harness
from tests.standins import BotAPIStandIn
from tests.test_redis_state import REDIS_URL, redis_up
from tests.webserver import serve_shop
from webhooks import status as status_page

EMAIL = "buyer@example.com"  # tests.factories.make_order's
PHONE = "254712345678"
ADDRESS = "Plot 1, Ngong Rd, Nairobi"
CHROMIUM = Path("/usr/bin/chromium")


@asynccontextmanager
async def browser(shop: Harness, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client (with a cookie jar, like a browser) on the shop's web app."""
    assert shop.shop is not None
    async with serve_shop(shop.shop) as base, httpx.AsyncClient(base_url=base, headers=headers) as http:
        yield http


async def open_form(http: httpx.AsyncClient, path: str = "/status") -> str:
    """GET the form; its CSRF token (the cookie it belongs to is now in the client's jar)."""
    page = await http.get(path)
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def look_up(http: httpx.AsyncClient, order: str, email: str, token: str, path: str = "/status") -> httpx.Response:
    return await http.post(path, data={"csrf": token, "order": order, "email": email})


async def placed(shop: Harness, name: str | None = None, *, zone: str = "nairobi", customer: int = 501) -> str:
    pid = await make_product(shop.session_factory, f"SKU-{customer}", stock=5, price_kes=45_000_00, price_usd=350_00)
    if name is not None:
        async with shop.session_factory() as session, session.begin():
            await session.execute(update(Product).where(Product.id == pid).values(name=name))
    order = await make_order(shop.session_factory, customer, [(pid, 2)], zone=zone)
    return order.public_id


async def paid(shop: Harness, public_id: str) -> None:
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, public_id), sm.PROCESSING, "system:test")


async def shipped_with_dhl(shop: Harness, waybill: str = "1234567890") -> str:
    public_id = await placed(shop, "ThinkPad T480", zone="intl")
    await paid(shop, public_id)
    async with shop.session_factory() as session, session.begin():
        await admin.ship(session, public_id, waybill, None, "admin:1")
    return public_id


async def test_the_right_pair_shows_the_order_and_never_its_phone_or_address(shop: Harness) -> None:
    public_id = await shipped_with_dhl(shop)
    async with browser(shop) as http:
        token = await open_form(http)
        # Typed as people type: lower case, without the HL- prefix, the email in another case with spaces.
        answer = await look_up(http, public_id.removeprefix("HL-").lower(), f"  {EMAIL.upper()} ", token)
        assert answer.status_code == 303
        assert answer.headers["Location"].startswith("/status/view?t=")
        page = await http.get(answer.headers["Location"])
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    html = page.text
    assert f"Order {public_id}" in html
    assert '<p class="state state-shipped" id="state">Shipped</p>' in html
    assert "ThinkPad T480 × 2" in html
    assert "USD 700" in html or "$700" in html  # 2 × $350, as services/money formats it
    assert "<dd>DHL</dd>" in html and "<dd>1234567890</dd>" in html
    assert (
        'href="https://www.dhl.com/ke-en/home/tracking/tracking-express.html?submit=1&amp;tracking-id=1234567890"'
        in html
    )
    assert re.search(r"Last update: \d{1,2} \w{3} \d{4}, \d{2}:\d{2} \(Nairobi time\)", html)
    for secret in (PHONE, "0712345678", "712345678", ADDRESS, "Ngong", EMAIL):
        assert secret not in html
    # Results are not cached, framed, sniffed or referred.
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert f"style-src 'sha256-{status_page.CSS_HASH}'" in csp


async def test_a_paid_order_reads_as_people_say_it_and_an_unknown_carrier_has_no_link(shop: Harness) -> None:
    public_id = await placed(shop)
    await paid(shop, public_id)
    async with browser(shop) as http:
        page = await look_up(http, public_id, EMAIL, await open_form(http))
        page = await http.get(page.headers["Location"])
        assert ">Paid — being prepared<" in page.text
        assert "Tracking number" not in page.text
        async with shop.session_factory() as session, session.begin():
            await admin.ship(session, public_id, "G4S-778812", "G4S", "admin:1")
        page = await http.get(page.url)
    assert ">Shipped<" in page.text and "<dd>G4S-778812</dd>" in page.text
    assert 'id="track"' not in page.text  # no tracking page we know of for this courier


async def test_a_wrong_email_and_no_such_order_are_the_same_answer_from_the_same_query(
    shop: Harness, engine: AsyncEngine
) -> None:
    public_id = await placed(shop)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)

    async with browser(shop) as http:
        token = await open_form(http)
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            wrong_email = await look_up(http, public_id, "someone.else@example.com", token)
            queries_wrong_email, statements[:] = list(statements), []
            no_order = await look_up(http, "HL-ZZZZZZ", EMAIL, token)
            queries_no_order = list(statements)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert wrong_email.status_code == no_order.status_code == 200
    assert wrong_email.content == no_order.content  # byte for byte
    assert dict(wrong_email.headers).keys() == dict(no_order.headers).keys()
    assert "We couldn't find an order with that number and email address." in no_order.text
    assert public_id not in no_order.text
    selects = [s for s in queries_wrong_email if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and queries_wrong_email == queries_no_order  # no items read for a wrong pair


async def test_a_post_without_the_forms_token_is_refused_without_a_look_up(shop: Harness) -> None:
    public_id = await placed(shop)
    async with browser(shop) as http:
        no_token = await http.post("/status", data={"order": public_id, "email": EMAIL})
        token = await open_form(http)
        wrong_token = await look_up(http, public_id, EMAIL, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
        http.cookies.clear()  # the token without the cookie it was made for (a cross-site form)
        no_cookie = await look_up(http, public_id, EMAIL, token)
        # Another browser's valid cookie and token pair does not fit this one.
        async with browser(shop) as other:
            other_token = await open_form(other)
        token = await open_form(http)
        foreign = await look_up(http, public_id, EMAIL, other_token)
        right = await look_up(http, public_id, EMAIL, token)
    for refused in (no_token, wrong_token, no_cookie, foreign):
        assert refused.status_code == 403
        assert "Please send the form again" in refused.text
        assert "Location" not in refused.headers
    assert right.status_code == 303


async def test_the_form_cookie_is_http_only_and_same_site_strict(shop: Harness) -> None:
    async with browser(shop) as http:
        page = await http.get("/status")
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"{status_page.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/status" in cookie


async def test_lookups_are_limited_per_client_address(shop: Harness) -> None:
    public_id = await placed(shop)
    async with browser(shop) as http:
        token = await open_form(http)
        answers = [await look_up(http, "HL-ZZZZZZ", EMAIL, token) for _ in range(status_page.LOOKUPS_PER_MINUTE)]
        assert {a.status_code for a in answers} == {200}
        refused = await look_up(http, public_id, EMAIL, token)  # even the right pair, now
    assert refused.status_code == 429
    assert "Too many look-ups" in refused.text and "wait a minute" in refused.text
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["Cache-Control"] == "no-store"


async def test_behind_a_trusted_proxy_the_forwarded_address_is_limited(
    engine: AsyncEngine, botapi: BotAPIStandIn
) -> None:
    harness = await Harness(engine, botapi, trusted_proxies="127.0.0.1/32").start()
    try:
        public_id = await placed(harness)
        async with browser(harness, **{"X-Forwarded-For": "203.0.113.7"}) as first:
            token = await open_form(first)
            for _ in range(status_page.LOOKUPS_PER_MINUTE):
                assert (await look_up(first, "HL-ZZZZZZ", EMAIL, token)).status_code == 200
            assert (await look_up(first, public_id, EMAIL, token)).status_code == 429
            # Another customer behind the same proxy has their own allowance.
            first.headers["X-Forwarded-For"] = "203.0.113.8"
            assert (await look_up(first, public_id, EMAIL, token)).status_code == 303
    finally:
        await harness.stop()


async def test_web_processes_sharing_redis_share_each_addresss_allowance(
    engine: AsyncEngine, botapi: BotAPIStandIn
) -> None:
    if not await redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    settings: dict[str, Any] = {"redis_url": REDIS_URL, "trusted_proxies": "127.0.0.1/32"}
    first = await Harness(engine, botapi, **settings).start()
    second = await Harness(engine, botapi, **settings).start()
    client = str(IPv4Address(random.randint(int(IPv4Address("10.0.0.0")), int(IPv4Address("10.255.255.255")))))
    try:  # runs share the Redis server: a client address of our own
        public_id = await placed(first)
        async with browser(first, **{"X-Forwarded-For": client}) as one, browser(second) as other:
            token = await open_form(one)
            stranger = f"someone-{client}@example.com"  # Redis outlives the run: its own per-email allowance too
            for _ in range(status_page.LOOKUPS_PER_MINUTE):
                assert (await look_up(one, "HL-ZZZZZZ", stranger, token)).status_code == 200
            other.cookies = one.cookies
            other.headers["X-Forwarded-For"] = client
            assert (await look_up(other, public_id, EMAIL, token)).status_code == 429
    finally:
        await first.stop()
        await second.stop()


async def test_a_product_name_with_markup_is_shown_as_text(shop: Harness) -> None:
    public_id = await placed(shop, '<script>alert("x")</script> & <b>Co</b>')
    async with browser(shop) as http:
        answer = await look_up(http, public_id, EMAIL, await open_form(http))
        page = await http.get(answer.headers["Location"])
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;Co&lt;/b&gt; × 2" in page.text
    assert "<script" not in page.text and "<b>Co" not in page.text


async def test_swahili_by_accept_language_and_by_the_lang_link(shop: Harness) -> None:
    public_id = await placed(shop)
    await paid(shop, public_id)
    async with browser(shop, **{"Accept-Language": "sw-KE,sw;q=0.9,en;q=0.8"}) as http:
        form = await http.get("/status")
        assert '<html lang="sw">' in form.text and "Oda yangu iko wapi?" in form.text
        assert 'action="/status?lang=sw"' in form.text
        answer = await look_up(http, public_id, EMAIL, await open_form(http), path="/status?lang=sw")
        page = await http.get(answer.headers["Location"])
        assert f"Oda {public_id}" in page.text and ">Imelipwa — inaandaliwa<" in page.text
        assert "Ilisasishwa mwisho:" in page.text and "(saa za Nairobi)" in page.text
        missing = await look_up(http, "HL-ZZZZZZ", EMAIL, await open_form(http), path="/status?lang=sw")
        assert "Hatukupata oda" in missing.text
    async with browser(shop, **{"Accept-Language": "en-GB,en;q=0.9"}) as http:
        english = await http.get("/status")
        assert '<html lang="en">' in english.text and "Where is my order?" in english.text
        assert 'href="/status?lang=sw"' in english.text  # the switch
        swahili = await http.get("/status?lang=sw")
        assert '<html lang="sw">' in swahili.text and "Nambari ya oda" in swahili.text
    async with browser(shop, **{"Accept-Language": "fr-FR, de;q=0.5"}) as http:
        assert '<html lang="en">' in (await http.get("/status")).text


async def test_a_tampered_or_expired_link_shows_nothing(shop: Harness) -> None:
    public_id = await placed(shop)
    assert shop.shop is not None
    page = status_page.StatusPage(shop.shop)
    good = page.link_token(public_id)
    other = await placed(shop, customer=502)
    forged = good.replace(public_id, other)
    expired = page.link_token(public_id, now=0)
    async with browser(shop) as http:
        assert (await http.get("/status/view", params={"t": good})).status_code == 200
        for token in (forged, expired, "", "junk", f"{public_id}.99999999999.x"):
            refused = await http.get("/status/view", params={"t": token})
            assert refused.status_code == 403
            assert "This link has expired" in refused.text and public_id not in refused.text


# --- headless Chromium --------------------------------------------------------------------------------


def png_size_and_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB/RGBA PNG (the stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw, stride, prev = zlib.decompress(idat), width * bpp, bytearray(width * bpp)
    rows: list[bytes] = []
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(row))
        prev = row
    return width, height, rows


async def chromium(*args: str, tmp: Path) -> bytes:
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


@pytest.fixture
def browser_installed() -> None:
    """Skips without Chromium on a developer's machine; in CI (CI set) its absence is a failure."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs chromium")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")


@pytest.mark.usefixtures("browser_installed")
async def test_headless_chromium_renders_the_result_page(shop: Harness, tmp_path: Path) -> None:
    public_id = await shipped_with_dhl(shop)
    assert shop.shop is not None
    async with serve_shop(shop.shop) as base, httpx.AsyncClient(base_url=base) as http:
        answer = await look_up(http, public_id, EMAIL, await open_form(http))
        url = base + answer.headers["Location"]
        shot = tmp_path / "status.png"
        await chromium(f"--screenshot={shot}", "--window-size=420,900", url, tmp=tmp_path / "profile-1")
        dom = (await chromium("--dump-dom", url, tmp=tmp_path / "profile-2")).decode()
    width, height, rows = png_size_and_pixels(await asyncio.to_thread(shot.read_bytes))
    assert (width, height) == (420, 900)
    bpp = len(rows[0]) // width
    pixels = {row[x : x + 3] for row in rows[::5] for x in range(0, len(row), bpp * 5)}
    assert len(pixels) > 20, "the screenshot is (nearly) blank"
    # The header's teal is there: the stylesheet ran under the page's Content-Security-Policy (by its hash).
    assert bytes.fromhex("0f766e") in {row[x : x + 3] for row in rows[:40] for x in range(0, len(row), bpp)}
    assert '<p class="state state-shipped" id="state">Shipped</p>' in dom
    assert "ThinkPad T480 × 2" in dom and "1234567890" in dom


async def test_one_buyers_email_is_limited_whatever_the_address(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    """Many client addresses (an IPv6 range) cannot guess one buyer's order ids by spreading the tries."""
    harness = await Harness(engine, botapi, trusted_proxies="127.0.0.1/32").start()
    try:
        public_id = await placed(harness)
        async with browser(harness) as http:
            token = await open_form(http)
            for n in range(status_page.LOOKUPS_PER_EMAIL_PER_HOUR):
                http.headers["X-Forwarded-For"] = f"2001:db8:{n:x}::1"
                assert (await look_up(http, f"HL-ZZZZ{n:02d}", EMAIL, token)).status_code == 200
            http.headers["X-Forwarded-For"] = "2001:db8:ffff::1"
            refused = await look_up(http, public_id, EMAIL, token)
            other_buyer = await look_up(http, public_id, "someone.else@example.com", token)
    finally:
        await harness.stop()
    assert refused.status_code == 429
    assert other_buyer.status_code == 200  # another address typed: its own allowance (and no match)


async def test_non_ascii_tokens_are_refused_not_an_error(shop: Harness) -> None:
    public_id = await placed(shop)
    async with browser(shop) as http:
        await open_form(http)
        form = await look_up(http, public_id, EMAIL, "é")
        link = await http.get("/status/view", params={"t": f"{public_id}.99999999999.é"})
    assert (form.status_code, link.status_code) == (403, 403)
