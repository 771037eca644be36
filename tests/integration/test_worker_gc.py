"""The worker's garbage collection (`Settings.gc_interval`, `runtime.tune_gc`): a worker process turns CPython's
automatic collector off and collects reference cycles on a timer, between batches, so neither the young cached
states nor a full walk of the heap pause the batch loop every few seconds."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.settings import Settings
from loyalty_stream.stream.runtime import GC_THRESHOLDS, running_worker, tune_gc

from .harness import program

pytestmark = pytest.mark.integration

PROGRAM = program(id="p")


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def automatic_collection_off() -> Iterator[None]:
    """Automatic collection off, as `tune_gc(paced=True)` leaves a worker process; restored afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cycle() -> weakref.ref[_Node]:
    node = _Node()
    return weakref.ref(node)


async def _gone(ref: weakref.ref[_Node], seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if ref() is None:
            return True
        await asyncio.sleep(0.05)
    return ref() is None


@pytest.mark.usefixtures("catalogue_topics", "automatic_collection_off")
async def test_the_worker_collects_cycles_on_its_timer_when_automatic_collection_is_off(
        loyalty_settings: Settings) -> None:
    settings = loyalty_settings.model_copy(update={"gc_interval": 0.3})
    async with running_worker(settings, ProgramRegistry([PROGRAM])):
        ref = _cycle()
        assert ref() is not None  # nothing collects it automatically
        assert await _gone(ref, 10), "the worker's timer did not collect the cycle"


@pytest.mark.usefixtures("catalogue_topics", "automatic_collection_off")
async def test_no_timer_collects_when_gc_interval_is_zero(loyalty_settings: Settings) -> None:
    settings = loyalty_settings.model_copy(update={"gc_interval": 0})
    async with running_worker(settings, ProgramRegistry([PROGRAM])):
        ref = _cycle()
        assert not await _gone(ref, 1.5)
    gc.collect()
    assert ref() is None


@pytest.mark.usefixtures("catalogue_topics")
async def test_collect_garbage_leaves_an_automatic_collector_alone(loyalty_settings: Settings) -> None:
    async with running_worker(loyalty_settings, ProgramRegistry([PROGRAM])) as worker:
        assert gc.isenabled()
        assert await worker.collect_garbage() is None
        gc.disable()
        try:
            ref = _cycle()
            took = await worker.collect_garbage()
            assert took is not None and took >= 0 and ref() is None
        finally:
            gc.enable()


def test_tune_gc_paced_turns_automatic_collection_off_else_raises_thresholds() -> None:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    try:
        tune_gc(paced=True)
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        gc.enable()
        gc.unfreeze()
        tune_gc(paced=False)
        assert gc.isenabled() and gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()
        else:
            gc.disable()
