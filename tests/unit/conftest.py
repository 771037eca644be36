"""Shared builders for engine and processor unit tests (no broker, no event loop)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.program.loader import ProgramRegistry, parse_program, read_program_file
from loyalty_stream.program.model import Program
from loyalty_stream.replay.runner import Record
from loyalty_stream.stream.processor import ActivityProcessor, Processed

ROOT = Path(__file__).resolve().parents[2]


def activity(kind: str, event_id: str, when: str, customer: str = "c1", program: str = "default",
             **payload: Any) -> Envelope:
    """An activity of `kind` at ISO time `when`; keyword arguments form its payload."""
    message: dict[str, Any] = {"type": kind, "event_id": event_id, "program_id": program, "customer_id": customer,
                               "event_time": when}
    if payload:
        message["payload"] = payload
    result: Envelope = activity_adapter.validate_python(message)
    return result


def program_from(data: dict[str, Any]) -> Program:
    base: dict[str, Any] = {"id": "default", "version": 1, "redeem_conditions": [{"code": "R"}]}
    base.update(data)
    return parse_program(base)


@pytest.fixture(scope="session")
def default_program() -> Program:
    return read_program_file(ROOT / "programs" / "default.yaml")


@pytest.fixture(scope="session")
def default_registry(default_program: Program) -> ProgramRegistry:
    return ProgramRegistry([default_program])


@pytest.fixture(scope="module")
def verify_running_balances() -> Iterator[None]:
    """Every ledger entry's running balances are checked against the lots' sums while a module runs."""
    from loyalty_stream.engine import effects

    effects.CHECK_BALANCES = True
    try:
        yield
    finally:
        effects.CHECK_BALANCES = False


def process_all(processor: ActivityProcessor, records: Iterable[Record], store: dict[bytes, bytes]
                ) -> Iterator[Processed]:
    """Each record through `processor` in turn, over `store` (a dict standing in for the worker's table): every
    new state is stored before the next record, as the worker does; yields what each record gave."""
    for r in records:
        processed = processor.process(r.topic, r.partition, r.offset, r.key, r.value, store.get)
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
        yield processed


def states_after(processor: ActivityProcessor, records: Iterable[Record]) -> dict[bytes, bytes]:
    """The stored customer states once every record has gone through `processor` (see `process_all`)."""
    store: dict[bytes, bytes] = {}
    for _ in process_all(processor, records, store):
        pass
    return store
