"""The log formatter is the last line of defence: secrets and phone numbers never come out of it."""

from __future__ import annotations

import logging

from bot.logging_setup import StructuredFormatter, redact


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
