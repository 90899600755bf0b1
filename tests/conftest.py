"""Shared fixtures.

Every database test runs twice: on SQLite (a file per run) and on PostgreSQL (a fresh database per
run, created in the `test` server and dropped afterwards), through the same Alembic migrations that
production runs. `STOREFRONT_TEST_BACKENDS=sqlite` (or `postgresql`) narrows a local run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.migrate import upgrade
from db.models import Base
from db.session import make_engine, make_sessionmaker
from tests.harness import Harness
from tests.pool_guard import OneConnectionPerTask
from tests.standins import BotAPIStandIn

# Every test's logs, through the production formatter, are checked for secrets and phone numbers.
pytest_plugins = ["tests.log_hygiene"]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object] | None:
    """Tests run on the loop production runs on (bot/loop.py: uvloop where installed)."""
    from bot.loop import loop_factory

    factory = loop_factory()
    return {"uvloop": factory} if factory else None


PG_ADMIN_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [b.strip() for b in os.environ.get("STOREFRONT_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]


# The longest tests (whole files), longest first. They start at once: under xdist's `--dist worksteal`
# (`make test`) each worker first gets a contiguous share of the ordered tests, and the others take work
# from the end of a busy worker's share, so each long test is put at the head of a share — the longest
# alone on the first, the rest spread over the others — and none of them starts last to hold up the end.
SLOWEST_FIRST = (
    "tests/test_fault_crash.py",
    "tests/test_fault_fuzz.py",
    "tests/test_multiprocess.py",
    "tests/test_import.py",
)


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by database backend
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("pg_only") and backend_of(item) == "sqlite":
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL row locks / real concurrency"))
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = spread_slowest(items, workers)


def backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("db_backend") if callspec else None


def spread_slowest(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The order for `workers` xdist workers (the same in every worker, as xdist requires): the slowest
    files' tests at the heads of the shares worksteal deals out, the rest in pytest's order."""

    def file_of(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow = sorted(
        (i for i in items if file_of(i) in SLOWEST_FIRST),  # stable; per file PostgreSQL's first
        key=lambda i: (SLOWEST_FIRST.index(file_of(i)), {"postgresql": 0, "sqlite": 1}.get(backend_of(i), 2)),
    )
    rest = [i for i in items if file_of(i) not in SLOWEST_FIRST]
    if workers <= 1:
        return slow + rest
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for item in slow:
        rank = SLOWEST_FIRST.index(file_of(item))
        heads[0 if rank == 0 else 1 + (rank - 1) % (workers - 1)].append(item)
    ordered: list[pytest.Item] = []
    left = len(items)
    for k, head in enumerate(heads):
        share = left // (workers - k)  # what worksteal sends worker k first: an even split of what is left
        take = max(0, share - len(head))
        ordered += head + rest[:take]
        rest = rest[take:]
        left -= len(head) + take
    return ordered + rest


@pytest_asyncio.fixture(scope="session", params=BACKENDS)
async def db_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    """(backend name, database URL) of a freshly migrated database for this test run."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "shop.db"
        yield "sqlite", f"sqlite+aiosqlite:///{path}"
        return
    url = await create_pg_database()
    try:
        yield "postgresql", url
    finally:
        await drop_pg_database(url)


async def create_pg_database() -> str:
    """A new, empty database in the test server; its SQLAlchemy URL."""
    name = f"sf_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def empty_database(db_backend: tuple[str, str], tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database of this run's backend that nothing has migrated yet (not the shared one)."""
    if db_backend[0] == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


POOL_GUARDS: dict[int, OneConnectionPerTask] = {}


@pytest_asyncio.fixture(scope="session")
async def migrated_engine(db_backend: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_backend[1])
    await upgrade(engine)
    POOL_GUARDS[id(engine)] = OneConnectionPerTask(engine)
    yield engine
    await engine.dispose()


async def wipe(engine: AsyncEngine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


@pytest_asyncio.fixture
async def engine(migrated_engine: AsyncEngine, request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database for one test, which fails if the shop's code made one task hold two
    pooled connections at once (tests/pool_guard.py)."""
    await wipe(migrated_engine)
    guard = POOL_GUARDS[id(migrated_engine)]
    guard.take()
    yield migrated_engine
    held_two = guard.take()
    assert not held_two or request.node.get_closest_marker("two_sessions"), (
        "a task held two pooled connections at once:\n" + held_two[0]
    )


@pytest.fixture(autouse=True)
def _fresh_admin_member_cache() -> None:
    """Each test starts without the admin group roles an earlier test's Bot API stand-in answered."""
    from handlers import admin

    admin._member_cache.clear()


@pytest.fixture
def session_factory(engine: AsyncEngine):  # type: ignore[no-untyped-def]
    return make_sessionmaker(engine)


@pytest_asyncio.fixture
async def session(session_factory) -> AsyncIterator:  # type: ignore[no-untyped-def]
    async with session_factory() as s:
        yield s


@pytest_asyncio.fixture
async def botapi() -> AsyncIterator[BotAPIStandIn]:
    server = await BotAPIStandIn().start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def shop(engine: AsyncEngine, botapi: BotAPIStandIn) -> AsyncIterator[Harness]:
    """The whole bot (real dispatcher, real handlers, real DB) against the Bot API stand-in."""
    harness = Harness(engine, botapi)
    await harness.start()
    yield harness
    await harness.stop()
