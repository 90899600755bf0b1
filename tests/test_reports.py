"""/report, /export orders and /audit in the admin group, through the dispatcher: the figures for a
known set of orders (paid, expired, cancelled unpaid, refunded, refund owed, two currencies), period
bounds at Nairobi midnight, the CSV read back with csv.reader, bad dates refused, the audit log
written with each admin change and never for one that fails or rolls back, non-admins refused."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from db.models import AuditEntry, Customer, Order, Payment, Product
from services import admin as admin_service
from services import orders as sm
from services import reports
from services.money import format_money
from tests.factories import make_order, make_product
from tests.harness import ADMIN_CHAT_ID, ADMIN_USER_ID, Harness
from tests.standins import BotAPIStandIn, Call, visible_text

NAIROBI = ZoneInfo("Africa/Nairobi")
STRANGER = 6161
BUYER = 7100
ACTOR = f"admin:{ADMIN_USER_ID}"


class FakeStripe:
    """Refunds card payments (the shop's Stripe gateway as /cancel uses it)."""

    def __init__(self) -> None:
        self.refunded: list[str | None] = []

    async def refund(self, payment: Payment) -> str:
        self.refunded.append(payment.stripe_payment_intent)
        return "re_1"

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def stripe_shop(engine, botapi: BotAPIStandIn):  # type: ignore[no-untyped-def]
    shop = await Harness(engine, botapi, providers={"stripe": FakeStripe()}).start()
    yield shop
    await shop.stop()


async def admin(shop: Harness, text: str, user: int = ADMIN_USER_ID, chat: int = ADMIN_CHAT_ID) -> str:
    return (await shop.send(user, text, chat_id=chat)).text


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=NAIROBI)


def today() -> date:
    return datetime.now(NAIROBI).date()


async def place(
    shop: Harness, n: int, items: list[tuple[int, int]], *, zone: str = "nairobi", at: datetime | None = None
) -> str:
    """An order of customer BUYER+n, placed at `at` (default: now); its public id."""
    order = await make_order(shop.session_factory, BUYER + n, items, zone=zone)
    if at is not None:
        async with shop.session_factory() as session, session.begin():
            await session.execute(update(Order).where(Order.id == order.id).values(created_at=at))
    return order.public_id


async def pay(shop: Harness, public_id: str, provider: str = "mpesa") -> None:
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, public_id)
        session.add(
            Payment(
                order_id=o.id,
                provider=provider,
                state="paid",
                amount=o.total,
                currency=o.currency,
                receipt_number=f"R-{public_id[-6:]}",
                stripe_payment_intent="pi_" + public_id[-6:] if provider == "stripe" else None,
            )
        )
        await sm.transition(session, o, sm.PROCESSING, "system:test")


async def expire(shop: Harness, public_id: str) -> None:
    async with shop.session_factory() as session, session.begin():
        await sm.transition(session, await sm.get_order(session, public_id), sm.EXPIRED, "system:expiry")


async def audit_rows(shop: Harness) -> list[AuditEntry]:
    async with shop.session_factory() as session:
        return list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())


async def known_orders(shop: Harness) -> dict[str, Any]:
    """Nine orders: seven placed today (from Nairobi's midnight on), one a minute before it, one 8 days ago."""
    p1 = await make_product(shop.session_factory, "RPT-1", stock=50, price_kes=1000_00, price_usd=8_00)
    p2 = await make_product(shop.session_factory, "RPT-2", stock=50, price_kes=2500_00, price_usd=20_00)
    p3 = await make_product(shop.session_factory, "RPT-3", stock=50, price_kes=500_00, price_usd=4_00)
    midnight = local_midnight(today())
    ids = {
        # today
        "paid_kes": await place(shop, 1, [(p1, 2)], at=midnight),  # at 00:00 exactly: today's
        "paid_usd": await place(shop, 2, [(p2, 3)], zone="intl"),
        "owed_kes": await place(shop, 3, [(p3, 1)]),
        "refunded_usd": await place(shop, 4, [(p1, 1)], zone="intl"),
        "expired": await place(shop, 5, [(p2, 1)]),
        "cancelled_unpaid": await place(shop, 6, [(p3, 1)]),
        "awaiting": await place(shop, 7, [(p1, 1)]),
        # before today
        "yesterday": await place(shop, 8, [(p1, 1)], at=midnight - timedelta(minutes=1)),
        "last_week": await place(shop, 9, [(p3, 1)], at=midnight - timedelta(days=8)),
    }
    for key in ("paid_kes", "owed_kes", "yesterday", "last_week"):
        await pay(shop, ids[key])
    for key in ("paid_usd", "refunded_usd"):
        await pay(shop, ids[key], "stripe")
    await expire(shop, ids["expired"])
    assert "shipped with DHL" in await admin(shop, f"/ship {ids['paid_usd']} 1234567890")  # still paid
    assert "must be reversed manually" in await admin(shop, f"/cancel {ids['owed_kes']}")  # M-Pesa: refund owed
    assert "refunded through Stripe" in await admin(shop, f"/cancel {ids['refunded_usd']}")
    assert "nothing was paid" in await admin(shop, f"/cancel {ids['cancelled_unpaid']}")
    return ids


# --- /report -----------------------------------------------------------------------------------------


def section(text: str, title: str) -> str:
    """The lines under a bold section title of the report, up to the next blank line."""
    return visible_text(text).split(title, 1)[1].split("\n\n", 1)[0]


async def test_report_figures_for_today_week_and_month(stripe_shop: Harness) -> None:
    shop = stripe_shop
    await known_orders(shop)

    text = await admin(shop, "/report")
    assert text == await admin(shop, "/report today")
    shown = visible_text(text)
    day = today().isoformat()
    assert shown.startswith("📊 Report: today\n") and f"Days {day} – {day} (Africa/Nairobi time" in shown
    assert "Orders placed: 7\n" in shown
    assert "• paid: 2\n" in shown and "• awaiting payment: 1\n" in shown
    assert "• abandoned (expired or cancelled unpaid): 2\n" in shown
    assert "• cancelled after payment: 2\n" in shown
    assert section(text, "Revenue") == (
        f" (paid orders not cancelled)\n• {format_money(2300_00, 'KES')} from 1 order\n"
        f"• {format_money(95_00, 'USD')} from 1 order"
    )
    assert section(text, "Top products") == (
        " (units in paid orders)\n1. RPT-2 Product RPT-2 — 3 units\n2. RPT-1 Product RPT-1 — 2 units"
    )
    assert section(text, "Refunds") == (
        f"\n• refunded: 1 order · {format_money(43_00, 'USD')}"
        f"\n• owed, not yet refunded: 1 order · {format_money(800_00, 'KES')}"
    )
    assert "KES 2,300" in text and "$95" in text  # format_money's forms

    week = visible_text(await admin(shop, "/report week"))
    first = (today() - timedelta(days=6)).isoformat()
    assert "Report: the last 7 days" in week and f"Days {first} – {today().isoformat()}" in week
    assert "Orders placed: 8\n" in week and "• paid: 3\n" in week  # the order a minute before midnight
    assert "KES 3,600 from 2 orders" in week and "$95 from 1 order" in week
    assert "1. RPT-1 Product RPT-1 — 3 units\n2. RPT-2 Product RPT-2 — 3 units" in week  # a tie: by SKU

    month = visible_text(await admin(shop, "/REPORT month"))
    assert "Report: the last 30 days" in month and "Orders placed: 9\n" in month
    assert "KES 4,400 from 3 orders" in month and "3. RPT-3 Product RPT-3 — 1 unit" in month

    for bad in ("/report year", "/report today week"):
        assert "Usage: /report [today|week|month]" in visible_text(await admin(shop, bad)), bad


async def test_an_empty_period_reports_zeros(shop: Harness) -> None:
    text = visible_text(await admin(shop, "/report"))
    assert "Orders placed: 0\n" in text and text.count("• none") == 3


def test_periods_are_whole_days_of_the_shop_zone() -> None:
    """21:30 UTC on 1 Dec is 00:30 on 2 Dec in Nairobi: "today" is Nairobi's 2 Dec, from 21:00 UTC."""
    now = datetime(2026, 12, 1, 21, 30, tzinfo=UTC)
    today_ = reports.period("today", NAIROBI, now)
    assert (today_.first_day, today_.last_day) == (date(2026, 12, 2), date(2026, 12, 2))
    assert (today_.start, today_.end) == (datetime(2026, 12, 1, 21, tzinfo=UTC), datetime(2026, 12, 2, 21, tzinfo=UTC))
    week = reports.period("week", NAIROBI, now)
    assert week.first_day == date(2026, 11, 26) and week.start == datetime(2026, 11, 25, 21, tzinfo=UTC)
    month = reports.period("month", NAIROBI, now)
    assert month.first_day == date(2026, 11, 3) and month.end == today_.end
    assert reports.period("today", NAIROBI, datetime(2026, 12, 1, 20, 59, tzinfo=UTC)).first_day == date(2026, 12, 1)
    with pytest.raises(ValueError, match="unknown period"):
        reports.period("year", NAIROBI, now)


# --- /export orders ----------------------------------------------------------------------------------


def document(call: Call) -> tuple[str, bytes]:
    ((filename, content),) = call.files.values()  # aiogram uploads it as "attach://<field>"
    return filename, content


def rows_of(call: Call) -> list[list[str]]:
    assert call.method == "sendDocument"
    filename, content = document(call)
    assert filename.endswith(".csv") and content.startswith(b"\xef\xbb\xbf")  # UTF-8 with its BOM
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))


async def export(shop: Harness, text: str) -> Call:
    before = len(shop.botapi.calls)
    await shop.send(ADMIN_USER_ID, text, chat_id=ADMIN_CHAT_ID)
    sent = [c for c in shop.botapi.calls[before:] if c.chat_id == ADMIN_CHAT_ID]
    assert len(sent) == 1, sent
    return sent[0]


async def test_export_orders_csv(stripe_shop: Harness) -> None:
    shop = stripe_shop
    ids = await known_orders(shop)
    risky = await make_product(shop.session_factory, "-RISKY", stock=5, price_kes=375_00)
    formula = await place(shop, 10, [(risky, 2)])
    async with shop.session_factory() as session, session.begin():
        await session.execute(update(Product).where(Product.id == risky).values(name='=HYPERLINK("http://x")'))
        await session.execute(update(Customer).where(Customer.id == BUYER + 10).values(first_name="@SUM(A1)"))
    # the order line keeps the name it was sold under; rename it there too
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, formula)
        o.items[0].name = '=HYPERLINK("http://x")'

    call = await export(shop, "/export orders")
    rows = rows_of(call)
    first = (today() - timedelta(days=29)).isoformat()
    assert document(call)[0] == f"orders_{first}_{today().isoformat()}.csv"
    caption = visible_text(call.text)
    assert f"Orders placed {first} – {today().isoformat()} (Africa/Nairobi): 10 orders, 10 lines" in caption
    assert rows[0] == list(reports.CSV_HEADER)
    by_order = {r[0]: r for r in rows[1:]}
    assert len(rows) == 11 and len(by_order) == 10 and ids["last_week"] in by_order
    paid = by_order[ids["paid_kes"]]
    assert (
        paid
        == [
            ids["paid_kes"],
            local_midnight(today()).isoformat(),  # 2026-12-02T00:00:00+03:00
            "processing",
            "Test",
            "nairobi",
            "RPT-1",
            "Product RPT-1",
            "2",
            "1000.00",
            "2000.00",
            "300.00",
            "",  # no promo code
            "0.00",
            "2300.00",
            "KES",
            "mpesa",
            f"R-{ids['paid_kes'][-6:]}",
        ]
    )
    assert paid[1].endswith("+03:00")
    usd = by_order[ids["paid_usd"]]
    assert (usd[2], usd[7:17]) == (
        "shipped",
        ["3", "20.00", "60.00", "35.00", "", "0.00", "95.00", "USD", "stripe", usd[16]],
    )
    assert by_order[ids["refunded_usd"]][2] == "cancelled" and by_order[ids["refunded_usd"]][15] == "stripe"
    assert by_order[ids["expired"]][15:] == ["", ""]  # never paid: no provider, no receipt
    guarded = by_order[formula]
    assert (guarded[3], guarded[5], guarded[6]) == ("'@SUM(A1)", "'-RISKY", '\'=HYPERLINK("http://x")')
    assert guarded[8:14] == ["375.00", "750.00", "300.00", "", "0.00", "1050.00"]
    content = document(call)[1].decode("utf-8-sig")
    assert "254712345678" not in content and "buyer@example.com" not in content and "Ngong" not in content

    yesterday = (today() - timedelta(days=1)).isoformat()
    rows = rows_of(await export(shop, f"/export orders {yesterday} {yesterday}"))
    assert [r[0] for r in rows[1:]] == [ids["yesterday"]]  # 23:59 yesterday in Nairobi: yesterday's
    rows = rows_of(await export(shop, f"/export orders {today().isoformat()}"))  # FROM alone: to today
    assert len(rows) == 1 + 8 and ids["yesterday"] not in {r[0] for r in rows}


async def test_export_reads_in_batches_the_same_rows(shop: Harness) -> None:
    p1 = await make_product(shop.session_factory, "B-1", stock=50)
    p2 = await make_product(shop.session_factory, "B-2", stock=50)
    for n in range(5):
        await place(shop, n, [(p1, 1), (p2, n + 1)] if n % 2 else [(p1, 2)])
    period = reports.export_period([], NAIROBI)
    async with shop.session_factory() as session:
        whole = await reports.orders_csv(session, period, NAIROBI)
        batched = await reports.orders_csv(session, period, NAIROBI, batch=2)
    assert (whole.orders, whole.lines) == (batched.orders, batched.lines) == (5, 7)
    assert whole.content == batched.content


async def test_export_refuses_bad_dates(shop: Harness) -> None:
    await place(shop, 1, [(await make_product(shop.session_factory, "D-1"), 1)])
    for bad in (
        "/export",
        "/export customers",
        "/export orders 2026-13-01",
        "/export orders 2026-02-30",
        "/export orders 20261201",
        "/export orders 1-12-2026",
        "/export orders 2026-12-05 2026-12-01",  # FROM after TO
        "/export orders 2026-12-01 2026-12-02 2026-12-03",
    ):
        call = await export(shop, bad)
        assert call.method == "sendMessage" and visible_text(call.text).startswith("Usage: /export orders"), bad
    call = await export(shop, "/export orders 2020-01-01 2020-01-31")
    assert call.method == "sendMessage"
    assert visible_text(call.text) == "No orders were placed 2020-01-01 – 2020-01-31 (Africa/Nairobi)."


# --- the audit log -----------------------------------------------------------------------------------


async def test_restock_ship_delivered_cancel_write_audit_rows(stripe_shop: Harness) -> None:
    shop = stripe_shop
    pid = await make_product(shop.session_factory, "AUD-1", stock=10)
    local = await place(shop, 1, [(pid, 1)], zone="kenya")
    card = await place(shop, 2, [(pid, 2)], zone="intl")
    await pay(shop, local)
    await pay(shop, card, "stripe")
    assert "AUD-1: 10 free" in await admin(shop, "/restock AUD-1 3")
    await admin(shop, f"/ship {local} G4S-889")
    await admin(shop, f"/delivered {local}")
    await admin(shop, f"/cancel {card} customer changed mind")
    rows = await audit_rows(shop)
    async with shop.session_factory() as session:
        ids = {o: (await sm.get_order(session, o)).id for o in (local, card)}
    assert [(r.action, r.admin_id, r.admin_name, r.order_id, r.product_id) for r in rows] == [
        ("restock", ADMIN_USER_ID, "Wanjiru", None, pid),
        ("ship", ADMIN_USER_ID, "Wanjiru", ids[local], None),
        ("delivered", ADMIN_USER_ID, "Wanjiru", ids[local], None),
        ("cancel", ADMIN_USER_ID, "Wanjiru", ids[card], None),
    ]
    assert rows[0].detail.startswith("+3 → 10 free")
    assert rows[1].detail == "G4S G4S-889"
    assert rows[3].detail == f"customer changed mind; refund: refunded {format_money(51_00, 'USD')} via stripe"
    assert all(abs(r.at - datetime.now(UTC)) < timedelta(minutes=5) for r in rows)

    # The Cancel… button's confirmation writes one too.
    other = await place(shop, 3, [(pid, 1)])
    alert = await shop.send(ADMIN_USER_ID, "/orders", chat_id=ADMIN_CHAT_ID)
    await shop.press(ADMIN_USER_ID, f"adm:cc:{other}", chat_id=ADMIN_CHAT_ID, message=alert)
    last = (await audit_rows(shop))[-1]
    assert (last.action, last.detail) == ("cancel", "cancelled from the alert; refund: none")


async def test_refused_and_rolled_back_actions_write_no_audit_row(
    shop: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await make_product(shop.session_factory, "AUD-2", stock=1)
    unpaid = await place(shop, 1, [(pid, 1)])
    paid = await place(shop, 2, [(await make_product(shop.session_factory, "AUD-3", stock=5), 1)], zone="kenya")
    await pay(shop, paid)
    assert "No product with SKU NOPE" in await admin(shop, "/restock NOPE 1")
    assert "Refused" in await admin(shop, "/restock AUD-2 -5")  # its UPDATE ran, found nothing to change
    assert "Usage: /restock" in await admin(shop, "/restock AUD-2 0")
    assert "only paid orders" in await admin(shop, f"/ship {unpaid} G4S-1")
    assert "only shipped or on-the-way" in await admin(shop, f"/delivered {paid}")
    assert "No order HL-NOPE00" in await admin(shop, "/cancel HL-NOPE00")
    assert await audit_rows(shop) == []

    # An action that fails after its first writes (the order moved meanwhile) is rolled back whole.
    from services.errors import IllegalTransition

    async def moved_meanwhile(session, o, to_state, actor, note=None, **_):  # type: ignore[no-untyped-def]
        raise IllegalTransition("error.illegal_transition", order=o.public_id, src="expired", dst=to_state)

    with monkeypatch.context() as patch:
        patch.setattr(sm, "transition", moved_meanwhile)
        assert "can't go from expired to cancelled" in await admin(shop, f"/cancel {paid}")
        assert "can't go from expired to shipped" in await admin(shop, f"/ship {paid} G4S-1")
    assert await audit_rows(shop) == []

    # The row is the caller's transaction's: a caller that rolls back after the action keeps none.
    async with shop.session_factory() as session:
        async with session.begin():
            await admin_service.restock(session, "AUD-2", 4, ACTOR, name="Amina")
            assert len((await session.execute(select(AuditEntry))).scalars().all()) == 1  # written, not committed
            await session.rollback()
    assert await audit_rows(shop) == []
    async with shop.session_factory() as session:
        assert (await session.get(Product, pid)).stock == 0  # nor the restock


async def test_audit_command_lists_the_latest_entries_in_shop_time(shop: Harness) -> None:
    assert visible_text(await admin(shop, "/audit")) == "No admin actions recorded yet."
    pid = await make_product(shop.session_factory, "AUD-4", stock=100)
    order = await place(shop, 1, [(pid, 1)], zone="kenya")
    await pay(shop, order)
    for _ in range(22):
        await admin(shop, "/restock AUD-4 1")
    await admin(shop, f"/ship {order} G4S-77")
    text = visible_text(await admin(shop, "/audit"))
    lines = text.split("\n")
    assert lines[0] == "🗂 The last 20 admin actions (newest first; times in Africa/Nairobi)"
    assert len(lines) == 21
    assert f"· Wanjiru (id {ADMIN_USER_ID}) · ship {order}: G4S G4S-77" in lines[1]
    assert lines[1].split(" · ")[0].endswith(" EAT") and "restock AUD-4: +1 → " in lines[2]
    assert "restock AUD-4: +1 → 121 free, 0 reserved" in lines[2]  # 99 free after the sale, then 22 × +1
    assert "→ 103 free," in text and "→ 102 free," not in text  # the ship and 19 restocks: 3 restocks left out

    text = visible_text(await admin(shop, f"/audit {order.lower()}"))
    assert text.split("\n")[0] == f"🗂 Admin actions on {order} (newest first; times in Africa/Nairobi)"
    assert len(text.split("\n")) == 2 and "ship" in text and "restock" not in text
    other = await place(shop, 2, [(pid, 1)])
    assert visible_text(await admin(shop, f"/audit {other}")) == f"No admin actions recorded on {other}."
    assert "No order HL-NOPE00" in await admin(shop, "/audit HL-NOPE00")
    assert "Usage: /audit [ORDER_ID]" in await admin(shop, f"/audit {order} x")

    # The time shown is Nairobi's, zone named: 21:30 UTC on 1 Dec is 00:30 on 2 Dec there.
    year = datetime.now(NAIROBI).year
    async with shop.session_factory() as session, session.begin():
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.order_id.is_not(None))
            .values(at=datetime(year, 12, 1, 21, 30, tzinfo=UTC))
        )
    assert f"• 2 Dec 00:30 EAT · Wanjiru (id {ADMIN_USER_ID}) · ship {order}" in visible_text(
        await admin(shop, f"/audit {order}")
    )


# --- who may -------------------------------------------------------------------------------------------


async def test_non_admins_are_refused(shop: Harness) -> None:
    await place(shop, 1, [(await make_product(shop.session_factory, "NA-1"), 1)])
    for text in ("/report", "/report week", "/export orders", "/audit"):
        before = len(shop.botapi.calls)
        assert (
            await admin(shop, text, user=STRANGER) == "⛔ Admin commands work only for shop admins in the admin group."
        )
        assert "⛔" in await admin(shop, text, user=BUYER, chat=BUYER)  # in private too: never customer commands
        assert "⛔" in await admin(shop, text, user=ADMIN_USER_ID, chat=ADMIN_USER_ID)  # an admin, but not in the group
        assert not [c for c in shop.botapi.calls[before:] if c.method == "sendDocument"]
    help_text = visible_text(await admin(shop, "/nonsense"))
    assert "/report [today|week|month]" in help_text and "/export orders [FROM] [TO]" in help_text
    assert "/audit [ORDER_ID]" in help_text


async def test_export_shows_an_orders_promo_code_and_discount(stripe_shop: Harness) -> None:
    shop = stripe_shop
    pid = await make_product(shop.session_factory, "RPT-PROMO", stock=5, price_kes=1000_00)
    public_id = await place(shop, 40, [(pid, 1)])
    async with shop.session_factory() as session, session.begin():
        o = await sm.get_order(session, public_id)
        o.promo_code, o.discount, o.total = "KARIBU10", 100_00, o.total - 100_00
    await admin(shop, "/report")  # Harness.send wants an earlier message in the chat (a document is not one)
    rows = rows_of(await export(shop, "/export orders"))
    header, (row,) = rows[0], rows[1:]
    cells = dict(zip(header, row, strict=True))
    assert (cells["promo_code"], cells["order_discount"], cells["order_total"]) == ("KARIBU10", "100.00", "1200.00")
