"""Parallel replay: customer shards in forked processes, merged back into exactly the sequential result.

A customer's state depends only on that customer's own activities, in order, so the ordered records split
by customer (the Kafka key, which is the customer id; the payload's `customer_id` when a record has no key)
replay independently. Each shard is a subsequence of the ordered records, so every
customer sees its activities in the same order as in a sequential replay; each shard reports which ledger
entries each of its records produced, and the parent interleaves them back into record order. The merged
ledger, dead-letter count and final states are those of `replay(..., jobs=1)` (a test compares them).

The shards run in processes started with `fork`: they inherit the records and programs instead of
receiving them pickled. Where `fork` is not available, or the input is too small to be worth a process,
the replay runs in this process.
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, cast

import orjson

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.replay.runner import Record, ReplayResult, replay_ordered

MIN_RECORDS_PER_JOB = 5_000
"""Below this many records per process, starting processes costs more than it saves."""
PROGRESS_EVERY_S = 0.5


def available_jobs() -> int:
    """The CPUs this process may run on: the default for `loyalty-stream replay --jobs`."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def jobs_for(records: int, jobs: int) -> int:
    """How many processes to use for `records` when `jobs` are asked for (1: replay in this process)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(jobs, records // MIN_RECORDS_PER_JOB))


def customer_of(record: Record) -> bytes:
    """The record's customer: its Kafka key, else the payload's `customer_id` (b"" when it has neither)."""
    if record.key is not None:
        return record.key
    try:
        customer = orjson.loads(record.value or b"{}").get("customer_id")
    except (orjson.JSONDecodeError, AttributeError):
        customer = None
    return str(customer).encode() if customer is not None else b""


def assign_shards(ordered: Sequence[Record], shards: int) -> list[int]:
    """Each record's shard. Customers are spread so the shards get about as many records each (largest
    customers first, each to the shard with the fewest records so far; ties by customer id, so the split is
    the same in every run): a few very active customers would otherwise unbalance a hash split."""
    customers = [customer_of(record) for record in ordered]
    counts = Counter(customers)
    loads = [(0, shard) for shard in range(shards)]
    heapq.heapify(loads)
    shard_of: dict[bytes, int] = {}
    for customer, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        load, shard = heapq.heappop(loads)
        shard_of[customer] = shard
        heapq.heappush(loads, (load + count, shard))
    return [shard_of[customer] for customer in customers]


def replay_sharded(ordered: Sequence[Record], registry: ProgramRegistry, jobs: int, *,
                   store: Literal["objects", "bytes"], state_cache: int,
                   progress: Callable[[int], None] | None, keep_states: bool = True) -> ReplayResult:
    """`replay` of `ordered` over `jobs` customer shards (fewer for small inputs; see the module docstring).
    Final states come back encoded (`ReplayResult.encoded`) unless `keep_states` is False."""
    jobs = jobs_for(len(ordered), jobs)
    if jobs <= 1:
        return replay_ordered(list(ordered), registry, ReplayResult(), store=store, state_cache=state_cache,
                              progress=progress)
    started = time.perf_counter()
    owners = assign_shards(ordered, jobs)
    context = multiprocessing.get_context("fork")
    done = context.Array("q", jobs, lock=False)  # records each shard has replayed, for progress
    workers: list[tuple[Any, Connection]] = []
    # What the shards inherit (records, programs, whatever else this process holds) goes to the collector's
    # permanent generation first, so their collections neither walk it nor write to its pages (which would
    # copy them, one by one, into each shard). A caller that froze objects itself keeps them frozen.
    frozen_by_caller = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        _start(ordered, owners, jobs, registry, store, state_cache, keep_states, done, context, workers)
    finally:
        if not frozen_by_caller:
            gc.unfreeze()
    try:
        outcomes = _collect_shards(workers, done, progress)
    finally:
        for process, receive in workers:
            receive.close()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    result = _merge(owners, outcomes)
    result.seconds = time.perf_counter() - started
    return result


def _start(ordered: Sequence[Record], owners: list[int], jobs: int, registry: ProgramRegistry,
           store: Literal["objects", "bytes"], state_cache: int, keep_states: bool, done: Any, context: Any,
           workers: list[tuple[Any, Connection]]) -> None:
    """Start one process per shard, each with its records (in order) and the write end of its pipe."""
    for shard in range(jobs):
        receive, send = context.Pipe(duplex=False)
        mine = [record for record, owner in zip(ordered, owners, strict=True) if owner == shard]
        process = context.Process(
            target=_run_shard, name=f"replay-shard-{shard}", daemon=True,
            args=(mine, registry, store, state_cache, keep_states, done, shard, send),
        )
        workers.append((process, receive))
        process.start()
        send.close()


def _run_shard(records: list[Record], registry: ProgramRegistry, store: Literal["objects", "bytes"],
               state_cache: int, keep_states: bool, done: Any, shard: int, send: Connection) -> None:
    """A shard process: replay its records, sending its ledger as it grows (the parent takes each piece in
    while the shards work on, instead of two shards' hundreds of megabytes, one after the other, at the end),
    then what else the parent merges."""
    gc.disable()  # for good: the shard leaves with os._exit, so its heap needs no collection, not even at the end
    result = ReplayResult(ledger_counts=[])
    sent = 0

    outbox: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()

    def post() -> None:
        # A thread writes to the pipe, so the replay goes on while the parent is busy with the other shards.
        while (piece := outbox.get()) is not None:
            send.send(("ledger", piece[0]))
            send.send_bytes(piece[1])

    poster = threading.Thread(target=post, name="ledger-poster", daemon=True)
    poster.start()

    def send_ledger() -> None:
        # Newline-joined, not pickled as thousands of small objects: a JSON text never holds a raw newline.
        nonlocal sent
        entries = result.ledger
        if entries:
            outbox.put((len(entries), b"\n".join(entries)))
            sent += len(entries)
            entries.clear()

    def progress(index: int) -> None:
        done[shard] = index
        send_ledger()

    try:
        try:
            result = replay_ordered(records, registry, result, store=store, state_cache=state_cache,
                                    progress=progress, final_collection=False)
            done[shard] = result.activities
            send_ledger()
        finally:  # the pipe is this thread's again once the poster has sent what it holds
            outbox.put(None)
            poster.join()
        states = result.states if keep_states else {}
        send.send(("ok", result.activities, result.dead_letters, sent, result.ledger_counts, states))
    except BaseException as exc:  # the parent says which shard failed and why
        send.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        send.close()
    # Done: leave without freeing what the shard holds (every customer's state, the ledger) object by object,
    # which took over a second at 50k activities per shard while the parent waited to join the process.
    os._exit(0)


ShardOutcome = tuple[int, int, list[bytes], list[int], dict[bytes, bytes]]


def _collect_shards(workers: list[tuple[Any, Connection]], done: Any,
                    progress: Callable[[int], None] | None) -> list[ShardOutcome]:
    """Each shard's outcome, in shard order, its ledger taken in piece by piece; reports progress while the
    shards run."""
    outcomes: dict[int, ShardOutcome] = {}
    ledgers: list[list[bytes]] = [[] for _ in workers]
    waiting = {receive: shard for shard, (_, receive) in enumerate(workers)}
    while waiting:
        for ready in wait(list(waiting), timeout=PROGRESS_EVERY_S):
            receive = cast(Connection, ready)
            shard = waiting[receive]
            try:
                message: tuple[Any, ...] = receive.recv()
                if message[0] == "ledger":
                    joined = receive.recv_bytes()
            except EOFError:
                process = workers[shard][0]
                process.join(timeout=5)  # its pipe closes just before it exits
                raise RuntimeError(f"replay shard {shard} ended without a result "
                                   f"(exit code {process.exitcode})") from None
            if message[0] == "ledger":
                entries = joined.split(b"\n")
                if len(entries) != message[1]:
                    raise RuntimeError(f"replay shard {shard} sent {len(entries)} ledger entries, "
                                       f"not {message[1]}")
                ledgers[shard] += entries
                continue
            del waiting[receive]
            if message[0] != "ok":
                raise RuntimeError(f"replay shard {shard} failed: {message[1]}")
            _, activities, dead_letters, made, counts, states = message
            if len(ledgers[shard]) != made:
                raise RuntimeError(f"replay shard {shard} sent {len(ledgers[shard])} ledger entries of {made}")
            outcomes[shard] = (activities, dead_letters, ledgers[shard], counts, states)
        if progress is not None:
            progress(sum(done))
    return [outcomes[shard] for shard in range(len(workers))]


def _merge(owners: list[int], outcomes: list[ShardOutcome]) -> ReplayResult:
    """The shards' results as one, the ledger in record order (each record's entries in the order it made
    them)."""
    result = ReplayResult()
    ledger = result.ledger
    taken = [0] * len(outcomes)  # ledger entries of each shard merged so far
    position = [0] * len(outcomes)  # records of each shard merged so far
    for owner in owners:
        _, _, entries, counts, _ = outcomes[owner]
        start = taken[owner]
        end = taken[owner] = start + counts[position[owner]]
        ledger.extend(entries[start:end])
        position[owner] += 1
    for activities, dead_letters, _, _, states in outcomes:
        result.activities += activities
        result.dead_letters += dead_letters
        result.encoded.update(states)
    return result
