"""The outbox sender against a Bot API stand-in that enforces Telegram's limits and fails on cue."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp import web
from sqlalchemy import select, update

from db.models import Customer, Outbox, utcnow
from services.notifications import enqueue
from services.outbox_sender import BotApiTransport, Limits, drain_once
from tests.harness import TEST_TOKEN
from tests.limited_botapi import TelegramLimits
from tests.standins import StandIn


async def queue(session_factory, messages: list[tuple[int, str]]) -> None:  # type: ignore[no-untyped-def]
    async with session_factory() as session, session.begin():
        for chat_id, text in messages:
            enqueue(session, chat_id, text, kind="order_status")


async def drain_all(session_factory, transport, limits, rounds: int = 50, **kw) -> int:  # type: ignore[no-untyped-def]
    sent = 0
    for _ in range(rounds):
        sent += await drain_once(session_factory, transport, limits, **kw)
        async with session_factory() as session:
            due = (await session.execute(select(Outbox).where(Outbox.state == "pending"))).scalars().all()
        if not due:
            break
        soonest = min(r.next_attempt_at for r in due)
        await asyncio.sleep(max(0.05, min((soonest - utcnow()).total_seconds(), 2)))
    return sent


def delivered(botapi) -> Counter:  # type: ignore[no-untyped-def]
    return Counter((c.chat_id, c.text) for c in botapi.sent(method="sendMessage"))


@pytest.fixture
def transport(botapi):  # type: ignore[no-untyped-def]
    return BotApiTransport(botapi.url, TEST_TOKEN)


async def test_delivers_in_order_within_limits(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi)
    per_chat = {101: 3, 102: 3, 103: 3, -100500: 2}  # the group is spaced 3.3 s: keep it short
    messages = [(chat, f"msg {chat}-{n}") for n in range(3) for chat, count in per_chat.items() if n < count]
    await queue(session_factory, messages)
    assert await drain_all(session_factory, transport, Limits()) == 11
    assert limits.answered_429 == 0 and delivered(botapi) == Counter(messages)
    for chat, count in per_chat.items():
        assert [c.text for c in botapi.sent(chat, "sendMessage")] == [f"msg {chat}-{n}" for n in range(count)]
    async with session_factory() as session:
        assert {r.state for r in (await session.execute(select(Outbox))).scalars()} == {"sent"}


async def test_a_429_is_obeyed_and_nothing_is_lost(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi)
    await queue(session_factory, [(201, f"m{n}") for n in range(3)])
    unlimited = Limits(per_chat_seconds=0.01)  # a sender that ignores the per-chat limit gets 429s…
    assert await drain_all(session_factory, transport, unlimited) == 3
    assert limits.answered_429 >= 1  # …obeys retry_after, and still delivers everything once
    assert delivered(botapi) == Counter({(201, "m0"): 1, (201, "m1"): 1, (201, "m2"): 1})
    assert [c.text for c in botapi.sent(201, "sendMessage")] == ["m0", "m1", "m2"]


async def test_5xx_is_retried_with_backoff(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi)
    limits.failing[301] = 2
    await queue(session_factory, [(301, "hello"), (302, "other")])
    sent = await drain_all(session_factory, transport, Limits(backoff_first=0.05))
    assert sent == 2 and delivered(botapi) == Counter({(301, "hello"): 1, (302, "other"): 1})
    async with session_factory() as session:
        row = (await session.execute(select(Outbox).where(Outbox.chat_id == 301))).scalar_one()
    assert row.attempts == 3 and row.state == "sent"


async def test_403_marks_customer_unreachable_and_stops(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi)
    limits.blocked.add(401)
    async with session_factory() as session, session.begin():
        session.add(Customer(id=401, chat_id=401, first_name="B"))
    await queue(session_factory, [(401, "a"), (401, "b"), (402, "c")])
    assert await drain_all(session_factory, transport, Limits()) == 1
    assert len(botapi.sent(401, "sendMessage:rejected")) == 1  # tried once, then stopped
    async with session_factory() as session:
        customer = await session.get(Customer, 401)
        states = [r.state for r in (await session.execute(select(Outbox).where(Outbox.chat_id == 401))).scalars()]
    assert customer.unreachable and states == ["dead", "dead"]


async def test_worker_killed_between_send_and_mark_resends_after_lease(
    session_factory,
    botapi,
    transport,  # type: ignore[no-untyped-def]
    monkeypatch,
) -> None:
    import services.outbox_sender as sender

    await queue(session_factory, [(501, "important")])
    real_mark = sender._mark

    async def die(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise asyncio.CancelledError  # the process dies right after Telegram accepted the message

    monkeypatch.setattr(sender, "_mark", die)
    with pytest.raises(asyncio.CancelledError):
        await drain_once(session_factory, transport, Limits(), lease_seconds=0.2)
    monkeypatch.setattr(sender, "_mark", real_mark)
    assert await drain_once(session_factory, transport, Limits()) == 0  # leased: not yet
    await asyncio.sleep(0.3)
    assert await drain_once(session_factory, transport, Limits()) == 1  # lease over: sent again
    assert [c.text for c in botapi.sent(501)] == ["important", "important"]  # at-least-once
    async with session_factory() as session:
        assert (await session.execute(select(Outbox.state))).scalar_one() == "sent"


@pytest.mark.pg_only
async def test_two_senders_drain_one_table_without_duplicates(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi)
    messages = [(600 + chat, f"n{n}") for n in range(2) for chat in range(40)]
    await queue(session_factory, messages)
    shared = Limits()  # one bot, one rate budget, whichever worker sends
    results = await asyncio.gather(
        drain_all(session_factory, transport, shared, batch=15),
        drain_all(session_factory, BotApiTransport(botapi.url, TEST_TOKEN), shared, batch=15),
    )
    assert sum(results) == 80 and all(r > 0 for r in results)
    assert delivered(botapi) == Counter(messages) and limits.answered_429 == 0
    for chat in range(40):
        assert [c.text for c in botapi.sent(600 + chat, "sendMessage")] == ["n0", "n1"]


async def test_older_message_held_elsewhere_blocks_newer_ones(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    await queue(session_factory, [(701, "first"), (701, "second")])
    async with session_factory() as session, session.begin():
        first = (await session.execute(select(Outbox).where(Outbox.text == "first"))).scalar_one()
        await session.execute(
            update(Outbox).where(Outbox.id == first.id).values(next_attempt_at=utcnow().replace(year=2100))
        )  # leased by another worker
    assert await drain_once(session_factory, transport, Limits()) == 0
    assert botapi.sent(701) == []


async def row_of(session_factory, text: str) -> Outbox:  # type: ignore[no-untyped-def]
    async with session_factory() as session:
        return (await session.execute(select(Outbox).where(Outbox.text == text))).scalar_one()


async def test_a_flood_wait_on_one_chat_does_not_hold_up_the_others(
    session_factory,
    botapi,  # type: ignore[no-untyped-def]
    transport,
) -> None:
    limits = TelegramLimits(botapi)
    limits.flood[901] = 30
    await queue(session_factory, [(901, "a"), (902, "b1"), (903, "c"), (902, "b2")])
    sender_limits = Limits()
    assert await drain_once(session_factory, transport, sender_limits) == 3  # one pass, 901 left waiting
    assert delivered(botapi) == Counter({(902, "b1"): 1, (903, "c"): 1, (902, "b2"): 1})
    assert sender_limits.global_pauses == 0
    waiting = await row_of(session_factory, "a")
    assert waiting.state == "pending" and waiting.attempts == 0  # a 429 is not a failed attempt
    assert (waiting.next_attempt_at - utcnow()).total_seconds() > 20  # retry_after obeyed
    assert await drain_once(session_factory, transport, sender_limits) == 0  # …and not resent early


async def test_429s_on_many_chats_pause_the_whole_sender(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi, per_second=5)  # the bot's global budget, far below what we try
    messages = [(1000 + chat, "hi") for chat in range(15)]
    await queue(session_factory, messages)
    greedy = Limits(per_second=200)
    assert await drain_all(session_factory, transport, greedy) == 15
    assert limits.answered_429 >= 1 and greedy.global_pauses >= 1
    assert delivered(botapi) == Counter(messages)


async def test_a_timeout_is_retried(session_factory, botapi) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi, hang_seconds=0.5)
    limits.hanging[811] = 1
    await queue(session_factory, [(811, "late")])
    impatient = BotApiTransport(botapi.url, TEST_TOKEN, timeout=0.1)
    try:
        assert await drain_all(session_factory, impatient, Limits(backoff_first=0.05)) == 1
    finally:
        await impatient.aclose()
    assert delivered(botapi) == Counter({(811, "late"): 1})
    row = await row_of(session_factory, "late")
    assert row.state == "sent" and row.attempts == 2


async def test_gives_up_after_max_attempts_and_moves_on(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    limits = TelegramLimits(botapi)
    limits.failing[821] = 2
    await queue(session_factory, [(821, "doomed"), (821, "next")])
    assert await drain_all(session_factory, transport, Limits(max_attempts=2, backoff_first=0.05)) == 1
    doomed, following = await row_of(session_factory, "doomed"), await row_of(session_factory, "next")
    assert (doomed.state, doomed.attempts, following.state) == ("dead", 2, "sent")
    assert "502" in (doomed.last_error or "") and delivered(botapi) == Counter({(821, "next"): 1})


async def test_a_bad_request_kills_only_that_message(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    async def reject_bad(method, params):  # type: ignore[no-untyped-def]
        if method == "sendMessage" and params.get("text") == "bad":  # (unparsable markup is resent as plain text)
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: message thread not found"}, status=400
            )
        return None

    botapi.responder = reject_bad
    await queue(session_factory, [(831, "bad"), (831, "fine")])
    assert await drain_all(session_factory, transport, Limits()) == 1
    bad = await row_of(session_factory, "bad")
    assert bad.state == "dead" and bad.attempts == 1 and "thread not found" in (bad.last_error or "")
    assert [c.text for c in botapi.sent(831, "sendMessage")] == ["fine"]


@pytest.mark.parametrize(
    "description", ["message to edit not found", "message can't be edited", "message is not modified"]
)
async def test_an_edit_of_a_message_that_is_gone_or_unchanged_is_done(  # type: ignore[no-untyped-def]
    session_factory, botapi, transport, description: str
) -> None:
    """Taking the pay buttons off a message the customer deleted: nothing is left to do, so the
    row is done at the first answer (not retried, not dead) and the chat's next message goes out."""

    async def refuse_edit(method, params):  # type: ignore[no-untyped-def]
        if method == "editMessageText":
            return web.json_response(
                {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}, status=400
            )
        return None

    botapi.responder = refuse_edit
    async with session_factory() as session, session.begin():
        enqueue(session, 851, "closed", kind="pay_closed", edit_message_id=77)
        enqueue(session, 851, "after", kind="order_status")
    assert await drain_all(session_factory, transport, Limits()) == 2
    edit = await row_of(session_factory, "closed")
    assert (edit.state, edit.attempts, edit.last_error) == ("sent", 1, None)
    assert [c.method for c in botapi.calls if c.chat_id == 851] == ["editMessageText:rejected", "sendMessage"]


async def test_rows_that_must_wait_are_given_back_not_held(session_factory, botapi, transport) -> None:  # type: ignore[no-untyped-def]
    await queue(session_factory, [(841, "one"), (841, "two"), (841, "three")])
    # With a 1 s lease no send may start after 0.5 s; the chat's next turn is 1.1 s away.
    assert await drain_once(session_factory, transport, Limits(), lease_seconds=1.0) == 1
    two = await row_of(session_factory, "two")
    assert two.state == "pending" and two.attempts == 0  # given back, not counted as an attempt
    assert await drain_all(session_factory, transport, Limits(), lease_seconds=1.0) == 2
    assert [c.text for c in botapi.sent(841, "sendMessage")] == ["one", "two", "three"]


@pytest.mark.pg_only
async def test_two_senders_with_busy_chats_and_short_leases_send_each_row_once(
    session_factory,
    botapi,  # type: ignore[no-untyped-def]
    transport,
) -> None:
    """Chats with more messages than fit in a lease: a worker that kept them past the lease would let
    the other worker claim and send them too. Each worker has its own limits, as separate processes do."""
    TelegramLimits(botapi)
    messages = [(950 + chat, f"n{n}") for n in range(4) for chat in range(3)]
    await queue(session_factory, messages)
    other = BotApiTransport(botapi.url, TEST_TOKEN)
    try:
        results = await asyncio.gather(
            drain_all(session_factory, transport, Limits(), lease_seconds=1.0),
            drain_all(session_factory, other, Limits(), lease_seconds=1.0),
        )
    finally:
        await other.aclose()
    assert sum(results) == 12 and delivered(botapi) == Counter(messages)
    for chat in range(3):
        assert [c.text for c in botapi.sent(950 + chat, "sendMessage")] == ["n0", "n1", "n2", "n3"]


async def test_run_sender_drains_until_cancelled(engine, session_factory, botapi) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from pydantic import SecretStr

    from services.outbox_sender import run_sender

    await queue(session_factory, [(861, "from the worker"), (862, "also")])
    shop = SimpleNamespace(
        engine=engine,
        session_factory=session_factory,
        settings=SimpleNamespace(telegram_api_url=botapi.url, bot_token=SecretStr(TEST_TOKEN)),
    )
    task = asyncio.create_task(run_sender(shop, idle_seconds=0.05, check_seconds=0.05))
    states: set[str] = set()
    for _ in range(100):  # until both are marked sent (the call lands before the mark commits)
        async with session_factory() as session:
            states = set((await session.execute(select(Outbox.state))).scalars())
        if states == {"sent"}:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert states == {"sent"}
    assert delivered(botapi) == Counter({(861, "from the worker"): 1, (862, "also"): 1})


class JitteryTransport:
    """Arrives at Telegram anywhere from 0 to 150 ms after being sent and is answered up to 150 ms
    later: the network jitter that packed more than 30 arrivals into a second when the cap counted
    sends at the moment they left."""

    def __init__(self, seed: int) -> None:
        import random

        self.random, self.arrivals = random.Random(seed), []  # type: ignore[var-annotated]

    async def send(self, chat_id: int, text: str, reply_markup: object = None) -> None:
        await asyncio.sleep(self.random.uniform(0, 0.15))
        self.arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.random.uniform(0, 0.15))


async def test_no_second_of_arrivals_exceeds_the_cap_whatever_the_jitter(session_factory) -> None:  # type: ignore[no-untyped-def]
    await queue(session_factory, [(700 + chat, "jitter") for chat in range(75)])
    transport = JitteryTransport(seed=7)
    assert await drain_all(session_factory, transport, Limits()) == 75
    arrivals = sorted(transport.arrivals)
    busiest = max(sum(1 for t in arrivals[i:] if t - start < 1.0) for i, start in enumerate(arrivals))
    assert busiest <= 30, f"{busiest} arrivals within one second"


class RecordingTransport:
    """Accepts every message after a short network round trip, remembering each send."""

    def __init__(self) -> None:
        self.sends: list[tuple[int, str]] = []

    async def send(self, chat_id: int, text: str, reply_markup: object = None) -> None:
        await asyncio.sleep(0.005)
        self.sends.append((chat_id, text))


@pytest.mark.faults
async def test_concurrent_lanes_send_each_row_exactly_once(session_factory) -> None:  # type: ignore[no-untyped-def]
    """The worker's lanes claim concurrently (on SQLite too, where there are no row locks): every row is
    sent once, in order within its chat, and its attempts say one send."""
    from services.outbox_sender import drain_lanes

    messages = [(1200 + chat, f"n{n}") for n in range(2) for chat in range(30)]
    await queue(session_factory, messages)
    transport = RecordingTransport()
    sent = await asyncio.wait_for(
        drain_lanes(session_factory, transport, Limits(), lanes=3, until_empty=True, idle_seconds=0.05), 30
    )
    assert Counter(transport.sends) == Counter(messages) and sent == len(messages)
    for chat in range(30):
        assert [text for c, text in transport.sends if c == 1200 + chat] == ["n0", "n1"]
    async with session_factory() as session:
        rows = (await session.execute(select(Outbox))).scalars().all()
    assert {(r.state, r.attempts) for r in rows} == {("sent", 1)}


class SlowTransport:
    """The first send fails with a 5xx after `first` seconds; the others succeed after `rest` seconds."""

    def __init__(self, first: float, rest: float) -> None:
        self.first, self.rest, self.calls, self.delivered = first, rest, 0, 0

    async def send(self, chat_id: int, text: str, reply_markup: object = None) -> None:
        from services.outbox_sender import TemporaryError

        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(self.first)
            raise TemporaryError("502 Bad Gateway")
        await asyncio.sleep(self.rest)
        self.delivered += 1


async def test_a_worker_past_its_lease_does_not_give_back_a_row_another_holds(session_factory) -> None:  # type: ignore[no-untyped-def]
    """A's send outlives its lease, B takes the row over, then A's send fails: A's retry bookkeeping
    must not hand B's row back (due again, for a third worker to send once more)."""
    await queue(session_factory, [(1400, "once")])
    transport = SlowTransport(first=0.5, rest=1.5)
    late = asyncio.create_task(drain_once(session_factory, transport, Limits(backoff_first=0.01), lease_seconds=0.2))
    await asyncio.sleep(0.3)  # A's lease is over: B claims the row and sends it (slowly)
    takeover = asyncio.create_task(drain_once(session_factory, transport, Limits()))
    assert await late == 0  # A's send failed and A did its bookkeeping; B is still sending
    await asyncio.sleep(0.05)
    assert await drain_once(session_factory, transport, Limits()) == 0  # nothing due for a third worker
    assert await takeover == 1 and transport.delivered == 1
    row = await row_of(session_factory, "once")
    assert row.state == "sent" and row.attempts == 2


class SlowBotApi(StandIn):
    """Telegram answering slowly: the first HTML send of a text it cannot parse is refused after `slow`
    seconds ("can't parse entities"), and the plain-text resend takes `slow` seconds more — each wait
    well within httpx's per-phase timeout, together past the claim's lease. Later requests are answered
    at once. A message is delivered when it is answered to a client still waiting for it."""

    def __init__(self, slow: float) -> None:
        super().__init__()
        self.slow, self.slow_left, self.delivered = slow, 2, []  # type: ignore[var-annotated]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/sendMessage", self.send_message)

    async def send_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.slow_left:
            self.slow_left -= 1
            await asyncio.sleep(self.slow)
        if "parse_mode" in body:
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: can't parse entities: unsupported start tag",
                },
                status=400,
            )
        if request.transport is None or request.transport.is_closing():
            return web.json_response({"ok": False, "error_code": 504, "description": "Gateway Timeout"}, status=504)
        self.delivered.append(body["text"])
        return web.json_response({"ok": True, "result": {"message_id": len(self.delivered)}})


@pytest.mark.faults
async def test_a_send_slower_than_the_lease_is_retried_not_sent_twice(session_factory) -> None:  # type: ignore[no-untyped-def]
    """A's send (HTML refused, then the plain-text resend) outlasts its lease although no httpx phase
    times out: it is cut off inside the lease and retried, so B, draining meanwhile, is the only one to
    deliver the message — not A and B both."""
    telegram = await SlowBotApi(slow=0.5).start()
    transport = BotApiTransport(telegram.url, TEST_TOKEN)  # 10 s per phase, the worker's timeout
    try:
        await queue(session_factory, [(1500, "<b>bold</i>")])
        a = asyncio.create_task(drain_once(session_factory, transport, Limits(backoff_first=0.05), lease_seconds=0.8))
        b_sent = 0
        for _ in range(60):  # B drains meanwhile, as another lane or worker does
            await asyncio.sleep(0.05)
            b_sent += await drain_once(session_factory, transport, Limits(), lease_seconds=0.8)
            if b_sent:
                break
        a_sent = await a
    finally:
        await transport.aclose()
        await telegram.stop()
    assert (a_sent, b_sent) == (0, 1) and telegram.delivered == ["bold"]
    row = await row_of(session_factory, "<b>bold</i>")
    assert (row.state, row.attempts) == ("sent", 2)  # A's cut-off try counted, then B's
