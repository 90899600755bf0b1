"""Simulated M-Pesa for `storefront console` only: the same methods as `MpesaClient`, so the real
payment flow runs (payment row, prompt, STK query, settlement through the order state machine), but
no request leaves the process and the terminal says plainly that the payment is simulated.

Nothing but the `console` subcommand imports this module; `build_providers` (run, web, worker) knows
nothing of it, and no setting switches it on (tests/test_console.py checks both)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from services.payments.mpesa import MpesaError, StkAccepted, StkStatus

PREFIX = "ws_CO_SIMULATED_"  # every CheckoutRequestID this simulation hands out starts so
PUSH_NOTICE = "(simulated M-Pesa: the customer's phone would now ask for the PIN — payment succeeds in the simulation)"


class SimulatedMpesa:
    """Every prompt is accepted and, when the flow asks Daraja's STK query how it ended, paid. A
    request id it did not hand out (a real prompt's) is never called paid."""

    def __init__(self, notice: Callable[[str], None]) -> None:
        self.notice = notice

    async def stk_push(self, *, amount: int, msisdn: str, account_reference: str, description: str) -> StkAccepted:
        self.notice(PUSH_NOTICE)
        checkout_id = PREFIX + uuid.uuid4().hex[:16]
        return StkAccepted(f"simulated-{checkout_id[-8:]}", checkout_id, "Success. Request accepted for processing")

    async def stk_query(self, checkout_request_id: str) -> StkStatus:
        if not checkout_request_id.startswith(PREFIX):
            raise MpesaError("404.001.01", "not a prompt of this simulation")
        desc = "The service request is processed successfully. (simulated)"
        raw = {"ResultCode": "0", "ResultDesc": desc, "CheckoutRequestID": checkout_request_id, "Simulated": True}
        return StkStatus("0", desc, raw)

    async def aclose(self) -> None:
        return None
