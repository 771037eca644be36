"""Offline replay reproduces the worker's ledger and shows what a changed program would change."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.program.model import Program
from loyalty_stream.replay.runner import Record, diff_ledgers, order_records, replay
from loyalty_stream.stream.processor import LEDGER, ActivityProcessor

from .conftest import process_all


def _records() -> list[Record]:
    rows = []
    for i in range(30):
        customer = f"c{i % 4}"
        value = orjson.dumps({
            "type": "TransactionAdd", "event_id": f"t{i}", "program_id": "default", "customer_id": customer,
            "event_time": f"2026-02-{1 + i % 27:02d}T09:00:00Z",
            "payload": {"bill_number": f"B{i}", "amount": str(10 * (i + 1))},
        })
        rows.append(Record("transaction-add", i % 2, i // 2, 1_000 + i, customer.encode(), value))
    rows.append(Record("transaction-add", 0, 99, 5_000, b"c0", b"garbage"))
    return rows


def _live_ledger(records: list[Record], registry: ProgramRegistry) -> list[bytes]:
    processor, store, ledger = ActivityProcessor(registry), {}, []
    for processed in process_all(processor, order_records(records, "processing"), store):
        ledger += [v for t, v in processed.outputs if t == LEDGER]
    return ledger


def test_replay_reproduces_the_live_ledger_exactly(default_registry: ProgramRegistry) -> None:
    records = _records()
    result = replay(list(reversed(records)), default_registry)
    assert result.activities == 31 and result.dead_letters == 1
    assert {orjson.loads(entry)["source_event_id"] for entry in result.ledger} == {f"t{i}" for i in range(30)}
    assert result.ledger == _live_ledger(records, default_registry)
    assert diff_ledgers(result.ledger, _live_ledger(records, default_registry)).identical


def test_what_if_under_a_new_program_version_shows_changed_amounts(default_program: Program,
                                                                  default_registry: ProgramRegistry) -> None:
    richer = default_program.model_copy(deep=True)
    data = default_program.model_dump(mode="json", exclude={"compiled"})
    data["version"] = 2
    data["earn_conditions"][0]["allocation"]["percent"] = {"bronze": 20, "silver": 24, "gold": 30}
    from loyalty_stream.program.loader import parse_program
    richer = parse_program(data)
    live = _live_ledger(_records(), default_registry)
    what_if = replay(_records(), ProgramRegistry([richer]))
    diff = diff_ledgers(live, what_if.ledger)
    assert not diff.only_live and not diff.only_replay
    assert len(diff.changed) == 30
    old, new = diff.changed[0]
    assert 2 * Decimal(old["amount"]) == Decimal(new["amount"])


def test_the_object_store_replay_gives_the_worker_path_s_ledger_and_states(default_registry: ProgramRegistry) -> None:
    records = _records()
    objects = replay(records, default_registry)
    as_bytes = replay(records, default_registry, store="bytes", state_cache=0)
    assert objects.ledger == as_bytes.ledger == _live_ledger(records, default_registry)
    assert objects.states == as_bytes.states and len(objects.states) == 4
    assert objects.dead_letters == as_bytes.dead_letters == 1


def test_an_engine_error_in_an_object_replay_leaves_the_state_the_worker_would_keep(
        default_registry: ProgramRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine fails half-way through t9 (after changing the state): the worker keeps the state before
    t9 (it never stored the half-applied one); the object replay must rebuild exactly that."""
    from loyalty_stream.stream import processor as processor_module

    real_apply = processor_module.apply

    def failing_apply(state: Any, activity: Any, *args: Any, **kwargs: Any) -> Any:
        if activity.event_id == "t9":
            assert state is not None
            state.lifetime_earned += Decimal(1000)  # damage, then fail
            state.lots.clear()
            raise RuntimeError("engine bug")
        return real_apply(state, activity, *args, **kwargs)

    monkeypatch.setattr(processor_module, "apply", failing_apply)
    records = _records()
    objects = replay(records, default_registry)
    as_bytes = replay(records, default_registry, store="bytes", state_cache=0)
    assert objects.dead_letters == as_bytes.dead_letters == 2
    assert objects.ledger == as_bytes.ledger
    assert objects.states == as_bytes.states
    monkeypatch.setattr(processor_module, "apply", real_apply)
    untouched = replay([r for r in records if r.value is None or b'"t9"' not in r.value], default_registry)
    assert untouched.states == objects.states  # t9 left no trace
