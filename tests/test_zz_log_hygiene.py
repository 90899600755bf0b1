"""Runs last (file order): the logs of the whole suite, as the production formatter writes them,
contain no bot token, API key, passkey, secret or full phone number."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from tests.harness import TEST_TOKEN

FORBIDDEN_LITERALS = [TEST_TOKEN, TEST_TOKEN.split(":", 1)[1]]
FORBIDDEN_PATTERNS = [
    re.compile(r"(?<!\d)(?:254|0)[17]\d{8}(?!\d)"),  # Kenyan MSISDNs, any form
    re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{6,}"),  # Stripe secret keys
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),  # Stripe webhook secrets
    re.compile(r"(?i)\bbearer\s+(?!<redacted>)[A-Za-z0-9._-]{8,}"),  # OAuth tokens
    re.compile(r"(?i)\bbasic\s+(?!<redacted>)[A-Za-z0-9+/=]{8,}"),  # client credentials
]


def known_secrets() -> list[str]:
    """Secret values the suite's stand-ins and fixtures use (whatever modules define them)."""
    values = list(FORBIDDEN_LITERALS)
    for module_name in ("tests.daraja_standin", "tests.stripe_standin", "tests.dhl_standin"):
        try:
            module = __import__(module_name, fromlist=["*"])
        except ModuleNotFoundError:
            continue
        for name, value in vars(module).items():
            if isinstance(value, str) and len(value) >= 8 and re.search(
                    r"(?i)(secret|passkey|token|key)", name) and not name.startswith("_"):
                values.append(value)
    return values


def test_suite_logs_hold_no_secrets_or_phone_numbers() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    path = Path(os.environ["STOREFRONT_SUITE_LOG"])
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert text, "the suite wrote no log lines at all — the capture is broken"
    for secret in known_secrets():
        assert secret not in text, f"a secret ({secret[:4]}…) appears in the logs"
    for pattern in FORBIDDEN_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"log line leaks {pattern.pattern!r}: …{text[max(0, match.start() - 80):match.end() + 20]}"
