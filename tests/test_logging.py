"""The log formatter is the last line of defence: secrets and phone numbers never come out of it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.logging_setup import StructuredFormatter, redact, setup_logging
from tests import log_hygiene
from tests.test_config import _run_cli


def test_redact_masks_tokens_keys_and_phones() -> None:
    line = (
        "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 Authorization: Bearer abc.def-ghijkl "
        "Basic Y29uc3VtZXI6c2VjcmV0 sk_test_51Habcdefgh whsec_abcdefgh12345 passkey=bfb279f9aa9bdbcf "
        "msisdn 254712345678 local 0712345678 receipt RLA0R69NXM "
        "POST https://shop.example/webhooks/mpesa/cb-secret-123 200 "
        "POST http://api/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1/sendMessage"
    )
    out = redact(line)
    assert "/bot<bot-token>/sendMessage" in out
    for leaked in (
        "AAHdqTcv",
        "abc.def-ghijkl",
        "Y29uc3VtZXI6",
        "sk_test_51H",
        "whsec_abc",
        "bfb279f9",
        "254712345678",
        "0712345678",
        "cb-secret-123",
    ):
        assert leaked not in out
    assert "RLA0R69NXM" in out and "2547*****678" in out


def test_formatter_renders_extras_and_redacts_them() -> None:
    record = logging.LogRecord("shop", logging.INFO, __file__, 1, "payment.started", None, None)
    record.order = "HL-ABC234"
    record.phone = "254712345678"
    text = StructuredFormatter().format(record)
    assert "payment.started" in text and "order=HL-ABC234" in text
    assert "254712345678" not in text


def test_json_lines_carry_the_text_fields_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=json: each entry is one JSON object a line with the fields the text line has, and the
    same redaction (a phone number in the message or in an extra, a secret extra by its name)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("INFO", "json")
    try:
        log = logging.getLogger("services.payments")
        log.info(
            'stk.sent to 0712345678 ref="x" password=ab"cd',
            extra={"order": "HL-ABC234", "attempt": 2, "msisdn": 254712345678, "phone": "0712345678", "token": "t0k"},
        )
        try:
            raise ValueError("card for +254712345678 declined")
        except ValueError:
            log.exception("stk.failed", extra={"order": "HL-ABC234"})
    finally:
        root.handlers[:], root.level = handlers, level
        log_hygiene.install()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the traceback too is inside its entry
    sent, failed = (json.loads(line) for line in lines)
    assert set(sent) == {"asctime", "levelname", "name", "message", "order", "attempt", "msisdn", "phone", "token"}
    assert (sent["levelname"], sent["name"], sent["order"], sent["attempt"]) == (
        "INFO",
        "services.payments",
        "HL-ABC234",
        2,
    )
    assert sent["message"].startswith("stk.sent to 07*****678 ") and "ab" not in sent["message"]
    assert (sent["msisdn"], sent["phone"], sent["token"]) == ("2547*****678", "07*****678", "<redacted>")
    assert failed["levelname"] == "ERROR" and failed["message"] == "stk.failed"
    assert "ValueError: card for +2547*****678 declined" in failed["exc_info"]
    assert not log_hygiene.leaks("\n".join(lines))


def test_the_cli_logs_json_lines_with_LOG_FORMAT_json(tmp_path: Path) -> None:
    """The setting reaches the process's logging: every line `storefront run` logs before it stops is
    JSON (the last one, the start-up error, is printed for a person)."""
    proc = _run_cli(tmp_path, TELEGRAM_API_URL="http://127.0.0.1:9", LOG_FORMAT="json")
    assert proc.returncode == 1
    *logged, error = proc.stderr.strip().splitlines()
    assert logged and error.startswith("startup error: cannot reach the Bot API")
    entries = [json.loads(line) for line in logged]
    assert {"asctime", "levelname", "name", "message"} <= set(entries[0])
