"""Process settings every benchmark section runs under, so the figures are those of a worker process."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def worker_gc() -> Iterator[None]:
    """The garbage collector as a worker process runs it (`runtime.tune_gc`), restored afterwards so that code
    outside the measured section runs under the defaults."""
    from loyalty_stream.stream.runtime import tune_gc

    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        if enabled:
            gc.enable()
