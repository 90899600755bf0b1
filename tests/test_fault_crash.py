"""Crash test: the shop (`storefront run`, webhook mode, on PostgreSQL) is SIGKILLed at random points
of checkout → payment callback → notification, 50 times, and restarted each time. Afterwards no
payment is lost or doubled, every due message reached the buyer, and stock is conserved."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Order, Outbox, Payment, Product
from services import cart as cart_service
from services.payments import mpesa_flow
from tests import daraja_standin as dj
from tests.factories import make_product
from tests.harness import TEST_TOKEN
from tests.webserver import free_port

pytestmark = [pytest.mark.pg_only, pytest.mark.faults]
KILLS = int(os.environ.get("CRASH_KILLS", "50"))
ROOT = Path(__file__).resolve().parent.parent
SECRET = "crash_test_secret"


class Shop:
    """The shop as a separate process we can kill at any moment: `storefront run`, forked by
    tests/crash_forkserver.py (which imported its modules once) in a process group of its own. What
    every run printed goes to one log file, so a failure can be read from what the killed processes said."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env, self.port = env, port
        self.pid: int | None = None
        self.kills = 0
        self.log_path = log_path
        self.forkserver = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_forkserver", str(log_path)],
            env={**env, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=log_path.parent,
        )

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"--- start after {self.kills} kills ---\n".encode())
        assert self.forkserver.stdin and self.forkserver.stdout
        self.forkserver.stdin.write("start\n")
        self.forkserver.stdin.flush()
        line = self.forkserver.stdout.readline()
        assert line, f"the fork server ended (exit code {self.forkserver.poll()}); its error is in the test's stderr"
        self.pid = int(line)

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)  # the fork server's children are reaped at once: a dead one is gone
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        self.kill()
        self.forkserver.kill()
        self.forkserver.wait()

    @contextmanager
    def log_on_failure(self, lines: int = 200) -> Iterator[None]:
        try:
            yield
        except AssertionError:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
            print(f"\n--- last {len(tail)} lines the shop printed ({self.log_path}) ---\n" + "\n".join(tail))
            raise

    def kill(self) -> None:
        if self.alive():
            assert self.pid is not None
            os.killpg(self.pid, signal.SIGKILL)
            while self.alive():
                time.sleep(0.001)
            self.kills += 1

    async def up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    if (await http.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return
                except (httpx.HTTPError, AttributeError):  # as in deliver(): a connection cut mid-setup
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the shop did not come up")


class Customer:
    """Sends updates like Telegram does: the same update again until it is answered 200."""

    def __init__(self, user_id: int, port: int) -> None:
        self.user_id, self.port = user_id, port
        self.next_id = user_id * 1000

    async def deliver(self, update: dict[str, Any], shop: Shop) -> None:
        self.next_id += 1
        update["update_id"] = self.next_id
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(600):
                if not shop.alive():
                    shop.start()
                    await shop.up()
                try:
                    r = await http.post(
                        f"http://127.0.0.1:{self.port}/telegram",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    )
                    if r.status_code == 200:
                        return
                except (httpx.HTTPError, AttributeError):  # AttributeError: anyio, the kill closed the
                    pass  # connection while httpx was still setting it up
                await asyncio.sleep(0.1)
        raise AssertionError("update never accepted")

    def message(self, text: str) -> dict[str, Any]:
        return {
            "message": {
                "message_id": self.next_id,
                "date": int(time.time()),
                "text": text,
                "chat": {"id": self.user_id, "type": "private"},
                "from": {"id": self.user_id, "is_bot": False, "first_name": "Crash"},
                **(
                    {"entities": [{"type": "bot_command", "offset": 0, "length": len(text)}]}
                    if text.startswith("/")
                    else {}
                ),
            }
        }

    def press(self, data: str) -> dict[str, Any]:
        return {
            "callback_query": {
                "id": f"cq{self.next_id}",
                "data": data,
                "chat_instance": "c",
                "from": {"id": self.user_id, "is_bot": False, "first_name": "Crash"},
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "text": ".",
                    "chat": {"id": self.user_id, "type": "private"},
                },
            }
        }


async def journey(customer: Customer, shop: Shop, session_factory) -> None:  # type: ignore[no-untyped-def]
    for update in (
        customer.press("chk:start"),
        customer.press("chk:z:nairobi"),
        customer.message(f"0712{customer.user_id % 1_000_000:06d}"),
        customer.message("crash@example.com"),
        customer.message("Plot 7, Ngong Road, Nairobi"),
        customer.press("chk:ok"),
    ):
        await customer.deliver(update, shop)
    async with session_factory() as session:
        order = (
            (await session.execute(select(Order).where(Order.customer_id == customer.user_id)))
            .unique()
            .scalar_one_or_none()
        )
    if order is not None:  # a kill can cost the customer their place in checkout; then they just don't order
        await customer.deliver(customer.press(f"pay:m:{order.public_id}"), shop)


async def test_sigkill_fifty_times(engine, session_factory, botapi, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261125)
    daraja = await dj.DarajaStandIn().start()
    daraja.plan = dj.Plan(delay=0.2)
    daraja.redeliver = True  # like a late retry: a callback to a dead process comes again
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BOT_TOKEN": TEST_TOKEN,
        "TELEGRAM_API_URL": botapi.url,
        "LOAD_DEMO_CATALOG": "false",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": "redis://127.0.0.1:6379/4",
        "MPESA_BASE_URL": daraja.url,
        "MPESA_CONSUMER_KEY": dj.CONSUMER_KEY,
        "MPESA_CONSUMER_SECRET": dj.CONSUMER_SECRET,
        "MPESA_SHORTCODE": dj.SHORTCODE,
        "MPESA_PASSKEY": dj.PASSKEY,
        "MPESA_CALLBACK_TOKEN": dj.CALLBACK_TOKEN,
        "MPESA_QUERY_AFTER_SECONDS": "1",
        "JOB_INTERVAL_OVERRIDE_SECONDS": "1",
    }
    pid = await make_product(session_factory, "CRASH-1", stock=1000, price_kes=1500_00)
    # Runs (other workers', other checkouts') share the Redis server and its FSM keys: customers of our own.
    first = random.SystemRandom().randrange(10**9, 2 * 10**9)
    customers = [Customer(first + n, port) for n in range(KILLS)]
    for c in customers:
        async with session_factory() as session, session.begin():
            await cart_service.ensure_customer(session, c.user_id, c.user_id, "Crash")
            await cart_service.add(session, c.user_id, await session.get(Product, pid), 1 + c.user_id % 2)
    shop = Shop(env, port, tmp_path / "shop.log")
    phases = {"began": time.monotonic()}
    with shop.log_on_failure():
        shop.start()
        await shop.up()
        try:
            for c in customers:  # one kill at a random moment of each customer's journey or what follows it
                at = rng.uniform(0.02, 1.2)
                started = time.monotonic()
                killer = asyncio.get_running_loop().call_later(at, shop.kill)
                await journey(c, shop, session_factory)
                await asyncio.sleep(max(0.0, at - (time.monotonic() - started)) + 0.01)  # payment, messages in flight
                killer.cancel()
                if not shop.alive():
                    shop.start()
                    await shop.up()
            phases["storm"] = time.monotonic()
            await daraja.settle()

            async def quiet() -> bool:
                async with session_factory() as session:
                    pending = (
                        await session.execute(
                            select(func.count()).select_from(Payment).where(Payment.state == "pending")
                        )
                    ).scalar_one()
                    unsent = (
                        await session.execute(select(func.count()).select_from(Outbox).where(Outbox.state == "pending"))
                    ).scalar_one()
                return pending == 0 and unsent == 0

            # Lost callbacks: queries; pushes never confirmed: closed after mpesa_flow.FINAL_TIMEOUT (3 min).
            deadline = time.monotonic() + mpesa_flow.FINAL_TIMEOUT.total_seconds() + 60
            while not await quiet():
                assert time.monotonic() < deadline, "payments or messages still pending after the storm"
                await asyncio.sleep(0.5)
            phases["quiet"] = time.monotonic()
        finally:
            shop.close()
            await daraja.stop()
        assert shop.kills >= KILLS * 0.8  # the kills really happened (a few land between journeys)

        async with session_factory() as session:
            orders = (await session.execute(select(Order))).unique().scalars().all()
            payments = (await session.execute(select(Payment))).unique().scalars().all()
            product = await session.get(Product, pid)
            sent = (await session.execute(select(Outbox).where(Outbox.kind == "order_status"))).scalars().all()
        charged = {p.checkout_id for p in daraja.pushes}  # every prompt the customers paid
        paid = Counter(p.checkout_request_id for p in payments if p.state == "paid")
        assert set(paid) == charged and max(paid.values()) == 1  # none lost, none doubled
        by_order = Counter(p.order_id for p in payments if p.state == "paid")
        assert max(by_order.values()) == 1  # no order charged twice
        assert {o.state for o in orders} <= {"processing", "awaiting_payment"}
        assert all(o.state == "processing" for o in orders if by_order.get(o.id))
        qty = sum(i.quantity for o in orders if o.state == "processing" for i in o.items)
        held = sum(i.quantity for o in orders if o.state == "awaiting_payment" for i in o.items)
        assert (product.sold, product.reserved, product.stock + product.reserved + product.sold) == (qty, held, 1000)
        # Every due message reached the buyer; a resend after a kill mid-send is the only duplicate allowed.
        delivered = Counter((c.chat_id, c.text) for c in botapi.sent(method="sendMessage"))
        assert all(delivered[(m.chat_id, m.text)] >= 1 for m in sent)
        duplicates = sum(n - 1 for n in delivered.values() if n > 1)
        print(
            f"\ncrash test: {shop.kills} kills, {len(orders)} orders, {len(charged)} payments, "
            f"{len(sent)} status messages, {duplicates} duplicate deliveries; storm "
            f"{phases['storm'] - phases['began']:.0f} s, then quiet after {phases['quiet'] - phases['storm']:.0f} s"
        )
        assert duplicates <= shop.kills // 10
