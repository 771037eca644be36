"""The worker's end of an engine's socket (`engine_process._Frames`): whole messages, in order, however the
bytes arrive; a state request answered at once; a broken message or a closed socket reported once as a
failure, and a close by the worker not reported. Real socket pairs and event loops, no engine process."""

from __future__ import annotations

import asyncio
import pickle
import pickletools
import socket
from typing import Any

import pytest

from loyalty_stream.stream.engine_process import _Channel, _EngineLink, _frame, _Frames


class _Link(_EngineLink):
    """An `_EngineLink` without its process: the socket pair's other end plays the engine."""

    def __init__(self, sock: socket.socket) -> None:  # no process: only the link's state
        self.socket = sock
        self.transport = None
        self.closing = False
        self.results = asyncio.Queue()
        self.done = 3


def _framed(message: Any) -> bytes:
    """A message's bytes on the socket, both of its buffers."""
    return b"".join(_frame(message))


def _pair() -> tuple[socket.socket, socket.socket]:
    worker, engine = socket.socketpair()
    engine.setblocking(True)
    return worker, engine


def _read_answer(engine: socket.socket) -> Any:
    header = engine.recv(8, socket.MSG_WAITALL)
    size = int.from_bytes(header, "big")
    return pickle.loads(engine.recv(size, socket.MSG_WAITALL))


async def _connect(chunks: list[bytes], engine: socket.socket, worker: socket.socket
                   ) -> tuple[_Link, list[BaseException], list[bytes]]:
    link, failures, asked = _Link(worker), [], []

    def load(key: bytes) -> bytes | None:
        asked.append(key)
        return b"state-of-" + key

    await link.connect(load, failures.append)
    for chunk in chunks:
        await asyncio.to_thread(engine.sendall, chunk)
        await asyncio.sleep(0.001)  # let the loop read between chunks
    return link, failures, asked


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _feed(frames: _Frames, data: bytes, chunk: int) -> None:
    """What the event loop does with each read of at most `chunk` bytes: into `get_buffer`, then `buffer_updated`."""
    pos = 0
    while pos < len(data):
        buffer = frames.get_buffer(-1)
        count = min(len(buffer), chunk, len(data) - pos)
        buffer[:count] = data[pos:pos + count]
        frames.buffer_updated(count)
        pos += count


@pytest.mark.parametrize("chunk", [1, 7, 8, 9, 4096, 1 << 22])
def test_messages_arrive_whole_and_in_order_however_the_bytes_are_split(chunk: int) -> None:
    big = [("c1", b"k1", bytes(range(256)) * (40 if chunk < 4096 else 4000), [("ledger", b"x" * 700)])]
    messages = [("results", ([], {"a": 1})), ("results", (big, {})), ("results", ([("c2", None, None, [])], {}))]
    data = b"".join(_framed(message) for message in messages)
    sock = socket.socket()
    link, failures = _Link(sock), []
    frames = _Frames(link, lambda key: None, failures.append)
    _feed(frames, data, chunk)
    got = [link.results.get_nowait() for _ in messages]
    sock.close()
    assert not failures and link.results.empty()
    assert got == [body for _, body in messages]


def test_a_megabyte_message_crosses_a_real_socket_whole() -> None:
    big = [(f"c{i}", b"k", bytes([i % 256]) * 200_000, [("ledger", b"x" * 700)]) for i in range(6)]

    async def run() -> Any:
        worker, engine = _pair()
        link, failures, _ = await _connect([_framed(("results", (big, {})))], engine, worker)
        got = await asyncio.wait_for(link.results.get(), 10)
        link.close()
        engine.close()
        await asyncio.sleep(0.01)
        assert not failures  # the worker's own close is not an engine failure
        return got

    assert asyncio.run(run()) == (big, {})


def test_both_ends_send_header_and_pickle_as_one_message_each_way() -> None:
    """The engine's `_Channel.send` and the worker's `_EngineLink.send` write a message as two buffers
    (header, then the pickle, unjoined); the other end still reads each message whole and in order."""
    big = [(f"c{i}", b"k", bytes([i % 256]) * 300_000, [("ledger", b"x" * 700)]) for i in range(5)]
    batch = ("batch", (1, [], [("transaction-add", 0, i, b"k", b"v" * 300, "t") for i in range(500)]))

    async def run() -> tuple[Any, Any, Any]:
        worker, engine = _pair()
        channel = _Channel(engine)
        link, failures, _ = await _connect([], engine, worker)
        await asyncio.to_thread(channel.send, ("results", (big, {"due": 1})))
        await asyncio.to_thread(channel.send, ("results", ([], {})))
        first = await asyncio.wait_for(link.results.get(), 10)
        second = await asyncio.wait_for(link.results.get(), 10)
        link.send(batch)
        received = await asyncio.to_thread(channel.receive)
        assert not failures
        link.close()
        engine.close()
        return first, second, received

    first, second, received = asyncio.run(run())
    assert first == (big, {"due": 1}) and second == ([], {})
    assert received == batch


def test_a_message_is_pickled_without_a_memo_and_still_reads_back_equal() -> None:
    """Results repeat the same topic strings and often the same bytes objects; without a memo each is
    written again, never as a back-reference, and the message still loads equal (shared objects become equal
    copies, which is all the worker needs)."""
    topic, entry = "ledger", b"e" * 700
    results = [(f"c{i}", b"k%d" % i, b"state", [(topic, entry), (topic, entry)]) for i in range(50)]
    message = ("results", (results, {"bench|c1": (1711391400, "PointsExpiry")}))
    header, payload = _frame(message)
    opcodes = {op.name for op, _, _ in pickletools.genops(bytes(payload))}
    assert not opcodes & {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
    assert int.from_bytes(header, "big") == len(payload)
    assert pickle.loads(payload) == message


def test_a_state_request_is_answered_at_once_with_the_batches_taken_in() -> None:
    async def run() -> tuple[Any, list[bytes]]:
        worker, engine = _pair()
        data = _framed(("keys", [b"a", b"b"])) + _framed(("results", ([], {})))
        link, failures, asked = await _connect(_chunked(data, 5), engine, worker)
        answer = await asyncio.to_thread(_read_answer, engine)
        assert await asyncio.wait_for(link.results.get(), 10) == ([], {})
        assert not failures
        link.close()
        engine.close()
        return answer, asked

    answer, asked = asyncio.run(run())
    assert answer == ("states", (3, [b"state-of-a", b"state-of-b"]))
    assert asked == [b"a", b"b"]


def test_a_closed_engine_socket_is_a_failure_even_mid_message() -> None:
    async def run() -> list[BaseException]:
        worker, engine = _pair()
        partial = _framed(("results", ([], {})))[:-3]
        link, failures, _ = await _connect([partial], engine, worker)
        engine.close()
        for _ in range(200):
            if failures:
                break
            await asyncio.sleep(0.01)
        assert link.results.empty()
        return failures

    failures = asyncio.run(run())
    assert len(failures) == 1 and isinstance(failures[0], EOFError)


def test_a_broken_message_is_a_failure_and_closes_the_link() -> None:
    async def run() -> list[BaseException]:
        worker, engine = _pair()
        garbage = b"not a pickle"
        link, failures, _ = await _connect([len(garbage).to_bytes(8, "big") + garbage], engine, worker)
        for _ in range(200):
            if failures:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        engine.close()
        assert link.results.empty()
        return failures

    failures = asyncio.run(run())
    assert len(failures) >= 1 and isinstance(failures[0], pickle.UnpicklingError)


def test_frames_reads_into_the_current_message_only() -> None:
    frames = _Frames(_Link(socket.socket()), lambda key: None, lambda exc: None)
    assert len(frames.get_buffer(-1)) == 8  # the header first, never more
    frames.get_buffer(-1)[:8] = (5).to_bytes(8, "big")
    frames.buffer_updated(8)
    assert len(frames.get_buffer(-1)) == 5  # then exactly the body
    frames.link.socket.close()
