"""Running the worker: in-process for tests and tools, as a Faust `Worker` for `loyalty-stream worker/dev`."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from loyalty_stream import ENGINE_FORM
from loyalty_stream.devstack.redis import redis_answers
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.settings import Settings
from loyalty_stream.stream.faust_settings import for_embedded_broker
from loyalty_stream.stream.worker import LoyaltyWorker

log = logging.getLogger(__name__)

#: CPython's automatic collector, where a worker keeps it (`Settings.gc_interval` 0). With the defaults
#: (700, 10, 10) a worker at full speed ran a young collection every few activities and a full one every few
#: seconds, and a full collection walks every long-lived object: about a fifth of the worker's time on the 100k
#: benchmark. Even these thresholds leave pauses of 100-400 ms: the young generation's count is allocations
#: minus deallocations, so evicting cached states (old objects) lets it fill with new cached states first.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc(*, paced: bool = True) -> None:
    """Collect once and move everything alive now (modules, programs, the app) out of the collector's way.
    `paced`: then turn automatic collection off; the worker collects every `Settings.gc_interval` seconds,
    between batches (`LoyaltyWorker`). The engine's garbage is acyclic and freed by reference counting, so
    only Faust's and aiokafka's few cycles wait for that. Otherwise collect young objects far less often.
    For processes that run a worker; call it once, after building it."""
    gc.collect()
    gc.freeze()
    if paced:
        gc.disable()
    else:
        gc.set_threshold(*GC_THRESHOLDS)


def connect_redis(settings: Settings) -> Redis | None:
    """The scheduler's Redis, or None (with a warning) when none answers: the worker still earns and
    converts lazily, but idle customers' due transitions wait for their next activity."""
    if redis_answers(settings.redis_url):
        return Redis.from_url(settings.redis_url)
    log.warning("no Redis at %s: the scheduler is off (transitions happen at the next activity)",
                settings.redis_url)
    return None


@asynccontextmanager
async def running_worker(settings: Settings, registry: ProgramRegistry, *, redis: Redis | None = None,
                         ready_timeout: float = 60.0, **options: Any) -> AsyncIterator[LoyaltyWorker]:
    """Start a worker in this event loop, wait until its table is recovered, stop it on exit."""
    worker = LoyaltyWorker(settings, registry, redis=redis, **options)
    app = worker.app
    await app.start()
    try:
        await asyncio.wait_for(app.tables.recovery.completed.wait(), ready_timeout)  # type: ignore[attr-defined]
        yield worker
    finally:
        await worker.stop_background()
        await app.stop()


def _faust_worker(worker: LoyaltyWorker, loglevel: str) -> Any:
    import faust

    return faust.Worker(worker.app, loglevel=loglevel, quiet=True)


def run_worker_forever(settings: Settings, registry: ProgramRegistry, *, loglevel: str = "info") -> int:
    """`loyalty-stream worker`: the worker against the configured cluster until SIGINT/SIGTERM."""
    worker = LoyaltyWorker(settings, registry, redis=connect_redis(settings))
    faust_worker = _faust_worker(worker, loglevel)
    tune_gc(paced=settings.gc_interval > 0)
    faust_worker.execute_from_commandline()
    return 0


def run_dev_stack(settings: Settings, *, loglevel: str = "warning", port: int = 9092) -> int:
    """`make run`: embedded broker + Redis (unless configured ones answer) + topics + default program +
    worker, in the foreground; Ctrl-C stops all of it."""
    from loyalty_stream.devstack.stack import EmbeddedStack
    from loyalty_stream.program.loader import ProgramError

    if port != 9092:
        settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    try:
        registry = ProgramRegistry.from_files(settings.program_paths())
    except ProgramError as exc:
        print(exc, file=sys.stderr)
        return 2
    stack = EmbeddedStack(for_embedded_broker(settings))
    print("starting the embedded stack ...", flush=True)
    stack.start()
    try:
        live = stack.settings
        worker = LoyaltyWorker(live, registry, redis=Redis.from_url(live.redis_url))
        prefix = live.topic_prefix
        env = f"LOYALTY_KAFKA_BOOTSTRAP={live.kafka_bootstrap}"
        if prefix:
            env += f" LOYALTY_TOPIC_PREFIX={prefix}"
        print(f"""
loyalty-stream dev stack is up
  Kafka (embedded Tansu)  {live.kafka_bootstrap}
  Redis                   {live.redis_url}
  programs                {', '.join(f'{p} v{getattr(registry.get(p), "version", "?")}' for p in registry.ids())}
  topics                  {len(stack.topics)} created from the catalogue (prefix {prefix!r})
  rules engine            {ENGINE_FORM}

Try it, in another terminal:
  {env} .venv/bin/loyalty-stream tail balance-changes
  {env} .venv/bin/loyalty-stream publish TransactionAdd --json \\
      '{{"customer_id": "alice", "payload": {{"bill_number": "B-1", "amount": "120.00"}}}}'

Ctrl-C stops the worker, the broker and Redis.
""", flush=True)
        faust_worker = _faust_worker(worker, loglevel)
        tune_gc(paced=live.gc_interval > 0)
        faust_worker.execute_from_commandline()
    finally:
        stack.stop()
    return 0
