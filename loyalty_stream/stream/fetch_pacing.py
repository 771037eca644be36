"""The min bytes of the worker's fetches, chosen from the input rate.

A broker holds a fetch until its min bytes have arrived or its wait has passed. Under a load that brings the
min bytes within the wait, holding makes the worker take fewer, larger batches: fewer fetches (on the embedded
broker each fetch that returns data costs a walk over every batch stored in the partition), fewer produce
requests and stored output batches. Under a lighter load the bytes never come in time, so every fetch waits
the whole wait and its records with it, for no saving: the broker looks at a parked fetch as often as it
would answer a fetch for one byte. So the worker holds its fetches only while the input fills them in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class FetchMinBytes:
    """Min bytes for the next fetch: ``ceiling`` while the input rate brings that many bytes within one
    ``max_wait_s``, else 1.

    The rate is measured over windows of at least ``window_s`` of the fetched records' value bytes (what the
    broker counts, less the keys and the per-record framing: a slight undercount, on the side of not holding).
    Once holding, the worker goes on holding until the rate falls below ``keep_ratio`` of the ceiling's, so a
    load near the threshold does not flip it every window.
    A fetch that comes a whole window after the one before ends a pause: the rate is unknown again, so the
    worker starts again from 1 byte and a new window.
    """

    ceiling: int
    max_wait_s: float
    window_s: float = 0.5
    keep_ratio: float = 0.75
    current: int = 1
    _window_start: float = field(default=0.0, repr=False)
    _window_bytes: int = field(default=0, repr=False)
    _last_fetch: float = field(default=-math.inf, repr=False)
    """Never fetched: the first fetch comes after a pause."""

    def observe(self, fetched_bytes: int, now: float) -> int:
        """Count one fetch's bytes, fetched at monotonic time ``now``; the min bytes for the next fetch."""
        last, self._last_fetch = self._last_fetch, now
        if now - last >= self.window_s:
            # The first fetch, or the first after a pause, opens a window; its bytes came before it.
            self._window_start, self._window_bytes, self.current = now, 0, 1
            return 1
        self._window_bytes += fetched_bytes
        elapsed = now - self._window_start
        if elapsed >= self.window_s:
            per_wait = self._window_bytes * self.max_wait_s / elapsed
            threshold = self.ceiling * (self.keep_ratio if self.current > 1 else 1.0)
            self.current = self.ceiling if per_wait >= threshold else 1
            self._window_start, self._window_bytes = now, 0
        return self.current
