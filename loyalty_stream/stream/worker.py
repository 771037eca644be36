"""The Faust worker: the activity topics in batches, a customer table, and the output topics.

decode -> engine -> encode is `ActivityProcessor`'s job; this module binds it to Faust and Kafka. The records
of one fetch arrive together (`transport.LoyaltyConsumer`; Faust's per-record agent path tops out below the
worker's target before doing any work) and go through three steps:

1. **Process** (`_process_batch`, CPU only): each record in offset order per partition. A state is read from
   this batch's own writes, then from states still on their way to the changelog (`_pending`), then from
   the table, so a customer seen twice in a batch, or in consecutive batches, sees its latest state. The
   new states are kept per key (last one wins), and so are the due-index notes.
2. **Send outputs** through the aiokafka producer under Faust's, as record batches built here (`_Outbox`:
   one future per topic partition and batch instead of one per record), keyed and partitioned as before.
3. **Complete** (`_complete`, one batch at a time, in order, in the `_deliver` task): wait until every output
   of the batch is acknowledged by the broker; then write the batch's last state per changed customer to the
   table's changelog (the input's partition, raw bytes: what `Table.__setitem__` would write, once per
   customer and batch instead of once per record) and wait for that too; then put those states into the
   table's store and ack the records. Faust commits acked offsets only (periodically and on stop), so an
   offset is committed after its outputs and its state are on the broker.

Why this keeps the guarantees:

* At-least-once: an offset is acked only after its outputs and its state change are acknowledged. A crash
  anywhere before that leaves the record uncommitted, and it is delivered again.
* Redelivery never credits twice: the changelog (and so the store, which only ever holds what the changelog
  holds) gets a state only after the outputs that state implies are on the broker. A redelivered record is
  either not in the recovered state (it is processed again, with the same output ids) or is, and then its
  outputs were delivered and the processor drops it by offset. Batches complete in order, so a state never
  reaches the changelog ahead of an earlier batch's outputs.
* Rebalances: on revocation the worker stops completing batches it has not started to write (their records
  are not acked; Faust seeks back to the committed offsets), drops `_pending`, and waits for the batch that is
  writing its changelog, so nothing of ours reaches a changelog partition once another worker may own it.
* A delivery that fails (aiokafka gives up) crashes the app; nothing after it is acked.
* Per-customer order within a topic: one batch is processed in offset order per partition, and batches are
  processed one after the other.
* Bad input is dead-lettered by the processor like any other output.

With `Settings.engine_processes`, step 1 runs in engine processes (`stream.engine_process`): the batch is
submitted and `_process_batch` returns; the batch's results come back to `_take_in`, which does what the rest
of step 1 does and goes on to steps 2 and 3 the same way, while the engines run the next batch.

With Redis configured, the worker also keeps the scheduler's due index current (batched, see
`due_recorder`: one note per changed customer per batch) and runs the scheduler loop; a Redis lock makes one
worker of the cluster its leader.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.partitioner import murmur2
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event  # a persistent store files a write under the current event's partition
from redis.asyncio import Redis

from loyalty_stream import ENGINE_FORM
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.scheduler import Scheduler
from loyalty_stream.settings import Settings
from loyalty_stream.stream.catalogue import Catalogue, load_catalogue
from loyalty_stream.stream.due_recorder import Due, DueRecorder
from loyalty_stream.stream.engine_process import EngineProcessError, EngineProcesses, Record, Result
from loyalty_stream.stream.faust_settings import faust_config
from loyalty_stream.stream.processor import TOPIC_ACTIVITIES, ActivityProcessor, Processed, decode_state
from loyalty_stream.stream.program_feed import ProgramFeed
from loyalty_stream.stream.transport import LoyaltyApp

log = logging.getLogger(__name__)

CUSTOMER_TABLE = "customers"
#: Batches processed but not yet complete; processing waits beyond this (memory bound, backpressure).
MAX_BATCHES_IN_FLIGHT = 8


def store_options(settings: Settings) -> dict[str, Any] | None:
    """Table store options: RocksDB's memory bounded by the settings (Faust's defaults allow a 2 GiB block
    cache and 3 x 64 MB write buffers per partition); None for the memory store."""
    if not settings.store.startswith("rocksdb:"):
        return None
    return {"block_cache_size": settings.rocksdb_block_cache_mb * 2**20,
            "write_buffer_size": settings.rocksdb_write_buffer_mb * 2**20}


AfterProcess = Callable[[Processed], Any]
"""Hook run after each processed record (tests, metrics); may return an awaitable."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


class _EventOf:
    """Stands in for Faust's current event where a store only needs ``event.message.partition``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


@dataclass(slots=True)
class _Batch:
    epoch: int
    outputs: list[Awaitable[Any]]
    states: dict[bytes, tuple[bytes, int]]  # state key -> (last state bytes, partition)
    messages: list[Any]


class _Outbox:
    """Records grouped per topic partition into aiokafka record batches: one future per batch, not per record.

    The producer's own per-record ``send`` costs a future, a partitioner call and an accumulator lookup each;
    a batch of activities yields several outputs per activity, so the worker builds the batches itself and
    submits them with ``send_batch``. Records keep their order within a partition."""

    __slots__ = ("builders", "full", "producer")

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.builders: dict[tuple[str, int], Any] = {}
        self.full: list[tuple[str, int, Any]] = []

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        builder = self.builders.get((topic, partition))
        if builder is None:
            builder = self.builders[(topic, partition)] = self.producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:  # full: the next one takes it
            self.full.append((topic, partition, builder))
            builder = self.builders[(topic, partition)] = self.producer.create_batch()
            builder.append(timestamp=None, key=key, value=value)  # a first record always fits

    def __bool__(self) -> bool:
        return bool(self.builders)

    async def send(self) -> list[tuple[Awaitable[Any], int]]:
        """Submit every batch; returns (future of the batch's metadata, records in it)."""
        send_batch = self.producer.send_batch
        batches = [*self.full, *((topic, partition, b) for (topic, partition), b in self.builders.items())]
        return [(await send_batch(builder, topic, partition=partition), builder.record_count())
                for topic, partition, builder in batches]


class LoyaltyWorker:
    """Builds the Faust app for one deployment: settings, programs, catalogue, optional Redis."""

    def __init__(
        self,
        settings: Settings,
        registry: ProgramRegistry,
        catalogue: Catalogue | None = None,
        *,
        redis: Redis | None = None,
        after_process: AfterProcess | None = None,
        clock: Callable[[], datetime] = wall_clock,
        scheduler_interval: float = 1.0,
        due_flush_interval: float = 0.2,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.catalogue = catalogue or load_catalogue(settings.catalogue_path, partitions=settings.partitions)
        self.processor = ActivityProcessor(registry, state_cache=settings.state_cache)
        self.after_process = after_process
        if after_process is not None and settings.engine_processes:
            raise ValueError("after_process sees the engine's outcome: it needs the engine in this process "
                             "(Settings.engine_processes 0)")
        self.clock = clock
        #: Records the engine has processed / whose outputs, state and ack are done; monotonic timestamps.
        self.processed_count = 0
        self.completed_count = 0
        self.first_processed_at: float | None = None
        self.last_completed_at: float | None = None
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
        self.app = app = LoyaltyApp(**faust_config(settings))
        prefix = settings.topic_prefix
        inputs = [self.catalogue[name] for name in TOPIC_ACTIVITIES if name in self.catalogue]
        self.partitions = inputs[0].partitions
        self.logical_of = {topic.physical_name(prefix): topic.name for topic in inputs}
        self.physical_of = {logical: physical for physical, logical in self.logical_of.items()}
        self.output_names = {topic.name: topic.physical_name(prefix) for topic in self.catalogue.outputs}
        counts = {topic.partitions for topic in self.catalogue.outputs}
        if len(counts) != 1:
            raise ValueError(f"output topics must share one partition count, got {sorted(counts)}")
        self.output_partitions = counts.pop()
        self._partitions: dict[bytes, int] = {}
        self.inputs = {
            logical: app.topic(physical, key_serializer="raw", value_serializer="raw",
                               partitions=self.partitions)
            for physical, logical in self.logical_of.items()
        }
        self.activity_topic = app.topic(
            *self.logical_of, key_serializer="raw", value_serializer="raw", partitions=self.partitions,
        )
        self.customers = app.Table(
            CUSTOMER_TABLE, default=None, partitions=self.partitions, key_type=bytes, value_type=bytes,
            options=store_options(settings),
        )
        # The activity topics are subscribed through the conductor (acks enabled, co-partitioned with the
        # table), and their records are delivered to `_process_batch` by the transport.
        app.topics.add(self.activity_topic)
        app.fetch_max_wait_ms = settings.fetch_max_wait_ms
        app.fetch_min_bytes = settings.fetch_min_bytes
        app.fetch_min_bytes_adaptive = settings.fetch_min_bytes_adaptive
        app.batch_topics = frozenset(self.logical_of)
        app.batch_handler = self._process_batch
        app.before_stop = self.drain
        app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]
        self._pending: dict[bytes, bytes] = {}
        self._epoch = 0
        self._queue: asyncio.Queue[_Batch] | None = None
        self._delivering = False
        self._accepting = True
        app.task(self._deliver)
        self.program_feed: ProgramFeed | None = None
        if "program" in self.catalogue:
            self.program_feed = ProgramFeed(
                settings.kafka_bootstrap, self.catalogue["program"].physical_name(prefix), registry)
            app.task(self._follow_programs)

        if settings.gc_interval > 0:
            app.timer(interval=settings.gc_interval, name="garbage-collection")(self.collect_garbage)
        self.redis = redis
        self.due: DueRecorder | None = None
        self.scheduler: Scheduler | None = None
        if redis is not None:
            redis_prefix = f"{settings.redis_prefix}{prefix}"
            self.due = DueRecorder(redis, redis_prefix, registry)
            self.scheduler = Scheduler(redis, redis_prefix, self._send_scheduled)
            app.timer(interval=due_flush_interval, name="due-index-flush")(self._flush_due)
            app.task(self._run_scheduler)
            app.task(self._rebuild_due_index)
            self._scheduler_interval = scheduler_interval
        self.engine: EngineProcesses | None = None
        if settings.engine_processes:
            self.engine = EngineProcesses(registry, self._stored, self._take_in, self._engine_failed,
                                          count=settings.engine_processes,
                                          state_cache=settings.state_cache, due_notes=self.due is not None,
                                          gc_interval=settings.gc_interval)

    # Hot path ----------------------------------------------------------------------------------------------
    def _batches(self) -> asyncio.Queue[_Batch]:
        if self._queue is None:
            self._queue = asyncio.Queue(MAX_BATCHES_IN_FLIGHT)
        return self._queue

    async def _process_batch(self, messages: list[Any], generation: int) -> None:
        if not self._accepting:
            return  # stopping: left unacked, so the next owner of the partition processes them
        feed = self.program_feed
        if feed is not None and not feed.ready.is_set():
            # Programs published to the program topic must be known before the first activity, or a restart
            # would dead-letter activities of those programs as unknown_program.
            await feed.ready.wait()
        epoch = self._epoch
        if self.first_processed_at is None:
            self.first_processed_at = time.perf_counter()
        if self.engine is not None:
            records: list[Record] = [(self.logical_of.get(m.topic, m.topic), m.partition, m.offset, m.key, m.value,
                                      m.topic) for m in messages]
            try:
                await self.engine.submit(epoch, (epoch, messages), records)  # taken in by `_take_in`
            except EngineProcessError as exc:
                await self._engine_failed(exc)
            return
        process = self.processor.process
        logical_of = self.logical_of
        after = self.after_process
        local: dict[bytes, tuple[bytes, int]] = {}
        notes: dict[bytes, CustomerState] = {}
        outbox = _Outbox(self._producer())
        post = self._post
        pending_get = self._pending.get
        store_get = self.customers.data.get

        def load(key: bytes) -> bytes | None:
            mine = local.get(key)
            if mine is not None:
                return mine[0]
            value = pending_get(key)
            return value if value is not None else store_get(key)

        for message in messages:
            topic = message.topic
            processed = process(logical_of.get(topic, topic), message.partition, message.offset,
                                message.key, message.value, load, source_topic=topic)
            if processed.state is not None and processed.state_key is not None:
                local[processed.state_key] = (processed.state, message.partition)
                if processed.outcome is not None:
                    notes[processed.state_key] = processed.outcome.state
            if processed.outputs:
                post(outbox, message, processed.customer_id, processed.outputs)
            if after is not None:
                result = after(processed)
                if asyncio.iscoroutine(result):
                    await result
        if self.due is not None:
            for state in notes.values():
                self.due.note(state)
        await self._send_batch(epoch, messages, local, outbox)

    def _post(self, outbox: _Outbox, message: Any, customer_id: str | None, outputs: list[tuple[str, bytes]]) -> None:
        """A record's outputs into `outbox`: keyed by its customer, partitioned as Faust's `send` would."""
        key = customer_id.encode() if customer_id is not None else message.key
        partition = self._partition_of(key, message.partition)
        output_names = self.output_names
        add = outbox.add
        for logical, value in outputs:
            add(output_names[logical], partition, key, value)

    async def _send_batch(self, epoch: int, messages: list[Any], local: dict[bytes, tuple[bytes, int]],
                          outbox: _Outbox) -> None:
        """Send a processed batch's outputs and queue it for completion (`_complete`)."""
        self.processed_count += len(messages)
        outputs = [future for future, _ in await outbox.send()]
        if epoch != self._epoch:
            return  # revoked meanwhile: not acked, so fetched and processed again (same output ids)
        self._pending.update((key, value) for key, (value, _) in local.items())
        await self._batches().put(_Batch(epoch, outputs, local, messages))

    async def _engine_failed(self, exc: BaseException) -> None:
        if self._accepting and self.app.crash_reason is None:  # nothing in flight is acked: delivered again
            log.error("an engine process failed; crashing so that unacked records are delivered again")
            await self.app.crash(exc)

    def _stored(self, key: bytes) -> bytes | None:
        """A customer's state as the next batch must see it: on its way to the changelog, else in the table."""
        value = self._pending.get(key)
        return value if value is not None else self.customers.data.get(key)

    async def _take_in(self, context: tuple[int, list[Any]], results: list[Result], dues: dict[str, Due]) -> None:
        """A batch the engine process ran (`_process_batch` submitted it): what the loop above does with each
        record's result, then the same `_send_batch`."""
        epoch, messages = context
        local: dict[bytes, tuple[bytes, int]] = {}
        outbox = _Outbox(self._producer())
        post = self._post
        for message, (customer_id, skey, state, outputs) in zip(messages, results, strict=True):
            if state is not None and skey is not None:
                local[skey] = (state, message.partition)
            if outputs:
                post(outbox, message, customer_id, outputs)
        if self.due is not None:
            for name, due in dues.items():
                self.due.record(name, due)
        await self._send_batch(epoch, messages, local, outbox)

    async def _deliver(self) -> None:
        """Complete batches in order (see the module docstring); a failed delivery crashes the app."""
        queue = self._batches()
        self._delivering = True
        log.info("rules engine: %s", "compiled (mypyc)" if ENGINE_FORM == "compiled" else "pure Python (slower)")
        try:
            while True:
                batch = await queue.get()
                try:
                    await self._complete(batch)
                except Exception as exc:
                    log.exception("delivery failed; crashing so that unacked records are delivered again")
                    await self.app.crash(exc)
                    return
                finally:
                    queue.task_done()
        finally:
            self._delivering = False

    async def _complete(self, batch: _Batch) -> None:
        if batch.epoch != self._epoch:
            return
        for future in batch.outputs:
            await future
        if batch.epoch != self._epoch or not batch.states:
            if batch.epoch == self._epoch:
                self._ack(batch)
            return
        outbox = _Outbox(self._producer())
        changelog = self.customers.changelog_topic.get_topic_name()
        for key, (value, partition) in batch.states.items():
            outbox.add(changelog, partition, key, value)  # the input's partition, as Table.__setitem__ does
        persisted: dict[Any, int] = {}
        for future, count in await outbox.send():
            metadata = await future
            if metadata is not None:
                tp = metadata.topic_partition
                persisted[tp] = max(persisted.get(tp, -1), metadata.offset + count - 1)
        store: Any = self.customers.data
        pending = self._pending
        if isinstance(store, MemoryStore):
            put = store.data.__setitem__
            for key, (value, _) in batch.states.items():
                put(key, value)
                if pending.get(key) is value:
                    del pending[key]
        else:  # a persistent store (RocksDB) files a key under the partition of Faust's current event
            carriers = {message.partition: _EventOf(message) for message in batch.messages}
            for key, (value, partition) in batch.states.items():
                token = _current_event.set(weakref.ref(carriers[partition]))  # type: ignore[arg-type]
                try:
                    store[key] = value
                finally:
                    _current_event.reset(token)
                if pending.get(key) is value:
                    del pending[key]
        for tp, offset in persisted.items():
            store.set_persisted_offset(tp, offset)  # what Table._on_changelog_sent does (RocksDB resumes here)
        if batch.epoch == self._epoch:
            self._ack(batch)

    def _producer(self) -> Any:
        """The aiokafka producer under Faust's (started with the app; Faust flushes it before commits)."""
        producer = getattr(self.app.producer, "_producer", None)
        if producer is None:
            raise RuntimeError("the Faust producer is not started")
        return producer

    def _partition_of(self, key: bytes | None, default: int) -> int:
        """Partition of an output record: the producer's default (murmur2 of the key, as Faust's `send`
        chose), cached per key; a record without a key stays on its input's partition."""
        if key is None:
            return default
        partition = self._partitions.get(key)
        if partition is None:
            partition = self._partitions[key] = (murmur2(key) & 0x7FFFFFFF) % self.output_partitions
            if len(self._partitions) > 100_000:
                self._partitions.clear()
        return partition

    def _ack(self, batch: _Batch) -> None:
        ack = self.app.consumer.ack
        for message in batch.messages:
            ack(message)
        self.completed_count += len(batch.messages)
        self.last_completed_at = time.perf_counter()

    async def _on_partitions_revoked(self, sender: Any = None, revoked: Any = None, **kwargs: Any) -> None:
        """Faust calls this during revocation, after stopping the flow and flushing its producer."""
        self._epoch += 1
        self._pending.clear()
        await self._join_queue()  # queued batches of the old epoch are discarded at once

    async def _join_queue(self) -> None:
        """Wait until every queued batch is completed or discarded."""
        queue = self._queue
        if queue is None or not self._delivering:
            return
        join = asyncio.ensure_future(queue.join())
        try:
            while not join.done() and self._delivering:  # a crashed deliverer never finishes the queue
                await asyncio.wait({join}, timeout=0.1)
        finally:
            join.cancel()

    async def drain(self) -> None:
        """Stop taking records and complete every processed batch (outputs, changelog, acks), so that the
        commit Faust makes when it stops covers them. Called when the app stops (`LoyaltyApp.on_stop`) and by
        `runtime.running_worker`. Records fetched afterwards stay unacked and are delivered again."""
        self._accepting = False
        if self.engine is not None:
            await self.engine.idle()  # its batches join the queue
        await self._join_queue()
        if self.engine is not None:
            await self.engine.close()

    async def collect_garbage(self) -> float | None:
        """Collect the process's reference cycles where it turned automatic collection off (`runtime.tune_gc`):
        a timer, so it runs between batches. Returns the seconds it took (None: the collector is automatic)."""
        if gc.isenabled():
            return None
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        log.info("garbage collection: %d unreachable objects in %.0f ms", found, took * 1000)
        return took

    # Scheduler ---------------------------------------------------------------------------------------------
    async def _send_scheduled(self, logical: str, key: bytes, value: bytes) -> None:
        await self.inputs[logical].send(key=key, value=value)

    async def _flush_due(self) -> None:
        if self.due is not None:
            try:
                await self.due.flush()
            except Exception:
                log.exception("due index flush failed; will retry")

    async def _run_scheduler(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.run(self.clock, self._scheduler_interval)

    async def _follow_programs(self) -> None:
        """New program versions from the program topic join the registry the processor reads. Should the feed
        fail, the worker goes on with the programs it has (and says so) rather than wait for it forever."""
        feed = self.program_feed
        if feed is None:
            return
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the program topic feed failed; serving the programs loaded so far")
            feed.ready.set()

    async def _rebuild_due_index(self) -> None:
        """Once the table is recovered, recreate the due index of the customers this worker holds."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        await recovery.completed.wait()
        if self.due is None:
            return
        states = [decode_state(raw) for raw in list(self.customers.values()) if raw is not None]
        count = await self.due.rebuild(states)
        log.info("due index rebuilt from %d customers (%d due)", len(states), count)

    async def stop_background(self) -> None:
        await self.drain()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.due is not None:
            await self._flush_due()
