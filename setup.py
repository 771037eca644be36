"""Builds loyalty-stream with its rules engine compiled by mypyc wherever that can be done.

The engine (`loyalty_stream/engine`) is strictly typed, pure Python; mypyc turns its modules into one C
extension that runs them about 1.5x faster with identical results. Where compiling cannot be done (no mypyc,
no C compiler, `LOYALTY_COMPILE=0`), the package installs as pure Python, the same code, only slower.

After a build, `loyalty_stream/engine/compiled.json` records the sha256 of each compiled source.
`loyalty_stream.engine` loads the compiled modules only while every source still matches; after an edit it
runs the sources, with a warning, until the next build (`make` does it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ENGINE = Path("loyalty_stream/engine")
MANIFEST = "compiled.json"


def _say(message: str) -> None:
    print(f"loyalty-stream: {message}", file=sys.stderr)


def engine_sources() -> list[Path]:
    """The engine's modules; `__init__` stays interpreted because it chooses between compiled and source."""
    return sorted(path for path in ENGINE.glob("*.py") if path.name != "__init__.py")


def engine_extensions() -> list[Any]:
    if os.environ.get("LOYALTY_COMPILE", "1") == "0":
        _say("LOYALTY_COMPILE=0: the engine stays pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: the engine stays pure Python")
        return []
    try:
        return list(mypycify([str(path) for path in engine_sources()], opt_level="3",
                             group_name="loyalty_stream.engine"))
    except (Exception, SystemExit) as error:  # mypycify exits on a type error
        _say(f"mypyc could not translate the engine ({error!r}): it stays pure Python")
        return []


class OptionalBuildExt(build_ext):
    """Builds the compiled engine whole or not at all: a failed C build leaves the pure-Python engine."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            _say(f"compiling the engine failed ({error!r}): it stays pure Python")
            return
        if self.extensions:
            target = Path(self.get_ext_fullpath("loyalty_stream.engine.core")).parent
            digests = {path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in engine_sources()}
            (target / MANIFEST).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


setup(ext_modules=engine_extensions(), cmdclass={"build_ext": OptionalBuildExt})
