"""`make bench`: every benchmark in one run on the embedded broker; a table on stdout and a JSON file.

    .venv/bin/python -m bench             # 100k activities over 50k customers (about 4 minutes on 2 cores)
    .venv/bin/python -m bench --quick     # 20k activities over 10k customers, shorter latency run
    .venv/bin/python -m bench --skip engine,memory --out /tmp/run.json

Sections (see `bench/broker_bench.py` and `bench/engine_bench.py` for what each one measures):

* baseline    raw aiokafka consume -> orjson -> produce 2, same records and topic layout: the ceiling
* end_to_end  the real worker (Redis due index on), pre-produced records, first processed -> last output
* engine_processes  the same with the worker's engine in 1 and in 2 processes of its own
              (`Settings.engine_processes`; `--engine-processes` sets the counts)
* ratio       end_to_end (and each engine_processes run) / baseline, from this run
* latency     publish -> balance change at a steady offered rate (1,000/s), worker in a child process
              (and again with the most engine processes of `--engine-processes`);
              `latency_at_250`: the same at 250/s, below the worker's capacity today
* broker      what one fetch costs the broker as a partition's history grows (the embedded broker's fetch
              lists every stored batch of the partition: why the latency p99 climbs over a run)
* engine / replay / memory   the pure engine, the offline replay (one process, and customer shards over every
              CPU: replay_parallel) and the state store (bench.engine_bench), in a fresh process of their own
* memory_rocksdb  the same states in a RocksDB table store as Faust lays it out: resident memory, disk, gets/s
              (bench.store_bench; part of the memory section, needs the rocksdb extra)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import broker_bench, engine_bench, workload
from loyalty_stream import ENGINE_FORM

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
TARGETS = {"end_to_end_per_s": 10_000, "ratio": 0.3, "ratio_stretch": 0.5, "latency_p99_ms": 50.0,
           "engine_per_s": 50_000, "replay_per_s": 50_000}
ENGINE_GROUPS: tuple[frozenset[str], ...] = (frozenset({"engine"}), frozenset({"replay", "memory"}))
"""The sections `engine_bench.sections` runs, by the fresh process each group runs in (`run_engine`)."""
ENGINE_SECTIONS: frozenset[str] = frozenset().union(*ENGINE_GROUPS)
SECTIONS = ("baseline", "end_to_end", "engine_processes", "latency", "broker", "engine", "replay", "memory")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "engine": ENGINE_FORM, "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def fresh_process() -> ProcessPoolExecutor:
    """One process, spawned (not forked), for a section that must not run in this process (see `run_engine`
    and `run_broker`): it holds only what the section makes."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


async def run_broker(args: argparse.Namespace, records: list[Any], results: dict[str, Any]) -> None:
    """The sections that need a broker, each on a fresh embedded one (and Redis) of its own: Tansu keeps every
    topic in memory, and a broker holding the earlier sections' gigabytes spent about 1.8 times the CPU per
    record of a fresh one, which would have charged the later sections (and not the baseline) for the order
    they run in. Each end-to-end worker likewise runs in a fresh process (`broker_bench.end_to_end_section`)."""
    if "baseline" not in args.skip:
        print("baseline: raw aiokafka ...", flush=True)
        with broker_bench.Cluster() as cluster:
            results["baseline"] = await broker_bench.baseline(cluster, records)
    runs = [] if "end_to_end" in args.skip else [("end_to_end", 0)]
    if "engine_processes" not in args.skip:
        runs += [(f"end_to_end_engine_processes_{count}", count) for count in args.engine_processes]
    for name, count in runs:  # each worker in a fresh process of its own (`broker_bench.end_to_end_section`)
        print(f"end to end: the worker{f' with {count} engine process(es)' if count else ''} ...", flush=True)
        with broker_bench.Cluster() as cluster, fresh_process() as pool:
            section = pool.submit(broker_bench.end_to_end_section, cluster.bootstrap, cluster.redis_url,
                                  cluster.broker_pid, len(records), results["workload"]["customers"], args.seed,
                                  count, args.verify)
            run = await asyncio.wrap_future(section)
        results[name] = run["figures"]
        if "check" in run:
            results[f"{name}_check"] = run["check"]
    if "baseline" in results:
        ratio = {f"{name}_over_baseline": round(results[name]["activities_per_s"]
                                                / results["baseline"]["activities_per_s"], 3)
                 for name, _ in runs if "activities_per_s" in results[name]}
        if ratio:
            results["ratio"] = ratio
    if "latency" not in args.skip:
        latency_runs = [("latency", args.latency_rate, args.latency_seconds, 0)]
        if args.engine_processes and "engine_processes" not in args.skip:
            count = max(args.engine_processes)
            latency_runs.append((f"latency_engine_processes_{count}", args.latency_rate, args.latency_seconds,
                                 count))
        # below the worker's capacity: what the path itself costs
        latency_runs += [(f"latency_at_{rate}", rate, args.latency_seconds / 2, 0) for rate in args.also_latency_at]
        for name, rate, seconds, count in latency_runs:
            with_engines = f", {count} engine processes" if count else ""
            print(f"latency: {rate}/s for {seconds:g} s{with_engines} ...", flush=True)
            with broker_bench.Cluster() as cluster:
                results[name] = await broker_bench.latency(cluster, rate=rate, seconds=seconds,
                                                           engine_processes=count)
    if "broker" not in args.skip:
        print("broker: fetch cost as a partition's history grows ...", flush=True)
        with broker_bench.Cluster() as cluster:
            results["broker_fetch_cost"] = await broker_bench.broker_fetch_cost(cluster)


def run_engine(args: argparse.Namespace, records: list[Any], results: dict[str, Any]) -> None:
    """The engine section, then the replay and memory sections, each group in a fresh process of its own
    (spawned, not forked): after the broker sections this process's heap is large and fragmented, which slowed
    the offline replay by up to a half, and after the engine section (its activities and states freed, its heap
    left behind) the parallel replay's forked shards ran 13-15 % slower (bench/FINDINGS.md, session 19);
    `loyalty-stream replay` runs in a process that holds only the records, and so do these sections. Each
    child generates the same records from the same arguments (the workload is deterministic)."""
    for group in ENGINE_GROUPS:
        skip = frozenset(args.skip) | (ENGINE_SECTIONS - group)
        if skip >= ENGINE_SECTIONS:
            continue
        with fresh_process() as pool:
            results.update(pool.submit(engine_bench.sections, len(records), results["workload"]["customers"],
                                       args.seed, skip).result())
    if "end_to_end" in results and "replay" in results:
        results.setdefault("ratio", {})["end_to_end_over_replay"] = round(
            results["end_to_end"]["activities_per_s"] / results["replay"]["activities_per_s"], 3)


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = {name: figures["activities_per_s"] for name, figures in results.items()
            if name.startswith("end_to_end") and isinstance(figures, dict) and "activities_per_s" in figures}
    if runs:  # one worker, in its best configuration of this run (engine processes or not)
        best = max(runs, key=runs.__getitem__)
        out["end_to_end_per_s"] = {"target": TARGETS["end_to_end_per_s"], "got": runs[best], "with": best,
                                   "met": runs[best] >= TARGETS["end_to_end_per_s"]}
        ratio = results.get("ratio", {}).get(f"{best}_over_baseline")
        if ratio is not None:
            out["ratio"] = {"target": TARGETS["ratio"], "stretch": TARGETS["ratio_stretch"], "got": ratio,
                            "with": best, "met": ratio >= TARGETS["ratio"]}
    if "latency" in results:
        p99 = results["latency"]["p99_ms"]
        out["latency_p99_ms"] = {"target": TARGETS["latency_p99_ms"], "got": p99,
                                 "met": p99 is not None and p99 <= TARGETS["latency_p99_ms"]}
    if "engine" in results:
        rate = results["engine"]["activities_per_s"]
        out["engine_per_s"] = {"target": TARGETS["engine_per_s"], "got": rate, "on": "one core",
                               "met": rate >= TARGETS["engine_per_s"]}
    if "replay" in results:  # what `loyalty-stream replay` gives: customer shards over every CPU
        parallel = results.get("replay_parallel", {})
        rate = parallel.get("activities_per_s", results["replay"]["activities_per_s"])
        out["replay_per_s"] = {"target": TARGETS["replay_per_s"], "got": rate,
                               "on": f"{parallel.get('jobs', 1)} process(es)", "met": rate >= TARGETS["replay_per_s"]}
    return out


def table(results: dict[str, Any]) -> str:
    lines = []
    for section, figures in results.items():
        if not isinstance(figures, dict):
            continue
        lines.append(section)
        for name, value in figures.items():
            if isinstance(value, dict):
                shown = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, bool) or value is None:
                shown = str(value)
            elif isinstance(value, int):
                shown = f"{value:,}"
            elif isinstance(value, float):
                shown = f"{value:,.3f}".rstrip("0").rstrip(".")
            else:
                shown = str(value)
            lines.append(f"  {name:<30} {shown:>16}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20k activities over 10k customers, 10 s latency")
    parser.add_argument("--activities", type=int)
    parser.add_argument("--customers", type=int)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument("--also-latency-at", default="250",
                        help="comma-separated further offered rates for a shorter latency run ('' for none)")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip reading back the worker's outputs to check them")
    parser.add_argument("--engine-processes", default="1,2",
                        help="engine process counts of the engine_processes section (comma-separated)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    args.also_latency_at = [int(part) for part in args.also_latency_at.split(",") if part.strip()]
    args.engine_processes = [int(part) for part in args.engine_processes.split(",") if part.strip()]
    unknown = args.skip - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    activities = args.activities or (20_000 if args.quick else 100_000)
    customers = args.customers or max(1, activities // 2)
    if args.latency_seconds is None:
        args.latency_seconds = 10.0 if args.quick else 20.0
    logging.basicConfig(level=logging.ERROR)

    started = time.perf_counter()
    results: dict[str, Any] = {
        "run": {"at": datetime.now(UTC).isoformat(timespec="seconds"), **machine(), "broker": "embedded Tansu",
                "partitions": broker_bench.PARTITIONS},
        "workload": {"activities": activities, "customers": customers, "seed": args.seed},
    }
    records = workload.generate(activities, customers, seed=args.seed)
    results["workload"].update(workload.kinds(records))
    asyncio.run(run_broker(args, records, results))
    run_engine(args, records, results)
    results["targets"] = verdicts(results)
    results["run"]["seconds"] = round(time.perf_counter() - started, 1)

    print()
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
