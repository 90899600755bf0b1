"""Returns through the bot: the buyer asks from a delivered order (whole or some lines, with a reason),
the admin group approves or rejects, stock and money come back once, and the buyer hears each step
through the outbox. services/returns.py, handlers/returns.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from db.models import AuditEntry, Customer, Outbox, Payment, ReturnRequest
from handlers.buttons import ReturnAction, ReturnStep
from handlers.returns import DecisionAction, ReturnDecision
from services import buttons, returns
from services import orders as sm
from services.errors import DomainError, IllegalTransition
from tests import stripe_standin as st
from tests.factories import make_order, make_product, stock_of
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness, stripe_harness
from tests.standins import BotAPIStandIn

BUYER = 7373
GROUP_ADMIN = 5353
STRANGER = 6363
ACTOR = f"admin:{ADMIN_USER_ID}"


# --- setting the scene ------------------------------------------------------------------------------


async def delivered_order(
    shop: Harness, *, provider: str = "mpesa", zone: str = "nairobi", lines: tuple[int, ...] = (2,), tag: str = ""
) -> tuple[str, list[int]]:
    """A paid order of BUYER's (one product per entry of `lines`, that many units each; 5 in stock),
    shipped and delivered by the admin through the bot. Returns its public id and the product ids."""
    pids = [
        await make_product(shop.session_factory, f"RET-{tag}{provider}-{zone}-{n}", stock=5) for n in range(len(lines))
    ]
    order = await make_order(shop.session_factory, BUYER, list(zip(pids, lines, strict=True)), zone=zone)
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, order.public_id)
        session.add(
            Payment(
                order_id=o.id,
                provider=provider,
                state="paid",
                amount=o.total,
                currency=o.currency,
                receipt_number="RLA123XYZ" if provider == "mpesa" else None,
                stripe_payment_intent="pi_ret1" if provider == "stripe" else None,
            )
        )
        await sm.transition(session, o, sm.PROCESSING, "system:test")
    tracking = "1234567890" if zone == "intl" else "G4S-77"
    assert "shipped" in await admin(shop, f"/ship {order.public_id} {tracking}")
    assert "delivered" in await admin(shop, f"/delivered {order.public_id}")
    return order.public_id, pids


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID) -> str:
    return (await shop.send(user, text, chat_id=ADMIN_CHAT_ID)).text


async def ask_return(shop: Harness, public_id: str, picks: list[tuple[int, int]] | None, reason: str) -> Any:
    """The buyer: /return, then ➕ on each (line index, times) of `picks` (None: "Return everything"),
    Continue, and the reason typed. Returns the bot's last message to the buyer."""
    screen = await shop.send(BUYER, f"/return {public_id}")
    assert "Return items from order" in screen.text, screen.text
    if picks is None:
        screen = await shop.press(BUYER, _step(ReturnAction.ALL, public_id), message=screen)
    else:
        items = await item_ids(shop, public_id)
        for index, times in picks:
            for _ in range(times):
                screen = await shop.press(BUYER, _step(ReturnAction.MORE, public_id, items[index]), message=screen)
    prompt = await shop.press(BUYER, _step(ReturnAction.NEXT, public_id), message=screen)
    assert "Why are you returning it?" in prompt.text
    return await shop.send(BUYER, reason)


def _step(action: ReturnAction, public_id: str, item: int = 0) -> str:
    return ReturnStep(action=action, public_id=public_id, item=item).pack()


async def item_ids(shop: Harness, public_id: str) -> list[int]:
    async with shop.session_factory() as session:
        return [i.id for i in (await sm.get_order(session, public_id)).items]


async def load(shop: Harness, public_id: str) -> tuple[Any, list[Payment], list[ReturnRequest]]:
    async with shop.session_factory() as session:
        o = await sm.get_order(session, public_id)
        payments = list((await session.execute(select(Payment).where(Payment.order_id == o.id))).unique().scalars())
        requests = list((await session.execute(select(ReturnRequest).where(ReturnRequest.order_id == o.id))).scalars())
        return o, payments, requests


async def outbox(shop: Harness, **where: Any) -> list[Outbox]:
    async with shop.session_factory() as session:
        stmt = select(Outbox).order_by(Outbox.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(Outbox, column) == value)
        return list((await session.execute(stmt)).scalars().all())


async def audit_rows(shop: Harness, action: str) -> list[AuditEntry]:
    async with shop.session_factory() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


async def press_admin(shop: Harness, data: str, user: int = ADMIN_USER_ID) -> Any:
    """An admin presses `data` on the request in the admin group (the outbox posts it there; the
    stand-in needs a message of the bot's in the chat to press on)."""
    message = shop.botapi.last(ADMIN_CHAT_ID)
    return await shop.press(user, data, chat_id=ADMIN_CHAT_ID, message=message)


async def reply_to(shop: Harness, user_id: int, prompt_id: int, text: str) -> None:
    msg = shop._message(user_id, ADMIN_CHAT_ID, text=text)
    msg["reply_to_message"] = {
        "message_id": prompt_id,
        "date": 1_700_000_000,
        "chat": {"id": ADMIN_CHAT_ID, "type": "supergroup", "title": "Shop admins"},
        "from": BotAPIStandIn.BOT_USER,
        "text": "Why reject",
    }
    await shop.feed({"message": msg})


class FakeStripe:
    """A Stripe gateway recording refunds (and optionally slow, so a second approval arrives meanwhile)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.refunded = delay, []

    async def refund(self, payment: Payment, **kwargs: Any) -> str:
        await asyncio.sleep(self.delay)
        self.refunded.append((payment.stripe_payment_intent, kwargs.get("amount")))
        return f"re_{len(self.refunded)}"

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def stripe_shop(engine, botapi) -> AsyncIterator[tuple[Harness, st.StripeStandIn]]:  # type: ignore[no-untyped-def]
    """The shop with the real Stripe gateway against the Stripe stand-in."""
    async with stripe_harness(engine, botapi) as (shop, server):
        # The card payment the refunds are of: a paid Checkout Session the stand-in knows.
        server.sessions["cs_ret1"] = {"id": "cs_ret1", "payment_intent": "pi_ret1", "status": "complete"}
        yield shop, server


# --- the whole order, M-Pesa ------------------------------------------------------------------------


async def test_whole_order_return_approved_mpesa(shop: Harness) -> None:
    public_id, (pid,) = await delivered_order(shop)
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)
    detail = await shop.press(BUYER, buttons.view_order(public_id), message=await shop.send(BUYER, "/orders"))
    assert detail.button("Return items") == buttons.start_return(public_id)  # on the delivered order's screen

    await ask_return(shop, public_id, None, "Both <b>arrived</b> broken")
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, request.state, request.whole_order, request.refund_amount) == (
        "return_requested",
        "requested",
        True,
        o.total,  # the whole order: shipping included
    )
    received = await outbox(shop, chat_id=BUYER, kind="return")
    assert len(received) == 1 and "received your return request" in received[0].text
    assert "&lt;b&gt;arrived&lt;/b&gt;" in received[0].text  # the typed reason is escaped
    (alert,) = await outbox(shop, chat_id=ADMIN_CHAT_ID, kind="return_request")
    assert public_id in alert.text and "Test" in alert.text and "KES" in alert.text and "broken" in alert.text
    labels = [b["callback_data"] for row in alert.reply_markup["inline_keyboard"] for b in row]
    assert labels == [
        ReturnDecision(action=DecisionAction.APPROVE, request=request.id).pack(),
        ReturnDecision(action=DecisionAction.REJECT, request=request.id).pack(),
    ]

    done = await press_admin(shop, buttons.approve_return(request.id))
    assert done.method == "editMessageText" and "must be reversed manually" in done.text and not done.buttons
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, o.refund_status, request.state, request.refund_status, request.decided_by) == (
        "returned",
        "manual_reversal_owed",
        "approved",
        "manual_reversal_owed",
        ADMIN_USER_ID,
    )
    assert payments[0].state == "refund_due"  # as /cancel records an M-Pesa reversal owed
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)  # both units back on the shelf
    approved = (await outbox(shop, chat_id=BUYER, kind="return"))[-1]
    assert "is approved" in approved.text and "will be reversed to your M-Pesa" in approved.text
    assert "KES" in approved.text
    (entry,) = await audit_rows(shop, "return_approve")
    assert entry.admin_id == ADMIN_USER_ID and entry.order_id == o.id and "manual_reversal_owed" in entry.detail
    async with shop.session_factory() as session:
        events = await sm.events_of(session, o.id)
    assert [(e.from_state, e.to_state, e.actor) for e in events[-2:]] == [
        ("delivered", "return_requested", f"customer:{BUYER}"),
        ("return_requested", "returned", ACTOR),
    ]
    # Once returned, the order cannot be returned again.
    again = await shop.send(BUYER, f"/return {public_id}")
    assert "already been returned" in again.text


# --- card: whole through the Stripe stand-in, then part of an order ----------------------------------


async def test_whole_order_return_refunds_the_card_through_stripe(stripe_shop) -> None:  # type: ignore[no-untyped-def]
    shop, stripe = stripe_shop
    public_id, (pid,) = await delivered_order(shop, provider="stripe", zone="intl")
    await ask_return(shop, public_id, None, "Wrong model")
    _, _, (request,) = await load(shop, public_id)
    done = await press_admin(shop, buttons.approve_return(request.id))
    assert "refunded through Stripe" in done.text
    assert [(r["payment_intent"], r.get("amount")) for r in stripe.refunds] == [("pi_ret1", None)]  # in full
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, payments[0].state, request.refund_status, request.refund_reference) == (
        "returned",
        "refunded",
        "refunded",
        stripe.refunds[0]["id"],
    )
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)
    approved = (await outbox(shop, chat_id=BUYER, kind="return"))[-1]
    assert "refunded to your card" in approved.text and "$" in approved.text


async def test_partial_return_refunds_only_those_lines(stripe_shop) -> None:  # type: ignore[no-untyped-def]
    shop, stripe = stripe_shop
    public_id, (a, b) = await delivered_order(shop, provider="stripe", zone="intl", lines=(2, 1))
    await ask_return(shop, public_id, [(0, 1)], "One of the two is faulty")  # 1 of line A, none of B
    o, _, (request,) = await load(shop, public_id)
    unit = o.items[0].unit_price
    assert (request.whole_order, request.refund_amount) == (False, unit)  # no shipping on a partial return
    assert [(line.order_item_id, line.quantity) for line in request.lines] == [(o.items[0].id, 1)]
    await press_admin(shop, buttons.approve_return(request.id))
    assert [(r["payment_intent"], r.get("amount")) for r in stripe.refunds] == [("pi_ret1", unit)]
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, request.refund_status) == ("returned", "refunded")
    assert payments[0].state == "paid"  # the rest of the payment was kept
    assert await stock_of(shop.session_factory, a) == (4, 0, 1)  # one of two units back
    assert await stock_of(shop.session_factory, b) == (4, 0, 1)  # untouched
    approved = (await outbox(shop, chat_id=BUYER, kind="return"))[-1]
    assert "$8 has been refunded to your card" in approved.text


async def test_partial_mpesa_return_records_the_owed_reversal_of_those_lines(shop: Harness) -> None:
    public_id, (a, b) = await delivered_order(shop, lines=(1, 3), tag="p")
    await ask_return(shop, public_id, [(1, 2)], "Two too many")
    _, _, (request,) = await load(shop, public_id)
    done = await press_admin(shop, buttons.approve_return(request.id))
    assert "KES 2,000 must be reversed manually" in done.text
    _, payments, (request,) = await load(shop, public_id)
    assert (request.refund_amount, request.refund_status, payments[0].state) == (
        2000_00,
        "manual_reversal_owed",
        "paid",
    )
    assert await stock_of(shop.session_factory, b) == (4, 0, 1) and await stock_of(shop.session_factory, a) == (4, 0, 1)
    assert "KES 2,000 will be reversed to your M-Pesa" in (await outbox(shop, chat_id=BUYER, kind="return"))[-1].text


# --- refusals -----------------------------------------------------------------------------------------


async def test_outside_the_return_window_is_refused(shop: Harness) -> None:
    public_id, _ = await delivered_order(shop)
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, public_id)
        (delivered,) = [e for e in await sm.events_of(session, o.id) if e.to_state == "delivered"]
        delivered.created_at -= timedelta(days=15)
    answer = await shop.send(BUYER, f"/return {public_id}")
    assert "can no longer be returned" in answer.text and "14 days after delivery" in answer.text
    assert not answer.buttons
    detail = await shop.press(BUYER, buttons.view_order(public_id), message=await shop.send(BUYER, "/orders"))
    refused = await shop.press(BUYER, detail.button("Return items"), message=detail)
    assert "can no longer be returned" in refused.text
    assert (await load(shop, public_id))[0].state == "delivered"


async def test_window_counts_from_the_first_delivery(shop: Harness) -> None:
    """A rejected request puts the order back to delivered; the window does not start again."""
    public_id, _ = await delivered_order(shop)
    await ask_return(shop, public_id, None, "Changed my mind")
    _, _, (request,) = await load(shop, public_id)
    async with shop.session_factory() as session, session.begin():
        await returns.reject(session, request.id, None, ACTOR)
        o = await sm.get_order(session, public_id)
        first = (await sm.events_of(session, o.id))[-3]
        assert (first.from_state, first.to_state) == ("shipped", "delivered")
        first.created_at -= timedelta(days=20)
    assert "can no longer be returned" in (await shop.send(BUYER, f"/return {public_id}")).text


async def test_not_delivered_is_refused(shop: Harness) -> None:
    pid = await make_product(shop.session_factory, "RET-NOT-DELIVERED", stock=5)
    order = await make_order(shop.session_factory, BUYER, [(pid, 1)])
    answer = await shop.send(BUYER, f"/return {order.public_id}")
    assert "hasn't been delivered yet" in answer.text and not answer.buttons
    assert "can't find an order" in (await shop.send(BUYER, "/return HL-NOPE22")).text
    assert "/return HL-7F3K2Q" in (await shop.send(BUYER, "/return")).text
    # someone else's delivered order is not found either
    public_id, _ = await delivered_order(shop)
    assert "can't find an order" in (await shop.send(BUYER + 1, f"/return {public_id}")).text


async def test_choosing_nothing_and_an_overlong_reason_are_refused(shop: Harness) -> None:
    public_id, _ = await delivered_order(shop)
    screen = await shop.send(BUYER, f"/return {public_id}")
    await shop.press(BUYER, _step(ReturnAction.NEXT, public_id), message=screen)
    assert "Choose at least one item" in shop.last_answer.params["text"]
    screen = await shop.press(
        BUYER, _step(ReturnAction.MORE, public_id, (await item_ids(shop, public_id))[0]), message=screen
    )
    assert "1 of 2" in screen.text
    await shop.press(BUYER, _step(ReturnAction.NEXT, public_id), message=screen)
    assert "keep the reason to 500" in (await shop.send(BUYER, "x" * 501)).text
    assert (await load(shop, public_id))[0].state == "delivered"  # still waiting for a reason
    await shop.send(BUYER, "Too big for my desk")
    assert (await load(shop, public_id))[0].state == "return_requested"
    assert "already asked to return" in (await shop.send(BUYER, f"/return {public_id}")).text


# --- rejecting --------------------------------------------------------------------------------------


async def test_reject_with_a_reason(shop: Harness) -> None:
    public_id, (pid,) = await delivered_order(shop)
    await ask_return(shop, public_id, [(0, 1)], "Scratched")
    _, _, (request,) = await load(shop, public_id)
    prompt = await press_admin(shop, buttons.reject_return(request.id))
    assert f"Why reject return #{request.id}" in prompt.text and prompt.params["reply_markup"]["force_reply"]
    await reply_to(shop, STRANGER, prompt.result["message_id"], "nope")  # not the admin who was asked
    assert (await load(shop, public_id))[0].state == "return_requested"
    await reply_to(shop, ADMIN_USER_ID, prompt.result["message_id"], "Used <i>heavily</i>, not as delivered")
    assert "rejected" in shop.botapi.last(ADMIN_CHAT_ID).text
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, request.state, request.decision_note, payments[0].state) == (
        "delivered",
        "rejected",
        "Used <i>heavily</i>, not as delivered",
        "paid",
    )
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)  # nothing came back
    rejected = (await outbox(shop, chat_id=BUYER, kind="return"))[-1]
    assert "was not accepted" in rejected.text and "&lt;i&gt;heavily&lt;/i&gt;" in rejected.text
    (entry,) = await audit_rows(shop, "return_reject")
    assert entry.admin_id == ADMIN_USER_ID and "heavily" in entry.detail
    # decided: approving it now does nothing
    refused = await press_admin(shop, buttons.approve_return(request.id))
    assert "already rejected" in refused.text
    assert (await load(shop, public_id))[0].state == "delivered"


async def test_reject_without_a_reason_in_swahili(shop: Harness) -> None:
    public_id, _ = await delivered_order(shop)
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Customer).where(Customer.id == BUYER).values(language="sw", language_chosen=True))
    screen = await shop.send(BUYER, f"/return {public_id}")
    assert "Rudisha bidhaa za oda" in screen.text
    screen = await shop.press(BUYER, _step(ReturnAction.ALL, public_id), message=screen)
    await shop.press(BUYER, _step(ReturnAction.NEXT, public_id), message=screen)
    await shop.send(BUYER, "Imevunjika")
    assert "Tumepokea ombi lako" in (await outbox(shop, chat_id=BUYER, kind="return"))[-1].text
    _, _, (request,) = await load(shop, public_id)
    prompt = await press_admin(shop, buttons.reject_return(request.id))
    await reply_to(shop, ADMIN_USER_ID, prompt.result["message_id"], "-")
    o, _, (request,) = await load(shop, public_id)
    assert (o.state, request.decision_note) == ("delivered", None)
    assert "halijakubaliwa" in (await outbox(shop, chat_id=BUYER, kind="return"))[-1].text


# --- deciding once ------------------------------------------------------------------------------------


async def test_double_approval_does_nothing_twice(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeStripe()
    shop = await Harness(engine, botapi, providers={"stripe": gateway}).start()
    public_id, (pid,) = await delivered_order(shop, provider="stripe", zone="intl")
    await ask_return(shop, public_id, None, "Wrong one")
    _, _, (request,) = await load(shop, public_id)
    first = await press_admin(shop, buttons.approve_return(request.id))
    assert "refunded through Stripe" in first.text
    again = await press_admin(shop, buttons.approve_return(request.id))  # a double tap
    assert "already approved" in again.text
    assert gateway.refunded == [("pi_ret1", None)]
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)  # restocked once
    assert len(await audit_rows(shop, "return_approve")) == 1
    assert len([m for m in await outbox(shop, chat_id=BUYER, kind="return") if "is approved" in m.text]) == 1
    await shop.stop()


@pytest.mark.pg_only
async def test_two_admins_approving_at_once_refund_once(engine, botapi) -> None:  # type: ignore[no-untyped-def]
    gateway = FakeStripe(delay=0.2)  # the other admin's press arrives while Stripe is answering
    shop = await Harness(engine, botapi, providers={"stripe": gateway}).start()
    public_id, (pid,) = await delivered_order(shop, provider="stripe", zone="intl")
    await ask_return(shop, public_id, None, "Wrong one")
    _, _, (request,) = await load(shop, public_id)
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    message = shop.botapi.last(ADMIN_CHAT_ID)
    data = buttons.approve_return(request.id)
    await asyncio.gather(
        shop.press(ADMIN_USER_ID, data, chat_id=ADMIN_CHAT_ID, message=message),
        shop.press(GROUP_ADMIN, data, chat_id=ADMIN_CHAT_ID, message=message),
    )
    said = [c.text for c in shop.botapi.calls if c.chat_id == ADMIN_CHAT_ID and c.text]
    assert sum("refunded through Stripe" in s for s in said) == 1
    assert sum("already approved" in s for s in said) == 1
    assert gateway.refunded == [("pi_ret1", None)]  # one refund, not two
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, payments[0].state, request.state) == ("returned", "refunded", "approved")
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)
    assert len(await audit_rows(shop, "return_approve")) == 1
    async with shop.session_factory() as session:
        assert [e.to_state for e in await sm.events_of(session, o.id)].count("returned") == 1
    await shop.stop()


@pytest.mark.pg_only
@pytest.mark.two_sessions
async def test_concurrent_approvals_in_two_sessions_decide_once(shop: Harness) -> None:
    """Two processes' services, each its own session and transaction, approving the same request."""
    public_id, (pid,) = await delivered_order(shop)
    await ask_return(shop, public_id, None, "Broken")
    _, _, (request,) = await load(shop, public_id)

    async def approve(actor: str) -> str:
        async with shop.session_factory() as session:
            try:
                await returns.approve(session, request.id, actor, {}, shop.settings)
                await asyncio.sleep(0.1)  # hold the decision open while the other tries
                await session.commit()
                return "approved"
            except DomainError as exc:
                return exc.key

    outcomes = sorted(await asyncio.gather(approve("admin:1"), approve("admin:2")))
    assert outcomes == ["admin.return.already_decided", "approved"]
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, payments[0].state) == ("returned", "refund_due")
    assert await stock_of(shop.session_factory, pid) == (5, 0, 0)
    assert len(await audit_rows(shop, "return_approve")) == 1


async def test_non_admin_cannot_approve_or_reject(shop: Harness) -> None:
    public_id, (pid,) = await delivered_order(shop)
    await ask_return(shop, public_id, None, "Broken")
    _, _, (request,) = await load(shop, public_id)
    await press_admin(shop, buttons.approve_return(request.id), user=STRANGER)  # a group member, not an admin
    assert "⛔" in shop.last_answer.params["text"]
    await press_admin(shop, buttons.reject_return(request.id), user=STRANGER)
    assert "⛔" in shop.last_answer.params["text"]
    # the buyer pressing it in their own chat
    await shop.press(BUYER, buttons.approve_return(request.id), message=await shop.send(BUYER, "/orders"))
    assert "⛔" in shop.last_answer.params["text"]
    o, payments, (request,) = await load(shop, public_id)
    assert (o.state, request.state, payments[0].state) == ("return_requested", "requested", "paid")
    assert await stock_of(shop.session_factory, pid) == (3, 0, 2)
    # a demoted admin is refused past the cache: Approve refunds, so rights are asked afresh
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "administrator"
    assert "⛔" not in await admin(shop, "/stock", user=GROUP_ADMIN)
    shop.botapi.chat_member_status[(ADMIN_CHAT_ID, GROUP_ADMIN)] = "member"
    await press_admin(shop, buttons.approve_return(request.id), user=GROUP_ADMIN)
    assert "⛔" in shop.last_answer.params["text"]
    assert (await load(shop, public_id))[0].state == "return_requested"


# --- the state machine --------------------------------------------------------------------------------


async def test_return_transitions_are_guarded(shop: Harness) -> None:
    public_id, _ = await delivered_order(shop)
    async with shop.session_factory() as session:
        order = await sm.get_order(session, public_id)
        for illegal in (sm.RETURNED, sm.PROCESSING, sm.CANCELLED):
            with pytest.raises(IllegalTransition):
                await sm.transition(session, order, illegal, "test")
        await session.rollback()
    await ask_return(shop, public_id, None, "Broken")
    _, _, (request,) = await load(shop, public_id)
    async with shop.session_factory() as session, session.begin():
        order = await sm.get_order(session, public_id)
        with pytest.raises(IllegalTransition):
            await sm.transition(session, order, sm.SHIPPED, "test")
    async with shop.session_factory() as session:
        await returns.approve(session, request.id, ACTOR, {}, shop.settings)
        await session.commit()
    async with shop.session_factory() as session:
        order = await sm.get_order(session, public_id)
        for illegal in (sm.DELIVERED, sm.RETURN_REQUESTED, sm.PROCESSING):
            with pytest.raises(IllegalTransition):
                await sm.transition(session, order, illegal, "test")
        await session.rollback()
        with pytest.raises(DomainError, match="already_decided"):
            await returns.reject(session, request.id, "late", ACTOR)


def test_service_buttons_are_the_factories_strings() -> None:
    assert buttons.start_return("HL-ABC123") == _step(ReturnAction.START, "HL-ABC123")
    assert buttons.approve_return(42) == ReturnDecision(action=DecisionAction.APPROVE, request=42).pack()
    assert buttons.reject_return(42) == ReturnDecision(action=DecisionAction.REJECT, request=42).pack()


def test_a_partial_return_of_a_discounted_order_refunds_what_was_paid_for_those_lines() -> None:
    """A promo discount was taken off the subtotal: the lines' share of it is not refunded (rounded so the
    refund never exceeds what was paid), and a whole return gives back exactly the order's total."""
    from db.models import Order, OrderItem

    a = OrderItem(id=1, unit_price=3000_00, quantity=2)
    b = OrderItem(id=2, unit_price=1000_01, quantity=1)
    order = Order(subtotal=7000_01, shipping=300_00, discount=700_00, total=6600_01, items=[a, b])
    # line B's share of the discount: 700_00 * 1000_01 / 7000_01 = 100_00.0142… cents, rounded up to 100_01
    assert returns.refund_amount(order, [(b, 1)]) == 1000_01 - 100_01
    assert returns.refund_amount(order, [(a, 1)]) == 3000_00 - 300_00
    assert returns.refund_amount(order, [(a, 2), (b, 1)]) == order.total
    plain = Order(subtotal=7000_01, shipping=300_00, discount=0, total=7300_01, items=[a, b])
    assert returns.refund_amount(plain, [(a, 1)]) == 3000_00


async def test_report_counts_a_returned_order_as_sold_and_its_partial_refund_as_owed(shop: Harness) -> None:
    from services import reports

    public_id, _ = await delivered_order(shop, lines=(1, 3), tag="rep")
    await ask_return(shop, public_id, [(1, 2)], "Two too many")
    _, _, (request,) = await load(shop, public_id)
    await press_admin(shop, buttons.approve_return(request.id))
    async with shop.session_factory() as session:
        o = await sm.get_order(session, public_id)
        figures = await reports.report(session, reports.period("today", shop.settings.shop_zone))
    assert (figures.placed, figures.paid) == (1, 1)  # returned: sold and paid
    assert [(a.currency, a.count, a.amount) for a in figures.revenue] == [("KES", 1, o.total)]
    assert [(a.currency, a.count, a.amount) for a in figures.refund_owed] == [("KES", 1, 2000_00)]
    assert figures.refunded == []
