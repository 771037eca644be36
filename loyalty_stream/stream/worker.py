"""The Faust worker: one thin agent over every activity topic, a customer table, and the output topics.

decode -> engine -> table put -> send, all through `ActivityProcessor`; this module only binds it to Faust.
Outputs go out with `send_soon` (no per-message future to await): Faust flushes the producer before it
commits offsets, so at-least-once holds, and the engine's offset/event-id idempotence absorbs redelivery.

With Redis configured, the worker also keeps the scheduler's due index current (batched, see
`due_recorder`) and runs the scheduler loop; a Redis lock makes one worker of the cluster its leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from redis.asyncio import Redis

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.scheduler import Scheduler
from loyalty_stream.settings import Settings
from loyalty_stream.stream.catalogue import Catalogue, load_catalogue
from loyalty_stream.stream.due_recorder import DueRecorder
from loyalty_stream.stream.faust_settings import faust_config
from loyalty_stream.stream.processor import TOPIC_ACTIVITIES, ActivityProcessor, Processed, decode_state

log = logging.getLogger(__name__)

CUSTOMER_TABLE = "customers"

AfterProcess = Callable[[Processed], Any]
"""Hook run after each processed record (tests, metrics); may return an awaitable."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


class LoyaltyWorker:
    """Builds the Faust app for one deployment: settings, programs, catalogue, optional Redis."""

    def __init__(
        self,
        settings: Settings,
        registry: ProgramRegistry,
        catalogue: Catalogue | None = None,
        *,
        redis: Redis | None = None,
        after_process: AfterProcess | None = None,
        clock: Callable[[], datetime] = wall_clock,
        scheduler_interval: float = 1.0,
        due_flush_interval: float = 0.2,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.catalogue = catalogue or load_catalogue(settings.catalogue_path, partitions=settings.partitions)
        self.processor = ActivityProcessor(registry)
        self.after_process = after_process
        self.clock = clock
        self.processed_count = 0
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
        self.app = faust.App(**faust_config(settings))
        prefix = settings.topic_prefix
        inputs = [self.catalogue[name] for name in TOPIC_ACTIVITIES if name in self.catalogue]
        self.partitions = inputs[0].partitions
        self.logical_of = {topic.physical_name(prefix): topic.name for topic in inputs}
        self.physical_of = {logical: physical for physical, logical in self.logical_of.items()}
        self.outputs = {
            topic.name: self.app.topic(
                topic.physical_name(prefix), key_serializer="raw", value_serializer="raw",
                partitions=topic.partitions,
            )
            for topic in self.catalogue.outputs
        }
        self.inputs = {
            logical: self.app.topic(physical, key_serializer="raw", value_serializer="raw",
                                    partitions=self.partitions)
            for physical, logical in self.logical_of.items()
        }
        self.activity_topic = self.app.topic(
            *self.logical_of, key_serializer="raw", value_serializer="raw", partitions=self.partitions,
        )
        self.customers = self.app.Table(
            CUSTOMER_TABLE, default=None, partitions=self.partitions, key_type=bytes, value_type=bytes,
        )
        self.app.agent(self.activity_topic, name="loyalty-activities")(self._process_stream)

        self.redis = redis
        self.due: DueRecorder | None = None
        self.scheduler: Scheduler | None = None
        if redis is not None:
            redis_prefix = f"{settings.redis_prefix}{prefix}"
            self.due = DueRecorder(redis, redis_prefix, registry)
            self.scheduler = Scheduler(redis, redis_prefix, self._send_scheduled)
            self.app.timer(interval=due_flush_interval, name="due-index-flush")(self._flush_due)
            self.app.task(self._run_scheduler)
            self.app.task(self._rebuild_due_index)
            self._scheduler_interval = scheduler_interval

    # Hot path ----------------------------------------------------------------------------------------------
    async def _process_stream(self, stream: Any) -> None:
        customers = self.customers
        processor = self.processor
        outputs = self.outputs
        logical_of = self.logical_of
        after = self.after_process
        due = self.due
        async for event in stream.events():
            message = event.message
            processed = processor.process(
                logical_of.get(message.topic, message.topic), message.partition, message.offset,
                message.key, message.value, customers.get, source_topic=message.topic,
            )
            if processed.state is not None and processed.state_key is not None:
                customers[processed.state_key] = processed.state
                if due is not None and processed.outcome is not None:
                    due.note(processed.outcome.state)
            key = processed.customer_id.encode() if processed.customer_id is not None else message.key
            for logical, value in processed.outputs:
                outputs[logical].send_soon(key=key, value=value)
            self.processed_count += 1
            if after is not None:
                result = after(processed)
                if asyncio.iscoroutine(result):
                    await result

    # Scheduler ---------------------------------------------------------------------------------------------
    async def _send_scheduled(self, logical: str, key: bytes, value: bytes) -> None:
        await self.inputs[logical].send(key=key, value=value)

    async def _flush_due(self) -> None:
        if self.due is not None:
            try:
                await self.due.flush()
            except Exception:
                log.exception("due index flush failed; will retry")

    async def _run_scheduler(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.run(self.clock, self._scheduler_interval)

    async def _rebuild_due_index(self) -> None:
        """Once the table is recovered, recreate the due index of the customers this worker holds."""
        recovery = self.app.tables.recovery
        await recovery.completed.wait()
        if self.due is None:
            return
        states = [decode_state(raw) for raw in list(self.customers.values()) if raw is not None]
        count = await self.due.rebuild(states)
        log.info("due index rebuilt from %d customers (%d due)", len(states), count)

    async def stop_background(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.due is not None:
            await self._flush_due()
