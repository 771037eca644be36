"""The rules engine in a process of its own beside the worker (`Settings.engine_process`).

A worker spends most of its time in decode -> engine -> encode (`ActivityProcessor`) and the rest in Kafka
I/O, Faust and the event loop, all under one GIL: one core at most. With the engine process, the worker's
process keeps the I/O, the table and every guarantee of `stream.worker`, and hands each batch of records to
this process, which runs the same `ActivityProcessor` and answers with what the worker's own loop would have
produced: per record the customer, the state key, the new state's bytes and the output records, plus the
batch's due-index notes. While the engine works on one batch, the worker completes the previous one (outputs,
changelog, acks) and its consumer fetches the next.

One batch at a time, in order, so the protocol needs no ids (a pickled message each way on a pipe):

1. worker -> engine: (programs added to the registry since the last batch, as JSON, and the records);
2. engine -> worker: the state keys of the batch's customers (it decoded the records to know them);
3. worker -> engine: the stored state of each key, read as the worker reads it (its pending states, then the
   table), after the previous batch's states were taken in;
4. engine -> worker: the results, in record order, and the due notes.

The engine process holds no state of its own that matters: its state cache is used only when the bytes the
worker sends are exactly the bytes it encoded (`ActivityProcessor`), so a rebalance, a batch the worker
dropped, or a restored changelog cannot make it compute from a state the table does not hold. If the engine
process dies, the batch fails and the worker crashes: nothing of that batch was acked, so it is processed
again, with the same output ids, after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import pickle
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

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

_HEADER = struct.Struct("!Q")


class EngineProcess:
    """The worker's side: starts the process, submits batches (`submit`), answers the engine's requests for
    stored states at once (`load`), and hands each batch's results to `done`, in order, from a task of its
    own. At most `depth` batches are submitted and not yet done."""

    def __init__(self, registry: ProgramRegistry, load: Load, done: Done, *, state_cache: int, due_notes: bool,
                 gc_interval: float, depth: int = 2) -> None:
        self.registry = registry
        self._load = load
        self._done = done
        parent, child = socket.socketpair()
        context = multiprocessing.get_context("spawn")  # the worker has threads (Faust's consumer): no fork
        self._process = context.Process(target=serve, args=(child, state_cache, due_notes, gc_interval),
                                        name="loyalty-engine", daemon=True)
        self._process.start()
        child.close()
        self._socket = parent
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._contexts: deque[Any] = deque()  # of the submitted batches not yet done, oldest first
        self._results: asyncio.Queue[tuple[list[Result], dict[str, Due]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(depth)
        self._idle = asyncio.Event()
        self._idle.set()
        self._submitted = 0
        self._done_count = 0  # batches taken in: the engine's own states of older batches are in `load`'s now
        self._sent = 0  # registry revision the engine has
        self.failure: BaseException | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def submit(self, epoch: int, context: Any, records: list[Record]) -> None:
        """Send one batch (waits while `depth` batches are in the engine); its results go to `done` with
        `context`. `epoch` changes when what `load` gives may no longer follow from the earlier batches
        (a rebalance). Raises EngineProcessError if the engine failed."""
        await self._slots.acquire()
        if self.failure is not None or self._closed:
            self._slots.release()
            raise EngineProcessError(f"the engine process failed: {self.failure!r}")
        if self._writer is None:
            reader, self._writer = await asyncio.open_connection(sock=self._socket, limit=2**20)
            self._tasks = [asyncio.create_task(self._read(reader, self._writer), name="engine-process-reader"),
                           asyncio.create_task(self._take_in(), name="engine-process-results")]
        programs = [p.model_dump(mode="json", by_alias=True) for p in self.registry.added_since(self._sent)]
        self._sent = self.registry.revision
        self._contexts.append(context)
        self._submitted += 1
        self._idle.clear()
        self._write(self._writer, ("batch", (epoch, programs, records)))

    @staticmethod
    def _write(writer: asyncio.StreamWriter, message: Any) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        writer.write(_HEADER.pack(len(payload)))
        writer.write(payload)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The engine's messages, in order: state requests are answered here, results queued for `_take_in`."""
        try:
            while True:
                size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
                kind, body = pickle.loads(await reader.readexactly(size))
                if kind == "keys":
                    load = self._load
                    self._write(writer, ("states", (self._done_count, [load(key) for key in body])))
                else:
                    self._results.put_nowait(body)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the engine is gone (EOF)
            self._fail(exc)

    async def _take_in(self) -> None:
        try:
            while True:
                results, dues = await self._results.get()
                context = self._contexts.popleft()
                await self._done(context, results, dues)
                self._done_count += 1
                self._slots.release()
                if not self._contexts:
                    self._idle.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # `done` failed: nothing more is taken in
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            if not self._closed:
                log.error("engine process: %r (exit code %s)", exc, self._process.exitcode)
        self._contexts.clear()
        self._idle.set()
        self._slots.release()  # wakes a waiting `submit`, which raises and wakes the next one

    async def idle(self) -> None:
        """Wait until every submitted batch's results were taken in (or the engine failed)."""
        await self._idle.wait()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the process (after `idle`, for the batches in hand to finish)."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        else:
            self._socket.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._process.join, timeout)
        if self._process.is_alive():
            self._process.terminate()


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
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.sendall(_HEADER.pack(len(payload)) + payload)


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
