"""The worker with its engine in a process of its own (`Settings.engine_process`), through a real broker: the
same balances and outputs as the one-process worker, and a killed engine process crashes the worker without
losing or doubling anything once it is restarted.

The program topic and the scheduler's due index with an engine process are covered where those features are
tested (`test_program_feed.py`, `test_lifecycle_stream.py`, run both ways)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.settings import Settings
from loyalty_stream.stream.runtime import running_worker

from .test_worker_batches import (
    PROGRAM,
    PURCHASES,
    assert_balances,
    balances,
    check_outputs,
    positions,
    publish,
    published,
    purchases,
    wait_for,
    wait_until_committed,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=[1, 2], ids=["one-engine", "two-engines"])
def settings(loyalty_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """With two engines, every customer's records go to one of them (the purchases' keys are customer ids)."""
    return loyalty_settings.model_copy(update={"engine_processes": request.param})


async def test_the_engine_process_credits_every_purchase_once(settings: Settings,
                                                              catalogue_topics: dict[str, str]) -> None:
    records, expected, count = purchases()
    where = await published(settings, records)
    async with running_worker(settings, ProgramRegistry([PROGRAM])) as worker:
        assert worker.engine is not None and worker.engine.pids[0] not in (None, os.getpid())
        await wait_until_committed(settings, where, worker, expected, timeout=120)
        assert_balances(worker, expected, where)
        assert worker.completed_count == PURCHASES
    await check_outputs(settings, expected, count)


async def test_a_killed_engine_process_crashes_the_worker_and_a_restart_credits_every_purchase_once(
    settings: Settings, catalogue_topics: dict[str, str]
) -> None:
    """The first worker gets half of the purchases and its engine is killed a quarter in; the rest are
    published only after the crash, so the restart always has work to do (all at once, a fast machine could
    finish every purchase before the kill lands)."""
    records, expected, count = purchases()
    half = PURCHASES // 2
    await publish(settings, records[:half])
    registry = ProgramRegistry([PROGRAM])
    async with running_worker(settings, registry) as first:
        pid = first.engine.pids[-1] if first.engine is not None else None
        assert pid is not None
        await wait_for(lambda: first.processed_count >= PURCHASES // 4, 60, "a quarter of the purchases")
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: first.app.crash_reason is not None, 30, "the worker to crash")
        assert "engine process" in str(first.app.crash_reason)
        await asyncio.sleep(0.2)
    await publish(settings, records[half:])
    where = await positions(settings, PURCHASES)

    async with running_worker(settings, registry) as second:
        assert balances(second), "the table was restored from the changelog"
        await wait_until_committed(settings, where, second, expected, timeout=120)
        assert_balances(second, expected, where)
        assert second.processed_count >= PURCHASES - half
        await second.drain()
    await check_outputs(settings, expected, count)
