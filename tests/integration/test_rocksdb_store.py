"""The worker on Faust's RocksDB store (``LOYALTY_STORE=rocksdb://``): states land on disk, and a restart with
the same app id and data directory resumes from them without crediting anything twice.

A clean stop (drain, commit) and then a new worker in the same process, as a rolling restart does: the second
worker opens the same RocksDB files (Faust's store must have released their locks), seeks the changelog past
the offsets the first one persisted, and carries on from the cumulative balances.
"""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from loyalty_stream.settings import Settings
from loyalty_stream.stream.processor import decode_state, state_key
from loyalty_stream.stream.transport import probe_end_offsets
from loyalty_stream.stream.worker import CUSTOMER_TABLE, LoyaltyWorker
from tests.fixtures.cluster import consume_until

from .harness import activity, crash_without_committing, dec, live_worker, program

pytestmark = pytest.mark.integration

rocksdict = pytest.importorskip("rocksdict", reason="the rocksdb extra (rocksdict) is not installed")

PROGRAM = program(
    id="p", rounding={"decimals": 0},
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
    rule_sets={"TransactionAdd": [
        {"name": "pct", "rules": [{"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]},
    ]},
)
CUSTOMERS = ("ana", "ben", "cai", "dee", "eve", "fay")
AMOUNTS = (100, 200, 300)  # 10 + 20 + 30 points each


def purchase(event_id: str, customer: str, amount: int, minute: int) -> dict[str, Any]:
    return activity("TransactionAdd", event_id, customer, f"2026-05-04T10:{minute:02d}:00Z",
                    bill_number=f"B-{event_id}", amount=str(amount))


def stored_balances(worker: LoyaltyWorker) -> dict[str, Decimal]:
    found = {}
    for customer in CUSTOMERS:
        raw = worker.customers.data.get(state_key("p", customer))
        if raw is not None:
            found[customer] = decode_state(raw).current
    return found


def read_db_files(table_dir: Path) -> tuple[dict[bytes, bytes], dict[int, int]]:
    """Every customer state and persisted changelog offset in the table's RocksDB files, opened read-only."""
    states: dict[bytes, bytes] = {}
    offsets: dict[int, int] = {}
    for path in sorted(table_dir.glob(f"{CUSTOMER_TABLE}-*.db")):
        partition = int(path.name.removesuffix(".db").rsplit("-", 1)[1])
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            for key, value in db.items():
                if key == b"__faust\0offset__":
                    offsets[partition] = int(value)
                else:
                    states[key] = value
        finally:
            db.close()
    return states, offsets


async def test_rocksdb_store_keeps_state_across_a_restart(loyalty_settings: Settings,
                                                          catalogue_topics: dict[str, str]) -> None:
    settings = loyalty_settings.model_copy(update={"store": "rocksdb://", "rocksdb_block_cache_mb": 8})
    first_run = [purchase(f"{customer}-{n}", customer, amount, n)
                 for n, amount in enumerate(AMOUNTS) for customer in CUSTOMERS]

    async with live_worker(settings, PROGRAM) as live:
        store: Any = live.worker.customers.data
        assert type(store).__module__ == "faust.stores.rocksdb"
        # memory bounded by the settings, not Faust's 2 GiB cache per partition
        assert store.rocksdb_options.block_cache_size == 8 * 2**20
        assert store.rocksdb_options.write_buffer_size == settings.rocksdb_write_buffer_mb * 2**20
        table_dir = Path(live.worker.app.conf.tabledir)
        await live.publish(*first_run)
        for customer in CUSTOMERS:
            assert dec((await live.balance(customer, len(AMOUNTS)))["current"]) == 60, customer
        await live.read("ledger", len(first_run), timeout=30)
        # The store is written once a batch's outputs and changelog records are acknowledged: shortly after.
        for _ in range(100):
            if stored_balances(live.worker) == dict.fromkeys(CUSTOMERS, Decimal(60)):
                break
            await asyncio.sleep(0.1)
        assert stored_balances(live.worker) == dict.fromkeys(CUSTOMERS, Decimal(60))

    # Stopped: the states and the changelog offsets they correspond to are in the RocksDB files.
    on_disk, persisted = read_db_files(table_dir)
    assert {key: decode_state(raw).current for key, raw in on_disk.items()} == {
        state_key("p", customer): Decimal(60) for customer in CUSTOMERS}
    changelog = f"{settings.app_id}-{CUSTOMER_TABLE}-changelog"
    ends = await _end_offsets(settings.kafka_bootstrap, changelog)
    assert persisted == {partition: end - 1 for partition, end in ends.items()}

    async with live_worker(settings, PROGRAM) as live:
        # Recovered before any new input: every customer's cumulative state is there.
        assert stored_balances(live.worker) == dict.fromkeys(CUSTOMERS, Decimal(60))
        await live.publish(purchase("ana-3", "ana", 50, 30), purchase("ben-3", "ben", 120, 31))
        assert dec((await live.balance("ana", len(AMOUNTS) + 1))["current"]) == 65
        assert dec((await live.balance("ben", len(AMOUNTS) + 1))["current"]) == 72
        # A redelivered or replayed purchase of the first run credits nothing (offset, then event id).
        await live.publish(purchase("cai-0", "cai", 100, 0))
        await live.publish(purchase("dee-9", "dee", 10, 40))  # a later purchase: proves cai's was processed
        assert dec((await live.balance("dee", len(AMOUNTS) + 1))["current"]) == 61

    ledger = await consume_until(settings.kafka_bootstrap, settings.topic("ledger"), timeout=30,
                                 predicate=settled(len(first_run) + 3))
    ids = [record.value["entry_id"] for record in ledger]
    assert len(ids) == len(set(ids)) == len(first_run) + 3, "a purchase was credited twice"
    changes = await consume_until(settings.kafka_bootstrap, settings.topic("balance-changes"), timeout=30,
                                  predicate=settled(len(first_run) + 3))
    assert len(changes) == len(first_run) + 3
    last = {record.key: dec(record.value["current"]) for record in changes}
    assert last == {"ana": 65, "ben": 72, "cai": 60, "dee": 61, "eve": 60, "fay": 60}
    by_customer: dict[str, list[int]] = {}
    for record in ledger:
        by_customer.setdefault(record.key, []).append(record.value["seq"])
    assert by_customer["ana"] == [1, 2, 3, 4] and by_customer["cai"] == [1, 2, 3]


CRASH_CUSTOMERS = 8
CRASH_PURCHASES = 400


async def test_rocksdb_store_crash_then_restart_credits_every_purchase_once(
        loyalty_settings: Settings, catalogue_topics: dict[str, str]) -> None:
    """A crash leaves RocksDB ahead of the committed offsets: the restarted worker gets those records again
    and must drop them against the states it reopened from disk."""
    settings = loyalty_settings.model_copy(update={"store": "rocksdb://"})
    expected: dict[str, Decimal] = {}
    records = []
    for index in range(CRASH_PURCHASES):
        customer = f"k{index % CRASH_CUSTOMERS}"
        amount = 10 * (1 + index % 7)
        records.append(purchase(f"x{index:04d}", customer, amount, index % 60))
        expected[customer] = expected.get(customer, Decimal(0)) + amount // 10
    crashed = asyncio.Event()
    holder: list[LoyaltyWorker] = []
    seen = [0]

    async def crash_after_a_quarter(processed: Any) -> None:
        seen[0] += 1
        if seen[0] == CRASH_PURCHASES // 4 and holder:
            crash_without_committing(holder[0])
            crashed.set()

    async with live_worker(settings, PROGRAM, after_process=crash_after_a_quarter) as live:
        holder.append(live.worker)
        for start in range(0, CRASH_PURCHASES, 50):  # several produce requests, so usually several batches
            await live.publish(*records[start:start + 50])
        await asyncio.wait_for(crashed.wait(), 60)
        await asyncio.sleep(0.3)  # let some in-flight outputs, changelog records and store writes land

    async with live_worker(settings, PROGRAM) as live:
        def balances() -> dict[str, Decimal]:
            found = {}
            for customer in expected:
                raw = live.worker.customers.data.get(state_key("p", customer))
                if raw is not None:
                    found[customer] = decode_state(raw).current
            return found

        def redelivered() -> bool:
            """The records after the last commit came again (the reopened states may already be complete, so
            the balances alone do not show that the second worker has seen them yet) and were handled."""
            second = live.worker
            return (holder[0].processed_count + second.processed_count > CRASH_PURCHASES
                    and second.completed_count == second.processed_count)

        deadline = time.monotonic() + 60
        while not (redelivered() and balances() == expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        # The crash's batch was never committed: it came again, and was dropped against the reopened states.
        assert holder[0].processed_count + live.worker.processed_count > CRASH_PURCHASES
        assert balances() == expected

    ledger = await consume_until(settings.kafka_bootstrap, settings.topic("ledger"), timeout=30,
                                 predicate=lambda rs: len({r.value["entry_id"] for r in rs}) >= CRASH_PURCHASES)
    by_id: dict[str, Any] = {}
    for record in ledger:
        assert by_id.setdefault(record.value["entry_id"], record.raw) == record.raw, "same id, other entry"
    assert len(by_id) == CRASH_PURCHASES
    credited: dict[str, Decimal] = {}
    for raw in by_id.values():
        entry = orjson.loads(raw)
        credited[entry["customer_id"]] = credited.get(entry["customer_id"], Decimal(0)) + dec(entry["amount"])
    assert credited == expected


def settled(count: int, quiet: float = 1.5) -> Any:
    """A `consume_until` predicate: at least `count` records, and nothing more for `quiet` seconds after."""
    reached: list[float] = []

    def done(records: list[Any]) -> bool:
        if len(records) < count:
            return False
        if not reached or len(records) > reached[1]:
            reached[:] = [time.monotonic(), len(records)]
        return time.monotonic() - reached[0] >= quiet

    return done


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The topic's end offsets (corrected for Tansu, whose ListOffsets lags behind its last batch)."""
    from aiokafka import AIOKafkaConsumer

    from loyalty_stream.stream.kafka_io import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        listed = await consumer.end_offsets(await topic_partitions(consumer, topic))
    finally:
        await consumer.stop()
    ends = await probe_end_offsets(bootstrap, listed)
    return {tp.partition: end for tp, end in ends.items() if end}


def test_store_bench_measures_a_faust_layout_store() -> None:
    """`bench.store_bench.rocksdb_memory` (no broker needed): every state stored and read back, sane figures."""
    from bench.store_bench import rocksdb_memory

    rng = random.Random(5)
    states = {state_key("p", f"c{index}"): orjson.dumps({"customer": f"c{index}", "pad": rng.randbytes(900).hex()})
              for index in range(600)}
    figures = rocksdb_memory(states, reads=2_000)
    assert figures["customers"] == 600 and figures["partitions"] == 4
    assert figures["block_cache_mb"] == 2048  # Faust's default, per partition
    assert figures["disk_mb"] >= figures["sst_mb"] > 0
    assert figures["gets_per_s"] > 0 and figures["gets_any_partition_per_s"] > 0 and figures["puts_per_s"] > 0
    assert figures["rocksdb_block_cache_mb"] > 0 and figures["rss_growth_written_mb"] >= 0
