"""The worker's batch path through a real broker: a crash in the middle of a stream and a full redelivery into
the restored table never credit twice, the batch path keeps per-customer order, and no record is skipped when
a fetch races a rebalance.

A "crash" here stops the app without draining and without committing (the consumer's commit is disabled for
the first worker), so the second worker with the same app id restores the table from the changelog and gets
every record after the last commit again - including records whose outputs or state were already written.

Waiting: a worker has handled the input when its consumer group has committed every partition up to the end
offsets - it commits an offset only after that record's outputs and state are on the broker and in the table.
Balances are then compared at once, exactly; a failure names the customers, what they miss (bill and
partition:offset) and where each partition's commit stands.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from loyalty_stream.engine.state import CustomerState
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.settings import Settings
from loyalty_stream.stream import faust_settings
from loyalty_stream.stream.kafka_io import produce_records
from loyalty_stream.stream.processor import decode_state, state_key
from loyalty_stream.stream.runtime import running_worker
from loyalty_stream.stream.transport import LoyaltyConsumer
from loyalty_stream.stream.worker import LoyaltyWorker
from tests.fixtures.cluster import ConsumeTimeout, consume_until

from .harness import activity, crash_without_committing, program

pytestmark = pytest.mark.integration

PROGRAM = program(
    id="p", rounding={"decimals": 0},
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}},
                     {"code": "VISIT", "allocation": {"type": "fixed", "points": 1}}],
    rule_sets={"TransactionAdd": [
        {"name": "pct", "rules": [{"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]},
        {"name": "visit", "rules": [{"name": "visit", "actions": [{"type": "allocate", "condition": "VISIT"}]}]},
    ]},
)
CUSTOMERS = 24
PURCHASES = 1600


def purchases() -> tuple[list[tuple[str, bytes]], dict[str, Decimal], dict[str, int]]:
    """(key, value) records, each customer's final balance, and each customer's purchase count."""
    records: list[tuple[str, bytes]] = []
    balance: dict[str, Decimal] = defaultdict(Decimal)
    count: dict[str, int] = defaultdict(int)
    for index in range(PURCHASES):
        customer = f"c{index % CUSTOMERS:02d}"
        amount = 10 * (1 + index % 7)  # 10% of it is a whole number: no rounding in the expectation
        message = activity("TransactionAdd", f"t{index:05d}", customer, f"2026-03-02T10:{index % 60:02d}:00Z",
                           bill_number=f"B{index}", amount=str(amount))
        records.append((customer, orjson.dumps(message)))
        balance[customer] += Decimal(amount) / 10 + 1
        count[customer] += 1
    return records, balance, count


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def states(worker: LoyaltyWorker) -> dict[str, CustomerState]:
    """The customers' states in the worker's table (its store: what a restart restores)."""
    found = {}
    for index in range(CUSTOMERS):
        raw = worker.customers.data.get(state_key("p", f"c{index:02d}"))
        if raw is not None:
            found[f"c{index:02d}"] = decode_state(raw)
    return found


def balances(worker: LoyaltyWorker) -> dict[str, Decimal]:
    return {customer: state.current for customer, state in states(worker).items()}


@dataclass
class Input:
    """Where each purchase is in the input topic (bill -> partition, offset), and the topic's end offsets."""

    topic: str
    at: dict[str, tuple[int, int]]
    ends: dict[int, int]


async def publish(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    """Publish (customer id, value) records to the purchases' topic."""
    await produce_records(settings.kafka_bootstrap, settings.topic("transaction-add"),
                          [(key.encode(), value) for key, value in records])


async def published(settings: Settings, records: list[tuple[str, bytes]]) -> Input:
    """Publish the purchases and read them back (`positions`)."""
    await publish(settings, records)
    return await positions(settings, len(records))


async def positions(settings: Settings, count: int) -> Input:
    """Read the `count` purchases in the topic back: their positions and the end offset of every partition (read
    from the records, not ListOffsets, which Tansu answers short)."""
    topic = settings.topic("transaction-add")
    read = await consume_until(settings.kafka_bootstrap, topic, count=count, timeout=30)
    ends: dict[int, int] = {}
    for record in read:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return Input(topic, {r.value["payload"]["bill_number"]: (r.partition, r.offset) for r in read}, ends)


async def wait_until_committed(settings: Settings, where: Input, worker: LoyaltyWorker,
                               expected: dict[str, Decimal], timeout: float) -> None:
    """Until the app's consumer group has committed every partition of the input up to its end offset (what
    the broker holds, read without joining the group). On time-out, says where each partition stands and which
    balances are not (yet) the expected ones: slow, or short."""
    deadline = time.monotonic() + timeout
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.app_id,
                              enable_auto_commit=False)  # never subscribes, so never joins the group
    await reader.start()
    try:
        while True:
            committed: dict[int, int | None] = {
                partition: await reader.committed(TopicPartition(where.topic, partition))
                for partition in sorted(where.ends)}
            if all((committed[p] or 0) >= end for p, end in where.ends.items()):
                return
            if time.monotonic() > deadline:
                lag = {p: f"{committed[p]}/{end}" for p, end in sorted(where.ends.items())}
                raise AssertionError(
                    f"the worker did not commit the input to its end within {timeout}s: committed/end per "
                    f"partition {lag}, {worker.processed_count} records processed, {worker.completed_count} "
                    f"completed; balances not as expected:\n{shortfall(states(worker), expected, where) or '  none'}")
            await asyncio.sleep(0.2)
    finally:
        await reader.stop()


def shortfall(found: dict[str, CustomerState], expected: dict[str, Decimal], where: Input) -> str:
    """Per customer whose balance is not the expected one: the balance, and the purchases (bill@partition:
    offset) its state does not hold."""
    lines = []
    for customer in sorted(set(expected) | set(found)):
        state = found.get(customer)
        have = state.current if state is not None else None
        want = expected.get(customer)
        if have == want:
            continue
        mine = [bill for bill in where.at if f"c{int(bill[1:]) % CUSTOMERS:02d}" == customer]
        bills = set(state.bills) if state is not None else set()
        missing = [f"{bill}@{where.at[bill][0]}:{where.at[bill][1]}" for bill in mine if bill not in bills]
        lines.append(
            f"  {customer}: balance {have}, expected {want}; {len(mine) - len(missing)} of {len(mine)} purchases"
            f"{f', missing {missing[:12]}' + (' ...' if len(missing) > 12 else '') if missing else ''}; "
            f"offsets {state.offsets if state is not None else None}")
    return "\n".join(lines)


def assert_balances(worker: LoyaltyWorker, expected: dict[str, Decimal], where: Input) -> None:
    found = states(worker)
    have = {customer: state.current for customer, state in found.items()}
    assert have == dict(expected), f"balances after the input was committed:\n{shortfall(found, expected, where)}"


async def check_outputs(settings: Settings, expected: dict[str, Decimal], count: dict[str, int]) -> None:
    """Every ledger entry id carries one content; each customer has 2 entries per purchase, seq 1..n, and a
    last balance change equal to the expected balance."""
    total = 2 * sum(count.values())
    ledger = await consume_until(settings.kafka_bootstrap, settings.topic("ledger"), timeout=30,
                                 predicate=lambda rs: len({r.value["entry_id"] for r in rs}) >= total)
    by_id: dict[str, bytes] = {}
    conflicts = []
    for record in ledger:
        assert record.raw is not None
        previous = by_id.setdefault(record.value["entry_id"], record.raw)
        if previous != record.raw:
            first, again = orjson.loads(previous), record.value
            conflicts.append(f"{first['customer_id']} {first['bill_number']} (source {first['source']}): "
                             f"seq {first['seq']} balance_after {first['balance_after']}, then seq {again['seq']} "
                             f"balance_after {again['balance_after']}")
    assert not conflicts, "a redelivered record produced a different entry under the same id:\n  " + \
        "\n  ".join(conflicts[:20])
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in by_id.values():
        entry = orjson.loads(raw)
        entries[entry["customer_id"]].append(entry)
    for customer, purchases_made in count.items():
        mine = sorted(entries[customer], key=lambda e: e["seq"])
        assert len(mine) == 2 * purchases_made, customer
        assert [e["seq"] for e in mine] == list(range(1, 2 * purchases_made + 1)), customer
        assert sum(Decimal(str(e["amount"])) for e in mine) == expected[customer], customer
    def final(records: list[Any]) -> dict[str, Decimal]:
        return {r.key: Decimal(str(r.value["current"])) for r in records}

    changes = await consume_until(settings.kafka_bootstrap, settings.topic("balance-changes"), timeout=30,
                                  predicate=lambda rs: final(rs) == expected)
    assert final(changes) == expected


async def test_crash_mid_stream_then_restart_credits_every_purchase_once(
    loyalty_settings: Settings, catalogue_topics: dict[str, str]
) -> None:
    records, expected, count = purchases()
    where = await published(loyalty_settings, records)
    registry = ProgramRegistry([PROGRAM])

    crashed, started = asyncio.Event(), asyncio.Event()
    holder: list[LoyaltyWorker] = []
    seen = [0]

    async def crash_after_a_quarter(processed: Any) -> None:
        seen[0] += 1
        if seen[0] == PURCHASES // 4:
            await started.wait()  # processing may begin before running_worker hands the worker over
            crash_without_committing(holder[0])  # mid-batch: the rest of it is processed, never acked
            crashed.set()

    async with running_worker(loyalty_settings, registry, after_process=crash_after_a_quarter) as first:
        holder.append(first)
        started.set()
        await asyncio.wait_for(crashed.wait(), 60)
        await asyncio.sleep(0.2)  # let some of the in-flight outputs and changelog writes land
    assert first.processed_count < PURCHASES

    async with running_worker(loyalty_settings, registry) as second:
        restored = balances(second)
        assert restored, "the table was restored from the changelog"
        await wait_until_committed(loyalty_settings, where, second, expected, timeout=120)
        assert_balances(second, expected, where)
        await second.drain()
    await check_outputs(loyalty_settings, expected, count)


def first_purchases(n: int) -> tuple[list[tuple[str, bytes]], dict[str, Decimal], dict[str, int]]:
    records, _, _ = purchases()
    expected: dict[str, Decimal] = defaultdict(Decimal)
    count: dict[str, int] = defaultdict(int)
    for key, raw in records[:n]:
        expected[key] += Decimal(orjson.loads(raw)["payload"]["amount"]) / 10 + 1
        count[key] += 1
    return records[:n], dict(expected), dict(count)


async def test_records_fetched_for_a_paused_partition_are_fetched_again(
    loyalty_settings: Settings, catalogue_topics: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust pauses every partition while it recovers the table after an assignment; a fetch that began
    before brings records of a paused partition back. The transport drops them, and must put the fetcher back
    to them: on a partition without a committed offset, Faust's seek to the committed offsets does not, and
    the acks of the later records then committed past them (the crash test lost the first fetch of a
    partition this way, now and then, under load)."""
    records, expected, count = first_purchases(600)
    where = await published(loyalty_settings, records)
    monkeypatch.setattr(faust_settings, "MAX_POLL_RECORDS", 50)  # several fetches per partition
    original = LoyaltyConsumer._wait_next_records
    paused: list[Any] = []

    async def fetch_racing_a_pause(self: Any, timeout: float) -> Any:
        fetched, active = await original(self, timeout)
        if not paused and fetched and active is not None:
            mine = {tp for tp in fetched if tp.topic == where.topic}
            if mine:  # as if these partitions were paused while the fetch was on its way
                paused.extend(mine)
                return fetched, set(active) - mine
        return fetched, active

    monkeypatch.setattr(LoyaltyConsumer, "_wait_next_records", fetch_racing_a_pause)
    async with running_worker(loyalty_settings, ProgramRegistry([PROGRAM])) as worker:
        await wait_until_committed(loyalty_settings, where, worker, expected, timeout=60)
        assert paused, "no fetch of the input was intercepted"
        assert_balances(worker, expected, where)
    await check_outputs(loyalty_settings, expected, count)


async def test_a_read_offset_moved_back_by_a_seek_does_not_slow_the_commits(
    loyalty_settings: Settings, catalogue_topics: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rebalance Faust seeks the partitions to their committed offsets and then sets its read offsets
    to them - also when the fetcher had already delivered records past them. The next record then looks like
    it follows a gap; counted from the read offset, that gap covered delivered (acked) offsets, and Faust's
    commit, which walks consecutive acked offsets, moved one or two offsets per commit: minutes for a few
    hundred records (and the crash test took up to 90 s to commit its input after a rebalance)."""
    records, expected, count = first_purchases(600)
    where = await published(loyalty_settings, records)
    monkeypatch.setattr(faust_settings, "MAX_POLL_RECORDS", 50)
    original = LoyaltyConsumer._wait_next_records
    moved: list[tuple[Any, int]] = []

    async def late_seek_bookkeeping(self: Any, timeout: float) -> Any:
        fetched, active = await original(self, timeout)
        if not moved and fetched:
            for tp in fetched:
                last = self._read_offset.get(tp)
                if tp.topic == where.topic and last is not None and last > 2:
                    self._read_offset[tp] = 1  # what perform_seek writes: a committed offset behind the fetcher
                    moved.append((tp, last))
                    break
        return fetched, active

    monkeypatch.setattr(LoyaltyConsumer, "_wait_next_records", late_seek_bookkeeping)
    async with running_worker(loyalty_settings, ProgramRegistry([PROGRAM])) as worker:
        await wait_for(lambda: worker.completed_count >= len(records), 60, "every record completed")
        assert moved, "no read offset was moved back"
        # Commits run every broker_commit_interval (0.5 s): with every offset acked once, a few of them commit
        # everything; one offset per commit would take minutes.
        await wait_until_committed(loyalty_settings, where, worker, expected, timeout=20)
        assert_balances(worker, expected, where)
    await check_outputs(loyalty_settings, expected, count)


async def test_full_redelivery_into_the_restored_table_adds_nothing(
    loyalty_settings: Settings, catalogue_topics: dict[str, str]
) -> None:
    records, expected, count = purchases()
    records = records[:600]
    expected = defaultdict(Decimal)
    count = defaultdict(int)
    for key, raw in records:
        amount = Decimal(orjson.loads(raw)["payload"]["amount"])
        expected[key] += amount / 10 + 1
        count[key] += 1
    await produce_records(loyalty_settings.kafka_bootstrap, loyalty_settings.topic("transaction-add"),
                          [(key.encode(), value) for key, value in records])
    registry = ProgramRegistry([PROGRAM])

    async def no_commit(*args: Any, **kwargs: Any) -> bool:
        return False

    with pytest.MonkeyPatch.context() as patch:  # the first worker never commits an offset
        patch.setattr(LoyaltyConsumer, "commit", no_commit)
        async with running_worker(loyalty_settings, registry) as first:
            await wait_for(lambda: first.completed_count >= len(records), 60, "the whole stream")
    entries = 2 * len(records)

    async with running_worker(loyalty_settings, registry) as second:  # nothing committed: all of it again
        await wait_for(lambda: second.completed_count >= len(records), 60, "the redelivered stream")
        assert second.processed_count == len(records)
        assert balances(second) == expected
    with pytest.raises(ConsumeTimeout) as nothing_more:  # the redelivery emitted no ledger entry at all
        await consume_until(loyalty_settings.kafka_bootstrap, loyalty_settings.topic("ledger"),
                            count=entries + 1, timeout=3)
    ledger = nothing_more.value.records
    assert len(ledger) == len({r.value["entry_id"] for r in ledger}) == entries
    await check_outputs(loyalty_settings, dict(expected), dict(count))


async def test_the_worker_takes_its_state_cache_size_from_the_settings(loyalty_settings: Settings) -> None:
    worker = LoyaltyWorker(loyalty_settings.model_copy(update={"state_cache": 3}), ProgramRegistry([PROGRAM]))
    assert worker.processor.state_cache == 3
    default = LoyaltyWorker(loyalty_settings, ProgramRegistry([PROGRAM]))
    assert default.processor.state_cache == loyalty_settings.state_cache


async def test_the_consumer_fetches_with_the_configured_wait_and_min_bytes(loyalty_settings: Settings) -> None:
    """Faust builds the aiokafka consumer with its own fetch wait and no min bytes; the worker's transport puts
    the settings' values on the fetcher that sends the fetch requests (`Settings.fetch_min_bytes`). A record
    smaller than the min bytes is still processed: the wait bounds how long the broker holds the fetch."""
    settings = loyalty_settings.model_copy(update={"fetch_min_bytes": 1 << 20, "fetch_max_wait_ms": 40,
                                                   "fetch_min_bytes_adaptive": False})
    async with running_worker(settings, ProgramRegistry([PROGRAM])) as worker:
        consumer: Any = worker.app.consumer
        fetcher = consumer._thread._ensure_consumer()._fetcher
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1 << 20, 40)
        records, expected, _ = first_purchases(1)
        await produce_records(settings.kafka_bootstrap, settings.topic("transaction-add"),
                              [(key.encode(), value) for key, value in records])
        await wait_for(lambda: worker.completed_count == 1, 30, "the purchase to be processed")
        assert balances(worker) == expected


async def test_the_consumer_holds_its_fetches_only_while_the_input_fills_the_min_bytes_in_the_wait(
    loyalty_settings: Settings,
) -> None:
    """With the adaptive min bytes (`Settings.fetch_min_bytes_adaptive`) the fetcher asks for 1 byte until the
    input rate brings the min bytes within one wait, then for the min bytes, and for 1 byte again once the
    input pauses: here up to 20 purchases of 163 bytes a second against 16 bytes per 40 ms (400 bytes/s)."""
    settings = loyalty_settings.model_copy(update={"fetch_min_bytes": 16, "fetch_max_wait_ms": 40,
                                                   "fetch_min_bytes_adaptive": True})
    records, expected, _ = first_purchases(40)
    topic = settings.topic("transaction-add")
    async with running_worker(settings, ProgramRegistry([PROGRAM])) as worker:
        consumer: Any = worker.app.consumer
        fetcher = consumer._thread._ensure_consumer()._fetcher
        assert fetcher._fetch_min_bytes == 1
        for key, value in records[:-1]:  # 39 purchases over about 2 s
            await produce_records(settings.kafka_bootstrap, topic, [(key.encode(), value)])
            await asyncio.sleep(0.05)
        await wait_for(lambda: fetcher._fetch_min_bytes == 16, 10, "the fetches to be held")
        await wait_for(lambda: worker.completed_count == 39, 30, "the purchases to be processed")
        await asyncio.sleep(1.0)  # nothing for a second, then one purchase
        key, value = records[-1]
        await produce_records(settings.kafka_bootstrap, topic, [(key.encode(), value)])
        await wait_for(lambda: worker.completed_count == 40, 30, "the last purchase to be processed")
        assert fetcher._fetch_min_bytes == 1
        assert balances(worker) == expected
