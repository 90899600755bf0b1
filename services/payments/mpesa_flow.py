"""M-Pesa payments for orders: start an STK push, take Daraja's callback, confirm by query.

Money rules kept here: the payment row exists before the customer is told to check their phone; a
second prompt is not sent while one is still live, and an older one is confirmed by STK query (paid →
settled, failed → superseded) before a new one goes out (no double charge); one phone number gets at
most `mpesa_prompts_per_phone_per_hour` prompts, whoever asks (the shop is no tool to flood a stranger's
phone). A callback is stored once by (CheckoutRequestID, ResultCode) and is only a hint: Daraja does not
sign it, so an attempt moves only as the STK query for that CheckoutRequestID says (asked at once,
briefly; otherwise by reconciliation), never on the callback's word; a success whose amount is not the
attempt's or whose payer is not the prompted phone is held for reconciliation, with an admin alert; a
success for an attempt that already failed or was superseded is an admin alert, never a revival.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.models import Order, Payment, WebhookEvent, utcnow
from db.session import dialect_name, execute_dml
from services import metrics
from services.errors import DomainError
from services.locks import lock_key
from services.money import whole_units_up
from services.payments import common
from services.payments.mpesa import MpesaClient, MpesaError, StillProcessing, StkStatus
from services.phones import is_kenyan_mobile, mask_phone

log = logging.getLogger(__name__)
PROVIDER = "mpesa"
PROMPT_LIFETIME = timedelta(seconds=90)  # an STK prompt younger than this may still be answered
FINAL_TIMEOUT = timedelta(minutes=3)  # no final answer by then: the attempt failed (timed out)
# Daraja's query itself unreachable: the customer may well have paid, so the attempt waits this long
# for an answer before the admins are asked to check the statement (a failed attempt is never revived).
QUERY_GIVE_UP = timedelta(hours=24)
BACKOFF_BASE = 15  # seconds before re-asking after "still processing", doubling each time
MAX_BACKOFF = 120  # seconds between STK queries at most (the query is rate limited)
CALLBACK_QUERY_SECONDS = 3.0  # the STK query a callback triggers, at most (Daraja wants a quick answer)
CALLBACK_QUERIES_PER_ATTEMPT = 3  # callbacks beyond these for one attempt leave the query to reconciliation
UNRESOLVED = "received"  # webhook event status of an orphan hint whose query has not been answered yet
HOUR = timedelta(hours=1)
UNCERTAIN_PUSH = ("timeout", "network")  # MpesaError codes of a push that got no answer at all
UNKNOWN_ALERT_WINDOW = timedelta(minutes=10)  # unknown-id callbacks alerted at most this many per window:
UNKNOWN_ALERTS_PER_WINDOW = 5  # the rest are stored (webhook_events, status anomaly) without an alert

REASONS = {
    "1032": "mpesa.reason.cancelled",
    "2001": "mpesa.reason.wrong_pin",
    "1": "mpesa.reason.insufficient",
    "1037": "mpesa.reason.unreachable",
    "1019": "mpesa.reason.timeout",
    "1001": "mpesa.reason.busy",
    "1025": "mpesa.reason.prompt_failed",
    "9999": "mpesa.reason.prompt_failed",
    "timeout": "mpesa.reason.timeout",
}


def _live(payment: Payment) -> bool:
    """A prompt that may still be on the customer's phone. An attempt without Daraja's ids counts too
    (a push still being sent, or one whose answer was lost, may have prompted the phone): a second
    prompt meanwhile could be paid as well."""
    return utcnow() - payment.created_at < PROMPT_LIFETIME


def reason_key(code: str) -> str:
    return REASONS.get(str(code), "mpesa.reason.other")


class PromptStillLive(DomainError):
    key = "mpesa.prompt_live"


class PhonePromptLimit(DomainError):
    """This phone number had its share of prompts this hour (from any customer): wait, or use another."""

    key = "mpesa.phone_limit"


class PushUncertain(DomainError):
    """The push got no answer (timeout, dropped connection): the prompt may be on the phone. The attempt
    stays pending without ids, so its callback is adopted (once the query confirms it) and a payment is
    not lost; only after FINAL_TIMEOUT without one is it closed."""

    key = "mpesa.push_uncertain"


class NotKenyanPhone(DomainError):
    key = "mpesa.ask_phone"


class BadCallback(ValueError):
    """The body is not a Daraja STK callback: answered 400, nothing changes."""


async def start_stk(
    session_factory: async_sessionmaker[AsyncSession],
    client: MpesaClient,
    order_id: str,
    customer_id: int,
    msisdn: str,
    settings: Settings,
) -> Payment:
    """Prompt the customer's phone for the order's total. Commits the payment row itself, before the
    push (so a crash mid-push leaves a row the reconciliation job and callback adoption can find) and
    again with Daraja's ids once it accepts — all before the caller tells the customer anything."""
    if not is_kenyan_mobile(msisdn):
        raise NotKenyanPhone()
    async with session_factory() as session:
        order = await _awaiting_order(session, order_id, customer_id)
        stale = [
            p.id
            for p in await common.pending_attempts(session, order.id, PROVIDER)
            if p.checkout_request_id and not _live(p)
        ]
    for old_id in stale:  # confirm how an older prompt ended before sending a new one
        await _retire(session_factory, client, old_id, settings)
    async with session_factory() as session, session.begin():
        order = await _awaiting_order(session, order_id, customer_id, for_update=True)
        live = [p for p in await common.pending_attempts(session, order.id, PROVIDER) if _live(p)]
        if live:
            raise PromptStillLive(order=order.public_id)
        await _within_phone_limit(session, msisdn, settings)
        payment = await common.create_attempt(
            session,
            order,
            PROVIDER,
            phone=msisdn,
            next_check_at=utcnow() + timedelta(seconds=settings.mpesa_query_after_seconds),
        )
        amount, reference = whole_units_up(order.total), order.public_id
    try:
        accepted = await client.stk_push(
            amount=amount, msisdn=msisdn, account_reference=reference, description=f"Order {reference[-6:]}"
        )
    except MpesaError as exc:
        if exc.code in UNCERTAIN_PUSH:  # no answer: Daraja may well have prompted the phone
            log.warning(
                "mpesa.push_unanswered", extra={"order": reference, "code": exc.code, "phone": mask_phone(msisdn)}
            )
            raise PushUncertain(order=reference) from None
        async with session_factory() as session, session.begin():
            await session.execute(
                update(Payment)
                .where(Payment.id == payment.id, Payment.state == common.PENDING)
                .values(state=common.FAILED, result_code=exc.code[:32], result_desc=exc.message[:500])
            )
        metrics.PAYMENTS.labels("mpesa", "refused").inc()
        log.warning("mpesa.push_refused", extra={"order": reference, "code": exc.code, "phone": mask_phone(msisdn)})
        raise
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Payment)
            .where(Payment.id == payment.id)
            .values(
                merchant_request_id=accepted.merchant_request_id,
                checkout_request_id=accepted.checkout_request_id,
                next_check_at=utcnow() + timedelta(seconds=settings.mpesa_query_after_seconds),
            )
        )
    payment.checkout_request_id = accepted.checkout_request_id
    log.info("mpesa.push_sent", extra={"order": reference, "payment": payment.id, "phone": mask_phone(msisdn)})
    return payment


async def _within_phone_limit(session: AsyncSession, msisdn: str, settings: Settings) -> None:
    """Refuse a prompt to a number that had `mpesa_prompts_per_phone_per_hour` in the last hour, across
    all customers and orders: anyone can type any number, and each prompt buzzes that phone. Every
    attempt counts, pending or finished. On PostgreSQL a transaction-scoped advisory lock per number
    makes concurrent presses count one after the other; SQLite runs a single process."""
    if dialect_name(session) == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(f"mpesa-phone:{msisdn}")})
    recent = (
        await session.execute(
            select(func.count(Payment.id)).where(
                Payment.provider == PROVIDER, Payment.phone == msisdn, Payment.created_at > utcnow() - HOUR
            )
        )
    ).scalar_one()
    if recent >= settings.mpesa_prompts_per_phone_per_hour:
        log.warning("mpesa.phone_limit", extra={"phone": mask_phone(msisdn), "recent": recent})
        raise PhonePromptLimit()


async def _retire(
    session_factory: async_sessionmaker[AsyncSession], client: MpesaClient, payment_id: int, settings: Settings
) -> None:
    """An older pending prompt whose lifetime has passed: ask Daraja how it ended. Paid → settled (the
    order moves on and the new push is refused); failed → superseded quietly (the customer is already
    trying again); still being processed → PromptStillLive; no answer → it stays pending for the
    reconciliation job, so a late success is still caught (and flagged if it is a second payment)."""
    async with session_factory() as session:
        payment = await session.get(Payment, payment_id)
        if payment is None or payment.state != common.PENDING or not payment.checkout_request_id:
            return
        checkout_id, public_id = payment.checkout_request_id, payment.order.public_id
    try:
        status = await client.stk_query(checkout_id)
    except StillProcessing:
        raise PromptStillLive(order=public_id) from None
    except MpesaError as exc:
        log.info("mpesa.retire_query_failed", extra={"payment": payment_id, "code": exc.code})
        return
    if status.result_code == "0":
        await _apply_status(session_factory, payment_id, status, settings)
        return
    async with session_factory() as session, session.begin():
        await session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.state == common.PENDING)
            .values(
                state=common.SUPERSEDED,
                result_code=status.result_code[:32],
                result_desc=status.result_desc[:500],
                raw_callback={"query": status.raw},
                updated_at=utcnow(),
            )
        )


async def _awaiting_order(session: AsyncSession, order_id: str, customer_id: int, for_update: bool = False) -> Order:
    from services import orders as order_service

    order = await order_service.get_order(session, order_id, customer_id=customer_id, for_update=for_update)
    if order.state != order_service.AWAITING_PAYMENT:
        raise common.not_payable(order.public_id, order.state)
    if order.reserved_until <= utcnow():  # the expiry job takes it next: no prompt it would outlive
        raise common.PaymentNotAllowed("pay.error.reservation_ran_out", order=order.public_id)
    if order.currency != "KES":
        raise DomainError("mpesa.kes_only")
    return order


def _callback_key(checkout_id: str, code: str) -> str:
    """The id a callback is stored (and de-duplicated) under in webhook_events."""
    return f"{checkout_id}:{code}"


def parse_callback(payload: Any) -> dict[str, Any]:
    """The fields we use from `Body.stkCallback`, validated; items read by Name, never position."""
    try:
        cb = payload["Body"]["stkCallback"]
        raw_id, raw_code = cb["CheckoutRequestID"], cb["ResultCode"]
    except (KeyError, TypeError, IndexError):
        raise BadCallback("not an STK callback") from None
    if (
        not isinstance(cb, dict)
        or not isinstance(raw_id, str)
        or isinstance(raw_code, bool)
        or not isinstance(raw_code, (int, str))
    ):
        raise BadCallback("not an STK callback")
    checkout_id, code_text = raw_id.strip(), str(raw_code).strip()
    if not checkout_id or len(checkout_id) > 64 or not checkout_id.isprintable():
        raise BadCallback("bad CheckoutRequestID")
    if not code_text.isascii() or not code_text.lstrip("-").isdigit() or len(code_text) > 10:
        raise BadCallback("bad ResultCode")
    items: dict[str, Any] = {}
    meta = cb.get("CallbackMetadata")
    listed = meta.get("Item") if isinstance(meta, dict) else None
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            items[item["Name"]] = item.get("Value")
    return {
        "checkout_id": checkout_id,
        "code": str(int(code_text)),
        "desc": str(cb.get("ResultDesc", ""))[:500],
        "merchant_id": str(cb.get("MerchantRequestID", ""))[:64],
        "items": items,
    }


def _whole_shillings(value: Any) -> int | None:
    """Daraja's Amount item (a number, sometimes 1.0) as whole shillings; None when unusable."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not number.is_integer() or not 0 <= number < 10**12:
        return None
    return int(number)


def _msisdn(value: Any) -> str | None:
    """The payer's number from the callback when it is given in full (Daraja may mask it)."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    return text if text.isdigit() and len(text) == 12 else None


async def handle_callback(
    session_factory: async_sessionmaker[AsyncSession],
    payload: Any,
    settings: Settings,
    client: MpesaClient | None = None,
) -> str:
    """Store one Daraja callback, then treat it as a hint: Daraja does not sign callbacks and the URL's
    token leaks easily, so nothing moves until the STK query for that CheckoutRequestID (asked here,
    within CALLBACK_QUERY_SECONDS) agrees. When the query cannot answer now the attempt stays pending,
    due for reconciliation, which settles it from the query alone. Returns the outcome; raises
    BadCallback for junk."""
    cb = parse_callback(payload)
    await _await_ids(session_factory, cb["checkout_id"])
    async with session_factory() as session, session.begin():
        verdict, payment_id = await _take_callback(session, cb, payload, settings)
    if verdict not in ("query", "orphan"):
        return verdict
    status = await _query_briefly(client, cb["checkout_id"])
    async with session_factory() as session, session.begin():
        if verdict == "orphan":
            return await _adopt_confirmed(session, cb, status, payload, settings)
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return await _apply_hint(session, payment, cb, status, payload, settings)


async def _take_callback(
    session: AsyncSession, cb: dict[str, Any], payload: Any, settings: Settings
) -> tuple[str, int | None]:
    """Store the callback (once) and decide what it may lead to: "query" (a pending attempt: due for
    its check now, so a crash before the query leaves it to reconciliation), "orphan", or a final
    outcome (duplicate, unknown, anomaly, pending)."""
    key = _callback_key(cb["checkout_id"], cb["code"])
    stored = await common.record_event(session, PROVIDER, key, "stk_callback", payload)
    if stored is None:  # a repeat; only an orphan hint a crash left unresolved is worth another look
        earlier = (
            await session.execute(
                select(WebhookEvent.status).where(WebhookEvent.provider == PROVIDER, WebhookEvent.event_id == key)
            )
        ).scalar_one_or_none()
        return ("orphan", None) if earlier == UNRESOLVED else ("duplicate", None)
    payment = (
        (await session.execute(select(Payment).where(Payment.checkout_request_id == cb["checkout_id"])))
        .unique()
        .scalar_one_or_none()
    )
    if payment is None:
        if cb["code"] == "0" and await _orphans(session, cb):
            stored.status = UNRESOLVED  # processed once the query has confirmed (or not) the adoption
            return "orphan", None
        await _unknown(session, cb, payload, settings, "")
        return "unknown", None
    stored.payment_id = payment.id
    if payment.state != common.PENDING:
        if cb["code"] == "0" and payment.state not in (common.PAID, common.REFUND_DUE, common.REFUNDED):
            await common.record_anomaly(
                session,
                settings.admin_chat_id,
                provider=PROVIDER,
                event_id=f"not_revived:{payment.id}",
                event_type="success_after_final",
                payload=payload,
                payment=payment,
                detail=f"success callback for an attempt already {payment.state}; not revived, the order does "
                f"not move — check the M-Pesa statement for {cb['checkout_id']}",
            )
            return "anomaly", None
        return "duplicate", None  # a late failure, or news about a settled attempt: nothing to do
    hints = (
        await session.execute(
            select(func.count(WebhookEvent.id)).where(
                WebhookEvent.payment_id == payment.id, WebhookEvent.event_type == "stk_callback"
            )
        )
    ).scalar_one()
    if hints > CALLBACK_QUERIES_PER_ATTEMPT:  # the query is rate limited: a flood is left to reconciliation,
        return "pending", None  # on its own schedule (a forged flood cannot keep making the attempt due)
    await session.execute(
        update(Payment).where(Payment.id == payment.id, Payment.state == common.PENDING).values(next_check_at=utcnow())
    )
    if cb["code"] == "0":
        problem = _suspect(payment, cb["items"])
        if problem is not None:
            await common.record_anomaly(
                session,
                settings.admin_chat_id,
                provider=PROVIDER,
                event_id=f"suspect:{payment.id}",
                event_type="suspect_success",
                detail=f"{problem}; left pending for the STK query",
                payload=payload,
                payment=payment,
            )
            return "anomaly", None
    return "query", payment.id


def _suspect(payment: Payment, items: dict[str, Any]) -> str | None:
    """Why a success callback cannot settle this attempt even if the query agrees, or None."""
    whole, payer = _whole_shillings(items.get("Amount")), _msisdn(items.get("PhoneNumber"))
    if whole is None:
        return "success callback without a usable Amount"
    if whole != whole_units_up(payment.amount):  # we charged whole shillings, rounded up
        return (
            f"amount mismatch: the callback says KES {whole}, the attempt asked for "
            f"KES {whole_units_up(payment.amount)}"
        )
    if payer and payment.phone and payer != payment.phone:
        return f"paid from {mask_phone(payer)}, the prompt went to {mask_phone(payment.phone)}"
    return None


async def _query_briefly(client: MpesaClient | None, checkout_id: str) -> StkStatus | str:
    """The STK query for a callback, bounded so Daraja gets its answer in time (it retries on a slow or
    non-2xx one): the final status, or "processing" / "unavailable"."""
    if client is None:
        return "unavailable"
    try:
        return await asyncio.wait_for(client.stk_query(checkout_id), CALLBACK_QUERY_SECONDS)
    except StillProcessing:
        return "processing"
    except (TimeoutError, MpesaError) as exc:
        log.info(
            "mpesa.callback_query_unavailable", extra={"checkout": checkout_id, "code": getattr(exc, "code", "timeout")}
        )
        return "unavailable"


async def _apply_hint(
    session: AsyncSession,
    payment: Payment,
    cb: dict[str, Any],
    status: StkStatus | str,
    payload: Any,
    settings: Settings,
) -> str:
    """Settle a pending attempt as the query says; the callback only adds its receipt number. Without a
    final answer the attempt stays pending (re-checked soon when Daraja is still processing it)."""
    if isinstance(status, str):
        if status == "processing":
            await session.execute(
                update(Payment)
                .where(Payment.id == payment.id, Payment.state == common.PENDING)
                .values(next_check_at=utcnow() + timedelta(seconds=BACKOFF_BASE))
            )
        return "pending"
    if (cb["code"] == "0") != (status.result_code == "0"):
        await common.record_anomaly(
            session,
            settings.admin_chat_id,
            provider=PROVIDER,
            event_type="callback_contradicted",
            event_id=f"contradicted:{cb['checkout_id']}:{cb['code']}",
            payload=payload,
            payment=payment,
            detail=f"callback said ResultCode {cb['code']}, the STK query says {status.result_code}; "
            "the query's answer was applied",
        )
    if status.result_code == "0":
        receipt = (str(cb["items"].get("MpesaReceiptNumber") or "")[:64] or None) if cb["code"] == "0" else None
        return await common.settle_paid(
            session,
            payment,
            amount=payment.amount,
            currency=payment.currency,
            reference=receipt or payment.receipt_number,
            raw=payload if receipt else {"query": status.raw, "callback": payload},
            actor="system:mpesa",
            admin_chat_id=settings.admin_chat_id,
            low_stock_threshold=settings.low_stock_threshold,
            zone=settings.shop_zone,
        )
    return await common.settle_failed(
        session,
        payment,
        code=status.result_code,
        desc=status.result_desc,
        reason_key=reason_key(status.result_code),
        raw={"query": status.raw, "callback": payload},
    )


async def _await_ids(
    session_factory: async_sessionmaker[AsyncSession], checkout_id: str, patience: float = 3.0
) -> None:
    """Daraja can call back (a fast failure, say) before we stored the ids its push answer gave us,
    a few milliseconds after. Give a push in flight that moment before calling the callback unknown."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        async with session_factory() as session:
            known = (
                await session.execute(select(Payment.id).where(Payment.checkout_request_id == checkout_id))
            ).first()
            in_flight = (
                known is None
                and (
                    await session.execute(
                        select(Payment.id).where(
                            Payment.provider == PROVIDER,
                            Payment.state == common.PENDING,
                            Payment.checkout_request_id.is_(None),
                            Payment.created_at > utcnow() - timedelta(seconds=60),
                        )
                    )
                ).first()
            )
        if known is not None or not in_flight or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


async def _orphans(session: AsyncSession, cb: dict[str, Any]) -> list[Payment]:
    """A crash between Daraja accepting the push and us storing its CheckoutRequestID leaves a pending
    attempt without ids. A success callback names the payer's phone and amount: the pending orphans
    that match are that attempt (oldest first). After a crash the customer's retry can leave a second
    orphan of the same order for a moment (its own push in flight); the money is for that order either
    way. Orphans of different orders with the same phone and amount are left to the admins ([])."""
    items = cb["items"]
    phone, whole = _msisdn(items.get("PhoneNumber")), _whole_shillings(items.get("Amount"))
    if phone is None or whole is None:
        return []
    orphans = [
        p
        for p in (
            await session.execute(
                select(Payment)
                .where(
                    Payment.provider == PROVIDER,
                    Payment.checkout_request_id.is_(None),
                    Payment.phone == phone,
                    Payment.state == common.PENDING,
                )
                .order_by(Payment.created_at, Payment.id)
            )
        )
        .unique()
        .scalars()
        if whole_units_up(p.amount) == whole
    ]
    return orphans if len({p.order_id for p in orphans}) == 1 else []


async def _adopt_confirmed(
    session: AsyncSession, cb: dict[str, Any], status: StkStatus | str, payload: Any, settings: Settings
) -> str:
    """Adopt an orphan only once the STK query confirms the callback's CheckoutRequestID was paid. Phone
    and amount in a callback are the sender's word: without the query, anyone holding the URL could
    pin an invented id on a customer's orphaned attempt (and its real callback would then find no
    attempt). Every STK push on our shortcode is one we made, so a paid id we do not know is an
    orphan's; without a final "paid" answer now it is left to the admins (the orphan stays pending)."""
    if isinstance(status, str) or status.result_code != "0":
        said = status if isinstance(status, str) else f"ResultCode {status.result_code}"
        await _unknown(session, cb, payload, settings, f"; not adopted, the STK query says {said}")
        await _resolved(session, cb, None)
        return "unknown"
    known = (
        (await session.execute(select(Payment).where(Payment.checkout_request_id == cb["checkout_id"])))
        .unique()
        .scalar_one_or_none()
    )
    orphans = await _orphans(session, cb) if known is None else []
    if known is None and not orphans:
        await _unknown(session, cb, payload, settings, "; paid per the STK query, no pending attempt matches")
        await _resolved(session, cb, None)
        return "unknown"
    payment = known or orphans[0]
    if known is None:
        try:
            async with session.begin_nested():
                claimed = await execute_dml(
                    session,
                    update(Payment)
                    .where(
                        Payment.id == payment.id, Payment.checkout_request_id.is_(None), Payment.state == common.PENDING
                    )
                    .values(checkout_request_id=cb["checkout_id"], merchant_request_id=cb["merchant_id"])
                    .execution_options(synchronize_session=False),
                )
        except IntegrityError:  # another process adopted an orphan for this id at the same moment
            claimed = None
        if claimed is None or claimed.rowcount != 1:
            await _resolved(session, cb, None)
            if (
                await session.execute(select(Payment.id).where(Payment.checkout_request_id == cb["checkout_id"]))
            ).first() is not None:
                return "duplicate"  # adopted by a concurrent delivery of this callback
            await _unknown(session, cb, payload, settings, "; paid per the STK query, its orphan changed meanwhile")
            return "unknown"
        await session.refresh(payment)
        log.warning("mpesa.orphan_adopted", extra={"payment": payment.id, "candidates": len(orphans)})
    await _resolved(session, cb, payment.id)
    return await _apply_hint(session, payment, cb, status, payload, settings)


async def _resolved(session: AsyncSession, cb: dict[str, Any], payment_id: int | None) -> None:
    """The orphan hint has had its query: a repeat of this callback is now a plain duplicate."""
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.provider == PROVIDER, WebhookEvent.event_id == _callback_key(cb["checkout_id"], cb["code"]))
        .values(status="processed", payment_id=payment_id)
        .execution_options(synchronize_session=False)
    )


async def _unknown(session: AsyncSession, cb: dict[str, Any], payload: Any, settings: Settings, note: str) -> None:
    """Keep a callback no attempt of ours matches. The admins hear of the first few in a window; past
    that (a forged flood: anyone holding the URL can invent ids) they are stored without an alert, so
    the admin group's messages about real orders are not queued behind them."""
    detail = f"callback for unknown CheckoutRequestID {cb['checkout_id']} (ResultCode {cb['code']}){note}"
    event_id = f"unknown:{cb['checkout_id']}"
    recent = (
        await session.execute(
            select(func.count(WebhookEvent.id)).where(
                WebhookEvent.provider == PROVIDER,
                WebhookEvent.event_type == "unknown_attempt",
                WebhookEvent.received_at > utcnow() - UNKNOWN_ALERT_WINDOW,
            )
        )
    ).scalar_one()
    if recent >= UNKNOWN_ALERTS_PER_WINDOW:
        await common.record_event(
            session, PROVIDER, f"anomaly:{event_id}", "unknown_attempt", payload, status="anomaly", detail=detail
        )
        log.warning("mpesa.unknown_callback_not_alerted", extra={"recent": recent})
        return
    await common.record_anomaly(
        session,
        settings.admin_chat_id,
        provider=PROVIDER,
        event_id=event_id,
        event_type="unknown_attempt",
        detail=detail,
        payload=payload,
    )


async def last_attempt(
    session_factory: async_sessionmaker[AsyncSession], public_id: str, customer_id: int
) -> tuple[Order, Payment | None]:
    """The customer's order (NotFound if it is not theirs) and its latest M-Pesa attempt, read in a
    short session of their own (the caller may then wait on Daraja, holding no pooled connection)."""
    from services import orders as order_service

    async with session_factory() as session:
        order = await order_service.get_order(session, public_id, customer_id=customer_id)
        payment = (
            (
                await session.execute(
                    select(Payment)
                    .where(Payment.order_id == order.id, Payment.provider == PROVIDER)
                    .order_by(Payment.id.desc())
                    .limit(1)
                )
            )
            .unique()
            .scalar_one_or_none()
        )
    return order, payment


async def query_and_settle(
    session_factory: async_sessionmaker[AsyncSession],
    client: MpesaClient,
    payment_id: int,
    settings: Settings,
    now: datetime | None = None,
) -> str:
    """Ask Daraja how a pending attempt ended and settle it the same way a callback would."""
    now = now or utcnow()
    async with session_factory() as session:
        payment = await session.get(Payment, payment_id)
        if payment is None or payment.state != common.PENDING:
            return payment.state if payment else "missing"
        checkout_id, created, attempts = payment.checkout_request_id, payment.created_at, payment.query_attempts
    if not checkout_id:  # the push itself never got through
        return await _fail_or_back_off(session_factory, payment_id, now, created, attempts, settings)
    try:
        status = await client.stk_query(checkout_id)
    except StillProcessing as exc:
        log.info("mpesa.query_pending", extra={"payment": payment_id, "code": exc.code})
        # Daraja called back "paid" but its query still says "processing": not a lapsed prompt, so the
        # attempt waits for the query like an outage would, rather than telling a payer it failed.
        answered = not await _success_called_back(session_factory, checkout_id)
        return await _fail_or_back_off(session_factory, payment_id, now, created, attempts, settings, answered=answered)
    except MpesaError as exc:
        log.info("mpesa.query_unavailable", extra={"payment": payment_id, "code": exc.code})
        return await _fail_or_back_off(session_factory, payment_id, now, created, attempts, settings, answered=False)
    return await _apply_status(session_factory, payment_id, status, settings)


async def _success_called_back(session_factory: async_sessionmaker[AsyncSession], checkout_id: str) -> bool:
    async with session_factory() as session:
        stored = await session.execute(
            select(WebhookEvent.id).where(
                WebhookEvent.provider == PROVIDER, WebhookEvent.event_id == _callback_key(checkout_id, "0")
            )
        )
        return stored.first() is not None


async def _apply_status(
    session_factory: async_sessionmaker[AsyncSession], payment_id: int, status: StkStatus, settings: Settings
) -> str:
    """Settle an attempt from a final STK query answer (ResultCode strings map like callback codes)."""
    async with session_factory() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        if status.result_code == "0":
            return await common.settle_paid(
                session,
                payment,
                amount=payment.amount,
                currency=payment.currency,
                reference=payment.receipt_number,
                raw={"query": status.raw},
                actor="system:mpesa-query",
                admin_chat_id=settings.admin_chat_id,
                low_stock_threshold=settings.low_stock_threshold,
                zone=settings.shop_zone,
            )
        return await common.settle_failed(
            session,
            payment,
            code=status.result_code,
            desc=status.result_desc,
            reason_key=reason_key(status.result_code),
            raw={"query": status.raw},
        )


async def _fail_or_back_off(
    session_factory: async_sessionmaker[AsyncSession],
    payment_id: int,
    now: datetime,
    created: datetime,
    attempts: int,
    settings: Settings,
    *,
    answered: bool = True,
) -> str:
    """No final answer yet: ask again later, or give up at the deadline. Daraja answering "still
    processing" for FINAL_TIMEOUT means the prompt lapsed; a query that could not be made at all
    (`answered=False`) proves nothing, so that attempt stays pending until QUERY_GIVE_UP and then
    goes to the admins, because the customer may have paid meanwhile."""
    deadline = created + (FINAL_TIMEOUT if answered else QUERY_GIVE_UP)
    async with session_factory() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        if payment.checkout_request_id is None and now - created >= FINAL_TIMEOUT:
            # The push was never confirmed (we died around it, or it got no answer): any prompt has
            # lapsed and its callback had time to come. A later success callback for it is an anomaly
            # for the admins (a failed attempt is not revived).
            return await common.settle_failed(
                session,
                payment,
                code="push_unconfirmed",
                raw=None,
                desc="no CheckoutRequestID stored",
                reason_key=reason_key("timeout"),
            )
        if now >= deadline:
            if not answered:
                await common.record_anomaly(
                    session,
                    settings.admin_chat_id,
                    provider=PROVIDER,
                    event_id=f"unconfirmed:{payment.id}",
                    event_type="query_unavailable",
                    payload=None,
                    payment=payment,
                    detail=f"Daraja's STK query could not be reached for {QUERY_GIVE_UP}; the attempt is closed "
                    f"as unconfirmed — check the M-Pesa statement for {payment.checkout_request_id}",
                )
            return await common.settle_failed(
                session,
                payment,
                code="timeout" if answered else "unconfirmed",
                desc="no final answer from M-Pesa",
                reason_key=reason_key("timeout"),
                raw=None,
            )
        delay = min(BACKOFF_BASE * 2 ** min(attempts, 16), MAX_BACKOFF)
        # Exponential, capped, and never past the deadline (so it fires on time).
        payment.query_attempts = attempts + 1
        payment.next_check_at = max(min(now + timedelta(seconds=delay), deadline), now + timedelta(seconds=1))
        return "pending"


async def reconcile_due(
    session_factory: async_sessionmaker[AsyncSession],
    client: MpesaClient,
    settings: Settings,
    now: datetime | None = None,
    batch: int = 50,
) -> int:
    """Query pending attempts whose callback is overdue (claimed, so workers never double-query)."""
    now = now or utcnow()
    settled = 0
    for payment_id in await common.claim_due_attempts(
        session_factory, PROVIDER, now, timedelta(seconds=60), batch=batch
    ):
        outcome = await query_and_settle(session_factory, client, payment_id, settings, now)
        settled += outcome != "pending"
    return settled
