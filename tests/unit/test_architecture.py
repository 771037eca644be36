"""The engine, program model and contracts stay pure: no framework, broker, cache or clock imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "loyalty_stream"
PURE = ("engine", "program", "events")
FORBIDDEN_MODULES = {"faust", "aiokafka", "redis", "mode", "asyncio", "time", "random", "os", "socket"}
FORBIDDEN_PACKAGES = ("loyalty_stream.stream", "loyalty_stream.readmodel", "loyalty_stream.api",
                      "loyalty_stream.scheduler", "loyalty_stream.devstack", "loyalty_stream.replay")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_core_imports_no_io() -> None:
    offenders = []
    for package in PURE:
        files = sorted((PACKAGE / package).rglob("*.py"))
        assert len(files) > 3, f"{package}: nothing to check"
        for path in files:
            if path.name == "schema_export.py":
                continue  # writes schema files; used by the CLI, never by the engine
            for name in _imports(path):
                if name.split(".")[0] in FORBIDDEN_MODULES or name.startswith(FORBIDDEN_PACKAGES):
                    offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


def test_engine_never_reads_the_clock() -> None:
    offenders = []
    files = sorted((PACKAGE / "engine").rglob("*.py"))
    assert len(files) > 10 and any(p.name == "core.py" for p in files)
    for path in files:
        text = path.read_text()
        for needle in ("datetime.now(", "datetime.utcnow(", "date.today(", "time.time("):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == []


def test_the_checks_catch_an_offender(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import time\nfrom loyalty_stream.stream import worker\nimport os.path\n")
    assert _imports(module) == {"time", "loyalty_stream.stream", "os.path"}
