"""Which ways to pay the customer is offered, and what happens when none is configured."""

from __future__ import annotations

from sqlalchemy import select

from bot.runtime import Shop
from bot.serve import announce_start
from db.models import Outbox
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, Harness

USER = 8301


class Configured:  # stands in for a provider client: only its presence matters for the offer
    async def aclose(self) -> None:
        return None


async def _offer(shop: Harness, zone: str) -> list[str]:
    pid = await make_product(shop.session_factory, f"OFF-{zone}", stock=3)
    order = await make_order(shop.session_factory, USER, [(pid, 1)], zone=zone)
    await shop.send(USER, "/start")
    reply = await shop.press(USER, f"pay:o:{order.public_id}")
    return [label for label, _ in reply.buttons], reply.text  # type: ignore[return-value]


async def test_mpesa_for_kes_card_for_both(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, providers={"mpesa": Configured(), "stripe": Configured()}).start()
    labels, _ = await _offer(shop, "nairobi")
    assert labels == ["📱 M-Pesa", "💳 Card (Stripe)", "✖ Cancel order"]
    labels, _ = await _offer(shop, "intl")
    assert labels == ["💳 Card (Stripe)", "✖ Cancel order"]
    await shop.stop()


async def test_no_provider_tells_customer_and_warns_admins(shop: Harness) -> None:
    labels, text = await _offer(shop, "nairobi")
    assert labels == ["✖ Cancel order"] and "online payment is unavailable" in text
    assert isinstance(shop.shop, Shop)
    await announce_start(shop.shop)
    async with shop.session_factory() as session:
        alert = (await session.execute(select(Outbox).where(Outbox.chat_id == ADMIN_CHAT_ID))).scalar_one()
    assert "No payment provider is configured" in alert.text


async def test_customer_can_cancel_an_unpaid_order(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "CXL-1", stock=3)
    order = await make_order(shop.session_factory, USER, [(pid, 2)])
    await shop.send(USER, "/start")
    await shop.press(USER, f"pay:x:{order.public_id}")
    assert "cancelled" in shop.last_answer.params["text"]
    await shop.press(USER, f"pay:x:{order.public_id}")
    assert "can't be paid now" in shop.last_answer.params["text"]
    from tests.factories import stock_of

    assert await stock_of(shop.session_factory, pid) == (3, 0, 0)
