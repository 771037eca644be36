"""The benchmark harness with a tiny workload: sane figures, and the worker's outputs checked end to end.

No timing is asserted (rates depend on the machine); `make bench` is where the figures come from."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import orjson
import pytest

from bench import broker_bench, workload
from bench.__main__ import main as bench_main
from tests.fixtures.cluster import REAL_KAFKA_OVERRIDES, Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def bench_cluster(cluster: Cluster, kafka_bootstrap: str, redis_url: str) -> broker_bench.Cluster:
    overrides = {} if cluster.kafka_is_tansu else dict(REAL_KAFKA_OVERRIDES)
    return broker_bench.Cluster(bootstrap=kafka_bootstrap, redis_url=redis_url, overrides=overrides)


async def test_harness_functions_give_sane_figures_and_correct_outputs(
    bench_cluster: broker_bench.Cluster, tmp_path: Path
) -> None:
    records = workload.generate(300, 150, seed=3)

    baseline = await broker_bench.baseline(bench_cluster, records)
    assert baseline["activities"] == 300 and baseline["outputs"] == 600
    assert baseline["activities_per_s"] > 0

    run = await broker_bench.end_to_end(bench_cluster, records, workload.load_registry(),
                                        data_dir=tmp_path / "faust", keep_states=True)
    figures = run.figures
    assert figures["activities"] == 300 and figures["activities_per_s"] > 0
    assert figures["ledger_entries"] > 300 and 0 < figures["balance_changes"] <= 300
    assert figures["gc_collect_ms"] is not None and figures["gc_collect_ms"] >= 0  # run as a worker: collector off
    assert gc.isenabled()  # and back on after the section
    check = await broker_bench.verify(run)
    assert check["problems"] == 0, check["first_problems"]
    assert check["ledger_entries"] == figures["ledger_entries"]
    assert check["states_checked"] == figures["customers"] > 0

    latency = await broker_bench.latency(bench_cluster, rate=50, seconds=2, warmup=1, customers=100)
    assert latency["measured"] > 0 and latency["arrived"] > 0
    assert latency["p50_ms"] is not None and 0 < latency["p50_ms"] <= latency["max_ms"]
    assert latency["p99_ms_per_5_s"] and all(p is not None for p in latency["p99_ms_per_5_s"])
    cores = latency["cpu_cores"]
    assert set(cores) == {"worker", "broker", "load_generator"}
    if Path("/proc/self/stat").exists():  # CPU shares are read from /proc
        assert cores["worker"] > 0 and cores["load_generator"] > 0
        assert (cores["broker"] is None) == (bench_cluster.broker_pid is None)

    cost = await broker_bench.broker_fetch_cost(bench_cluster, batches=(20, 60), fetches=5)
    assert cost["stored_batches"] == [20, 60]
    assert len(cost["fetch_wall_ms"]) == 2 and all(ms > 0 for ms in cost["fetch_wall_ms"])
    assert (cost["fetch_broker_cpu_ms"][0] is None) == (bench_cluster.broker_pid is None)


def test_make_bench_writes_the_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latest.json"
    assert bench_main(["--activities", "200", "--customers", "100", "--skip", "latency,broker,memory",
                       "--out", str(out)]) == 0
    results = orjson.loads(out.read_bytes())
    assert results["workload"]["activities"] == 200
    assert results["baseline"]["activities"] == results["end_to_end"]["activities"] == 200
    assert results["end_to_end_check"]["problems"] == 0
    runs = ("end_to_end", "end_to_end_engine_processes_1", "end_to_end_engine_processes_2")
    assert all(results[f"{run}_check"]["problems"] == 0 for run in runs)
    pids = {results[run]["worker_pid"] for run in runs}  # each worker in a fresh process of its own
    assert len(pids) == 3 and os.getpid() not in pids
    assert results["ratio"]["end_to_end_over_baseline"] > 0
    assert results["engine"]["activities_per_s"] > 0 and results["replay"]["activities_per_s"] > 0
    assert results["replay_parallel"]["same_ledger_as_one_process"] is True
    # the engine section and the replays each in a fresh process of their own
    assert len({results["engine"]["pid"], results["replay"]["pid"], os.getpid()}) == 3
    assert set(results["targets"]) == {"end_to_end_per_s", "ratio", "engine_per_s", "replay_per_s"}
    printed = capsys.readouterr().out
    assert "end_to_end" in printed and "activities_per_s" in printed
