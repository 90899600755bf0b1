"""Two `storefront web` and two `storefront worker` processes on one PostgreSQL: nothing is done twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from db.models import Order, OrderEvent, Outbox, Payment
from services import orders as sm
from services.notifications import enqueue
from tests import daraja_standin as dj
from tests.factories import make_order, make_product
from tests.harness import TEST_TOKEN
from tests.webserver import free_port

pytestmark = [pytest.mark.pg_only, pytest.mark.faults]


def spawn(command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def sample(exposition: str, name: str) -> float:
    """A sample's value in Prometheus text output (0 when the series was never touched)."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.3)
    raise AssertionError("condition not reached in time")


async def test_two_web_and_two_worker_processes(engine, session_factory, botapi) -> None:  # type: ignore[no-untyped-def]
    daraja = await dj.DarajaStandIn().start()
    daraja.plan = dj.Plan(no_show=True)
    ports = [free_port(), free_port()]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BOT_TOKEN": TEST_TOKEN,
        "TELEGRAM_API_URL": botapi.url,
        "LOAD_DEMO_CATALOG": "false",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[0]}",
        "TELEGRAM_WEBHOOK_SECRET": "multi_proc_secret",
        "MPESA_BASE_URL": daraja.url,
        "MPESA_CONSUMER_KEY": dj.CONSUMER_KEY,
        "MPESA_CONSUMER_SECRET": dj.CONSUMER_SECRET,
        "MPESA_SHORTCODE": dj.SHORTCODE,
        "MPESA_PASSKEY": dj.PASSKEY,
        "MPESA_CALLBACK_TOKEN": dj.CALLBACK_TOKEN,
        "MPESA_QUERY_AFTER_SECONDS": "1",
        "JOB_INTERVAL_OVERRIDE_SECONDS": "1",
        "ADMIN_CHAT_ID": "-100777",
    }
    # Work for the workers: 8 unpaid orders whose reservation ran out, 40 queued messages.
    pid = await make_product(session_factory, "MP-1", stock=100)
    for n in range(8):
        await make_order(session_factory, 100 + n, [(pid, 1)], reservation_minutes=1)
    async with session_factory() as session, session.begin():
        from db.models import utcnow

        await session.execute(update(Order).values(reserved_until=utcnow() - timedelta(minutes=1)))
        for n in range(40):
            enqueue(session, 500 + n, f"queued {n}", kind="order_status")
    # Work for the web processes: one paid M-Pesa attempt whose callback both will receive.
    paid = await make_order(session_factory, 300, [(pid, 2)], reservation_minutes=30)
    from services.payments.mpesa import MpesaClient

    client = MpesaClient(
        daraja.url,
        dj.CONSUMER_KEY,
        dj.CONSUMER_SECRET,
        dj.SHORTCODE,
        dj.PASSKEY,
        f"http://127.0.0.1:{ports[0]}/webhooks/mpesa/{dj.CALLBACK_TOKEN}",
    )
    accepted = await client.stk_push(
        amount=paid.total // 100, msisdn="254712345678", account_reference=paid.public_id, description="x"
    )
    await client.aclose()
    async with session_factory() as session, session.begin():
        o = await sm.get_order(session, paid.public_id)
        session.add(
            Payment(
                order_id=o.id,
                provider="mpesa",
                state="pending",
                amount=o.total,
                currency="KES",
                phone="254712345678",
                checkout_request_id=accepted.checkout_request_id,
            )
        )

    worker_ports = [free_port(), free_port()]
    procs = [spawn("worker", {**env, "WORKER_PORT": str(port)}) for port in worker_ports]
    procs += [spawn("web", {**env, "PORT": str(port)}) for port in ports]
    try:

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    codes = [(await http.get(f"http://127.0.0.1:{p}/healthz")).status_code for p in ports]
                return codes == [200, 200]
            except httpx.HTTPError:
                return False

        await wait_for(up)
        body = daraja.callback_body(daraja.pushes[0], result_code=0)
        async with httpx.AsyncClient() as http:
            replies = await asyncio.gather(
                *(
                    http.post(f"http://127.0.0.1:{ports[i % 2]}/webhooks/mpesa/{dj.CALLBACK_TOKEN}", json=body)
                    for i in range(10)
                )
            )
        assert [r.status_code for r in replies] == [200] * 10

        async def settled() -> bool:
            async with session_factory() as session:
                pending = (
                    await session.execute(select(func.count(Outbox.id)).where(Outbox.state == "pending"))
                ).scalar_one()
                waiting = (
                    await session.execute(select(func.count(Order.id)).where(Order.state == "awaiting_payment"))
                ).scalar_one()
            return pending == 0 and waiting == 0

        await wait_for(settled)
        # What only the workers did (sending the outbox, expiring reservations) is in their own /metrics.
        async with httpx.AsyncClient() as http:
            scraped = [(await http.get(f"http://127.0.0.1:{p}/metrics")).text for p in worker_ports]
            ready = [(await http.get(f"http://127.0.0.1:{p}/readyz")).status_code for p in worker_ports]
        assert ready == [200, 200]
        assert sum(sample(text, 'storefront_notifications_total{outcome="sent"}') for text in scraped) >= 40
        assert sum(sample(text, "storefront_reservation_expiries_total") for text in scraped) == 8
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        await daraja.stop()
    assert all(p.returncode is not None for p in procs)
    async with session_factory() as session:
        events = Counter((e.order_id, e.to_state) for e in (await session.execute(select(OrderEvent))).scalars())
        states = Counter((await session.execute(select(Order.state))).scalars().all())
        payments = (await session.execute(select(Payment.state))).scalars().all()
    assert states == Counter({"expired": 8, "processing": 1})
    assert all(n == 1 for n in events.values())  # no transition applied twice
    assert payments == ["paid"]
    sends = Counter((c.chat_id, c.text) for c in botapi.sent(method="sendMessage"))
    assert sends and max(sends.values()) == 1  # every message went out once
    assert sum(1 for (chat, text) in sends if text.startswith("queued")) == 40
    assert len(daraja.pushes[0].callbacks_sent) == 0
