"""Programs from the program topic join the registry; bad ones are refused with a reason."""

from __future__ import annotations

import orjson

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.program.model import Program
from loyalty_stream.stream.program_feed import apply_program_record


def _bytes(program: Program, **changes: object) -> bytes:
    data = program.model_dump(mode="json", exclude={"compiled"})
    data.update(changes)
    return orjson.dumps(data)


def test_new_version_becomes_current(default_program: Program) -> None:
    registry = ProgramRegistry([default_program])
    assert apply_program_record(registry, b"default", _bytes(default_program, version=2, name="v2")) is None
    current = registry.get("default")
    assert current is not None and current.version == 2 and current.name == "v2"
    assert registry.get("default", 1) == default_program


def test_invalid_programs_are_refused_and_the_registry_unchanged(default_program: Program) -> None:
    registry = ProgramRegistry([default_program])
    problems = [
        apply_program_record(registry, b"default", b"{nope"),
        apply_program_record(registry, b"default", None),
        apply_program_record(registry, b"default", _bytes(default_program, version=3, timezone="Mars/Base")),
        apply_program_record(registry, b"other", _bytes(default_program, version=4)),
        apply_program_record(registry, b"default", _bytes(default_program, name="changed without a bump")),
    ]
    assert all(isinstance(p, str) and p.startswith("program topic key ") for p in problems)
    assert "not JSON" in str(problems[0]) and "empty record" in str(problems[1])
    assert "timezone" in str(problems[2]) and "key" in str(problems[3]) and "bump" in str(problems[4])
    current = registry.get("default")
    assert current is not None and current.version == 1


def test_the_same_version_published_again_unchanged_is_accepted(default_program: Program) -> None:
    """A program loaded from its file and found again on the topic, or published twice: no conflict."""
    registry = ProgramRegistry([default_program])
    assert apply_program_record(registry, b"default", _bytes(default_program)) is None
    assert apply_program_record(registry, b"default", _bytes(default_program)) is None
    assert registry.get("default") is not None and registry.ids() == ["default"]
