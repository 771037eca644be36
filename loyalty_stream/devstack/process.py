"""A local server process owned by the dev stack: spawn it on a loopback port, wait until it answers,
stop it (SIGTERM, then SIGKILL). The broker and Redis differ only in their command and readiness probe."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_LOG_DIR = Path(tempfile.gettempdir()) / "loyalty-stream-devstack"


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it; small race, callers retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedServer:
    """Base of the embedded servers. Subclasses name the binary, its command line and how to probe it."""

    label = "server"

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        binary: str | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.binary = binary
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # Subclass hooks --------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        raise NotImplementedError

    def find_binary(self) -> str:
        raise NotImplementedError

    def command(self, binary: str, port: int) -> list[str]:
        raise NotImplementedError

    def answers(self, timeout: float) -> bool:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def preexec(self) -> Callable[[], None] | None:
        return None

    def cleanup(self) -> None:
        """Remove what `command` created (e.g. a working directory); runs on every stop."""

    # Lifecycle ---------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> str:
        """Start the server and block until it answers; return its address. A picked port is retried."""
        if self.running:
            return self.address
        binary = self.binary or self.find_binary()
        fixed_port = self.port
        last_error: Exception | None = None
        for _ in range(1 if fixed_port is not None else 3):
            try:
                self._spawn(binary, fixed_port if fixed_port is not None else free_port(self.host))
                return self.address
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        self.port = fixed_port
        raise RuntimeError(f"{self.label} did not start: {last_error}")

    def _spawn(self, binary: str, port: int) -> None:
        self.port = port
        log_path = self.log_path or DEFAULT_LOG_DIR / f"{self.label}-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = self.command(binary, port)
        log.info("starting %s on %s:%s (log: %s)", self.label, self.host, port, log_path)
        environment = self.environment()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C in the terminal reaches us, and we stop the server in order.
            start_new_session=True,
            preexec_fn=self.preexec(),
            env=None if environment is None else {**os.environ, **environment},
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with code {self._process.returncode}; see {log_path}: {self._tail()}"
                )
            if self.answers(0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not answer on port {port} within {self.startup_timeout}s; "
                           f"see {log_path}")

    def _tail(self, size: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (SIGTERM, then SIGKILL after `timeout`). Idempotent; also registered with atexit."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %ss; killing it", self.label, timeout)
                process.kill()
                process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.cleanup()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
