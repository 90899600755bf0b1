"""Safaricom Daraja client: OAuth (cached, refreshed once on 401), STK push and STK push query.

Facts followed (shared/reference/daraja.md): `expires_in` arrives as a string; the password is
base64(shortcode + passkey + timestamp) with a Nairobi-time timestamp; amounts are whole shillings;
the query answers "500.001.1001 … being processed" while the customer has not finished.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bot.config import Settings

log = logging.getLogger(__name__)
NAIROBI = ZoneInfo("Africa/Nairobi")
STILL_PROCESSING = "500.001.1001"


class MpesaError(Exception):
    """Daraja refused or failed. `code` is its errorCode (or HTTP status); `retryable` for timeouts/5xx."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retryable = code, message, retryable


class StillProcessing(MpesaError):
    """The customer has not finished on the phone yet: ask again later."""


@dataclass(frozen=True, slots=True)
class StkAccepted:
    merchant_request_id: str
    checkout_request_id: str
    customer_message: str


@dataclass(frozen=True, slots=True)
class StkStatus:
    result_code: str
    result_desc: str
    raw: dict[str, Any]


class MpesaClient:
    def __init__(
        self,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        callback_url: str,
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._credentials = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self.shortcode, self._passkey, self.callback_url = shortcode, passkey, callback_url
        self.transaction_type = transaction_type
        self.party_b = party_b if transaction_type == "CustomerBuyGoodsOnline" and party_b else shortcode
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, s: Settings) -> MpesaClient:
        assert s.mpesa_consumer_key and s.mpesa_consumer_secret and s.mpesa_passkey and s.mpesa_shortcode
        return cls(
            s.mpesa_base_url,
            s.mpesa_consumer_key.get_secret_value(),
            s.mpesa_consumer_secret.get_secret_value(),
            s.mpesa_shortcode,
            s.mpesa_passkey.get_secret_value(),
            s.mpesa_callback_url,
            s.mpesa_transaction_type,
            s.mpesa_party_b,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- auth ---------------------------------------------------------------------------------------

    async def _access_token(self, *, force: bool = False) -> str:
        async with self._token_lock:
            if not force and self._token and time.monotonic() < self._token_expires:
                return self._token
            try:
                resp = await self.http.get(
                    "/oauth/v1/generate",
                    params={"grant_type": "client_credentials"},
                    headers={"Authorization": f"Basic {self._credentials}"},
                )
            except httpx.HTTPError as exc:
                raise MpesaError("network", type(exc).__name__, retryable=True) from None
            if resp.status_code != 200:
                raise MpesaError(
                    str(resp.status_code), "OAuth token request refused", retryable=resp.status_code >= 500
                )
            try:
                body = resp.json()
                token = str(body["access_token"])
                lifetime = int(str(body.get("expires_in") or "3599").strip())  # a string, per Daraja
            except (ValueError, TypeError, KeyError, AttributeError):
                raise MpesaError("oauth", "OAuth answer without a usable token", retryable=True) from None
            self._token = token
            self._token_expires = time.monotonic() + max(lifetime - 60, lifetime // 2)  # refresh early
            log.info("mpesa.token_refreshed", extra={"expires_in": lifetime})
            return self._token

    def password(self, timestamp: str) -> str:
        return base64.b64encode(f"{self.shortcode}{self._passkey}{timestamp}".encode()).decode()

    @staticmethod
    def timestamp(now: datetime | None = None) -> str:
        return (now or datetime.now(NAIROBI)).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in (1, 2):
            token = await self._access_token(force=attempt == 2)
            try:
                resp = await self.http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            except httpx.TimeoutException:
                raise MpesaError("timeout", "Daraja did not answer in time", retryable=True) from None
            except httpx.HTTPError as exc:
                raise MpesaError("network", type(exc).__name__, retryable=True) from None
            if resp.status_code == 401 and attempt == 1:
                log.info("mpesa.token_rejected_refreshing")
                continue
            try:
                data = resp.json()
            except ValueError:
                data = {}
            if resp.status_code == 200 and isinstance(data, dict):
                return data
            code = str(data.get("errorCode") or resp.status_code) if isinstance(data, dict) else str(resp.status_code)
            message = (
                str(data.get("errorMessage") or resp.reason_phrase) if isinstance(data, dict) else resp.reason_phrase
            )
            if code == "404.001.03" and attempt == 1:  # invalid access token
                continue
            # The same code also means other faults ("a transaction is already in process for the
            # subscriber"): only "… is being processed" is the customer not having finished yet.
            if code == STILL_PROCESSING and "being processed" in message.lower() and path.endswith("/query"):
                raise StillProcessing(code, message, retryable=True)
            raise MpesaError(code, message, retryable=resp.status_code >= 500)
        raise MpesaError("401", "access token refused twice")

    # --- API ----------------------------------------------------------------------------------------

    async def stk_push(self, *, amount: int, msisdn: str, account_reference: str, description: str) -> StkAccepted:
        """Ask Daraja to prompt the customer's phone. `amount` in whole shillings."""
        ts = self.timestamp()
        body = {
            "BusinessShortCode": self.shortcode,
            "Password": self.password(ts),
            "Timestamp": ts,
            "TransactionType": self.transaction_type,
            "Amount": int(amount),
            "PartyA": msisdn,
            "PartyB": self.party_b,
            "PhoneNumber": msisdn,
            "CallBackURL": self.callback_url,
            "AccountReference": account_reference[:12],
            "TransactionDesc": description[:13],
        }
        data = await self._post("/mpesa/stkpush/v1/processrequest", body)
        if str(data.get("ResponseCode", "")) != "0" or not data.get("CheckoutRequestID"):
            raise MpesaError(str(data.get("ResponseCode", "?")), str(data.get("ResponseDescription", "refused")))
        return StkAccepted(
            str(data.get("MerchantRequestID", "")), str(data["CheckoutRequestID"]), str(data.get("CustomerMessage", ""))
        )

    async def stk_query(self, checkout_request_id: str) -> StkStatus:
        ts = self.timestamp()
        data = await self._post(
            "/mpesa/stkpushquery/v1/query",
            {
                "BusinessShortCode": self.shortcode,
                "Password": self.password(ts),
                "Timestamp": ts,
                "CheckoutRequestID": checkout_request_id,
            },
        )
        if "ResultCode" not in data:
            raise MpesaError(str(data.get("ResponseCode", "?")), "query answered without a ResultCode", retryable=True)
        return StkStatus(str(data["ResultCode"]).strip(), str(data.get("ResultDesc", "")), data)
