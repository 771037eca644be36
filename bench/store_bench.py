"""The customer table on RocksDB (`LOYALTY_STORE=rocksdb://`): resident memory, disk and read rate.

Run alone: `.venv/bin/python -m bench.store_bench [--activities N] [--customers M] [--block-cache-mb MB]`
replays the workload and prints the figures; `make bench` runs `rocksdb_memory` in its memory section, next to
the memory store's.

What `rocksdb_memory(states)` does, as the worker's RocksDB store would (faust/stores/rocksdb.py):

* one database per table partition (`customers-<partition>.db`), each opened by Faust's own
  `RocksDBOptions().open(path)`: a `rocksdict.Rdict` in raw mode with Faust's defaults (64 MB write buffers,
  up to 3 of them, a 2 GB block cache per partition, a 3-bit bloom filter, binary-search index);
* a state goes to the partition of its customer's input records (murmur2 of the customer id, as the producer
  partitions the activity topics), with `put`, as the worker's `store[key] = value`; after every 500 states
  each partition gets Faust's persisted-offset key, as the worker sets it after a batch;
* then a flush of the memtables to SST files, and random gets over the stored customers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

Figures = dict[str, Any]

#: Partitions of the customer table: those of the benchmark's topics (`bench.broker_bench.PARTITIONS`).
PARTITIONS = 4
#: States written between two persisted-offset writes: the worker's batch size (`MAX_POLL_RECORDS`).
BATCH = 500
#: Random gets in the read-rate measurement (with repetition: more gets than customers is fine).
READS = 100_000
OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key
MB = 2**20


def _trim() -> None:
    """Return the C heap's free pages to the system (glibc `malloc_trim`), so that RSS counts live memory
    rather than what Python or RocksDB freed a moment ago; nothing where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes(*, settle: bool = True) -> int:
    """Resident set size of this process now (VmRSS in /proc/self/status), in bytes; 0 where there is none.
    With `settle`, after a garbage collection and a `malloc_trim`."""
    if settle:
        gc.collect()
        _trim()
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def partition_of(state_key: bytes, partitions: int = PARTITIONS) -> int:
    """The table partition of a state: its customer's input partition (the key is `program|customer`)."""
    customer = state_key.split(b"|", 1)[-1]
    return int((murmur2(customer) & 0x7FFFFFFF) % partitions)


def _dir_bytes(path: Path, suffix: str = "") -> int:
    return sum(f.stat().st_size for f in path.rglob(f"*{suffix}") if f.is_file())


def _rocksdb_int(dbs: Iterable[Any], name: str) -> int:
    """A RocksDB integer property summed over the partitions (0 where the binding does not answer)."""
    total = 0
    for db in dbs:
        try:
            total += int(db.property_int_value(name) or 0)
        except Exception:
            return 0
    return total


def rocksdb_memory(states: dict[bytes, bytes], *, partitions: int = PARTITIONS, reads: int = READS,
                   seed: int = 7, directory: Path | None = None, block_cache_size: int | None = None,
                   isolated: bool = True) -> Figures:
    """Write `states` (state key -> orjson bytes, as the worker stores them) into a RocksDB table store laid
    out and configured as Faust's, in a temporary directory, and measure it. Figures:

    * `rss_growth_written_mb`: growth of this process's resident memory (VmRSS) from just before the
      databases are opened to just after the last put: memtables plus RocksDB's own structures.
    * `rss_growth_mb` and `rss_mb_per_100k`: the same after a flush of every memtable to SST files (what
      a worker holds for its table right after writing or restoring it, block cache still cold).
    * `rss_growth_after_reads_mb` and `rss_after_reads_mb_per_100k`: the same after the random gets below,
      which fill the block cache (Faust sizes it at 2 GB per partition, so nothing read is evicted here):
      the steady state of a worker that has read every customer it serves.
    * `rocksdb_memtables_mb`, `rocksdb_block_cache_mb`, `rocksdb_table_readers_mb`: RocksDB's own account
      (properties `cur-size-all-mem-tables`, `block-cache-usage`, `estimate-table-readers-mem`) after the
      reads; the RSS figures also count allocator slack and the threads' arenas.
    * `disk_mb` / `disk_mb_per_100k`: every file in the data directory after the flush; `sst_mb`: the SST
      files alone (the rest is the write-ahead log, manifest and options files).
    * `puts_per_s`: states written per CPU second of this process (RocksDB's background threads included).
    * `gets_per_s`: random `get`s of stored keys on the key's own partition database, per CPU second (what
      the store does when it knows the partition); `gets_any_partition_per_s`: the same key looked up the way
      Faust's store does without a current event (the worker's batch path) and without its key index: each
      partition's bloom filter (`key_may_exist`) until a `get` finds it.

    By default (`isolated`) all of it runs in a fresh Python process that only loads the states (handed over
    in a temporary file): in a process that has just replayed the workload, RocksDB's allocations partly
    reuse heap pages that Python freed but could not return, and the RSS growth came out below RocksDB's own
    account. Each RSS reading follows a garbage collection and glibc's `malloc_trim(0)`, so freed heap pages
    (Python's garbage, flushed memtables) are not counted. Per-100k figures scale the growth linearly from
    `len(states)` customers; fixed costs (a few MB per open database) weigh more in small runs. The import of
    rocksdict itself (its shared library) is measured apart (`library_rss_mb`, 0 when it was loaded before)
    and left out of the growth figures.

    `block_cache_size` (bytes per partition) replaces Faust's 2 GB default, as a table's
    `options={"block_cache_size": ...}` would; `block_cache_mb` in the figures says which was used.
    """
    if not states:
        raise ValueError("no states to store")
    if isolated:
        return _in_child(states, partitions=partitions, reads=reads, seed=seed, directory=directory,
                         block_cache_size=block_cache_size)
    customers = len(states)
    scale = 100_000 / customers
    rss_before_import = rss_bytes()
    from faust.stores.rocksdb import USE_ROCKSDICT, RocksDBOptions  # loads rocksdict when installed

    if not USE_ROCKSDICT:
        raise RuntimeError("rocksdict is not installed: pip install 'loyalty-stream[rocksdb]'")
    library = rss_bytes() - rss_before_import
    options = RocksDBOptions(block_cache_size=block_cache_size)
    by_partition: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for key, value in states.items():
        by_partition[partition_of(key, partitions)].append((key, value))
    keys = list(states)
    rng = random.Random(seed)
    sample = [rng.choice(keys) for _ in range(reads)]
    where = {key: partition_of(key, partitions) for key in keys}
    own = tempfile.mkdtemp(prefix="loyalty-rocksdb-bench-", dir=directory)
    root = Path(own)
    dbs: list[Any] = []
    try:
        before = rss_bytes()
        dbs = [options.open(root / f"customers-{partition}.db") for partition in range(partitions)]
        cpu = time.process_time()
        offsets = [0] * partitions
        for start in range(0, max(len(rows) for rows in by_partition), BATCH):
            for partition, rows in enumerate(by_partition):
                chunk = rows[start:start + BATCH]
                if not chunk:
                    continue
                put = dbs[partition].put
                for key, value in chunk:
                    put(key, value)
                offsets[partition] += len(chunk)
                put(OFFSET_KEY, str(offsets[partition] - 1).encode())
        put_cpu = time.process_time() - cpu
        written = rss_bytes()
        for db in dbs:
            db.flush(True)
        flushed = rss_bytes()
        disk, sst = _dir_bytes(root), _dir_bytes(root, ".sst")

        cpu = time.process_time()
        for key in sample:
            if dbs[where[key]].get(key) is None:
                raise AssertionError(f"state {key!r} not found")
        get_cpu = time.process_time() - cpu
        cpu = time.process_time()
        for key in sample:
            for db in dbs:  # faust.stores.rocksdb.Store._get_bucket_for_key with an empty key index
                if db.key_may_exist(key) and db.get(key) is not None:
                    break
            else:
                raise AssertionError(f"state {key!r} not found")
        any_cpu = time.process_time() - cpu
        after_reads = rss_bytes()
        accounted = {name: _rocksdb_int(dbs, f"rocksdb.{name}")
                     for name in ("cur-size-all-mem-tables", "block-cache-usage", "estimate-table-readers-mem")}
    finally:
        for db in dbs:
            db.close()
        del dbs
        gc.collect()
        shutil.rmtree(own, ignore_errors=True)
    json_bytes = sum(len(value) for value in states.values())
    return {
        "customers": customers,
        "partitions": partitions,
        "block_cache_mb": round(options.block_cache_size / MB),
        "state_json_bytes_total_mb": round(json_bytes / MB, 1),
        "library_rss_mb": round(library / MB, 1),
        "rss_growth_written_mb": round((written - before) / MB, 1),
        "rss_growth_mb": round((flushed - before) / MB, 1),
        "rss_mb_per_100k": round((flushed - before) * scale / MB, 1),
        "rss_growth_after_reads_mb": round((after_reads - before) / MB, 1),
        "rss_after_reads_mb_per_100k": round((after_reads - before) * scale / MB, 1),
        "rocksdb_memtables_mb": round(accounted["cur-size-all-mem-tables"] / MB, 1),
        "rocksdb_block_cache_mb": round(accounted["block-cache-usage"] / MB, 1),
        "rocksdb_table_readers_mb": round(accounted["estimate-table-readers-mem"] / MB, 1),
        "disk_mb": round(disk / MB, 1),
        "sst_mb": round(sst / MB, 1),
        "disk_mb_per_100k": round(disk * scale / MB, 1),
        "puts_per_s": round(customers / put_cpu) if put_cpu > 0 else None,
        "reads": reads,
        "gets_per_s": round(reads / get_cpu) if get_cpu > 0 else None,
        "gets_any_partition_per_s": round(reads / any_cpu) if any_cpu > 0 else None,
    }


def write_states(states: dict[bytes, bytes], path: Path) -> None:
    """`states` as length-prefixed key and value bytes (`read_states` reads them back)."""
    with open(path, "wb") as out:
        for key, value in states.items():
            out.write(struct.pack(">II", len(key), len(value)))
            out.write(key)
            out.write(value)


def read_states(path: Path) -> dict[bytes, bytes]:
    states: dict[bytes, bytes] = {}
    with open(path, "rb") as source:
        while header := source.read(8):
            key_size, value_size = struct.unpack(">II", header)
            key = source.read(key_size)
            states[key] = source.read(value_size)
    return states


def _in_child(states: dict[bytes, bytes], **options: Any) -> Figures:
    """`rocksdb_memory(states, isolated=False, **options)` in a fresh interpreter (`python -m bench.store_bench
    --states FILE`); its figures come back as JSON on stdout."""
    with tempfile.TemporaryDirectory(prefix="loyalty-rocksdb-states-") as scratch:
        path = Path(scratch) / "states.bin"
        write_states(states, path)
        command = [sys.executable, "-m", "bench.store_bench", "--states", str(path), "--json",
                   "--partitions", str(options["partitions"]), "--reads", str(options["reads"]),
                   "--seed", str(options["seed"])]
        if options["directory"] is not None:
            command += ["--directory", str(options["directory"])]
        if options["block_cache_size"] is not None:
            command += ["--block-cache-mb", str(options["block_cache_size"] / MB)]
        done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                              check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rocksdb_memory in a child process failed: {done.stderr.decode()[-2000:]}")
    figures: Figures = orjson.loads(done.stdout.splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--activities", type=int, default=20_000)
    parser.add_argument("--customers", type=int)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--block-cache-mb", type=float, help="block cache per partition (Faust: 2048)")
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--reads", type=int, default=READS)
    parser.add_argument("--directory", type=Path, help="parent of the temporary data directory")
    parser.add_argument("--states", type=Path, help="measure these states (`write_states`), in this process")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args(argv)
    cache = int(args.block_cache_mb * MB) if args.block_cache_mb is not None else None
    options = {"partitions": args.partitions, "reads": args.reads, "seed": args.seed,
               "directory": args.directory, "block_cache_size": cache}
    if args.states is not None:
        figures = rocksdb_memory(read_states(args.states), isolated=False, **options)
    else:
        from bench import engine_bench, workload

        records = workload.generate(args.activities, args.customers or max(1, args.activities // 2),
                                    seed=args.seed)
        _, result = engine_bench.replay_figures(records, workload.load_registry())
        del records
        figures = rocksdb_memory(result.states, **options)
    if args.json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    else:
        for name, value in figures.items():
            print(f"{name:<32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
