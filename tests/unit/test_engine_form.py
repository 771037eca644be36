"""The mypyc-compiled engine and its Python sources: which one runs, and that both give the same bytes."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import loyalty_stream.engine.core as engine_core
from loyalty_stream import ENGINE_FORM
from loyalty_stream.engine_form import MANIFEST, form_for, stale_modules

ROOT = Path(__file__).resolve().parents[2]
SO = importlib.machinery.EXTENSION_SUFFIXES[0]

# Every output record and stored state of a mixed workload, in one digest (runs in a fresh interpreter).
DIGEST = """
import hashlib, sys
from datetime import UTC, datetime
from bench import workload
from loyalty_stream import ENGINE_FORM
import loyalty_stream.engine.core as core
from loyalty_stream.stream.processor import ActivityProcessor

now = datetime(2030, 1, 1, tzinfo=UTC)
digest = hashlib.sha256()
for cache in (0, 64):
    processor = ActivityProcessor(workload.load_registry(), clock=lambda: now, state_cache=cache)
    store = {}
    for r in workload.generate(3000, 300, seed=5, days=90):
        processed = processor.process(r.topic, r.partition, r.offset, r.key, r.value, store.get)
        for topic, value in processed.outputs:
            digest.update(topic.encode() + b"\\0" + value + b"\\n")
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
    for key in sorted(store):
        digest.update(key + b"\\0" + store[key] + b"\\n")
print(ENGINE_FORM, core.__file__.rsplit(".", 1)[-1], digest.hexdigest())
"""


def _digest(pure: bool) -> list[str]:
    env = {**os.environ, "LOYALTY_PURE_ENGINE": "1" if pure else "0"}
    done = subprocess.run([sys.executable, "-c", DIGEST], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True, timeout=300)
    return done.stdout.split()


@pytest.mark.skipif(ENGINE_FORM != "compiled", reason="the engine is not compiled here (no C compiler or mypyc?)")
def test_the_compiled_engine_gives_the_same_bytes_as_its_sources() -> None:
    compiled, pure = _digest(pure=False), _digest(pure=True)
    assert compiled[:2] == ["compiled", "so"] and pure[:2] == ["pure", "py"]
    assert compiled[2] == pure[2]


def test_this_process_runs_the_form_it_reports() -> None:
    assert (ENGINE_FORM == "compiled") == engine_core.__file__.endswith(".so")


def _engine(tmp_path: Path, *, compiled: bool = True) -> Path:
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "__init__.py").write_text("")
    for name in ("core", "earn"):
        (engine / f"{name}.py").write_text(f"X = '{name}'\n")
        if compiled:
            (engine / f"{name}{SO}").write_bytes(b"")
    return engine


def _record_build(engine: Path) -> None:
    digests = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in engine.glob("*.py") if p.stem != "__init__"}
    (engine / MANIFEST).write_text(json.dumps(digests))


def test_compiled_modules_run_only_while_every_source_matches_the_build(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert form_for(engine, pure_requested=False)[0] == "pure"  # no build recorded
    assert stale_modules(engine) == ["core", "earn"]
    _record_build(engine)
    assert form_for(engine, pure_requested=False) == ("compiled", "")
    assert form_for(engine, pure_requested=True) == ("pure", "LOYALTY_PURE_ENGINE=1")
    (engine / "earn.py").write_text("X = 'edited'\n")
    form, reason = form_for(engine, pure_requested=False)
    assert form == "pure" and "(earn)" in reason and "make" in reason
    (engine / "earn.py").write_text("X = 'earn'\n")  # back as built: the build is current again
    assert form_for(engine, pure_requested=False) == ("compiled", "")
    (engine / "tiers.py").write_text("X = 'new'\n")  # a module the build never saw
    assert stale_modules(engine) == ["tiers"]


def test_an_uncompiled_engine_runs_its_sources(tmp_path: Path) -> None:
    engine = _engine(tmp_path, compiled=False)
    assert form_for(engine, pure_requested=False) == ("pure", "not compiled")
