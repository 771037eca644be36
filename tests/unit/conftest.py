"""Shared builders for engine and processor unit tests (no broker, no event loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.program.loader import ProgramRegistry, parse_program, read_program_file
from loyalty_stream.program.model import Program

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
