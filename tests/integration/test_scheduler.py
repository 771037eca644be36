"""The scheduler against a real Redis: the due index, leader-lock exclusivity, and tick emitting the due
activities that the engine then applies. Kafka is replaced by a `send` that records what it is given."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.lifecycle import DueKind
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.activities import DelayedAccrual, PointsExpiry, activity_adapter
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.loader import ProgramRegistry, parse_program
from loyalty_stream.program.model import Program
from loyalty_stream.scheduler import (
    SCHEDULER_TOPIC,
    Scheduler,
    read_due,
    rebuild_due_index,
    record_due,
    record_state_due,
    scheduled_event_id,
)
from loyalty_stream.scheduler.due_index import due_key, kind_key
from loyalty_stream.scheduler.runner import lock_key
from loyalty_stream.stream.due_recorder import DueRecorder

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = datetime(2024, 9, 30, tzinfo=UTC)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - depends on the environment
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of its own per test, removed afterwards."""
    value = f"test-scheduler:{uuid.uuid4().hex}:"
    yield value
    keys = [key async for key in redis.scan_iter(match=f"{value}*")]
    if keys:
        await redis.delete(*keys)


class Recorder:
    """The injected `send`: records (topic, key, value) instead of producing to Kafka."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_after = fail_after

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("broker down")
        self.sent.append((topic, key, value))

    def events(self) -> list[Any]:
        return [activity_adapter.validate_json(value) for _, _, value in self.sent]


def make_program() -> Program:
    return parse_program({
        "id": "default", "version": 1, "redeem_conditions": [{"code": "R"}], "timezone": "Europe/London",
        "earn_conditions": [{"code": "E", "allocation": {"type": "fixed", "points": 100}, "delay_days": 1,
                             "expiry": "X"}],
        "expiry_conditions": [{"code": "X", "unit": "days", "value": 10}],
        "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [
            {"name": "all", "when": "true", "actions": [{"type": "allocate", "condition": "E"}]}]}]},
    })


def purchase_state(program: Program, customer: str, when: str) -> CustomerState:
    event = activity_adapter.validate_python({
        "type": "TransactionAdd", "event_id": f"t-{customer}", "program_id": "default",
        "customer_id": customer, "event_time": when, "payload": {"bill_number": "B1", "amount": "10"}})
    return apply(None, event, program).state


# The due index -------------------------------------------------------------------------------------------
async def test_record_read_and_clear_a_due_time(redis: Redis, prefix: str) -> None:
    await record_due(redis, prefix, "default", "c|1", T0 + timedelta(microseconds=1), "DelayedAccrual")
    # Rounded up to the second, so the emitted event never lands before what it must materialise.
    assert await read_due(redis, prefix, "default", "c|1") == (T0 + timedelta(seconds=1), "DelayedAccrual")
    assert await redis.zscore(due_key(prefix), "default|c|1") == T0.timestamp() + 1
    await record_due(redis, prefix, "default", "c|1", T0, "PointsExpiry")
    assert await read_due(redis, prefix, "default", "c|1") == (T0, "PointsExpiry")
    await record_due(redis, prefix, "default", "c|1", None)
    assert await read_due(redis, prefix, "default", "c|1") is None
    assert await redis.exists(due_key(prefix), kind_key(prefix)) == 0


async def test_record_state_due_follows_the_engine(redis: Redis, prefix: str) -> None:
    program = make_program()
    state = purchase_state(program, "c1", "2024-09-28T15:00:00+01:00")
    assert await record_state_due(redis, prefix, state, program) == datetime(2024, 9, 29, 23, tzinfo=UTC)
    assert await read_due(redis, prefix, "default", "c1") == (datetime(2024, 9, 29, 23, tzinfo=UTC),
                                                              "DelayedAccrual")
    state.lots.clear()
    assert await record_state_due(redis, prefix, state, program) is None
    assert await read_due(redis, prefix, "default", "c1") is None


async def test_rebuild_from_the_customer_table(redis: Redis, prefix: str) -> None:
    program = make_program()
    registry = ProgramRegistry([program])
    due = purchase_state(program, "due", "2024-09-28T15:00:00+01:00")
    idle = CustomerState(customer_id="idle", program_id="default")
    orphan = CustomerState(customer_id="orphan", program_id="unknown-program")
    await record_due(redis, prefix, "default", "idle", T0)  # stale: idle has nothing due
    await record_due(redis, prefix, "default", "gone", T0)  # a customer no longer in the table

    async def table() -> AsyncIterator[CustomerState]:
        for state in (due, idle, orphan):
            yield state

    assert await rebuild_due_index(redis, prefix, table(), registry) == 1
    assert await read_due(redis, prefix, "default", "due") == (datetime(2024, 9, 29, 23, tzinfo=UTC),
                                                               "DelayedAccrual")
    assert await read_due(redis, prefix, "default", "idle") is None
    assert await read_due(redis, prefix, "default", "gone") is not None  # upsert keeps unknown members
    assert await rebuild_due_index(redis, prefix, [due, idle, orphan], registry, replace=True) == 1
    assert await redis.zrange(due_key(prefix), 0, -1) == [b"default|due"]
    assert await redis.hkeys(kind_key(prefix)) == [b"default|due"]
    assert await rebuild_due_index(redis, prefix, [idle], registry, replace=True) == 0
    assert await redis.exists(due_key(prefix), kind_key(prefix)) == 0


async def test_the_worker_s_due_recorder_writes_its_notes_in_one_flush(redis: Redis, prefix: str) -> None:
    """Notes of many customers (a due time, or nothing due) reach the index in one flush; later notes win."""
    program = make_program()
    recorder = DueRecorder(redis, prefix, ProgramRegistry([program]))
    states = [purchase_state(program, f"c{i}", f"2024-09-{10 + i}T15:00:00+01:00") for i in range(5)]
    for state in states:
        recorder.note(state)
    recorder.note(CustomerState(customer_id="idle", program_id="default"))
    recorder.note(CustomerState(customer_id="x", program_id="unknown-program"))  # not noted
    await record_due(redis, prefix, "default", "idle", T0)  # stale
    assert await recorder.flush() == 6
    for i in range(5):
        assert await read_due(redis, prefix, "default", f"c{i}") == (
            datetime(2024, 9, 11 + i, 23, tzinfo=UTC), "DelayedAccrual")
    assert await read_due(redis, prefix, "default", "idle") is None
    states[0].lots.clear()
    states[1].lots.clear()
    recorder.note(states[0])
    recorder.note(states[1])
    assert await recorder.flush() == 2 and await recorder.flush() == 0
    assert sorted(await redis.zrange(due_key(prefix), 0, -1)) == [b"default|c2", b"default|c3", b"default|c4"]
    assert sorted(await redis.hkeys(kind_key(prefix))) == [b"default|c2", b"default|c3", b"default|c4"]


# Ticks -----------------------------------------------------------------------------------------------------
async def test_tick_emits_due_customers_and_leaves_the_rest(redis: Redis, prefix: str) -> None:
    send = Recorder()
    scheduler = Scheduler(redis, prefix, send, batch_size=2)
    dues: list[tuple[str, int, DueKind]] = [("a", 0, "DelayedAccrual"), ("b", 60, "PointsExpiry"),
                                            ("c", 120, "PointsExpiry"), ("later", 3600, "PointsExpiry")]
    for customer, offset, kind in dues:
        await record_due(redis, prefix, "default", customer, T0 + timedelta(seconds=offset), kind)
    assert await scheduler.tick(T0 - timedelta(seconds=1)) == 0
    assert await scheduler.tick(T0 + timedelta(seconds=120, milliseconds=999)) == 3  # two batches
    assert [(topic, key) for topic, key, _ in send.sent] == [(SCHEDULER_TOPIC, b"a"), (SCHEDULER_TOPIC, b"b"),
                                                             (SCHEDULER_TOPIC, b"c")]
    first, second, third = send.events()
    assert isinstance(first, DelayedAccrual) and isinstance(second, PointsExpiry)
    assert (first.customer_id, first.program_id, first.event_time, first.payload.due_at) == (
        "a", "default", T0, T0)
    assert first.event_id == scheduled_event_id("default", "a", T0, "DelayedAccrual")
    assert third.event_time == T0 + timedelta(seconds=120)
    assert await redis.zrange(due_key(prefix), 0, -1) == [b"default|later"]
    assert await scheduler.tick(T0 + timedelta(seconds=3599)) == 0
    await scheduler.stop()


async def test_emitted_events_drive_the_engine_and_the_index_round_trip(redis: Redis, prefix: str) -> None:
    """Worker loop in miniature: apply -> record_state_due -> tick -> apply the emitted event -> record."""
    program = make_program()
    state = purchase_state(program, "c1", "2024-09-28T15:00:00+01:00")
    await record_state_due(redis, prefix, state, program)
    send = Recorder()
    scheduler = Scheduler(redis, prefix, send)
    kinds = []
    now = datetime(2024, 12, 31, tzinfo=UTC)
    while await scheduler.tick(now):
        event = send.events()[-1]
        outcome = apply(state, event, program)
        kinds += [entry.kind for entry in outcome.ledger]
        state = outcome.state
        await record_state_due(redis, prefix, state, program)
    assert [type(e).__name__ for e in send.events()] == ["DelayedAccrual", "PointsExpiry"]
    assert kinds == [LedgerKind.CONVERT, LedgerKind.EXPIRE]
    assert (state.current, state.expired) == (Decimal(0), Decimal(100))
    assert await read_due(redis, prefix, "default", "c1") is None
    await scheduler.stop()


async def test_a_failed_send_puts_the_rest_back(redis: Redis, prefix: str) -> None:
    for customer in ("a", "b", "c"):
        await record_due(redis, prefix, "default", customer, T0)
    failing = Scheduler(redis, prefix, Recorder(fail_after=1))
    with pytest.raises(ConnectionError):
        await failing.tick(T0)
    assert sorted(await redis.zrange(due_key(prefix), 0, -1)) == [b"default|b", b"default|c"]
    await failing.stop()
    retry = Recorder()
    scheduler = Scheduler(redis, prefix, retry)
    assert await scheduler.tick(T0) == 2
    assert {key for _, key, _ in retry.sent} == {b"b", b"c"}
    await scheduler.stop()


# Leadership ------------------------------------------------------------------------------------------------
async def test_only_the_leader_emits_and_a_stop_hands_over(redis: Redis, prefix: str) -> None:
    first_send, second_send = Recorder(), Recorder()
    first = Scheduler(redis, prefix, first_send)
    second = Scheduler(redis, prefix, second_send)
    await record_due(redis, prefix, "default", "a", T0)
    assert await first.tick(T0) == 1 and first.leader
    await record_due(redis, prefix, "default", "b", T0)
    assert await second.tick(T0) == 0 and not second.leader
    assert await redis.zrange(due_key(prefix), 0, -1) == [b"default|b"]  # the stand-by took nothing
    assert await redis.get(lock_key(prefix)) == first.token.encode()
    assert 0 < await redis.pttl(lock_key(prefix)) <= 30_000
    await first.stop()
    assert await redis.get(lock_key(prefix)) is None
    assert await second.tick(T0) == 1 and second.leader
    assert [key for _, key, _ in first_send.sent] == [b"a"]
    assert [key for _, key, _ in second_send.sent] == [b"b"]
    await second.stop()


async def test_an_expired_lock_is_taken_over_and_the_old_leader_steps_down(redis: Redis, prefix: str) -> None:
    old = Scheduler(redis, prefix, Recorder(), lock_ttl_ms=150)
    new = Scheduler(redis, prefix, Recorder(), lock_ttl_ms=150)
    assert await old.lead() and not await new.lead()
    await asyncio.sleep(0.3)  # the old leader stalls past its TTL
    assert await new.lead()
    await record_due(redis, prefix, "default", "a", T0)
    assert await old.tick(T0) == 0 and not old.leader
    await old.stop()  # must not release the new leader's lock
    assert await redis.get(lock_key(prefix)) == new.token.encode()
    assert await new.tick(T0) == 1
    await new.stop()


async def test_run_ticks_on_the_injected_clock_until_stopped(redis: Redis, prefix: str) -> None:
    send = Recorder()
    scheduler = Scheduler(redis, prefix, send)
    clock_value = [T0 - timedelta(hours=1)]
    await record_due(redis, prefix, "default", "a", T0)
    task = asyncio.create_task(scheduler.run(lambda: clock_value[0], interval=0.01))
    await asyncio.sleep(0.05)
    assert send.sent == []
    clock_value[0] = T0
    for _ in range(200):
        if send.sent:
            break
        await asyncio.sleep(0.01)
    assert [key for _, key, _ in send.sent] == [b"a"]
    await scheduler.stop()
    await asyncio.wait_for(task, 1)
    assert await redis.get(lock_key(prefix)) is None


async def test_text_responses_work_too(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - depends on the environment
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    try:
        await record_due(client, prefix, "default", "a", T0, "DelayedAccrual")
        assert await read_due(client, prefix, "default", "a") == (T0, "DelayedAccrual")
        send = Recorder()
        scheduler = Scheduler(client, prefix, send)
        assert await scheduler.tick(T0) == 1
        assert isinstance(send.events()[0], DelayedAccrual)
        await scheduler.stop()
    finally:
        await client.delete(due_key(prefix), kind_key(prefix), lock_key(prefix))
        await client.aclose()
