"""Load programs from YAML/JSON files, validate them, and keep several side by side.

A bad program never reaches the engine: every problem is a `ProgramError` naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from loyalty_stream.program import checks
from loyalty_stream.program.model import Program


class ProgramError(ValueError):
    """A program that cannot be loaded; the message names the source and the field."""


def _format_validation(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid program"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {location}: {item['msg']}")
    return "\n".join(lines)


def parse_program(data: dict[str, Any], source: str = "<program>") -> Program:
    """Validate a program given as plain data, run the load-time checks and compile its expressions."""
    try:
        program = Program.model_validate(data)
    except ValidationError as exc:
        raise ProgramError(_format_validation(source, exc)) from None
    problems = checks.check_program(program)
    if problems:
        raise ProgramError(f"{source}: invalid program\n" + "\n".join(f"  {p}" for p in problems))
    return program


def read_program_file(path: Path) -> Program:
    text = path.read_bytes()
    try:
        data = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ProgramError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ProgramError(f"{path}: a program file holds one mapping at the top level")
    return parse_program(data, str(path))


class ProgramRegistry:
    """Programs by id and version; events are evaluated with the newest version of the program they name."""

    def __init__(self, programs: Iterable[Program] = ()) -> None:
        self._versions: dict[str, dict[int, Program]] = {}
        self._current: dict[str, Program] = {}
        self._added: list[Program] = []
        for program in programs:
            self.add(program)

    def add(self, program: Program) -> None:
        versions = self._versions.setdefault(program.id, {})
        versions[program.version] = program
        self._added.append(program)
        newest = self._current.get(program.id)
        if newest is None or program.version >= newest.version:
            self._current[program.id] = program

    def get(self, program_id: str, version: int | None = None) -> Program | None:
        if version is None:
            return self._current.get(program_id)
        return self._versions.get(program_id, {}).get(version)

    def added_since(self, count: int) -> list[Program]:
        """The programs added after the first `count` additions, in the order they were added: what a copy of
        this registry elsewhere (the engine process, `stream.engine_process`) still lacks. `revision` is the
        count to pass next time."""
        return self._added[count:]

    @property
    def revision(self) -> int:
        """How many programs were added so far (see `added_since`)."""
        return len(self._added)

    def __contains__(self, program_id: object) -> bool:
        return program_id in self._current

    def ids(self) -> list[str]:
        return sorted(self._current)

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> ProgramRegistry:
        registry = cls()
        for path in paths:
            registry.add(read_program_file(path))
        return registry
