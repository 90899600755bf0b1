"""The log-hygiene check (tests/log_hygiene.py) sees what the tests log, through the production formatter,
and fails the test during which a bot token, API key, passkey, secret or full phone number was logged —
in whatever order and selection the tests run, on any xdist worker."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import daraja_standin as dj
from tests import stripe_standin
from tests.harness import TEST_TOKEN
from tests.log_hygiene import CAPTURE, leaks

ROOT = Path(__file__).resolve().parent.parent


def test_what_a_test_logs_is_captured_through_the_production_formatter() -> None:
    logging.getLogger("services.orders").warning("hygiene.probe", extra={"phone": "0712345678"})
    text = CAPTURE.peek()
    assert "WARNING services.orders hygiene.probe phone=" in text  # the capture sits on the root logger
    assert "0712345678" not in text and "*****678" in text  # ... behind the production redactor


def test_the_check_finds_phone_numbers_and_secrets() -> None:
    assert leaks("order.placed chat=42 items=3 phone=07*****678") == []
    for leaked in (
        "msisdn=254712345678",
        "to 0712345678.",
        "token=" + TEST_TOKEN,
        f"auth {dj.PASSKEY}",
        f"key {stripe_standin.SECRET_KEY}",
        "Authorization: Bearer abcdefgh12345678",
    ):
        assert leaks(f"2026-11-25 10:00:00 INFO x.y event {leaked} rest"), leaked


INNER = """
import logging

import pytest

from tests import daraja_standin

log = logging.getLogger("services.mpesa")


def test_clean():
    log.info("stk.sent phone=0712345678")  # the redactor masks it: nothing leaks


def test_leaks_a_passkey():
    log.info("stk.sent with %s", daraja_standin.PASSKEY)  # not a key=value pair: the redactor can't tell


def test_leaks_a_phone_number_once_the_redactor_regresses(monkeypatch):
    import bot.logging_setup

    monkeypatch.setattr(bot.logging_setup, "redact", lambda text: text)
    log.info("stk.sent phone=0712345678")


@pytest.fixture
def noisy_teardown():
    yield
    log.info("cleanup for 254798765432")


def test_leaks_in_a_fixture_teardown(monkeypatch, noisy_teardown):  # monkeypatch undone last
    import bot.logging_setup

    monkeypatch.setattr(bot.logging_setup, "redact", lambda text: text)


def test_clean_after_leaks():
    log.info("stk.sent phone=0712345678")
"""


def test_a_leak_fails_the_test_that_logged_it_in_any_order(tmp_path: Path) -> None:
    """A separate pytest run with only the check loaded (and not pytest's own log display), and no test
    that runs last to look: the leaking tests fail (an error at their teardown), the clean ones pass,
    also a clean one that runs right after a leaking one."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.log_hygiene",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:logging",
            "-q",
            "-rA",
            "-o",
            "addopts=",
            "test_inner.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    errors = set(re.findall(r"^ERROR test_inner\.py::(\w+)", out, re.M))
    passed = set(re.findall(r"^PASSED test_inner\.py::(\w+)", out, re.M))
    assert errors == {
        "test_leaks_a_passkey",
        "test_leaks_a_phone_number_once_the_redactor_regresses",
        "test_leaks_in_a_fixture_teardown",
    }, out
    assert passed >= {"test_clean", "test_clean_after_leaks"}, out
    assert "5 passed, 3 errors" in out and done.returncode == 1, out
    assert "reached the logs while this test ran" in out and "0712345678" in out and "254798765432" in out
    assert dj.PASSKEY[:4] + "…" in out and dj.PASSKEY not in out  # the report names the secret, not prints it
