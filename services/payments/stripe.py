"""Stripe through the official SDK's async client: Checkout Sessions as per-order payment links,
session lookups and expiry, refunds, and webhook signature checks (against the raw body)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import stripe

from bot.config import Settings
from db.models import Order, Payment
from services.i18n import plain

log = logging.getLogger(__name__)
MIN_EXPIRY = timedelta(minutes=31)  # Stripe accepts 30 min – 24 h; a minute of slack for clock skew
MAX_EXPIRY = timedelta(hours=23, minutes=59)
# How long one call may take. The SDK's defaults (80 s a request, each retried) would let a create
# outlive stripe_flow.IN_FLIGHT, after which its attempt counts as a crash orphan and is replaced:
# two payable links. Each request waits at most REQUEST_TIMEOUT per phase; CALL_TIMEOUT caps the
# whole call, retries and back-off included (tests/test_stripe.py checks both against IN_FLIGHT).
REQUEST_TIMEOUT = 6.0
NETWORK_RETRIES = 2
CALL_TIMEOUT = 20.0


class StripeFailure(Exception):
    """The API refused or could not be reached; the customer may try again."""


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str  # open / complete / expired
    payment_status: str  # unpaid / paid / no_payment_required
    amount_total: int | None
    currency: str | None
    payment_intent: str | None
    expires_at: datetime | None

    @classmethod
    def from_api(cls, obj: Any) -> CheckoutSession:
        get = obj.get if hasattr(obj, "get") else (lambda k, d=None: getattr(obj, k, d))
        expires = get("expires_at")
        intent = get("payment_intent")
        if intent is not None and not isinstance(intent, str):
            intent = getattr(intent, "id", None) or (intent.get("id") if hasattr(intent, "get") else None)
        return cls(
            str(get("id")),
            get("url"),
            str(get("status") or ""),
            str(get("payment_status") or ""),
            get("amount_total"),
            (get("currency") or "").upper() or None,
            intent,
            datetime.fromtimestamp(int(expires), tz=UTC) if expires else None,
        )


def session_expiry(order: Order, now: datetime) -> datetime:
    """Aligned with the stock reservation, inside Stripe's allowed window."""
    return min(max(order.reserved_until, now + MIN_EXPIRY), now + MAX_EXPIRY)


def retry_budget(request_timeout: float, retries: int) -> float:
    """The longest the SDK itself spends on one call that keeps timing out: every try waits its
    timeout, and between tries it sleeps its exponential back-off (stripe.HTTPXClient's public
    INITIAL_DELAY / MAX_DELAY; jitter only shortens a sleep)."""
    sleeps = sum(min(stripe.HTTPXClient.INITIAL_DELAY * 2.0**n, stripe.HTTPXClient.MAX_DELAY) for n in range(retries))
    return (retries + 1) * request_timeout + sleeps


def _line_items(order: Order, currency: str) -> list[dict[str, Any]]:
    """The order's lines and its delivery, as Stripe shows them; they add up to `order.total`."""
    line_items: list[dict[str, Any]] = [
        {
            "quantity": i.quantity,
            "price_data": {
                "currency": currency,
                "unit_amount": i.unit_price,
                "product_data": {"name": i.name[:250]},
            },
        }
        for i in order.items
    ]
    line_items.append(
        {
            "quantity": 1,
            "price_data": {
                "currency": currency,
                "unit_amount": order.shipping,
                "product_data": {"name": f"Delivery ({order.zone})"},
            },
        }
    )
    return line_items


def _discounted_line(order: Order, currency: str) -> list[dict[str, Any]]:
    """An order with a promo discount as one line of exactly `order.total` (Stripe takes no
    negative line, and a coupon would be a second object to create and keep in step): the amount
    the customer was quoted, and the webhook's amount check, stay `order.total`."""
    name = plain("promo.stripe_line", order.customer.language, order=order.public_id, code=order.promo_code or "")
    return [
        {
            "quantity": 1,
            "price_data": {"currency": currency, "unit_amount": order.total, "product_data": {"name": name[:250]}},
        }
    ]


class StripeGateway:
    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        api_base: str | None = None,
        return_url: str = "https://t.me",
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        retries: int = NETWORK_RETRIES,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.request_timeout, self.retries, self.call_timeout = request_timeout, retries, call_timeout
        options: dict[str, Any] = {
            "http_client": stripe.HTTPXClient(timeout=httpx.Timeout(request_timeout)),
            "max_network_retries": retries,
        }
        if api_base:
            options["base_addresses"] = {"api": api_base}
        self.client = stripe.StripeClient(secret_key, **options)
        self._webhook_secret = webhook_secret
        self.return_url = return_url

    @classmethod
    def from_settings(cls, s: Settings) -> StripeGateway:
        assert s.stripe_secret_key and s.stripe_webhook_secret
        return cls(
            s.stripe_secret_key.get_secret_value(),
            s.stripe_webhook_secret.get_secret_value(),
            s.stripe_api_base,
            s.shop_return_url,
        )

    async def aclose(self) -> None:
        return None

    async def create_checkout(
        self, order: Order, payment: Payment, now: datetime, return_url: str | None = None
    ) -> CheckoutSession:
        """One Checkout Session for this attempt. The idempotency key is the attempt's, so a retried
        request (by the SDK or after a timeout) returns the same session instead of a second one."""
        currency = order.currency.lower()
        back = return_url or self.return_url
        line_items = _line_items(order, currency) if not order.discount else _discounted_line(order, currency)
        if sum(i["price_data"]["unit_amount"] * i["quantity"] for i in line_items) != order.total:
            raise StripeFailure("the order's lines do not add up to its total")  # never ask for another amount
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": line_items,
            "client_reference_id": order.public_id,
            "metadata": {"order_id": order.public_id, "payment_id": str(payment.id)},
            "payment_intent_data": {"metadata": {"order_id": order.public_id}},
            "expires_at": int(session_expiry(order, now).timestamp()),
            "customer_email": order.email,
            "success_url": f"{back}?start=paid_{order.public_id}",
            "cancel_url": f"{back}?start=cancel_{order.public_id}",
        }
        try:
            async with asyncio.timeout(self.call_timeout):
                obj = await self.client.v1.checkout.sessions.create_async(
                    params=params,  # type: ignore[arg-type]  # a plain dict for the SDK's TypedDict of params
                    options={"idempotency_key": f"checkout-{payment.id}"},
                )
        except TimeoutError:
            log.warning("stripe.create_failed", extra={"order": order.public_id, "error": "timeout"})
            raise StripeFailure("timeout") from None
        except stripe.StripeError as exc:
            log.warning("stripe.create_failed", extra={"order": order.public_id, "error": type(exc).__name__})
            raise StripeFailure(str(exc.user_message or type(exc).__name__)) from None
        return CheckoutSession.from_api(obj)

    async def retrieve(self, session_id: str) -> CheckoutSession:
        try:
            async with asyncio.timeout(self.call_timeout):
                return CheckoutSession.from_api(await self.client.v1.checkout.sessions.retrieve_async(session_id))
        except (stripe.StripeError, TimeoutError) as exc:
            raise StripeFailure(type(exc).__name__) from None

    async def expire(self, session_id: str) -> CheckoutSession:
        """Close an open session so it can no longer be paid (replaced, or its order ended). Stripe
        refuses (StripeFailure) a session that is not open: `retrieve` then says how it ended."""
        try:
            async with asyncio.timeout(self.call_timeout):
                return CheckoutSession.from_api(await self.client.v1.checkout.sessions.expire_async(session_id))
        except (stripe.StripeError, TimeoutError) as exc:
            raise StripeFailure(type(exc).__name__) from None

    async def refund(self, payment: Payment, *, amount: int | None = None, idempotency_key: str | None = None) -> str:
        """Refund a settled card payment, in full or `amount` (minor units) of it (a partial return,
        with an idempotency key of its own); returns the refund id."""
        if not payment.stripe_payment_intent:
            raise StripeFailure("no payment intent recorded for this payment")
        params: dict[str, Any] = {"payment_intent": payment.stripe_payment_intent}
        if amount is not None:
            params["amount"] = amount
        try:
            async with asyncio.timeout(self.call_timeout):
                refund = await self.client.v1.refunds.create_async(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": idempotency_key or f"refund-{payment.id}"},
                )
        except (stripe.StripeError, TimeoutError) as exc:
            raise StripeFailure(type(exc).__name__) from None
        return str(refund.id)

    def verify_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event, if the signature over the raw body is ours and fresh (default tolerance).
        Raises stripe.SignatureVerificationError, or ValueError for a body that is not a JSON object."""
        try:
            event: stripe.Event = stripe.Webhook.construct_event(payload, signature or "", self._webhook_secret)
        except (AttributeError, TypeError) as exc:  # signed, but JSON that is not an object
            raise ValueError("not a JSON object") from exc
        return event.to_dict()
