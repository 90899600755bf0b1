"""The shop's Prometheus metrics, for GET /metrics (webhooks/metrics.py) and a merchant's dashboard
(deploy/grafana-dashboard.json).

Each process keeps its own counts in prometheus_client's default registry, from its start. What
happens inside a database transaction is counted when that transaction commits (`on_commit`): an
order transition or a settled payment rolled back (a savepoint's or the whole transaction's) was
never made, and a retried webhook must not count twice. The outbox gauges are read from the
database when scraped (`sample_outbox`), so they hold for every process at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from db.models import Outbox, Payment

P = ParamSpec("P")

UPDATES = Counter("storefront_updates", "Telegram updates handled, by handler", ["handler"])
HANDLER_SECONDS = Histogram(
    "storefront_handler_seconds",
    "Time a handler took, its session's commit included, by handler",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ORDER_TRANSITIONS = Counter(
    "storefront_order_transitions",
    "Order state changes committed (from_state 'none': an order placed)",
    ["from_state", "to_state"],
)
PAYMENTS = Counter(
    "storefront_payments",
    "Payment attempts settled or failed, by provider and outcome (paid, late_paid, failed, expired, refused, …)",
    ["provider", "outcome"],
)
NOTIFICATIONS = Counter(
    "storefront_notifications",
    "Outbox sends by outcome (sent, retried, rate_limited, dead, dropped)",
    ["outcome"],
)
OUTBOX_DEPTH = Gauge("storefront_outbox_depth", "Messages waiting in the outbox (read from the database when scraped)")
OUTBOX_OLDEST = Gauge(
    "storefront_outbox_oldest_pending_seconds", "Age of the oldest message waiting in the outbox (0 when none)"
)
DHL_CALLS = Counter(
    "storefront_dhl_calls",
    "DHL tracking API calls by outcome (ok, not_found, rate_limited, bad_key, error)",
    ["outcome"],
)
RESERVATION_EXPIRIES = Counter("storefront_reservation_expiries", "Unpaid orders expired, their stock released")

NO_STATE = "none"  # from_state of an order placed


# --- counted on commit ----------------------------------------------------------------------------

_PENDING = "storefront.metrics.pending"


@dataclass(slots=True)
class _Pending:
    series: Counter
    amount: float
    # The transaction it waits for, then each enclosing one it was handed to when a savepoint ended.
    waits_on: list[SessionTransaction] = field(default_factory=list)


def on_commit(session: AsyncSession, series: Counter, amount: float = 1) -> None:
    """Add `amount` to `series` once the session's transaction commits; nothing if it rolls back
    (or the savepoint this was recorded in does). Outside a transaction: at once."""
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    if transaction is None:
        series.inc(amount)
        return
    sync.info.setdefault(_PENDING, []).append(_Pending(series, amount, [transaction]))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:  # a savepoint released: its parent decides
        return
    for pending in session.info.pop(_PENDING, ()):
        pending.series.inc(pending.amount)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    waiting: list[_Pending] | None = session.info.get(_PENDING)
    if not waiting:
        return
    if transaction.parent is None:  # committed (counted above) or rolled back: nothing left to wait for
        session.info.pop(_PENDING, None)
        return
    for pending in waiting:
        if pending.waits_on[-1] is transaction:
            pending.waits_on.append(transaction.parent)


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    waiting: list[_Pending] | None = session.info.get(_PENDING)
    if waiting:
        session.info[_PENDING] = [p for p in waiting if previous_transaction not in p.waits_on]


# --- one line at each place -----------------------------------------------------------------------


def count_transition(session: AsyncSession, from_state: str | None, to_state: str) -> None:
    on_commit(session, ORDER_TRANSITIONS.labels(from_state or NO_STATE, to_state))


def counts_payment_outcome(
    settle: Callable[Concatenate[AsyncSession, Payment, P], Awaitable[str]],
) -> Callable[Concatenate[AsyncSession, Payment, P], Awaitable[str]]:
    """Counts the outcome a settlement function returns (with the attempt's provider), on commit."""

    @functools.wraps(settle)
    async def counted(session: AsyncSession, payment: Payment, /, *args: P.args, **kwargs: P.kwargs) -> str:
        outcome = await settle(session, payment, *args, **kwargs)
        on_commit(session, PAYMENTS.labels(payment.provider, outcome))
        return outcome

    return counted


def count_dhl_call(status: int | None) -> None:
    """One DHL call by its HTTP status (None: no answer)."""
    outcome = {200: "ok", 404: "not_found", 429: "rate_limited", 401: "bad_key", 403: "bad_key"}.get(status or 0)
    DHL_CALLS.labels(outcome or "error").inc()


async def sample_outbox(session_factory: async_sessionmaker[AsyncSession], now: datetime | None = None) -> None:
    """Set the outbox gauges from the database: one query over the pending rows."""
    async with session_factory() as session:
        depth, oldest = (
            await session.execute(select(func.count(), func.min(Outbox.created_at)).where(Outbox.state == "pending"))
        ).one()
    OUTBOX_DEPTH.set(depth)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - oldest).total_seconds() if oldest is not None else 0.0
    OUTBOX_OLDEST.set(max(age, 0.0))
