"""The engine process's batch step (`stream.engine_process.Engine`), without the process: a batch gives what the
processor gives record by record, also when the worker answers a state request before it has taken in the
previous batch (the two processes overlap), and after a rebalance."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from bench import workload
from loyalty_stream.replay.runner import Record as ReplayRecord
from loyalty_stream.stream.due_recorder import due_of
from loyalty_stream.stream.engine_process import Engine, Record, Result
from loyalty_stream.stream.processor import ActivityProcessor, decode_state

from .conftest import process_all

FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)
Store = dict[bytes, bytes]


@pytest.fixture(scope="module")
def records() -> list[ReplayRecord]:
    """The benchmark's mix over few customers (many of them twice in a batch), plus bad records."""
    mix = workload.generate(1200, 150, seed=3, days=60)
    bad = [ReplayRecord("transaction-add", 0, 10_000 + n, 0, b"c-1", value)
           for n, value in enumerate([b"not json", b'{"type": "Nope"}', None])]
    wrong_key = ReplayRecord(mix[5].topic, 0, 10_100, 0, b"someone-else", mix[5].value)
    return [*mix[:400], *bad, wrong_key, *mix[400:], mix[10], mix[11]]  # two redelivered at the end


def as_engine_record(r: ReplayRecord) -> Record:
    return (r.topic, r.partition, r.offset, r.key, r.value, r.topic)


def processor() -> ActivityProcessor:
    return ActivityProcessor(workload.load_registry(), clock=lambda: FIXED_NOW, state_cache=64)


def record_by_record(records: list[ReplayRecord]) -> tuple[list[Result], Store]:
    store: Store = {}
    results = [(p.customer_id, p.state_key, p.state, p.outputs) for p in process_all(processor(), records, store)]
    return results, store


def batches_of(records: list[ReplayRecord], size: int) -> list[list[Record]]:
    engine_records = [as_engine_record(r) for r in records]
    return [engine_records[i:i + size] for i in range(0, len(engine_records), size)]


def take_in(store: Store, results: list[Result]) -> None:
    """What the worker does with a batch's results: store each new state."""
    for _, key, state, _ in results:
        if state is not None and key is not None:
            store[key] = state


def answer(store: Store, done: Callable[[], int]) -> Callable[[list[bytes]], tuple[int, list[bytes | None]]]:
    return lambda keys: (done(), [store.get(key) for key in keys])


def test_a_batch_gives_what_the_processor_gives_record_by_record(records: list[ReplayRecord]) -> None:
    expected, expected_store = record_by_record(records)
    registry = workload.load_registry()
    engine = Engine(processor(), registry)
    store: Store = {}
    results: list[Result] = []
    taken = [0]
    for batch in batches_of(records, 97):
        got, dues = engine.run(1, batch, answer(store, lambda: taken[0]))
        take_in(store, got)
        taken[0] += 1
        results.extend(got)
        # Due notes: one per customer of the batch, from its last state.
        keys = {key for _, key, state, _ in got if state is not None and key is not None}
        assert dues == dict(due_of(registry, decode_state(store[key])) for key in keys)  # type: ignore[misc]
    assert results == expected
    assert store == expected_store
    dead = [outputs for _, key, _, outputs in results if key is None]
    assert len(dead) == 4 and all(topic == "dead-letter" for outputs in dead for topic, _ in outputs)


def test_the_engine_overlays_its_newer_states_while_the_worker_takes_in_the_last_batch(
    records: list[ReplayRecord],
) -> None:
    """The worker answers a batch's state request before it has stored the previous batch's states (its
    answer is one batch behind); the engine's own states of that batch win, so nothing is computed twice
    from an old state."""
    expected, expected_store = record_by_record(records)
    engine = Engine(processor(), None)
    store: Store = {}
    results: list[Result] = []
    taken = [0]
    waiting: list[list[Result]] = []  # results the worker has not taken in yet
    for batch in batches_of(records, 50):
        got, _ = engine.run(1, batch, answer(store, lambda: taken[0]))
        results.extend(got)
        waiting.append(got)
        if len(waiting) == 2:  # the worker takes in a batch while the engine runs the next one
            take_in(store, waiting.pop(0))
            taken[0] += 1
    for got in waiting:
        take_in(store, got)
    assert results == expected
    assert store == expected_store


def test_without_the_overlay_a_lagging_answer_would_count_a_batch_twice(records: list[ReplayRecord]) -> None:
    """The check above can fail: the same lagging answers, with the engine told every batch was taken in,
    give other results."""
    expected, _ = record_by_record(records)
    engine = Engine(processor(), None)
    store: Store = {}
    results: list[Result] = []
    waiting: list[list[Result]] = []
    for batch in batches_of(records, 50):
        got, _ = engine.run(1, batch, answer(store, lambda: engine.batches))  # "all taken in": a lie
        results.extend(got)
        waiting.append(got)
        if len(waiting) == 2:
            take_in(store, waiting.pop(0))
    assert results != expected


def test_after_a_rebalance_the_engine_starts_from_the_recovered_table(records: list[ReplayRecord]) -> None:
    """The worker drops the batch in flight (never stored) and processes its records again in a new epoch:
    the engine forgets its own states of the old epoch and gives what a worker that never saw the dropped
    batch gives."""
    expected, expected_store = record_by_record(records)
    batches = batches_of(records, 60)
    engine = Engine(processor(), None)
    store: Store = {}
    results: list[Result] = []
    taken = [0]
    for batch in batches[:5]:
        got, _ = engine.run(1, batch, answer(store, lambda: taken[0]))
        take_in(store, got)
        taken[0] += 1
        results.extend(got)
    engine.run(1, batches[5], answer(store, lambda: taken[0]))  # dropped by the worker: revoked meanwhile
    taken[0] += 1
    for batch in batches[5:]:  # fetched again from the committed offsets, new epoch
        got, _ = engine.run(2, batch, answer(store, lambda: taken[0]))
        take_in(store, got)
        taken[0] += 1
        results.extend(got)
    assert results == expected
    assert store == expected_store
