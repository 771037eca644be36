"""Fingerprints of everything the engine writes, to show that an optimisation changed no byte.

`.venv/bin/python -m bench.fingerprint [--seed 7] [--activities 6000]` prints one line per path over the
deterministic workload (`bench.workload`, half as many customers as activities, 120 days):

* `replay objects` / `replay bytes`: the offline replay with an object store and with a byte store: ledger
  entries, a hash of the ledger, a hash of the final stored states;
* `batch 0` / `batch 16384`: the engine process's `run_batch` (300 records a batch, state cache off / on, a
  fixed clock): outputs, a hash of every record's result (customer, state key, stored state, outputs), of the
  final stored states and of the due notes.

Run it before and after a change (compiled, and with `LOYALTY_PURE_ENGINE=1`): the lines must be equal. Hashes
depend on `PYTHONHASHSEED` nowhere, but run with `PYTHONHASHSEED=0` to compare callgrind counts too.

`--profile N` instead runs `run_batch` (state cache on, collector off as in an engine process) over N warm-up
records and then N measured ones, for `valgrind --tool=callgrind`; `--profile-skip` stops after the warm-up,
so the measured records' instructions are the difference of the two runs divided by N.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from bench import workload
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.replay.runner import Record, replay
from loyalty_stream.stream.due_recorder import Due
from loyalty_stream.stream.engine_process import Record as Row
from loyalty_stream.stream.engine_process import Result, run_batch
from loyalty_stream.stream.processor import ActivityProcessor

CLOCK = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 300


def digest(items: Iterable[Any]) -> str:
    """blake2b-8 over the items, each followed by a zero byte (bytes as they are, anything else by `repr`)."""
    hasher = hashlib.blake2b(digest_size=8)
    for item in items:
        hasher.update(item if isinstance(item, bytes) else repr(item).encode())
        hasher.update(b"\x00")
    return hasher.hexdigest()


def _states_digest(states: dict[bytes, bytes | None]) -> str:
    return digest(item for key in sorted(states) for item in (key, states[key]))


def _batch_records(records: list[Record]) -> list[Row]:
    return [(r.topic, r.partition, r.offset, r.key, r.value, r.topic) for r in records]


def _batches(processor: ActivityProcessor, rows: list[Row], store: dict[bytes, bytes | None],
             registry: ProgramRegistry) -> Iterator[tuple[list[Result], dict[str, Due]]]:
    """`run_batch` over the rows, `BATCH` at a time, with `store` as the state store (its states kept)."""
    for start in range(0, len(rows), BATCH):
        results, dues = run_batch(processor, rows[start:start + BATCH], lambda keys: [store.get(k) for k in keys],
                                  registry)
        for _, key, state, _ in results:
            if key is not None and state is not None:
                store[key] = state
        yield results, dues


def run_batches(records: list[Record], cache: int) -> tuple[int, str, str, str]:
    """`run_batch` over the records (state cache `cache`): outputs, hashes of results, stored states, dues."""
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, lambda: CLOCK, state_cache=cache)
    store: dict[bytes, bytes | None] = {}
    outputs = 0
    results: list[Any] = []
    dues: list[Any] = []
    for batch_results, batch_dues in _batches(processor, _batch_records(records), store, registry):
        outputs += sum(len(outs) for _, _, _, outs in batch_results)
        results.extend(batch_results)
        dues.append(sorted(batch_dues.items()))
    return outputs, digest(results), _states_digest(store), digest(dues)


def fingerprints(seed: int, activities: int) -> list[str]:
    records = workload.generate(activities, activities // 2, seed=seed, days=120)
    registry = workload.load_registry()
    lines = []
    stores: tuple[Literal["objects", "bytes"], ...] = ("objects", "bytes")
    for store in stores:
        result = replay(records, registry, store=store)
        lines.append(f"replay {store} {len(result.ledger)} {digest(result.ledger)} "
                     f"{_states_digest(dict(result.states))}")
    for cache in (0, 16384):
        outputs, results, states, dues = run_batches(records, cache)
        lines.append(f"batch {cache} {outputs} {results} {states} {dues}")
    return lines


def profile(count: int, skip: bool) -> None:
    """`run_batch` over `count` warm-up records, then (unless `skip`) `count` measured ones."""
    records = _batch_records(workload.generate(2 * count, count, seed=7, days=120))
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, lambda: CLOCK, state_cache=16384)
    store: dict[bytes, bytes | None] = {}

    gc.collect()
    gc.freeze()
    gc.disable()
    for _ in _batches(processor, records[:count], store, registry):
        pass
    if not skip:
        for _ in _batches(processor, records[count:], store, registry):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fingerprint", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--activities", type=int, default=6000)
    parser.add_argument("--profile", type=int, metavar="N", help="drive run_batch for callgrind instead")
    parser.add_argument("--profile-skip", action="store_true", help="with --profile: the warm-up only")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile, args.profile_skip)
        return 0
    for line in fingerprints(args.seed, args.activities):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
