"""Offline replay reproduces the worker's ledger and shows what a changed program would change."""

from __future__ import annotations

from decimal import Decimal

import orjson

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.program.model import Program
from loyalty_stream.replay.runner import Record, diff_ledgers, order_records, replay
from loyalty_stream.stream.processor import LEDGER, ActivityProcessor


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
    for r in order_records(records, "processing"):
        processed = processor.process(r.topic, r.partition, r.offset, r.key, r.value, store.get)
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
        ledger += [v for t, v in processed.outputs if t == LEDGER]
    return ledger


def test_replay_reproduces_the_live_ledger_exactly(default_registry: ProgramRegistry) -> None:
    records = _records()
    result = replay(list(reversed(records)), default_registry)
    assert result.activities == 31 and result.dead_letters == 1
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
