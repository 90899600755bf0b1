"""Scheduled jobs run once per cycle however many workers run: the advisory lock lets one in."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.session import make_engine
from services.locks import lock_key, run_exclusive


@pytest.mark.pg_only
async def test_only_one_worker_runs_a_job_at_a_time(engine: AsyncEngine) -> None:
    other_worker = make_engine(engine.url.render_as_string(hide_password=False))  # a second process' pool
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[str] = []

    async def slow_job(name: str) -> str:
        runs.append(name)
        started.set()
        await release.wait()
        return name

    first = asyncio.create_task(run_exclusive(engine, "job:test", lambda: slow_job("a")))
    await started.wait()
    skipped = await run_exclusive(other_worker, "job:test", lambda: slow_job("b"))
    release.set()
    assert await first == "a"
    assert skipped is None and runs == ["a"]
    # Once released, the next cycle runs again on whichever worker gets there.
    assert await run_exclusive(other_worker, "job:test", lambda: slow_job("c")) == "c"
    await other_worker.dispose()


async def test_lock_keys_are_stable_and_distinct() -> None:
    assert lock_key("job:reservation-expiry") == lock_key("job:reservation-expiry")
    assert lock_key("job:reservation-expiry") != lock_key("job:dhl-poll")
    assert 0 <= lock_key("anything") < 2**31
