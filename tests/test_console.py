"""`storefront console`: the shop in a terminal, driven as a person drives it — a subprocess reading
typed lines, with a SQLite database of its own and no BOT_TOKEN — and `make run`'s command, which
opens it when there is no token and starts the real bot when there is one."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.cli import NO_TOKEN_CONSOLE
from bot.config import Settings
from bot.console_view import terminal_text
from bot.runtime import build_providers
from services.payments.mpesa import MpesaClient
from tests.harness import TEST_TOKEN
from tests.standins import BotAPIStandIn

ROOT = Path(__file__).resolve().parent.parent
SIMULATED = "(simulated M-Pesa: the customer's phone would now ask for the PIN — payment succeeds in the simulation)"


def console_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        # The live shop's database: the console must never open it (it keeps ./console.db, in tmp_path).
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/live-shop.db",
        # A script types faster than a person: the throttle would (rightly) ask it to slow down.
        "THROTTLE_UPDATES_PER_SECOND": "1000",
        "THROTTLE_BURST": "1000",
        **extra,
    }


class Terminal:
    """A console subprocess: `type` a line, `expect` text to appear in what it printed since the last expect."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
        self.output = ""
        self.seen = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            with self._lock:
                self.output += chunk.decode("utf-8", "replace")

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = 30.0) -> str:
        """Wait for `text` after what was already expected; return everything up to and including it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                at = self.output.find(text, self.seen)
                if at >= 0:
                    shown, self.seen = self.output[self.seen : at + len(text)], at + len(text)
                    return shown
            time.sleep(0.05)
        raise AssertionError(
            f"{text!r} did not appear; the console printed after the last match:\n{self.output[self.seen :]}"
        )

    def expect_all(self, *texts: str, timeout: float = 30.0) -> str:
        """Wait for each of `texts` after what was already expected, in any order (messages to
        different chats go out side by side); return everything up to the last of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [self.output.find(text, self.seen) for text in texts]
                if min(found) >= 0:
                    end = max(at + len(text) for at, text in zip(found, texts, strict=True))
                    shown, self.seen = self.output[self.seen : end], end
                    return shown
            time.sleep(0.05)
        missing = [text for text in texts if self.output.find(text, self.seen) < 0]
        raise AssertionError(f"{missing!r} did not appear; the console printed:\n{self.output[self.seen :]}")

    def quit(self) -> int:
        self.type("/quit")
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_customer_buys_pays_and_is_told_of_the_shipment(tmp_path: Path) -> None:
    term = Terminal(["console"], console_env(tmp_path), tmp_path)
    try:
        term.expect("you> ")
        term.type("/start")
        term.expect("[1] 🛍 Catalogue")
        term.type("1")  # pressed by its number
        term.expect("Networking")
        term.type("#Networking")
        term.type("#U6 Lite")
        term.expect("💰 KES 19,800\n")
        term.type("#Add 1 to cart")
        term.expect("toast: Added 1 × Ubiquiti UniFi U6 Lite access point")
        term.type("#Cart")  # the Cart button, not "Add 1 to cart"
        term.expect("🛒 Your cart")
        term.type("#Checkout")
        term.type("#Nairobi")
        term.expect("Your phone number for the courier")
        term.type("#Share my phone")
        term.expect("phone number to share> ")
        term.type("0712 345 678")  # sent as the user's own contact
        term.expect("Your email address")
        term.type("wanjiru@example.com")
        term.expect("Your delivery address")
        term.type("Moi Avenue 1, Nairobi")
        assert "Total: KES 20,100" in term.expect("Confirm order")
        term.type("#Confirm")
        placed = term.expect("How would you like to pay?")
        order = re.search(r"Order (HL-[A-Z0-9]+) is placed", placed)
        assert order is not None, placed
        term.type("#M-Pesa")
        term.expect(SIMULATED)  # the screen says the payment is simulated
        term.expect("Check your phone")
        term.type("#Check payment status")  # the real flow asks the (simulated) STK query: paid
        term.expect("has been received.)")  # the pop-up; the rest comes through the outbox
        term.expect_all(
            f"[you]\n  ✅ Payment received for order {order[1]}",
            f"[admin group]\n  🆕 Paid order {order[1]}",  # the admins' new-order alert
            "[3] Cancel…",
            f"[you] (edited)\n  ✅ Order {order[1]} is paid",  # "Check your phone" loses its buttons
        )
        term.type("/as admin")
        term.expect("admin> ")
        term.type("#Ship")
        term.expect("tracking")
        term.type("TRK-55501")  # the reply to the ForceReply prompt
        assert "[admin group]" in term.expect(f"{order[1]} shipped with Local courier, tracking TRK-55501")
        shipped = term.expect("Tracking number: TRK-55501")  # the customer's notification, through the outbox
        assert f"[you]\n  🚚 Order {order[1]} has shipped with Local courier." in shipped
        term.type("/as customer")
        term.type(f"/track {order[1]}")
        assert "Shipped" in term.expect("Shipped")
        assert term.quit() == 0
    finally:
        term.kill()
    assert "Traceback" not in term.output


def test_the_console_keeps_its_own_database_and_never_opens_the_shops(tmp_path: Path) -> None:
    term = Terminal(["console"], console_env(tmp_path), tmp_path)
    try:
        term.expect("you> ")
        term.type("/start")
        term.expect("Catalogue")
        assert term.quit() == 0
    finally:
        term.kill()
    assert (tmp_path / "console.db").is_file()
    assert not (tmp_path / "live-shop.db").exists()


def test_a_database_with_real_customers_is_refused_before_it_is_migrated(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    with sqlite3.connect(live) as db:  # a live shop's database, on an older schema than this code's
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, chat_id INTEGER)")
        db.execute("INSERT INTO customers VALUES (1001, 1001)")
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console", "--database", f"sqlite+aiosqlite:///{live}"],
        env=console_env(tmp_path),
        cwd=tmp_path,
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"1 real customer(s)" in proc.stdout
    with sqlite3.connect(live) as db:  # not migrated: no Alembic table, no new tables (opening it may set WAL)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"customers"}


def test_make_run_without_a_token_opens_the_console(tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/storefront run --console-if-no-token" in makefile  # what `make run` runs
    term = Terminal(["run", "--console-if-no-token"], console_env(tmp_path), tmp_path)
    try:
        assert term.expect(NO_TOKEN_CONSOLE).strip() == NO_TOKEN_CONSOLE  # the first line, alone
        term.expect("you> ")
        term.type("/start")
        term.expect("Catalogue")
        term.proc.stdin.close()  # type: ignore[union-attr]  # Ctrl-D
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.kill()


async def test_make_run_with_a_token_starts_the_real_bot(tmp_path: Path) -> None:
    botapi = await BotAPIStandIn().start()
    env = console_env(tmp_path, BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=botapi.url, PORT="0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        "--console-if-no-token",
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(600):  # the bot asks the Bot API for updates: it is polling
            if any(c.method == "getUpdates" for c in botapi.calls):
                break
            await asyncio.sleep(0.05)
        methods = [c.method for c in botapi.calls]
        assert methods[0] == "getMe" and "getUpdates" in methods
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        await botapi.stop()
    assert NO_TOKEN_CONSOLE not in out.decode()


def test_without_the_flag_run_and_web_still_refuse_to_start_without_a_token(tmp_path: Path) -> None:
    for command in ("run", "web"):
        proc = subprocess.run(
            [sys.executable, "-m", "bot.cli", command],
            capture_output=True,
            text=True,
            env=console_env(tmp_path),
            cwd=tmp_path,
            timeout=60,
        )
        assert proc.returncode == 2 and "BOT_TOKEN: is required" in proc.stderr and "console" not in proc.stdout


def test_the_simulation_cannot_be_switched_on_outside_the_console() -> None:
    """No setting mentions it, the production entry points never import it, and the providers
    `run`, `web` and `worker` build are the real clients."""
    assert not [name for name in Settings.model_fields if "simul" in name or "console" in name or "fake" in name]
    probe = (
        "import sys, bot.cli, bot.serve, bot.runtime, bot.jobs, webhooks.server; "
        "print(sorted(m for m in sys.modules if m.startswith('bot.console')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        mpesa_consumer_key="k",
        mpesa_consumer_secret="s",
        mpesa_shortcode="174379",
        mpesa_passkey="p",
        mpesa_callback_token="x" * 40,
        public_base_url="https://shop.example",
    )
    providers = build_providers(settings)
    assert type(providers["mpesa"]) is MpesaClient


@pytest.mark.parametrize("ansi", [False, True])
def test_html_is_shown_as_a_reader_sees_it(ansi: bool) -> None:
    text = '<b>Total</b>: KES 1,200 &amp; <a href="https://t.me/shop">our shop</a> <code>SKU-1</code>'
    shown = terminal_text(text, ansi=ansi)
    bold = "\033[1mTotal\033[22m" if ansi else "Total"
    assert shown == f"{bold}: KES 1,200 & our shop (https://t.me/shop) SKU-1"
