"""The logs hold no bot token, API key, passkey, secret or full phone number — checked test by test.

Everything the suite logs in this process goes through the production formatter (bot/logging_setup) into
an in-memory capture on the root logger. When a test's teardown has run (and with it, after the last test,
the session's fixtures), what was logged since the previous check is searched; a leak fails that test
(an error at its teardown, quoting the line). So the check holds whatever order the tests run in, under
`-k` selections and on every xdist worker, and nothing is written to shared files.

Loaded from tests/conftest.py through `pytest_plugins`; tests/test_log_hygiene.py proves it catches leaks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator

import pytest

from bot.logging_setup import StructuredFormatter
from tests import daraja_standin, dhl_standin, stripe_standin
from tests.harness import TEST_TOKEN

FORBIDDEN_PATTERNS = [
    re.compile(r"(?<!\d)(?:254|0)[17]\d{8}(?!\d)"),  # Kenyan MSISDNs, any form
    re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{6,}"),  # Stripe secret keys
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),  # Stripe webhook secrets
    re.compile(r"(?i)\bbearer\s+(?!<redacted>)[A-Za-z0-9._-]{8,}"),  # OAuth tokens
    re.compile(r"(?i)\bbasic\s+(?!<redacted>)[A-Za-z0-9+/=]{8,}"),  # client credentials
]


def known_secrets() -> list[str]:
    """The bot token and every secret value the stand-ins define (names with secret/passkey/token/key)."""
    values = [TEST_TOKEN, TEST_TOKEN.split(":", 1)[1]]
    for module in (daraja_standin, stripe_standin, dhl_standin):
        for name, value in vars(module).items():
            if (
                isinstance(value, str)
                and len(value) >= 8
                and not name.startswith("_")
                and re.search(r"(?i)(secret|passkey|token|key)", name)
            ):
                values.append(value)
    return values


def leaks(text: str) -> list[str]:
    """What in `text` must not be in a log: one description per finding, quoting where it is."""
    found = [f"a secret ({secret[:4]}…)" for secret in known_secrets() if secret in text]
    for pattern in FORBIDDEN_PATTERNS:
        for match in pattern.finditer(text):
            found.append(f"{pattern.pattern!r}: …{text[max(0, match.start() - 80) : match.end() + 20]}")
    return found


class Capture(logging.Handler):
    """Keeps the lines the production formatter makes of every record, until taken."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(StructuredFormatter())
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own contract: a handler never raises
            self.handleError(record)
            return
        self._lines.append(line)

    def peek(self) -> str:
        with self.lock:  # type: ignore[union-attr]
            return "\n".join(self._lines)

    def take(self) -> str:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
        return "\n".join(lines)


CAPTURE = Capture()


def install() -> None:
    """(Re)attach the capture to the root logger: code that resets the root's handlers can't blind the check."""
    root = logging.getLogger()
    if CAPTURE not in root.handlers:
        root.addHandler(CAPTURE)


def pytest_configure(config: pytest.Config) -> None:
    install()
    logging.getLogger().setLevel(logging.INFO)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    install()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    teardown_error: BaseException | None = None
    try:
        return (yield)  # the test's fixtures are torn down (and the session's, after the last test)
    except BaseException as exc:
        teardown_error = exc
        raise
    finally:
        found = leaks(CAPTURE.take())
        if found:
            also = f"\n(its teardown failed too: {teardown_error!r})" if teardown_error else ""
            pytest.fail(
                f"{len(found)} secret(s) or phone number(s) reached the logs while this test ran:\n"
                + "\n".join(found[:10])
                + also,
                pytrace=False,
            )
