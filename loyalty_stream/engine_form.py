"""Which form of the rules engine runs: mypyc-compiled (see `setup.py`) or its Python sources.

The package imports this before any engine module, so the choice holds for the whole process: the compiled
modules only while `engine/compiled.json` matches every source (an edited source runs as written, with a
warning, until the next `make`), and never with `LOYALTY_PURE_ENGINE=1` (for debugging, line profiles and
the equivalence test). Both forms give identical results; the compiled one is faster.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_ENGINE = Path(__file__).resolve().parent / "engine"
MANIFEST = "compiled.json"
"""Written by `setup.py` after a build: the sha256 of each compiled module's source."""
_PACKAGE = "loyalty_stream.engine"


class _SourceEngineFinder(importlib.abc.MetaPathFinder):
    """Imports `loyalty_stream.engine.*` from the `.py` sources even where compiled modules sit beside them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or not (_ENGINE / f"{name}.py").is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, _ENGINE / f"{name}.py")


def stale_modules(engine: Path) -> list[str]:
    """Modules whose source differs from the one compiled (all of them if no build recorded any)."""
    try:
        built: dict[str, str] = json.loads((engine / MANIFEST).read_text())
    except (OSError, ValueError):
        built = {}
    sources = {path.stem: path for path in engine.glob("*.py") if path.name != "__init__.py"}
    return sorted(name for name, path in sources.items()
                  if built.get(name) != hashlib.sha256(path.read_bytes()).hexdigest())


def form_for(engine: Path, *, pure_requested: bool) -> tuple[str, str]:
    """(`"compiled"` or `"pure"`, why pure) for the engine package at `engine`."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    if not any(path.name.endswith(suffixes) for path in engine.iterdir()):
        return "pure", "not compiled"
    if pure_requested:
        return "pure", "LOYALTY_PURE_ENGINE=1"
    if stale := stale_modules(engine):
        return "pure", f"sources changed since the engine was compiled ({', '.join(stale[:5])}); run `make`"
    return "compiled", ""


def _choose_form() -> str:
    form, reason = form_for(_ENGINE, pure_requested=os.environ.get("LOYALTY_PURE_ENGINE", "") not in ("", "0"))
    if form == "pure" and reason != "not compiled":
        sys.meta_path.insert(0, _SourceEngineFinder())
        if reason.startswith("sources changed"):
            warnings.warn(f"loyalty-stream runs its engine as pure Python: {reason}", RuntimeWarning, stacklevel=2)
    return form


ENGINE_FORM: str = _choose_form()
"""`"compiled"` when the mypyc-compiled engine runs, `"pure"` when its Python sources do."""
