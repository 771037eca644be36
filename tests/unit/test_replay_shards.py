"""A parallel replay (customer shards in processes) gives exactly the sequential replay's result."""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal
from typing import Any

import orjson
import pytest

from bench import workload
from loyalty_stream.cli import build_parser
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.replay import shards
from loyalty_stream.replay.runner import Record, ReplayResult, replay


@pytest.fixture(autouse=True)
def _small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes even for the small inputs of these tests."""
    monkeypatch.setattr(shards, "MIN_RECORDS_PER_JOB", 10)


def _records() -> list[Record]:
    """The benchmark workload plus records the processor dead-letters, and keyless records (whose customer
    is the payload's)."""
    records = workload.generate(1200, 200, seed=5, days=150)
    extra = [Record("transaction-add", 0, 10_000 + i, records[-1].timestamp + i, b"c-bad", b"garbage")
             for i in range(3)]
    keyless = []
    engagements = [r for r in records if r.topic == "engagement"]
    for i, record in enumerate(engagements[:200:20]):  # later ones than the customers' first activities
        activity = orjson.loads(record.value or b"")
        activity["event_id"] = f"keyless-{i}"
        keyless.append(Record(record.topic, record.partition, 20_000 + i, record.timestamp + 1, None,
                              orjson.dumps(activity)))
    return records + extra + keyless


@pytest.mark.parametrize("store", ["objects", "bytes"])
def test_a_parallel_replay_gives_the_sequential_ledger_in_order_and_the_same_states(store: Any) -> None:
    registry = workload.load_registry()
    records = _records()
    sequential = replay(records, registry, store=store)
    parallel = replay(records, registry, store=store, jobs=3)
    assert len(sequential.ledger) > 3 * len(records)
    assert parallel.ledger == sequential.ledger
    assert parallel.activities == sequential.activities == len(records)
    assert parallel.dead_letters == sequential.dead_letters == 3
    assert parallel.states == sequential.states and len(parallel.states) > 100


def test_without_kept_states_only_the_ledger_comes_back() -> None:
    registry = workload.load_registry()
    records = _records()
    parallel = replay(records, registry, jobs=2, keep_states=False)
    assert parallel.ledger == replay(records, registry).ledger
    assert parallel.states == {}


def test_an_engine_error_in_a_shard_is_rebuilt_as_sequentially(monkeypatch: pytest.MonkeyPatch) -> None:
    """The object store rebuilds a half-applied state inside its shard, as the sequential replay does."""
    from loyalty_stream.stream import processor as processor_module

    records = _records()
    victim = orjson.loads(records[500].value or b"")["event_id"]
    real_apply = processor_module.apply

    def failing_apply(state: Any, activity: Any, *args: Any, **kwargs: Any) -> Any:
        if activity.event_id == victim and state is not None:
            state.lifetime_earned += Decimal(1000)  # damage, then fail
            raise RuntimeError("engine bug")
        return real_apply(state, activity, *args, **kwargs)

    monkeypatch.setattr(processor_module, "apply", failing_apply)
    registry = workload.load_registry()
    sequential = replay(records, registry)
    parallel = replay(records, registry, jobs=2)
    assert parallel.dead_letters == sequential.dead_letters == 4
    assert parallel.ledger == sequential.ledger
    assert parallel.states == sequential.states


def test_shards_send_their_ledger_in_pieces_while_they_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shard posts the entries made since its last progress report; the pieces join back in order."""
    from multiprocessing.connection import Connection

    from loyalty_stream.replay import runner

    monkeypatch.setattr(runner, "PROGRESS_EVERY", 37)
    pieces: list[int] = []
    real_recv_bytes = Connection.recv_bytes

    def counting_recv_bytes(self: Connection, maxlength: int | None = None) -> bytes:
        data = real_recv_bytes(self, maxlength)
        pieces.append(data.count(b"\n") + 1)
        return data

    monkeypatch.setattr(Connection, "recv_bytes", counting_recv_bytes)
    registry = workload.load_registry()
    records = _records()
    sequential = replay(records, registry)
    parallel = replay(records, registry, jobs=2)
    assert len(pieces) > len(records) // 37  # about one piece per progress report of each shard
    assert sum(pieces) == len(parallel.ledger)
    assert parallel.ledger == sequential.ledger


@pytest.mark.parametrize("final_collection", [True, False])
def test_a_replay_collects_young_objects_every_so_often_and_the_heap_at_the_end_unless_told(
        monkeypatch: pytest.MonkeyPatch, final_collection: bool) -> None:
    """Automatic collection is off while a replay runs; a shard, which exits right after, skips the last full
    collection (and none falls right at the end: the end has its own, or the exit)."""
    import gc

    from loyalty_stream.replay import runner

    records = runner.order_records(workload.generate(200, 50, seed=3), "processing")
    monkeypatch.setattr(runner, "GC_EVERY", 50)
    collections: list[tuple[int, bool]] = []
    real_collect = gc.collect

    def spy(*generation: int) -> int:
        collections.append((generation[0] if generation else 2, gc.isenabled()))
        return real_collect(*generation)

    monkeypatch.setattr(gc, "collect", spy)
    result = runner.replay_ordered(records, workload.load_registry(), ReplayResult(), store="objects",
                                   state_cache=16, progress=None, final_collection=final_collection)
    assert result.activities == 200
    assert collections == [(1, False)] * 3 + ([(2, False)] if final_collection else [])
    assert gc.isenabled()


def test_customers_stay_whole_and_shards_get_about_as_many_records() -> None:
    records = _records()
    owners = shards.assign_shards(records, 3)
    assert owners == shards.assign_shards(records, 3)  # the same split every time
    shard_of_customer: dict[bytes, set[int]] = {}
    for record, owner in zip(records, owners, strict=True):
        shard_of_customer.setdefault(shards.customer_of(record), set()).add(owner)
    assert all(len(owned) == 1 for owned in shard_of_customer.values())
    keyless = next(r for r in records if r.key is None)
    customer = orjson.loads(keyless.value or b"")["customer_id"].encode()
    assert shards.customer_of(keyless) == customer  # with that customer's keyed records
    sizes = Counter(owners)
    biggest = max(Counter(shards.customer_of(r) for r in records).values())
    assert sorted(sizes) == [0, 1, 2]
    assert max(sizes.values()) - min(sizes.values()) <= biggest


def test_progress_counts_every_shard_s_records() -> None:
    registry = workload.load_registry()
    records = _records()
    seen: list[int] = []
    replay(records, registry, jobs=2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(records)


def test_a_failing_shard_fails_the_replay_and_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("out of memory")

    monkeypatch.setattr(shards, "replay_ordered", broken)
    with pytest.raises(RuntimeError, match=r"replay shard \d failed: MemoryError: out of memory"):
        replay(_records(), workload.load_registry(), jobs=2)


def test_a_shard_that_dies_fails_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args: Any, **kwargs: Any) -> Any:
        os._exit(9)

    monkeypatch.setattr(shards, "replay_ordered", killed)
    with pytest.raises(RuntimeError, match=r"replay shard \d ended without a result \(exit code 9\)"):
        replay(_records(), workload.load_registry(), jobs=2)


def test_a_shard_ledger_that_does_not_split_back_fails_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards send their ledger newline-joined; an entry holding a raw newline (never valid JSON) is caught."""
    def with_a_raw_newline(records: list[Record], *args: Any, **kwargs: Any) -> ReplayResult:
        result: ReplayResult = kwargs.get("result") or args[1]
        result.ledger.append(b'{"a":\n1}')
        result.ledger_counts = [1] + [0] * (len(records) - 1)
        result.activities = len(records)
        return result

    monkeypatch.setattr(shards, "replay_ordered", with_a_raw_newline)
    with pytest.raises(RuntimeError, match=r"replay shard \d sent 2 ledger entries, not 1"):
        replay(_records(), workload.load_registry(), jobs=2)


def test_small_inputs_and_one_job_replay_in_this_process(monkeypatch: pytest.MonkeyPatch,
                                                         default_registry: ProgramRegistry) -> None:
    monkeypatch.setattr(shards, "MIN_RECORDS_PER_JOB", 5_000)
    assert shards.jobs_for(4_999, 4) == 1
    assert shards.jobs_for(12_000, 4) == 2
    assert shards.jobs_for(100_000, 1) == 1

    def no_processes(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no process should start")

    monkeypatch.setattr(shards.multiprocessing, "get_context", no_processes)
    records = workload.generate(300, 50, seed=3)
    assert replay(records, workload.load_registry(), jobs=4).ledger == replay(records,
                                                                           workload.load_registry()).ledger


def test_the_replay_command_takes_a_job_count() -> None:
    parser = build_parser()
    assert parser.parse_args(["replay", "-j", "3"]).jobs == 3
    assert parser.parse_args(["replay"]).jobs == 0  # one per CPU (shards.available_jobs)
    assert shards.available_jobs() >= 1
