"""The whole local stack in one object: Kafka (configured or embedded Tansu), Redis, and the catalogue topics.

Each service is started only when the configured one does not answer, so ``make run`` on a machine that has
``docker compose up`` running (or a Redis on 6379) uses those, and a bare machine gets throwaway processes.
Used by ``loyalty-stream dev`` and by the test fixtures.

Synchronous use (the CLI, before Faust takes over the event loop)::

    with EmbeddedStack(settings) as stack:          # starts what is missing, creates the topics
        run_worker(stack.settings)                  # settings with the actual bootstrap / redis_url

Inside a running event loop use ``async with EmbeddedStack(settings) as stack`` (the sync form calls
``asyncio.run`` to create the topics, which is not allowed there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from types import TracebackType
from urllib.parse import urlsplit

from loyalty_stream.devstack.broker import EmbeddedBroker, kafka_answers
from loyalty_stream.devstack.redis import EmbeddedRedis, redis_answers
from loyalty_stream.settings import Settings
from loyalty_stream.stream.catalogue import Catalogue, create_topics, load_catalogue

log = logging.getLogger(__name__)


def _loopback_port(address: str, default_port: int) -> tuple[str, int | None]:
    """``(host, port)`` of ``host:port`` when the host is a loopback address, else ``(host, None)``."""
    address = address.strip()
    host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        port = int(port_text) if port_text else default_port
    except ValueError:
        return host, None
    return ("127.0.0.1", port) if loopback else (host, None)


def _port_free(host: str, port: int | None) -> bool:
    if port is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedStack:
    """Kafka + Redis + topics for development. ``bootstrap`` / ``redis_url`` / ``settings`` once started."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        create_catalogue_topics: bool = True,
        catalogue: Catalogue | None = None,
        reuse_ports: bool = True,
    ) -> None:
        self.base_settings = settings or Settings()
        self.create_catalogue_topics = create_catalogue_topics
        self._catalogue = catalogue
        self.reuse_ports = reuse_ports
        self.broker: EmbeddedBroker | None = None
        self.redis: EmbeddedRedis | None = None
        self._bootstrap: str | None = None
        self._redis_url: str | None = None
        self.topics: list[str] = []
        self.created_topics: list[str] = []

    # --- addresses ----------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        if self._bootstrap is None:
            raise RuntimeError("stack not started")
        return self._bootstrap

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            raise RuntimeError("stack not started")
        return self._redis_url

    @property
    def settings(self) -> Settings:
        """The configured settings with the addresses actually in use."""
        return self.base_settings.model_copy(
            update={"kafka_bootstrap": self.bootstrap, "redis_url": self.redis_url}
        )

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            self._catalogue = load_catalogue(
                self.base_settings.catalogue_path, partitions=self.base_settings.partitions
            )
        return self._catalogue

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start_services(self) -> EmbeddedStack:
        """Bring up Kafka and Redis (each only if the configured one does not answer). Blocking, no topics.

        A started service takes the configured port when that address is on loopback and the port is free,
        so tools pointed at the configured address (``127.0.0.1:9092``, ``redis://127.0.0.1:6379``) reach it;
        otherwise it gets a free port and ``settings`` carries the real address.
        """
        if self._bootstrap is None:
            wanted = self.base_settings.kafka_bootstrap
            if kafka_answers(wanted):
                log.info("using Kafka at %s", wanted)
                self._bootstrap = wanted
            else:
                host, port = _loopback_port(wanted.split(",")[0], default_port=9092)
                reuse = self.reuse_ports and _port_free(host, port)
                self.broker = EmbeddedBroker(port=port if reuse else None)
                self._bootstrap = self.broker.start()
                log.info("no Kafka at %s; started the embedded broker at %s", wanted, self._bootstrap)
        if self._redis_url is None:
            wanted = self.base_settings.redis_url
            if redis_answers(wanted):
                log.info("using Redis at %s", wanted)
                self._redis_url = wanted
            else:
                parsed = urlsplit(wanted)
                host, port = _loopback_port(parsed.netloc.rpartition("@")[2], default_port=6379)
                if self.reuse_ports and _port_free(host, port) and parsed.scheme == "redis":
                    self.redis = EmbeddedRedis(port=port)
                    self.redis.start()
                    self._redis_url = wanted
                else:
                    self.redis = EmbeddedRedis()
                    self._redis_url = self.redis.start()
                log.info("no Redis at %s; started redis-server at %s", wanted, self._redis_url)
        return self

    async def ensure_topics(self, prefix: str | None = None) -> list[str]:
        """Create the catalogue topics (idempotent) under ``prefix`` (default: the settings' topic_prefix).

        Returns the physical names of all catalogue topics (also kept in ``topics``); the ones this call
        had to create are in ``created_topics``.
        """
        prefix = self.base_settings.topic_prefix if prefix is None else prefix
        self.created_topics = await create_topics(
            self.bootstrap,
            self.catalogue,
            prefix,
            replication_factor=self.base_settings.replication_factor,
        )
        self.topics = self.catalogue.physical_names(prefix)
        return self.topics

    def start(self) -> EmbeddedStack:
        """Services, then topics. Must not be called from inside a running event loop (use ``astart``)."""
        self.start_services()
        try:
            if self.create_catalogue_topics:
                asyncio.run(self.ensure_topics())
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self) -> EmbeddedStack:
        """Like :meth:`start`, for use inside an event loop (process start-up blocks briefly)."""
        await asyncio.to_thread(self.start_services)
        try:
            if self.create_catalogue_topics:
                await self.ensure_topics()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop whatever this stack started (never a Kafka or Redis it merely reused). Idempotent."""
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        self._bootstrap = None
        self._redis_url = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedStack:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
