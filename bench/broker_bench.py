"""Broker benchmarks on the embedded Tansu broker: the raw aiokafka ceiling, the worker end to end, latency.

Every function takes a :class:`Cluster` (a started broker + Redis) and returns a dict of figures, so
``python -m bench`` can print them in one table and write them to ``bench/results/latest.json``; the smoke
test (``tests/integration/test_bench_smoke.py``) calls the same functions with a small N.

* :func:`baseline`: a raw aiokafka loop over the same topic layout (the activity topics, 4 partitions each)
  and the same records: consume -> ``orjson.loads`` -> produce two messages -> commit every 0.5 s. No logic,
  no Faust: the practical ceiling of one Python process on this broker.
* :func:`end_to_end`: the real worker (``LoyaltyWorker`` through ``runtime.running_worker``, Redis due
  index on) over the same records, pre-produced. Timed from the first record processed until the last one
  is processed and the worker's producer has flushed (every output, including the last balance change, is
  on the broker). Group join and table recovery are excluded; they are start-up costs.
* :func:`latency`: publish -> balance-change latency at a steady offered rate. The worker runs in a child
  process (so the load generator does not share its event loop); this process publishes at the given rate,
  stamping each event id before handing it to its producer, and a consumer on ``balance-changes`` matches
  ``cause_event_id``. The load generator shares the two cores with the worker and the broker, so it is
  kept lean, and what it adds is inside the figures: its producer lingers 5 ms (Kafka's default since 4.0)
  instead of one produce request per activity, and its consumer long-polls 10 ms (Tansu looks at a parked
  fetch every quarter of its wait, so that adds at most about 2.5 ms). Publishing one request per record
  and polling every 2 ms cost about 0.6 of a core between this process and the broker.

The scheduler runs during these benchmarks with its clock frozen at the workload's start
(``bench.workload.START``): the workload's event times are in 2024, so a wall clock would make every
customer's delayed points due at once and the scheduler would add its own events to the measured stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from bench import workload
from bench.tuning import worker_gc
from loyalty_stream.devstack.broker import EmbeddedBroker
from loyalty_stream.devstack.redis import EmbeddedRedis
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.replay.runner import Record
from loyalty_stream.settings import Settings
from loyalty_stream.stream.catalogue import create_topics, load_catalogue
from loyalty_stream.stream.faust_settings import for_embedded_broker
from loyalty_stream.stream.processor import BALANCE_CHANGES, DEAD_LETTER, LEDGER, decode_state
from loyalty_stream.stream.transport import probe_end_offsets

Figures = dict[str, Any]
PARTITIONS = 4
#: The latency load generator's producer linger and consumer fetch wait (see the module docstring).
LATENCY_PUBLISH_LINGER_MS = 5
LATENCY_COLLECT_WAIT_MS = 10
#: Latency figures per window of this many seconds too, so a drift over the run shows.
LATENCY_WINDOW_S = 5.0


def frozen_clock() -> datetime:
    """The scheduler's clock during the benchmarks: the workload's start, so nothing falls due."""
    return workload.START


# ---------------------------------------------------------------------------------------------------------
# The cluster and per-run isolation
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """A Kafka-compatible broker and a Redis; starts the embedded ones unless addresses are given."""

    bootstrap: str = ""
    redis_url: str = ""
    broker_pid: int | None = None
    """The embedded broker's process (None for a broker given by address)."""
    #: Settings for every run (e.g. group timeouts a real Kafka accepts); Tansu's short ones otherwise.
    overrides: dict[str, Any] = field(default_factory=dict)
    _stops: list[Any] = field(default_factory=list)

    def start(self) -> Cluster:
        if not self.bootstrap:
            broker = EmbeddedBroker()
            self.bootstrap = broker.start()
            self.broker_pid = broker.pid
            self._stops.append(broker.stop)
        if not self.redis_url:
            server = EmbeddedRedis()
            self.redis_url = server.start()
            self._stops.append(server.stop)
        return self

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, data_dir: Any = None, **overrides: Any) -> Settings:
        """Fresh app id, topic prefix and Redis prefix (so runs never see each other), Tansu timeouts."""
        token = uuid.uuid4().hex[:10]
        fields: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap, "redis_url": self.redis_url, "app_id": f"bench-{token}",
            "topic_prefix": f"b-{token}-", "redis_prefix": f"bench:{token}:", "partitions": PARTITIONS,
        }
        if data_dir is not None:
            fields["data_dir"] = data_dir
        return for_embedded_broker(Settings(**fields)).model_copy(update={**self.overrides, **overrides})


async def create_catalogue(settings: Settings) -> None:
    catalogue = load_catalogue(settings.catalogue_path, partitions=settings.partitions)
    await create_topics(settings.kafka_bootstrap, catalogue, settings.topic_prefix)


def input_topics(records: Sequence[Record], prefix: str) -> list[str]:
    return sorted({prefix + record.topic for record in records})


async def produce_all(bootstrap: str, messages: Iterable[tuple[str, bytes, bytes]]) -> Figures:
    """Publish everything as fast as the producer goes (batched, acks=1); returns count and rate."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024,
                                enable_idempotence=False, acks=1)
    await producer.start()
    count = 0
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    return {"messages": count, "seconds": round(seconds, 3), "messages_per_s": round(count / seconds)}


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Messages in each topic (sum of its partitions' end offsets, corrected for Tansu's ListOffsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        listed = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    ends = await probe_end_offsets(bootstrap, listed)
    totals = dict.fromkeys(topics, 0)
    for tp, end in ends.items():
        totals[tp.topic] += end or 0
    return totals


# ---------------------------------------------------------------------------------------------------------
# Baseline: raw aiokafka, no logic
# ---------------------------------------------------------------------------------------------------------
async def baseline(cluster: Cluster, records: Sequence[Record], *, timeout: float = 300.0) -> Figures:
    """consume -> orjson decode -> produce 2 messages, with periodic commits; activities/s."""
    with worker_gc():
        return await _baseline(cluster, records, timeout)


async def _baseline(cluster: Cluster, records: Sequence[Record], timeout: float) -> Figures:
    settings = cluster.settings()
    await create_catalogue(settings)
    prefix = settings.topic_prefix
    await produce_all(cluster.bootstrap, workload.messages(records, prefix))
    total = len(records)
    outputs = (prefix + LEDGER, prefix + BALANCE_CHANGES)
    consumer = AIOKafkaConsumer(*input_topics(records, prefix), bootstrap_servers=cluster.bootstrap,
                                group_id=settings.app_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=2000,
                                heartbeat_interval_ms=500, max_poll_records=2000)
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, linger_ms=5, max_batch_size=256 * 1024,
                                enable_idempotence=False, acks=1)
    await producer.start()
    await consumer.start()
    count = 0
    first: float | None = None
    try:
        deadline = time.monotonic() + timeout
        last_commit = time.perf_counter()
        loads, dumps, send = orjson.loads, orjson.dumps, producer.send
        while count < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline: {count}/{total} after {timeout}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if batch and first is None:
                first = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    activity = loads(message.value)
                    out = dumps({"cause_event_id": activity["event_id"], "customer_id": activity["customer_id"],
                                 "type": activity["type"]})
                    await send(outputs[0], out, key=message.key)
                    await send(outputs[1], out, key=message.key)
                count += len(messages)
            if time.perf_counter() - last_commit > 0.5:
                await producer.flush()
                await consumer.commit()
                last_commit = time.perf_counter()
        await producer.flush()
        await consumer.commit()
        end = time.perf_counter()
    finally:
        await consumer.stop()
        await producer.stop()
    assert first is not None
    seconds = end - first
    return {"activities": count, "seconds": round(seconds, 3), "activities_per_s": round(count / seconds),
            "outputs": 2 * count}


# ---------------------------------------------------------------------------------------------------------
# End to end: the real worker
# ---------------------------------------------------------------------------------------------------------
@dataclass
class EndToEnd:
    figures: Figures
    states: dict[bytes, bytes]
    settings: Settings


async def end_to_end(cluster: Cluster, records: Sequence[Record], registry: ProgramRegistry, *,
                     timeout: float = 600.0, data_dir: Any = None, keep_states: bool = False,
                     engine_processes: int = 0) -> EndToEnd:
    """Pre-produce `records`, start the worker, time from the first record processed to the last output.
    `engine_processes`: the worker with its engine in that many processes of its own (`Settings.engine_processes`).

    The garbage collector is set up as `loyalty-stream worker` sets it up (`runtime.tune_gc`)."""
    with worker_gc():
        return await _end_to_end(cluster, records, registry, timeout, data_dir, keep_states, engine_processes)


async def _end_to_end(cluster: Cluster, records: Sequence[Record], registry: ProgramRegistry, timeout: float,
                      data_dir: Any, keep_states: bool, engine_processes: int) -> EndToEnd:
    from loyalty_stream.stream.runtime import running_worker

    settings = cluster.settings(data_dir=data_dir, engine_processes=engine_processes)
    await create_catalogue(settings)
    prefix = settings.topic_prefix
    produced = await produce_all(cluster.bootstrap, workload.messages(records, prefix))
    total = len(records)
    redis = Redis.from_url(cluster.redis_url)
    states: dict[bytes, bytes] = {}
    try:
        started = time.perf_counter()
        async with running_worker(settings, registry, redis=redis, clock=frozen_clock) as worker:
            ready = time.perf_counter() - started
            deadline = time.monotonic() + timeout
            first: float | None = None

            def done() -> int:  # records whose outputs and state are on the broker and that are acked
                return int(getattr(worker, "completed_count", worker.processed_count))

            pids = {"worker": os.getpid(), "broker": cluster.broker_pid,
                    **{f"engine_{n}": pid for n, pid in enumerate(worker.engine.pids if worker.engine else [])}}
            cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
            while done() < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"end_to_end: {done()}/{total} after {timeout}s")
                if first is None and worker.processed_count:
                    first = time.perf_counter()
                await asyncio.sleep(0.002)
            await worker.app.producer.flush()
            end = time.perf_counter()
            cores = {name: _cores(cpu_before[name], _cpu_seconds(pid), end - started - ready)
                     for name, pid in pids.items() if pid is not None}
            first = getattr(worker, "first_processed_at", None) or first or end
            if keep_states:
                states = {key: value for key, value in worker.customers.items() if value is not None}
            customers = len(worker.customers)
            # The pause of one periodic collection (`Settings.gc_interval`) with the worker's states held.
            collect = await worker.collect_garbage()
    finally:
        await redis.aclose()
    seconds = end - first
    outs = await end_offsets(cluster.bootstrap, [prefix + LEDGER, prefix + BALANCE_CHANGES, prefix + DEAD_LETTER])
    figures = {
        "activities": total,
        "seconds": round(seconds, 3),
        "activities_per_s": round(total / seconds),
        "startup_seconds": round(ready, 2),
        "preproduce_per_s": produced["messages_per_s"],
        "customers": customers,
        "ledger_entries": outs[prefix + LEDGER],
        "balance_changes": outs[prefix + BALANCE_CHANGES],
        "dead_letters": outs[prefix + DEAD_LETTER],
        "gc_collect_ms": None if collect is None else round(collect * 1000),
        "worker_pid": os.getpid(),  # `bench.__main__` gives each run a fresh process (`end_to_end_section`)
        "cpu_cores": cores,  # CPU seconds per second while the records were processed (the worker's includes
        # this benchmark's polling, a few percent)
    }
    return EndToEnd(figures, states, settings)


def end_to_end_section(bootstrap: str, redis_url: str, broker_pid: int | None, activities: int, customers: int,
                       seed: int, engine_processes: int, check: bool) -> dict[str, Figures]:
    """One `end_to_end` run (and its `verify` with `check`) on a started broker and Redis, over the workload's
    records made afresh from the same arguments: `bench.__main__` runs each in a fresh spawned process, so the
    worker is a process of its own, as `loyalty-stream worker` is. In the bench's own process, after the
    baseline and the one-process run, the 2-engine run was 8-12 % slower (8,108 and 7,985/s against 8,685 and
    9,134/s run alone), and every process of it used more CPU a record (the cause was not pinned down)."""
    records = workload.generate(activities, customers, seed=seed)
    cluster = Cluster(bootstrap=bootstrap, redis_url=redis_url, broker_pid=broker_pid)

    async def section() -> dict[str, Figures]:
        run = await end_to_end(cluster, records, workload.load_registry(), keep_states=check,
                               engine_processes=engine_processes)
        figures = {"figures": run.figures}
        if check:
            print("end to end: checking the outputs ...", flush=True)
            figures["check"] = await verify(run)
        return figures

    return asyncio.run(section())


async def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    from loyalty_stream.stream.kafka_io import read_topic

    return [(key, value) for _, _, key, value in await read_topic(bootstrap, topic) if value is not None]


async def verify(run: EndToEnd) -> Figures:
    """Outputs consistent with themselves and with the table: every customer's ledger has seq 1..n with
    unique entry ids (nothing credited twice, nothing lost), its current balance is the sum of its ledger's
    current-bucket entries, and its last balance change and its stored state agree with that balance."""
    settings = run.settings
    ledger = await read_all(settings.kafka_bootstrap, settings.topic(LEDGER))
    changes = await read_all(settings.kafka_bootstrap, settings.topic(BALANCE_CHANGES))
    problems: list[str] = []
    seqs: dict[str, list[int]] = {}
    sums: dict[str, Decimal] = {}
    last_after: dict[str, Decimal] = {}
    ids: set[str] = set()
    for _, value in ledger:
        entry = orjson.loads(value)
        customer = entry["customer_id"]
        if entry["entry_id"] in ids:
            problems.append(f"duplicate ledger entry {entry['entry_id']}")
        ids.add(entry["entry_id"])
        seqs.setdefault(customer, []).append(entry["seq"])
        if entry["bucket"] == "current":
            sums[customer] = sums.get(customer, Decimal(0)) + Decimal(str(entry["amount"]))
        last_after[customer] = Decimal(str(entry["balance_after"]))
    for customer, numbers in seqs.items():
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append(f"{customer}: ledger seq {numbers[:10]}... is not 1..n")
    final: dict[str, dict[str, Any]] = {}
    for _, value in changes:
        change = orjson.loads(value)
        final[change["customer_id"]] = change
    for customer, change in final.items():
        current = Decimal(str(change["current"]))
        if current != sums.get(customer, Decimal(0)):
            problems.append(f"{customer}: balance {current} != ledger sum {sums.get(customer)}")
        if change["seq"] != len(seqs.get(customer, [])):
            problems.append(f"{customer}: last balance change seq {change['seq']} != {len(seqs.get(customer, []))}")
    checked_states = 0
    for raw in run.states.values():
        state = decode_state(raw)
        change = final.get(state.customer_id)
        if change is not None and Decimal(str(change["current"])) != state.current:
            problems.append(f"{state.customer_id}: table balance {state.current} != {change['current']}")
        if state.seq != len(seqs.get(state.customer_id, [])):
            problems.append(f"{state.customer_id}: table seq {state.seq} != {len(seqs.get(state.customer_id, []))}")
        checked_states += 1
    return {"ledger_entries": len(ledger), "balance_changes": len(changes), "customers": len(final),
            "states_checked": checked_states, "problems": len(problems), "first_problems": problems[:10]}


# ---------------------------------------------------------------------------------------------------------
# Latency at a steady rate
# ---------------------------------------------------------------------------------------------------------
async def _serve_worker(settings_json: str) -> None:
    """Child process of :func:`latency`: run the worker, say "ready" and its engine processes' pids, stop when
    stdin closes."""
    import logging

    from loyalty_stream.stream.runtime import running_worker, tune_gc

    logging.basicConfig(level=logging.ERROR)  # Faust warns about timers overlapping whenever it is busy
    settings = Settings.model_validate_json(settings_json)
    redis = Redis.from_url(settings.redis_url)
    tune_gc(paced=settings.gc_interval > 0)
    try:
        async with running_worker(settings, workload.load_registry(), redis=redis, clock=frozen_clock) as worker:
            print("ready", *(worker.engine.pids if worker.engine else []), flush=True)
            await asyncio.to_thread(sys.stdin.read)
    finally:
        await redis.aclose()


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far, from /proc (None where there is no /proc)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cores(before: float | None, after: float | None, seconds: float) -> float | None:
    """CPU seconds per second of wall time between two `_cpu_seconds` readings."""
    return None if before is None or after is None or seconds <= 0 else round((after - before) / seconds, 2)


def _percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; None when it falls on an activity that never got its balance change."""
    index = min(len(sorted_values) - 1, max(0, round(share * (len(sorted_values) - 1))))
    value = sorted_values[index]
    return None if value == float("inf") else round(value, 1)


async def latency(cluster: Cluster, *, rate: int = 1000, seconds: float = 20.0, warmup: float = 3.0,
                  customers: int = 20_000, seed: int = 11, worker_command: Sequence[str] | None = None,
                  engine_processes: int = 0) -> Figures:
    """p50/p95/p99 publish -> balance-change at `rate` activities/s for `seconds` (after `warmup`), the
    worker with `engine_processes` (`Settings.engine_processes`).

    `worker_command` replaces the child that serves the worker (it gets the settings JSON as its last
    argument and must print "ready", then run until its stdin closes), e.g. to measure another version."""
    settings = cluster.settings(engine_processes=engine_processes)
    await create_catalogue(settings)
    prefix = settings.topic_prefix
    total = int(rate * (seconds + warmup))
    records = workload.generate(total, customers, seed=seed)
    messages = list(workload.messages(records, prefix))
    event_ids = [orjson.loads(value)["event_id"] for _, _, value in messages]

    command = list(worker_command or [sys.executable, "-m", "bench.broker_bench", "serve-worker"])
    child = await asyncio.create_subprocess_exec(
        *command, settings.model_dump_json(),
        cwd=workload.ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=LATENCY_COLLECT_WAIT_MS)
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, linger_ms=LATENCY_PUBLISH_LINGER_MS,
                                enable_idempotence=False, acks=1)
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    try:
        ready = (await asyncio.wait_for(child.stdout.readline(), 120)).split()
        if ready[:1] != [b"ready"]:
            raise RuntimeError("latency: the worker did not start")
        await consumer.start()
        await producer.start()
        tps = [TopicPartition(prefix + BALANCE_CHANGES, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)

        async def collect() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for batch_messages in batch.values():
                    for message in batch_messages:
                        cause = orjson.loads(message.value)["cause_event_id"]
                        arrived.setdefault(cause, now)

        collector = asyncio.create_task(collect())
        pids = {"worker": child.pid, "broker": cluster.broker_pid, "load_generator": os.getpid(),
                **{f"engine_{n}": int(pid) for n, pid in enumerate(ready[1:])}}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        index = 0
        while index < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while index < due:
                topic, key, value = messages[index]
                sent[event_ids[index]] = time.perf_counter()
                await producer.send(topic, value, key=key)
                index += 1
            await asyncio.sleep(0.001)
        offered = total / (time.perf_counter() - started)
        quiet_since, seen = time.perf_counter(), len(arrived)
        while time.perf_counter() - quiet_since < 2.0 and time.perf_counter() - started < seconds + warmup + 15:
            await asyncio.sleep(0.1)  # stragglers: until nothing new arrives for 2 s (at most 15 s more)
            if len(arrived) != seen:
                quiet_since, seen = time.perf_counter(), len(arrived)
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        elapsed = time.perf_counter() - started
        cores: dict[str, float | None] = {}
        for name, pid in pids.items():
            cores[name] = _cores(cpu_before[name], _cpu_seconds(pid), elapsed)
    finally:
        child.stdin.close()
        await producer.stop()
        await consumer.stop()
        try:
            await asyncio.wait_for(child.wait(), 30)
        except TimeoutError:
            child.kill()
            await child.wait()
    # Measured: every activity whose balance change arrived, and every purchase (a purchase always changes
    # the balance: it earns, at least promised points). A purchase whose change had not arrived by the end
    # counts as infinitely late, so an overloaded worker shows as such. Activities without a balance change
    # (a rejected redemption, an engagement worth 0) are not measured.
    purchases = {event_id for event_id, record in zip(event_ids, records, strict=True)
                 if record.topic == "transaction-add"}
    measured_ids = [i for i in event_ids[int(rate * warmup):] if i in arrived or i in purchases]
    values = sorted((arrived[i] - sent[i]) * 1000 if i in arrived else float("inf") for i in measured_ids)
    if not values:
        raise RuntimeError("latency: no balance change matched a published activity")
    finite = [v for v in values if v != float("inf")]
    windows: dict[int, list[float]] = {}
    for i in measured_ids:
        window = int((sent[i] - sent[measured_ids[0]]) / LATENCY_WINDOW_S)
        windows.setdefault(window, []).append((arrived[i] - sent[i]) * 1000 if i in arrived else float("inf"))
    return {
        "offered_per_s": round(offered),
        "activities": len(event_ids) - int(rate * warmup),
        "measured": len(values),
        "arrived": len(finite),
        "p50_ms": _percentile(values, 0.50),
        "p95_ms": _percentile(values, 0.95),
        "p99_ms": _percentile(values, 0.99),
        "max_ms": round(finite[-1], 1) if finite else None,
        "mean_ms": round(statistics.fmean(finite), 1) if finite else None,
        f"p99_ms_per_{LATENCY_WINDOW_S:g}_s": [_percentile(sorted(v), 0.99) for _, v in sorted(windows.items())],
        "cpu_cores": cores,  # CPU seconds per second of the run: who uses the two cores
    }


async def broker_fetch_cost(cluster: Cluster, *, batches: Sequence[int] = (1_000, 4_000, 10_000),
                            fetches: int = 200) -> Figures:
    """What one fetch costs the broker as a partition's history grows: a one-partition topic is filled with
    single-record batches (one produce request each, as a low-latency producer sends them) up to each count in
    `batches`, and at each count the last record is fetched `fetches` times.

    This is the broker, not the worker, and it explains the latency figures on the embedded broker: Tansu's
    memory store finds the batch holding an offset by listing every batch stored for the partition, so a fetch
    that returns data costs time in proportion to the partition's history (Kafka looks the offset up in an
    index). At a steady 1,000 activities/s each input and output partition gains about a hundred batches a
    second, and the worker's and the latency collector's fetches cost the broker more each second: its share
    of the cores and the p99 climb over a run (`p99_ms_per_5_s`) although the worker's own share does not."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"{cluster.settings().topic_prefix}fetch-cost"
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, linger_ms=0, enable_idempotence=False, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    broker_ms: list[float | None] = []
    wall_ms: list[float] = []
    stored = 0
    try:
        for count in sorted(batches):
            while stored < count:
                await producer.send_and_wait(topic, b"x" * 200)  # one request, so one stored batch, each
                stored += 1
            cpu_before, started = _cpu_seconds(cluster.broker_pid), time.perf_counter()
            for _ in range(fetches):
                consumer.seek(partition, stored - 1)
                if not await consumer.getmany(partition, timeout_ms=5000):
                    raise RuntimeError("broker_fetch_cost: a fetch of a stored record came back empty")
            wall_ms.append(round((time.perf_counter() - started) * 1000 / fetches, 3))
            cpu_after = _cpu_seconds(cluster.broker_pid)
            broker_ms.append(None if cpu_before is None or cpu_after is None
                             else round((cpu_after - cpu_before) * 1000 / fetches, 3))
    finally:
        await producer.stop()
        await consumer.stop()
    counts = sorted(batches)
    span = counts[-1] - counts[0]
    first, last = broker_ms[0], broker_ms[-1]
    return {
        "stored_batches": counts,
        "fetch_wall_ms": wall_ms,
        "fetch_broker_cpu_ms": broker_ms,  # None for a broker given by address (its CPU is not visible here)
        "broker_cpu_us_per_stored_batch": (None if first is None or last is None or span <= 0
                                           else round((last - first) * 1000 / span, 3)),
        "wall_us_per_stored_batch": None if span <= 0 else round((wall_ms[-1] - wall_ms[0]) * 1000 / span, 3),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-worker":
        asyncio.run(_serve_worker(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m bench   (this module's entry point only serves the latency worker)")
