"""Offline replay and re-evaluation: read the activity topics, run the same processor, compare ledgers.

Replays run the exact code path of the worker (`ActivityProcessor`) over an in-memory store (encoding only
the ledger entries and dead letters: a replay keeps nothing else), so a replay under the same programs
reproduces the live ledger byte for byte, and a replay under a changed program shows
precisely which entries would differ (what-if). Order: per customer, the order the live worker applied the
activities (Kafka record timestamp, then topic and offset), or event time with `order="event_time"`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.codec import right_sized
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.stream.processor import LEDGER, TOPIC_ACTIVITIES, ActivityProcessor, Processed, encode_state

REPLAY_STATE_CACHE = 4096
"""Decoded customer states the replay keeps: the frequent customers, whose states are the largest."""


@dataclass(slots=True, frozen=True)
class Record:
    topic: str  # logical topic name
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    real_topic: str = ""


@dataclass(slots=True)
class ReplayResult:
    activities: int = 0
    dead_letters: int = 0
    """Records dead-lettered, counting parked records given up later (each once)."""
    ledger: list[bytes] = field(default_factory=list)
    objects: dict[bytes, CustomerState] = field(default_factory=dict)
    """The final customer states (an object-store replay); `states` encodes them."""
    encoded: dict[bytes, bytes] = field(default_factory=dict)
    """The final customer states as stored bytes (a byte-store replay)."""
    seconds: float = 0.0
    ledger_counts: list[int] | None = None
    """When set (a shard of a parallel replay), how many ledger entries each record produced, so shards'
    ledgers merge back into record order (and a shard may send its ledger off and drop it as it goes)."""

    @property
    def rate(self) -> float:
        return self.activities / self.seconds if self.seconds else 0.0

    @property
    def states(self) -> dict[bytes, bytes]:
        """The final customer states as the worker's store holds them (encoded on first use: a replay's job
        is the ledger, and encoding every customer is work a what-if diff does not need)."""
        if self.objects and not self.encoded:
            self.encoded = {key: encode_state(state) for key, state in self.objects.items()}
        return self.encoded


def _event_time(record: Record) -> str:
    try:
        return str(orjson.loads(record.value or b"{}").get("event_time", ""))
    except orjson.JSONDecodeError:
        return ""


def order_records(records: Iterable[Record], order: Literal["processing", "event_time"]) -> list[Record]:
    if order == "event_time":
        return sorted(records, key=lambda r: (_event_time(r), r.topic, r.partition, r.offset))
    return sorted(records, key=lambda r: (r.timestamp, r.topic, r.partition, r.offset))


def replay(
    records: Iterable[Record],
    registry: ProgramRegistry,
    *,
    order: Literal["processing", "event_time"] = "processing",
    progress: Callable[[int], None] | None = None,
    presorted: bool = False,
    store: Literal["objects", "bytes"] = "objects",
    state_cache: int = REPLAY_STATE_CACHE,
    jobs: int = 1,
    keep_states: bool = True,
) -> ReplayResult:
    """Re-evaluate `records` from empty state; returns the ledger it produces and the final states.

    `store="objects"` (the default) keeps each customer's state as the engine's object between records,
    with no encoding or decoding per record: outputs and final states are the same as the worker's byte store
    gives (the codec round trip is exact; a test compares both). An engine error may leave such a state
    half-applied, so that customer's state is rebuilt by re-applying its earlier records - replay is
    deterministic, so this is the state the worker kept. `store="bytes"` runs the worker's exact path (state
    bytes per record, `state_cache` decoded states kept).

    `jobs` > 1 replays customer shards in that many processes (`replay.shards`): the same ledger, in the same
    order, and the same final states (then encoded: `ReplayResult.encoded`; not kept without `keep_states`),
    in less wall-clock time."""
    ordered = list(records) if presorted else order_records(records, order)
    if jobs > 1:
        from loyalty_stream.replay.shards import replay_sharded  # it imports this module

        return replay_sharded(ordered, registry, jobs, store=store, state_cache=state_cache, progress=progress,
                              keep_states=keep_states)
    return replay_ordered(ordered, registry, ReplayResult(), store=store, state_cache=state_cache,
                          progress=progress)


def replay_ordered(ordered: list[Record], registry: ProgramRegistry, result: ReplayResult, *,
                   store: Literal["objects", "bytes"], state_cache: int,
                   progress: Callable[[int], None] | None, final_collection: bool = True) -> ReplayResult:
    """`replay` of records already in order, in this process, into `result`. Without `final_collection`
    (for a process that exits right after, as a replay shard does) the heap is not collected at the end."""
    started = time.perf_counter()
    with _batch_gc(final_collection):
        if store == "objects":
            _replay_objects(ordered, ActivityProcessor(registry, object_store=True, ledger_only=True), result,
                            progress)
        else:
            _replay_bytes(ordered, ActivityProcessor(registry, state_cache=state_cache, ledger_only=True), result,
                          progress)
    result.seconds = time.perf_counter() - started
    return result


def _process(processor: ActivityProcessor, record: Record, load: Callable[[bytes], Any]) -> Processed:
    return processor.process(record.topic, record.partition, record.offset, record.key, record.value, load,
                             source_topic=record.real_topic or record.topic)


def _collect(result: ReplayResult, processed: Processed, index: int,
             progress: Callable[[int], None] | None) -> None:
    if processed.dead_letter is not None:
        result.dead_letters += 1
    result.dead_letters += len(processed.given_up)
    ledger = result.ledger
    made = len(ledger)
    ledger.extend(right_sized(value) for topic, value in processed.outputs if topic == LEDGER)
    if result.ledger_counts is not None:
        result.ledger_counts.append(len(ledger) - made)
    result.activities += 1
    if index and index % GC_EVERY == 0:  # not after the last of exactly N * GC_EVERY: the end has its own
        gc.collect(1)
    if progress is not None and index % PROGRESS_EVERY == 0:
        progress(index)


def _replay_bytes(ordered: list[Record], processor: ActivityProcessor, result: ReplayResult,
                  progress: Callable[[int], None] | None) -> None:
    states = result.encoded
    for index, record in enumerate(ordered):
        processed = _process(processor, record, states.get)
        if processed.state is not None and processed.state_key is not None:
            states[processed.state_key] = processed.state
        _collect(result, processed, index, progress)


def _replay_objects(ordered: list[Record], processor: ActivityProcessor, result: ReplayResult,
                    progress: Callable[[int], None] | None) -> None:
    states = result.objects
    applied: dict[bytes, list[int]] = {}
    """Per customer, the records its state has taken (engine errors excluded): enough to rebuild it."""
    for index, record in enumerate(ordered):
        processed = _process(processor, record, states.get)
        skey = processed.state_key
        if skey is not None:
            if processed.outcome is not None:
                states[skey] = processed.outcome.state
                applied.setdefault(skey, []).append(index)
            else:  # an engine error: the object may be half-applied
                states.pop(skey, None)
                for earlier in applied.get(skey, ()):
                    rebuilt = _process(processor, ordered[earlier], states.get)
                    if rebuilt.outcome is not None:
                        states[skey] = rebuilt.outcome.state
        _collect(result, processed, index, progress)


GC_EVERY = 50_000
"""Records between two collections of the young generations during a replay (see `_batch_gc`)."""
PROGRESS_EVERY = 2_000
"""Records between two calls of a replay's progress callback."""


@contextmanager
def _batch_gc(final_collection: bool) -> Iterator[None]:
    """A replay allocates millions of short-lived objects while holding many long-lived ones (the records,
    the cached customer states): CPython's collector would run every few hundred allocations and, as the
    long-lived heap grows, repeatedly walk all of it. The engine's objects are freed by reference counting
    (it makes no reference cycles on its hot path), so automatic collection is paused while the replay runs,
    with a young-generation collection every `GC_EVERY` records and a full one at the end (unless the process
    is about to exit: it walks every object the replay left, 8 % of a 100k-activity replay)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if final_collection:
            gc.collect()
        if enabled:
            gc.enable()


@dataclass(slots=True)
class LedgerDiff:
    only_live: list[dict[str, Any]]
    only_replay: list[dict[str, Any]]
    changed: list[tuple[dict[str, Any], dict[str, Any]]]
    same: int

    @property
    def identical(self) -> bool:
        return not (self.only_live or self.only_replay or self.changed)


_COMPARED = ("bucket", "amount", "desired_amount", "occurred_at", "expires_at", "available_at", "seq")
_CAUSE = ("customer_id", "program_id", "source_event_id", "kind", "condition_code", "rule", "line_item_id",
          "lot_id", "redemption_id")


def _cause(entry: dict[str, Any]) -> str:
    """What produced an entry, independent of the program version (entry ids include the version)."""
    return "\x1f".join(str(entry.get(k)) for k in _CAUSE)


def diff_ledgers(live: Iterable[bytes], replayed: Iterable[bytes]) -> LedgerDiff:
    """Compare two ledgers entry by entry, matched by cause, so a new program version is a what-if diff."""
    live_by_id = {_cause(e): e for e in map(orjson.loads, live)}
    replay_by_id = {_cause(e): e for e in map(orjson.loads, replayed)}
    changed = [
        (live_by_id[i], replay_by_id[i]) for i in live_by_id.keys() & replay_by_id.keys()
        if any(live_by_id[i].get(k) != replay_by_id[i].get(k) for k in _COMPARED)
    ]
    return LedgerDiff(
        only_live=[live_by_id[i] for i in sorted(live_by_id.keys() - replay_by_id.keys())],
        only_replay=[replay_by_id[i] for i in sorted(replay_by_id.keys() - live_by_id.keys())],
        changed=sorted(changed, key=lambda pair: str(pair[0]["entry_id"])),
        same=len(live_by_id.keys() & replay_by_id.keys()) - len(changed),
    )


async def read_activity_records(bootstrap: str, prefix: str) -> list[Record]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Record] = []
    try:
        await consumer._client.force_metadata_update()
        tps = []
        for logical in TOPIC_ACTIVITIES:
            for partition in sorted(consumer.partitions_for_topic(prefix + logical) or ()):
                tps.append(TopicPartition(prefix + logical, partition))
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batch:
                break
            for tp, messages in batch.items():
                for m in messages:
                    records.append(Record(tp.topic[len(prefix):], m.partition, m.offset, m.timestamp, m.key,
                                          m.value, tp.topic))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


def run_replay_command(args: argparse.Namespace, settings: Any) -> int:
    from loyalty_stream.stream.kafka_io import read_topic

    registry = ProgramRegistry.from_files(settings.program_paths())
    print(f"reading activity topics from {settings.kafka_bootstrap} ...", file=sys.stderr)
    records = asyncio.run(read_activity_records(settings.kafka_bootstrap, settings.topic_prefix))
    total = len(records)

    def progress(done: int) -> None:
        print(f"\r  replayed {done:,}/{total:,} activities", end="", file=sys.stderr, flush=True)

    from loyalty_stream.replay.shards import available_jobs

    result = replay(records, registry, progress=progress, jobs=args.jobs or available_jobs(), keep_states=False)
    print(f"\rreplayed {result.activities:,} activities in {result.seconds:.2f}s "
          f"({result.rate:,.0f}/s): {len(result.ledger):,} ledger entries, {result.dead_letters} dead letters",
          file=sys.stderr)
    if args.out:
        with open(args.out, "wb") as out:
            for line in result.ledger:
                out.write(line + b"\n")
    if args.compare:
        live = [v for _, _, _, v in asyncio.run(read_topic(settings.kafka_bootstrap,
                                                            settings.topic_prefix + "ledger")) if v]
        diff = diff_ledgers(live, result.ledger)
        print(f"same {diff.same}, changed {len(diff.changed)}, only live {len(diff.only_live)}, "
              f"only replay {len(diff.only_replay)}")
        for old, new in diff.changed[:20]:
            print(f"  {old['entry_id']} {old['customer_id']}: {old['amount']} -> {new['amount']}")
        return 0 if diff.identical else 3
    return 0
