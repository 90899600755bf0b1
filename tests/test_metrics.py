"""GET /metrics over HTTP against the real web app: the Prometheus text format, counts that follow what
customers do (and only what was committed), the optional bearer token, and the Grafana dashboard's
metric names all served."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Outbox
from services import orders as order_service
from tests.harness import Harness
from tests.standins import BotAPIStandIn
from tests.test_checkout import USER, fill_cart, go_to_phone
from tests.webserver import serve_shop

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"
TOKEN = "metrics-token-for-the-test-0123456789"


async def scrape(shop: Harness, headers: dict[str, str] | None = None) -> httpx.Response:
    assert shop.shop is not None
    async with serve_shop(shop.shop) as base, httpx.AsyncClient(base_url=base) as http:
        return await http.get("/metrics", headers=headers or {})


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` in a scrape (0 when it is not there yet)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def exposed_names(text: str) -> set[str]:
    """Every name a PromQL expression can use against this scrape, samples or not yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


async def place_order_as_customer(shop: Harness) -> None:
    await fill_cart(shop, ("LAP-TP-T480", 1))
    await go_to_phone(shop)
    await shop.share_contact(USER, "+254712345678")
    await shop.send(USER, "wanjiru@example.com")
    summary = await shop.send(USER, "Apt 4B, Kenyatta Ave, Nairobi CBD")
    offer = await shop.press(USER, summary.button("Confirm"))
    assert "is placed" in offer.text


async def test_metrics_answer_in_the_prometheus_text_format(shop: Harness) -> None:
    reply = await scrape(shop)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE storefront_order_transitions_total counter" in reply.text
    assert "# TYPE storefront_outbox_depth gauge" in reply.text


async def test_placing_an_order_counts_a_transition_to_awaiting_payment(shop: Harness) -> None:
    before = (await scrape(shop)).text
    await place_order_as_customer(shop)
    after = (await scrape(shop)).text
    placed = {"from_state": "none", "to_state": "awaiting_payment"}
    assert value(after, "storefront_order_transitions_total", **placed) == (
        value(before, "storefront_order_transitions_total", **placed) + 1
    )
    # The Confirm press went through the handler middleware: counted and timed under its handler's name.
    for name in ("storefront_updates_total", "storefront_handler_seconds_count"):
        assert value(after, name, handler="confirm") == value(before, name, handler="confirm") + 1


async def test_a_placement_rolled_back_with_its_savepoint_is_not_counted(shop: Harness) -> None:
    """checkout() places the order in a savepoint and rolls that back when the quote changed: the
    transaction commits, the placement never happened and is not counted. Confirmed at the right
    price, it is."""
    await fill_cart(shop, ("LAP-TP-T480", 1))
    placed = {"from_state": "none", "to_state": "awaiting_payment"}
    counts = [value((await scrape(shop)).text, "storefront_order_transitions_total", **placed)]
    for quoted in (("KES", 1), ("KES", 42000_00 + 300_00)):
        async with shop.session_factory() as session:
            try:
                await order_service.checkout(
                    session,
                    USER,
                    quoted=quoted,
                    zone_code="nairobi",
                    phone="254712345678",
                    email="w@example.com",
                    address="Kenyatta Ave",
                    reservation_minutes=30,
                )
            except order_service.QuoteChanged:
                await session.commit()
        counts.append(value((await scrape(shop)).text, "storefront_order_transitions_total", **placed))
    assert counts == [counts[0], counts[0], counts[0] + 1]


async def test_outbox_gauges_are_read_from_the_database(shop: Harness) -> None:
    async with shop.session_factory() as session, session.begin():
        session.add_all(Outbox(chat_id=USER, kind="test", text=f"message {n}") for n in range(3))
    text = (await scrape(shop)).text
    assert value(text, "storefront_outbox_depth") == 3
    assert value(text, "storefront_outbox_oldest_pending_seconds") >= 0


async def test_metrics_token_is_demanded_when_set(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    harness = await Harness(engine, botapi, metrics_token=TOKEN).start()
    try:
        missing = await scrape(harness)
        wrong = await scrape(harness, {"Authorization": "Bearer not-the-token"})
        bare = await scrape(harness, {"Authorization": TOKEN})
        right = await scrape(harness, {"Authorization": f"Bearer {TOKEN}"})
    finally:
        await harness.stop()
    assert (missing.status_code, wrong.status_code, bare.status_code) == (401, 401, 401)
    assert "storefront_" not in missing.text + wrong.text + bare.text
    assert right.status_code == 200 and "storefront_order_transitions_total" in right.text


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\b(storefront_[a-z_]+)", expr)}


async def test_every_metric_the_dashboard_queries_is_served(shop: Harness) -> None:
    names = dashboard_metric_names()
    assert {"storefront_order_transitions_total", "storefront_outbox_depth", "storefront_payments_total"} <= names
    served = exposed_names((await scrape(shop)).text)
    assert names - served == set()


async def test_the_worker_serves_its_own_health_and_metrics(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    """The worker process has no web app; it gets a small server of its own on WORKER_PORT so what
    only it counts (the outbox sender, expiries, reconciliation) can be scraped."""
    from bot.serve import bound_port, serve_worker_http

    harness = await Harness(engine, botapi, metrics_token=TOKEN, worker_port=0).start()
    assert harness.shop is not None
    runner = await serve_worker_http(harness.shop)
    try:
        assert runner is not None
        base = f"http://127.0.0.1:{bound_port(runner)}"
        async with httpx.AsyncClient(base_url=base) as http:
            alive = await http.get("/healthz")
            ready = await http.get("/readyz")
            refused = await http.get("/metrics")
            scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            telegram = await http.post("/telegram", json={})
    finally:
        if runner is not None:
            await runner.cleanup()
        await harness.stop()
    assert (alive.status_code, ready.status_code, refused.status_code) == (200, 200, 401)
    assert scraped.status_code == 200 and "storefront_notifications_total" in scraped.text
    assert telegram.status_code == 404  # no Telegram or payment routes on the worker


async def test_no_worker_port_serves_nothing(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    from bot.serve import serve_worker_http

    harness = await Harness(engine, botapi, worker_port=None).start()
    try:
        assert harness.shop is not None
        assert await serve_worker_http(harness.shop) is None
    finally:
        await harness.stop()


async def test_a_taken_worker_port_leaves_the_worker_working(engine: AsyncEngine, botapi: BotAPIStandIn) -> None:
    """Two workers on one host with the default port: the second serves no metrics but still starts
    (an unhandled bind error used to stop it, reported as a database failure)."""
    from bot.serve import bound_port, serve_worker_http

    first = await Harness(engine, botapi, worker_port=0).start()
    assert first.shop is not None
    runner = await serve_worker_http(first.shop)
    assert runner is not None
    second = await Harness(engine, botapi, worker_port=bound_port(runner)).start()
    try:
        assert second.shop is not None
        assert await serve_worker_http(second.shop) is None
    finally:
        await runner.cleanup()
        await first.stop()
        await second.stop()
