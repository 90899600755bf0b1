"""Handlers manage no transactions: a service call is the unit of work. A handler that waits on a
payment provider takes no session, so it holds no pooled connection during the slow HTTP call."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from db.models import Order, Payment
from handlers import pay_card, pay_mpesa
from tests.test_mpesa import USER, MpesaWorld, world  # noqa: F401  (the fixture)

HANDLERS = Path(__file__).resolve().parent.parent / "handlers"
TRANSACTION_CALLS = {"commit", "rollback", "begin", "begin_nested"}


def test_no_handler_commits_rolls_back_or_opens_a_transaction() -> None:
    found = []
    for path in sorted(HANDLERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in TRANSACTION_CALLS:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert found == []


def test_handlers_that_wait_on_a_provider_take_no_session() -> None:
    """DbSessionMiddleware opens a session for a handler that takes one of these."""
    import inspect

    for handler in (
        pay_mpesa.pay_with_mpesa,
        pay_mpesa.typed_mpesa_phone,
        pay_mpesa.check_status,
        pay_card.pay_by_card,
    ):
        assert not {"session", "customer", "customer_id"} & set(inspect.signature(handler).parameters), handler


async def test_no_pooled_connection_is_held_while_daraja_is_asked(world: MpesaWorld) -> None:  # noqa: F811 - the imported fixture
    pool = world.shop.engine.sync_engine.pool
    client = world.shop.providers["mpesa"]
    held: list[int] = []
    push, query = client.stk_push, client.stk_query

    async def watched_push(**kwargs: Any) -> Any:
        held.append(pool.checkedout())
        return await push(**kwargs)

    async def watched_query(checkout_request_id: str) -> Any:
        held.append(pool.checkedout())
        return await query(checkout_request_id)

    client.stk_push, client.stk_query = watched_push, watched_query
    order = await world.order()
    reply = await world.pay(order)
    assert "Check your phone" in reply.text
    async with world.shop.session_factory() as session:  # a pending attempt, not asked about lately
        await session.execute(Payment.__table__.update().values(state="pending", query_attempts=0))
        await session.commit()
    await world.shop.press(USER, f"pay:mq:{order.public_id}")
    assert len(held) >= 2 and set(held) == {0}  # the push, the status query (and the callback's own check)
    async with world.shop.session_factory() as session:
        assert (await session.execute(select(func.count(Order.id)))).scalar_one() == 1
