"""The rules engine in processes of their own beside the worker (`Settings.engine_processes`).

A worker spends most of its time in decode -> engine -> encode (`ActivityProcessor`) and the rest in Kafka
I/O, Faust and the event loop, all under one GIL: one core at most. With engine processes, the worker's
process keeps the I/O, the table and every guarantee of `stream.worker`, and submits each batch of records to
them (split by customer: `EngineProcesses`); each runs the same `ActivityProcessor` and answers with what the
worker's own loop would have produced: per record the customer, the state key, the new state's bytes and
the output records, plus the batch's due-index notes. The worker takes in one batch's results (outputs,
changelog, acks: `stream.worker`) while the engines run the next.

Pickled messages on a socket pair per engine, in order on each side, so they need no ids (every engine gets
every batch, empty if none of its customers is in it, so all count batches alike):

* worker -> engine: `batch` (epoch, programs added to the registry since the last batch as JSON, records);
  `states` (how many batches the worker has taken in, the stored state of each key asked for);
* engine -> worker: `keys` (the state keys of a batch's customers: it decoded the records to know them);
  `results` (in record order, and the due notes).

The worker answers `keys` at once, from its pending states and its table. That answer may be older than the
engine's own result for a customer of a batch the worker is still taking in; `Engine` lays its own newer
states over it (see there). Its state cache is used only when the bytes it is given are exactly the bytes it
encoded (`ActivityProcessor`), so a rebalance, a batch the worker dropped or a restored changelog never make
it compute from a state the table does not hold. If an engine process dies, the worker crashes: nothing of
the batches in flight was acked, so they are processed again, with the same output ids, after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import multiprocessing
import pickle
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson

from loyalty_stream.engine.state import CustomerState
from loyalty_stream.program.loader import ProgramRegistry, parse_program
from loyalty_stream.stream.due_recorder import Due, due_of
from loyalty_stream.stream.processor import ActivityProcessor, Processed

log = logging.getLogger(__name__)

Record = tuple[str, int, int, bytes | None, bytes | None, str]
"""A record for the engine: logical topic, partition, offset, key, value, real topic."""
Result = tuple[str | None, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""What the worker takes from one processed record: customer id, state key, new state bytes (None: nothing
to store), output records (logical topic, value)."""


class EngineProcessError(RuntimeError):
    """The engine process is gone or broke the protocol."""


Load = Callable[[bytes], bytes | None]
"""Reads a stored customer state by key, as the worker holds it when the engine asks."""
Done = Callable[[Any, list[Result], dict[str, Due]], Awaitable[None]]
"""Takes in one batch's results: (what `submit` was given for it, results, due notes)."""
Failed = Callable[[BaseException], Awaitable[None]]
"""Told once when an engine process is gone or a batch could not be taken in: nothing more will be."""

_HEADER = struct.Struct("!Q")
_BUFFER = 8 * 2**20  # the kernel caps it (net.core.wmem_max)


def _frame(message: Any) -> tuple[bytes, memoryview]:
    """A message as it crosses the socket: its pickle's length, then the pickle. Written as two buffers: a
    batch's results are megabytes, and joining them to the header cost a copy (3 % of an engine process).

    Pickled without a memo (`Pickler.fast`): messages are trees of tuples, lists, bytes and strings, never
    cyclic, and remembering each of a batch's thousands of objects for a back-reference no message has was
    40 % of pickling the results (3.5 us a record of an engine process)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(message)
    payload = buffer.getbuffer()
    return _HEADER.pack(payload.nbytes), payload


class EngineProcesses:
    """The worker's side: starts `count` engine processes, submits batches (`submit`) split between them by
    customer, answers their requests for stored states at once (`load`), and hands each batch's results to
    `done`, whole and in record order, from a task of its own. At most `depth` batches are submitted and not
    yet done.

    A customer's records always go to the same engine (by the record's key, which the processor requires to
    be the customer id, or for a record without a key by the customer id in its JSON): an engine's own states
    (`Engine`) are then the latest of their customers, and two engines never work on one customer."""

    def __init__(self, registry: ProgramRegistry, load: Load, done: Done, failed: Failed, *, count: int,
                 state_cache: int, due_notes: bool, gc_interval: float, depth: int = 2) -> None:
        if count < 1:
            raise ValueError("at least one engine process")
        self.registry = registry
        self._load = load
        self._done = done
        self._failed = failed
        self._engines = [_EngineLink(state_cache, due_notes, gc_interval) for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []
        self._batches: deque[tuple[Any, list[list[int]]]] = deque()  # (context, record indexes per engine)
        self._slots = asyncio.Semaphore(depth)
        self._idle = asyncio.Event()
        self._idle.set()
        self._sent = 0  # registry revision the engines have
        self.failure: BaseException | None = None
        self._closed = False

    @property
    def pids(self) -> list[int | None]:
        return [engine.process.pid for engine in self._engines]

    def _engine_of(self, key: bytes | None, value: bytes | None) -> int:
        count = len(self._engines)
        if count == 1:
            return 0
        if key is None:  # the customer in the JSON; a record without one is dead-lettered before any state
            try:
                key = str(orjson.loads(value or b"null").get("customer_id")).encode()
            except (orjson.JSONDecodeError, AttributeError):
                return 0
        return hash(key) % count

    async def submit(self, epoch: int, context: Any, records: list[Record]) -> None:
        """Send one batch (waits while `depth` batches are in the engines); its results go to `done` with
        `context`. `epoch` changes when what `load` gives may no longer follow from the earlier batches
        (a rebalance). Raises EngineProcessError if an engine failed."""
        await self._slots.acquire()
        if self.failure is not None or self._closed:
            self._slots.release()
            raise self.failure or EngineProcessError("the engine processes are closed")
        if not self._tasks:
            for engine in self._engines:
                await engine.connect(self._load, self._fail)
            self._tasks = [asyncio.create_task(self._take_in(), name="engine-process-results")]
        programs = [p.model_dump(mode="json", by_alias=True) for p in self.registry.added_since(self._sent)]
        self._sent = self.registry.revision
        parts: list[list[int]] = [[] for _ in self._engines]
        engine_of = self._engine_of
        for index, record in enumerate(records):
            parts[engine_of(record[3], record[4])].append(index)
        self._batches.append((context, parts))
        self._idle.clear()
        for engine, part in zip(self._engines, parts, strict=True):  # every engine gets every batch, maybe empty
            engine.send(("batch", (epoch, programs, [records[index] for index in part])))

    async def _take_in(self) -> None:
        try:
            while True:
                parts = [await engine.results.get() for engine in self._engines]
                context, indexes = self._batches.popleft()
                if len(parts) == 1:
                    results, dues = parts[0]
                else:
                    merged: list[Result | None] = [None] * sum(len(part) for part in indexes)
                    dues = {}
                    for (part_results, part_dues), part in zip(parts, indexes, strict=True):
                        for index, result in zip(part, part_results, strict=True):
                            merged[index] = result
                        dues.update(part_dues)
                    results = cast(list[Result], merged)
                await self._done(context, results, dues)
                for engine in self._engines:
                    engine.done += 1
                self._slots.release()
                if not self._batches:
                    self._idle.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # `done` failed: nothing more is taken in
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            codes = [engine.process.exitcode for engine in self._engines]
            self.failure = EngineProcessError(f"an engine process failed: {exc!r} (exit codes {codes})")
            self.failure.__cause__ = exc
            if not self._closed:
                log.error("%s", self.failure)
                self._tasks.append(asyncio.ensure_future(self._failed(self.failure)))
        self._batches.clear()
        self._idle.set()
        self._slots.release()  # wakes a waiting `submit`, which raises and wakes the next one

    async def idle(self) -> None:
        """Wait until every submitted batch's results were taken in (or an engine failed)."""
        await self._idle.wait()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the processes (after `idle`, for the batches in hand to finish)."""
        if self._closed:
            return
        self._closed = True
        for engine in self._engines:
            engine.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for engine in self._engines:
            await asyncio.to_thread(engine.process.join, timeout)
            if engine.process.is_alive():
                engine.process.terminate()


class _EngineLink:
    """One engine process and the worker's end of its socket: answers its state requests, queues its results."""

    def __init__(self, state_cache: int, due_notes: bool, gc_interval: float) -> None:
        parent, child = socket.socketpair()
        for end in (parent, child):  # room for a batch's results, so the engine seldom waits for the worker
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        context = multiprocessing.get_context("spawn")  # the worker has threads (Faust's consumer): no fork
        self.process = context.Process(target=serve, args=(child, state_cache, due_notes, gc_interval),
                                       name="loyalty-engine", daemon=True)
        self.process.start()
        child.close()
        self.socket = parent
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.results: asyncio.Queue[tuple[list[Result], dict[str, Due]]] = asyncio.Queue()
        self.done = 0  # batches the worker took in: the engine's own states of those are in `load`'s answers

    async def connect(self, load: Load, fail: Callable[[BaseException], None]) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_connection(lambda: _Frames(self, load, fail), sock=self.socket)

    def send(self, message: Any) -> None:
        assert self.transport is not None
        header, payload = _frame(message)
        self.transport.write(header)
        self.transport.write(payload)

    def receive(self, message: bytearray, load: Load) -> None:
        """One of the engine's messages, in order: a state request is answered at once, results queued."""
        kind, body = pickle.loads(message)
        if kind == "keys":
            self.send(("states", (self.done, [load(key) for key in body])))
        else:
            self.results.put_nowait(body)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
        else:
            self.socket.close()


class _Frames(asyncio.BufferedProtocol):
    """The worker's end of an engine's socket: each message is read straight into a buffer of its own size
    (a batch's results are megabytes; a stream reader copied them three times) and handed to the link."""

    def __init__(self, link: _EngineLink, load: Load, fail: Callable[[BaseException], None]) -> None:
        self.link, self.load, self.fail = link, load, fail
        self.header = bytearray(_HEADER.size)
        self.body: bytearray | None = None
        self.view = memoryview(self.header)
        self.got = 0
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.got:]

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got < len(self.view):
            return
        self.got = 0
        if self.body is None:
            self.body = bytearray(_HEADER.unpack(self.header)[0])
            self.view = memoryview(self.body)
            if self.body:
                return
        message, self.body, self.view = self.body, None, memoryview(self.header)
        try:
            self.link.receive(message, self.load)
        except Exception as exc:  # a broken message or a failed state read: as if the engine were gone
            self.fail(exc)
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        return False  # closes the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.link.closing:
            self.fail(exc or EOFError("the engine process closed its socket"))


class _Channel:
    """The engine process's end: whole pickled messages over a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def receive(self) -> Any:
        size = _HEADER.unpack(self._exactly(_HEADER.size))[0]
        return pickle.loads(self._exactly(size))

    def _exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = self.sock.recv_into(view[got:])
            if count == 0:
                raise EOFError("the worker closed the engine's socket")
            got += count
        return buffer

    def send(self, message: Any) -> None:
        header, payload = _frame(message)
        self.sock.sendall(header)
        self.sock.sendall(payload)


def serve(sock: socket.socket, state_cache: int, due_notes: bool, gc_interval: float) -> None:
    """The engine process: batches in, results out, until the worker closes the socket."""
    registry = ProgramRegistry()
    engine = Engine(ActivityProcessor(registry, state_cache=state_cache), registry if due_notes else None)
    channel = _Channel(sock)
    batches: deque[Any] = deque()  # arrived while the engine waited for states: the worker submits ahead

    def ask(keys: list[bytes]) -> tuple[int, list[bytes | None]]:
        channel.send(("keys", keys))
        while True:
            kind, body = channel.receive()
            if kind == "states":
                answer: tuple[int, list[bytes | None]] = body
                return answer
            batches.append(body)

    gc.collect()
    gc.freeze()
    paced = gc_interval > 0
    if paced:  # as in the worker (`runtime.tune_gc`): the engine makes no cycles
        gc.disable()
    collected = time.monotonic()
    while True:
        try:
            if batches:
                epoch, programs, records = batches.popleft()
            else:
                kind, (epoch, programs, records) = channel.receive()
                assert kind == "batch", kind
            for data in programs:
                registry.add(parse_program(data, "program from the worker"))
            channel.send(("results", engine.run(epoch, records, ask)))
        except (EOFError, OSError):
            return
        if paced and time.monotonic() - collected >= gc_interval:
            gc.collect()
            collected = time.monotonic()


Ask = Callable[[list[bytes]], tuple[int, list[bytes | None]]]
"""Asks the worker for the stored states of some customers: (batches it had taken in, states)."""


class Engine:
    """What the engine process does with a batch, apart from the socket (tests drive it directly).

    The worker answers a state request at once, while it may still be taking in the previous batch's results
    (that is what lets the two processes work at the same time): its answer for a customer of that batch is
    then older than the state the engine produced. Within an epoch every stored state comes from the engine's
    own results, in order, so the engine's latest state of a customer (`own`) wins until the worker's answer
    says that the batch holding it was taken in. A new epoch (a rebalance: the worker dropped batches and
    recovered its table) forgets them all."""

    def __init__(self, processor: ActivityProcessor, due_registry: ProgramRegistry | None) -> None:
        self.processor = processor
        self.due_registry = due_registry
        self.epoch: int | None = None
        self.batches = 0  # received so far, counted as the worker counts the batches it submits
        self.own: dict[bytes, tuple[int, bytes]] = {}  # state key -> (batch number, state bytes)

    def run(self, epoch: int, records: list[Record], ask: Ask) -> tuple[list[Result], dict[str, Due]]:
        self.batches += 1
        if epoch != self.epoch:
            self.epoch = epoch
            self.own.clear()
        own, batch = self.own, self.batches

        def fetch_states(keys: list[bytes]) -> list[bytes | None]:
            done, stored = ask(keys)
            if own:
                for key in [key for key, (number, _) in own.items() if number <= done]:
                    del own[key]
                for index, key in enumerate(keys):
                    mine = own.get(key)
                    if mine is not None:
                        stored[index] = mine[1]
            return stored

        results, dues = run_batch(self.processor, records, fetch_states, self.due_registry)
        for _, key, state, _ in results:
            if state is not None and key is not None:
                own[key] = (batch, state)
        return results, dues


def run_batch(processor: ActivityProcessor, records: list[Record],
              fetch_states: Callable[[list[bytes]], list[bytes | None]], due_registry: ProgramRegistry | None
              ) -> tuple[list[Result], dict[str, Due]]:
    """One batch as the worker's own loop runs it: a record sees the state the batch's earlier records of its
    customer left, else the stored one (`fetch_states`, asked once for every customer of the batch). Due
    notes (with `due_registry`) are taken from each customer's last state in the batch."""
    prepared = [processor.prepare(topic, partition, offset, key, value, source_topic=real)
                for topic, partition, offset, key, value, real in records]
    keys = list(dict.fromkeys(item[2] for item in prepared if not isinstance(item, Processed)))
    stored = dict(zip(keys, fetch_states(keys), strict=True)) if keys else {}
    finish = processor.finish
    results: list[Result] = []
    latest: dict[bytes, CustomerState] = {}
    for record, item in zip(records, prepared, strict=True):
        if isinstance(item, Processed):
            processed = item
        else:
            skey = item[2]
            processed = finish(item, record[1], record[2], record[3], record[4], stored[skey])
            if processed.state is not None:
                stored[skey] = processed.state
                if processed.outcome is not None:
                    latest[skey] = processed.outcome.state
        results.append((processed.customer_id, processed.state_key, processed.state, processed.outputs))
    dues: dict[str, Due] = {}
    if due_registry is not None:
        for state in latest.values():
            found = due_of(due_registry, state)
            if found is not None:
                dues[found[0]] = found[1]
    return results, dues
