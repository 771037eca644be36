"""The benchmark workload is deterministic and realistic, and the optimised engine and processor give exactly
the outputs the reference engine gave on it (the hashes were taken with the engine before the performance work:
every output record of every topic, byte for byte, and every stored state)."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bench import engine_bench, workload
from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.program.loader import ProgramRegistry, parse_program
from loyalty_stream.replay.runner import Record, replay
from loyalty_stream.stream.processor import TOPIC_ACTIVITIES, TOPIC_OF_ACTIVITY, ActivityProcessor

from .conftest import process_all

ROOT = Path(__file__).resolve().parents[2]
FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)

REFERENCE = {
    "bench": ("programs/examples/bench.yaml",
              "de2d253a683357b3d92c9a56b09d527ef1225b22a0d078b936c45ac04a7b0ed6"),
    "earning": ("programs/examples/earning.yaml",
                "ff11db1386f97e97172f5d84ac9c3679edc809a54c24d0d47f30c4a31abc740d"),
    "default": ("programs/default.yaml",
                "84ad9e04de80e68248ac887a41362cad3a826a41278e1f65b086798ada8aad66"),
}


def _program_without_retention(path: str) -> Any:
    """The program as the reference engine knew it: retention windows did not exist."""
    data = yaml.safe_load((ROOT / path).read_text())
    data.pop("retention", None)
    return parse_program(data)


def _run(records: list[Record], registry: ProgramRegistry, state_cache: int = 0) -> str:
    processor = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=state_cache)
    store: dict[bytes, bytes] = {}
    digest = hashlib.sha256()
    for processed in process_all(processor, records, store):
        for topic, value in processed.outputs:
            digest.update(topic.encode() + b"\0" + value + b"\n")
    for key in sorted(store):
        digest.update(key + b"\0" + store[key] + b"\n")
    return digest.hexdigest()


def test_same_seed_same_bytes_and_another_seed_differs() -> None:
    first = workload.generate(2000, 500, seed=3)
    again = workload.generate(2000, 500, seed=3)
    other = workload.generate(2000, 500, seed=4)
    assert first == again
    assert [r.value for r in first] != [r.value for r in other]


def test_the_mix_the_keys_and_the_topics() -> None:
    records = workload.generate(5000, 1000, seed=5)
    assert len(records) == 5000
    kinds = Counter(orjson.loads(r.value or b"")["type"] for r in records)
    share = {kind: count / len(records) for kind, count in kinds.items()}
    assert 0.65 < share["TransactionAdd"] < 0.75
    for kind in ("Engagement", "PointsRedemption"):
        assert 0.08 < share[kind] < 0.12
    for kind in ("TransactionReturn", "Registration"):
        assert 0.03 < share[kind] < 0.07
    times = []
    for record in records:
        activity = activity_adapter.validate_json(record.value or b"")
        assert record.key == activity.customer_id.encode()
        assert record.topic in TOPIC_ACTIVITIES and record.topic == TOPIC_OF_ACTIVITY[type(activity).__name__]
        times.append(activity.event_time)
    assert times == sorted(times)
    assert [r.timestamp for r in records] == sorted(r.timestamp for r in records)
    assert (times[-1] - times[0]).days >= 100
    purchase = orjson.loads(next(r.value for r in records if r.topic == "transaction-add") or b"")
    assert len(purchase["payload"]["line_items"]) == 3


def test_returns_name_an_earlier_bill_of_the_same_customer() -> None:
    bills: dict[str, str] = {}
    for record in workload.generate(3000, 600, seed=9):
        message = orjson.loads(record.value or b"")
        if message["type"] == "TransactionAdd":
            bills[message["payload"]["bill_number"]] = message["customer_id"]
        elif message["type"] == "TransactionReturn":
            assert bills[message["payload"]["bill_number"]] == message["customer_id"]


def test_messages_for_producers() -> None:
    records = workload.generate(50, 20, seed=1)
    sent = list(workload.messages(records, prefix="loyalty."))
    assert sent == [("loyalty." + r.topic, r.key, r.value) for r in records]


@pytest.mark.parametrize("program_id", sorted(REFERENCE))
def test_outputs_match_the_reference_engine(program_id: str) -> None:
    path, expected = REFERENCE[program_id]
    registry = ProgramRegistry([_program_without_retention(path)])
    records = workload.generate(1500, 300, program_id=program_id, seed=11, days=200)
    assert _run(records, registry) == expected
    assert _run(records, registry, state_cache=50) == expected  # cached states, evicted and reused


def test_the_replay_gives_the_same_ledger_and_states_from_objects_cached_or_plain_bytes() -> None:
    registry = workload.load_registry()
    records = workload.generate(1200, 200, seed=2, days=150)
    objects = replay(records, registry)
    cached = replay(records, registry, store="bytes")
    plain = replay(records, registry, store="bytes", state_cache=0)
    assert objects.ledger == cached.ledger == plain.ledger
    assert objects.states == cached.states == plain.states
    assert objects.dead_letters == cached.dead_letters == plain.dead_letters == 0


def test_the_benchmarks_run_and_report_figures() -> None:
    results = engine_bench.run(activities=300, customers=100, days=60)
    assert results["engine"]["activities"] == results["replay"]["activities"] == 300
    assert results["engine"]["ledger_entries"] == results["replay"]["ledger_entries"] > 0
    assert results["engine"]["activities_per_s"] > 0 and results["replay"]["activities_per_s"] > 0
    assert results["memory"]["bytes_store_mb_per_100k"] > 0
    assert results["replay_parallel"]["same_ledger_as_one_process"] is True
    assert "engine" in engine_bench._table(results)
