"""The shell's record step: state bytes, outputs, idempotence by offset and id, and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.stream.processor import ActivityProcessor, decode_state

FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)


def purchase(event_id: str, amount: str, customer: str = "c1", program: str = "default") -> bytes:
    return orjson.dumps({
        "type": "TransactionAdd", "event_id": event_id, "program_id": program, "customer_id": customer,
        "event_time": "2026-05-01T10:00:00Z", "payload": {"bill_number": f"B-{event_id}", "amount": amount},
    })


class Store(dict[bytes, bytes]):
    def run(self, processor: ActivityProcessor, topic: str, offset: int, value: bytes | None,
            key: bytes | None = b"c1", partition: int = 0):  # type: ignore[no-untyped-def]
        processed = processor.process(topic, partition, offset, key, value, self.get)
        if processed.state is not None and processed.state_key is not None:
            self[processed.state_key] = processed.state
        return processed


def outputs_of(processed, topic: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [orjson.loads(v) for t, v in processed.outputs if t == topic]


def test_purchase_earns_and_emits_ledger_and_balance(default_registry: ProgramRegistry) -> None:
    processor, store = ActivityProcessor(default_registry, clock=lambda: FIXED_NOW), Store()
    processed = store.run(processor, "transaction-add", 0, purchase("t1", "250.00"))
    ledger = outputs_of(processed, "ledger")
    balance = outputs_of(processed, "balance-changes")
    assert [e["amount"] for e in ledger] == ["25.00"]  # 10% for bronze, 2 decimals
    assert ledger[0]["source"] == {"topic": "transaction-add", "partition": 0, "offset": 0}
    assert ledger[0]["condition_code"] == "BASE_PCT" and ledger[0]["program_version"] == 1
    assert balance[0]["current"] == "25.00"
    state = decode_state(store[b"default|c1"])
    assert state.current == Decimal("25.00")


def test_redelivered_offset_and_duplicate_id_credit_once(default_registry: ProgramRegistry) -> None:
    processor, store = ActivityProcessor(default_registry, clock=lambda: FIXED_NOW), Store()
    store.run(processor, "transaction-add", 7, purchase("t1", "100"))
    again = store.run(processor, "transaction-add", 7, purchase("t1", "100"))  # at-least-once redelivery
    assert again.outputs == [] and again.state is None
    republished = store.run(processor, "transaction-add", 8, purchase("t1", "100"))  # producer retry, new offset
    assert republished.outputs == []
    assert decode_state(store[b"default|c1"]).current == Decimal("10.00")


def test_each_bad_input_is_dead_lettered_with_reason(default_registry: ProgramRegistry) -> None:
    processor, store = ActivityProcessor(default_registry, clock=lambda: FIXED_NOW), Store()
    cases = {
        b"{not json": "not_json",
        orjson.dumps({"type": "Nope"}): "unknown_type",
        purchase("x", "-3"): "schema_violation",
        purchase("y", "3", program="ghost"): "unknown_program",
    }
    for offset, (raw, error_class) in enumerate(cases.items()):
        processed = store.run(processor, "transaction-add", offset, raw)
        letters = outputs_of(processed, "dead-letter")
        assert len(letters) == 1, raw
        assert letters[0]["error_class"] == error_class
        assert letters[0]["value"] == raw.decode()
        assert letters[0]["offset"] == offset and letters[0]["reason"]
    wrong_topic = store.run(processor, "registration", 9, purchase("z", "3"))
    assert outputs_of(wrong_topic, "dead-letter")[0]["error_class"] == "wrong_topic"
    wrong_key = store.run(processor, "transaction-add", 10, purchase("k", "3"), key=b"someone-else")
    assert "key" in outputs_of(wrong_key, "dead-letter")[0]["reason"]
    good = store.run(processor, "transaction-add", 11, purchase("ok", "30"))
    assert outputs_of(good, "balance-changes")[0]["current"] == "3.00"


def test_engine_error_is_dead_lettered_and_state_untouched(default_registry: ProgramRegistry) -> None:
    processor, store = ActivityProcessor(default_registry, clock=lambda: FIXED_NOW), Store()
    store.run(processor, "transaction-add", 0, purchase("t1", "100"))
    before = store[b"default|c1"]
    store[b"default|c1"] = before.replace(b'"seq":1', b'"seq":"broken"')
    processed = store.run(processor, "transaction-add", 1, purchase("t2", "100"))
    letter = outputs_of(processed, "dead-letter")[0]
    assert letter["error_class"] == "engine_error"
    assert processed.state is None


def test_a_ledger_only_processor_encodes_the_ledger_and_dead_letters_alone() -> None:
    """The offline replay's processor: the same ledger entries and dead letters, byte for byte, and the same
    states; the balance changes, notifications and other outputs a replay does not keep are not encoded."""
    from bench import workload
    from loyalty_stream.stream.processor import DEAD_LETTER, LEDGER

    registry = workload.load_registry()
    full = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=64)
    lean = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=64, ledger_only=True)
    full_store, lean_store = Store(), Store()
    items = [(r.topic, r.key, r.value) for r in workload.generate(600, 100, seed=4)]
    items.append(("transaction-add", b"c-bad", b"garbage"))
    dropped: set[str] = set()
    dead_letters = 0
    for offset, (topic, key, value) in enumerate(items):
        everything = full_store.run(full, topic, offset, value, key=key)
        kept = lean_store.run(lean, topic, offset, value, key=key)
        assert kept.outputs == [(t, v) for t, v in everything.outputs if t in (LEDGER, DEAD_LETTER)]
        dropped.update(t for t, _ in everything.outputs if t not in (LEDGER, DEAD_LETTER))
        dead_letters += sum(t == DEAD_LETTER for t, _ in kept.outputs)
    assert lean_store == full_store and dead_letters >= 1
    assert {"balance-changes", "notifications", "redemption-results"} <= dropped
