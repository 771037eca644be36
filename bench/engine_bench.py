"""Engine, replay and state-memory benchmarks over the deterministic workload (`bench.workload`).

Run alone: `.venv/bin/python -m bench.engine_bench [--activities N] [--customers M] [--json]` prints a table.
Each function returns a dict of figures, so `make bench` can merge them with the broker benchmarks.

* `engine`: the pure engine on one core: activities decoded up front, `apply(..., in_place=True)`, customer
  states kept as objects in a dict. Measures the rules engine alone (no JSON either side).
* `replay`: `replay.runner.replay` over the encoded records: activity decode, engine and output encode per
  record; customer states stay objects between records (the replay's object store) and are encoded once at
  the end (`final_states_encode_cpu_seconds`, not in the rate).
* `replay_parallel`: the same replay over customer shards in one process per CPU (`replay.shards`), as
  `loyalty-stream replay` runs it: wall-clock activities/s, checked to give the one-process ledger.
* `memory`: the memory store after the replay (customer states as orjson bytes in a dict), measured with
  tracemalloc and scaled to 100k customers; also the same states as decoded objects.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

import orjson

from bench import store_bench, workload
from bench.tuning import worker_gc
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import SourceRef
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.replay.runner import Record, ReplayResult, replay
from loyalty_stream.replay.shards import available_jobs, jobs_for
from loyalty_stream.settings import Settings
from loyalty_stream.stream.processor import decode_state

Figures = dict[str, Any]
"""Benchmark figures by name. Rates are per second of CPU time of this process (one core), so other load on
the machine disturbs them less than wall-clock rates would."""


def decode_records(records: Sequence[Record]) -> list[tuple[Envelope, SourceRef]]:
    """The activities and where they were read, decoded once (outside any timing)."""
    decoded = []
    for record in records:
        activity: Envelope = activity_adapter.validate_json(record.value or b"")
        source = SourceRef.model_construct(topic=record.topic, partition=record.partition, offset=record.offset)
        decoded.append((activity, source))
    return decoded


def engine(records: Sequence[Record], registry: ProgramRegistry) -> Figures:
    """Pure engine activities/s: pre-decoded activities, in-place apply, states as objects in a dict."""
    decoded = decode_records(records)
    programs = {pid: registry.get(pid) for pid in registry.ids()}
    states: dict[tuple[str, str], CustomerState] = {}
    entries = 0
    with worker_gc():  # as in a worker; it also freezes the pre-decoded input, which is not part of the work
        started, cpu = time.perf_counter(), time.process_time()
        for activity, source in decoded:
            key = (activity.program_id, activity.customer_id)
            program = programs[activity.program_id]
            assert program is not None
            outcome = apply(states.get(key), activity, program, source, in_place=True)
            states[key] = outcome.state
            entries += len(outcome.ledger)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    lots = [len(state.lots) for state in states.values()]
    return {
        "activities": len(decoded),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "activities_per_s": round(len(decoded) / cpu),
        "ledger_entries": entries,
        "customers": len(states),
        "lots_mean": round(sum(lots) / len(lots), 1),
        "lots_max": max(lots),
        "pid": os.getpid(),  # `bench.__main__` runs it in a fresh process, apart from the replay's
    }


def replay_figures(records: Sequence[Record], registry: ProgramRegistry) -> tuple[Figures, ReplayResult]:
    """Offline replay activities/s over the encoded records (one process); also returns its result."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    result = replay(records, registry)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    encoding = time.process_time()
    sizes = [len(value) for value in result.states.values()]  # the final states, encoded once, at the end
    encoding = time.process_time() - encoding
    figures = {
        "activities": result.activities,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "activities_per_s": round(result.activities / cpu),
        "ledger_entries": len(result.ledger),
        "dead_letters": result.dead_letters,
        "final_states_encode_cpu_seconds": round(encoding, 3),
        "state_bytes_mean": round(sum(sizes) / len(sizes)),
        "state_bytes_max": max(sizes),
        "pid": os.getpid(),
    }
    return figures, result


def parallel_replay(records: Sequence[Record], registry: ProgramRegistry, jobs: int | None = None
                    ) -> tuple[ReplayResult, float, int]:
    """The replay in customer shards over `jobs` processes (default: one per CPU), final states not kept, as
    `loyalty-stream replay` does: (result, wall-clock seconds from the first record to the merged ledger, jobs).

    Run it before the one-process replay: the shards are forked, and a parent that already holds that replay's
    states and ledger (gigabytes of objects) makes them pay for copying the pages they share with it, which
    `loyalty-stream replay`, a process holding only the records, does not."""
    jobs = jobs or available_jobs()
    gc.collect()
    started = time.perf_counter()
    result = replay(records, registry, jobs=jobs, keep_states=False)
    return result, time.perf_counter() - started, jobs_for(len(records), jobs)


def parallel_replay_figures(parallel: tuple[ReplayResult, float, int], sequential: ReplayResult) -> Figures:
    """`parallel_replay`'s figures: activities/s, the speed-up over the one-process replay, and whether the
    ledger is that replay's."""
    result, wall, jobs = parallel
    return {
        "jobs": jobs,
        "seconds": round(wall, 3),
        "activities_per_s": round(result.activities / wall),
        "speedup_over_one_process_wall": round(sequential.seconds / wall, 2),
        "same_ledger_as_one_process": result.ledger == sequential.ledger,
    }


def memory(states: dict[bytes, bytes]) -> Figures:
    """Memory of the store (state bytes in a dict) and of the same states decoded, per 100k customers."""
    customers = len(states)
    scale = 100_000 / customers
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = {bytes(bytearray(key)): bytes(bytearray(value)) for key, value in states.items()}
        as_bytes = tracemalloc.get_traced_memory()[0] - before
        before = tracemalloc.get_traced_memory()[0]
        objects = {key: decode_state(value) for key, value in store.items()}
        as_objects = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del store, objects
    return {
        "customers": customers,
        "bytes_store_mb_per_100k": round(as_bytes * scale / 2**20, 1),
        "object_store_mb_per_100k": round(as_objects * scale / 2**20, 1),
        "state_json_bytes_total_mb": round(sum(len(v) for v in states.values()) / 2**20, 1),
    }


def run(activities: int = 100_000, customers: int = 50_000, seed: int = 7, days: float = 120,
        with_memory: bool = True) -> dict[str, Figures]:
    """Every section of this module (`sections`), after the workload's figures."""
    kinds = workload.kinds(workload.generate(activities, customers, seed=seed, days=days))
    return {"workload": {"activities": activities, "customers": customers, "seed": seed, "days": days, **kinds},
            **sections(activities, customers, seed, frozenset() if with_memory else frozenset({"memory"}), days)}


def sections(activities: int, customers: int, seed: int, skip: frozenset[str], days: float = 120
             ) -> dict[str, Any]:
    """The engine, replay, replay_parallel, memory and memory_rocksdb sections of `make bench` not in `skip`, over
    `workload.generate(activities, customers, seed=seed)` (`bench.__main__` runs the engine section and the others
    each in a fresh process: `run_engine`)."""
    records = workload.generate(activities, customers, seed=seed, days=days)
    registry = workload.load_registry()
    results: dict[str, Any] = {}
    if "engine" not in skip:
        print("engine: pure apply ...", flush=True)
        results["engine"] = engine(records, registry)
    if "replay" not in skip or "memory" not in skip:
        parallel = None
        if "replay" not in skip:  # first, in a process that holds no replay yet (`parallel_replay`)
            print("replay: customer shards in parallel ...", flush=True)
            parallel = parallel_replay(records, registry)
        print("replay: the record processor offline ...", flush=True)
        replay, sequential = replay_figures(records, registry)
        states = sequential.states
        if parallel is not None:
            results["replay"] = replay
            results["replay_parallel"] = parallel_replay_figures(parallel, sequential)
            del parallel
        if "memory" not in skip:
            print("memory: the state store ...", flush=True)
            results["memory"] = memory(states)
            print("memory: the same states in RocksDB ...", flush=True)
            try:
                cache = Settings().rocksdb_block_cache_mb * 2**20  # what the worker configures (LOYALTY_ROCKSDB_*)
                results["memory_rocksdb"] = store_bench.rocksdb_memory(states, block_cache_size=cache)
            except (ImportError, RuntimeError) as exc:  # the rocksdb extra is not installed
                results["memory_rocksdb"] = {"skipped": str(exc)}
    return results


def _table(results: dict[str, Figures]) -> str:
    lines = []
    for section, figures in results.items():
        lines.append(f"{section}")
        for name, value in figures.items():
            shown = f"{value:,}" if isinstance(value, int) else str(value)
            lines.append(f"  {name:<28} {shown:>14}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=float, default=120)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    results = run(args.activities, args.customers, args.seed, args.days, not args.no_memory)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
