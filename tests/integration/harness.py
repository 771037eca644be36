"""A running loyalty worker for integration tests: publish activities, read what comes out of Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from loyalty_stream.program.loader import ProgramRegistry, parse_program
from loyalty_stream.program.model import Program
from loyalty_stream.settings import Settings
from loyalty_stream.stream.processor import TOPIC_OF_ACTIVITY
from loyalty_stream.stream.runtime import running_worker
from loyalty_stream.stream.worker import LoyaltyWorker
from tests.fixtures.cluster import Record, consume_until, produce_many


def program(**fields: Any) -> Program:
    """A program from plain data: id 'p', version 1, one redeem condition unless given."""
    data: dict[str, Any] = {"id": "p", "version": 1, "redeem_conditions": [{"code": "ANY"}]}
    data.update(fields)
    return parse_program(data)


def activity(kind: str, event_id: str, customer: str, when: str, program_id: str = "p",
             **payload: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, "event_id": event_id, "program_id": program_id,
                               "customer_id": customer, "event_time": when}
    if payload:
        message["payload"] = payload
    return message


@dataclass
class Live:
    settings: Settings
    worker: LoyaltyWorker

    def topic(self, logical: str) -> str:
        return f"{self.settings.topic_prefix}{logical}"

    async def publish(self, *messages: dict[str, Any] | tuple[str, str, bytes]) -> None:
        """Activities (dicts go to their type's topic) or raw (logical topic, key, bytes) records."""
        by_topic: dict[str, list[tuple[str, bytes]]] = {}
        for message in messages:
            if isinstance(message, tuple):
                topic, key, raw = message
            else:
                topic, key, raw = TOPIC_OF_ACTIVITY[message["type"]], message["customer_id"], orjson.dumps(message)
            by_topic.setdefault(self.topic(topic), []).append((key, raw))
        for topic, records in by_topic.items():
            await produce_many(self.settings.kafka_bootstrap, topic, records)

    async def read(self, logical: str, count: int, *, customer: str | None = None,
                   timeout: float = 20.0) -> list[dict[str, Any]]:
        """The first `count` records of an output topic (for one customer when given), decoded."""
        where = (lambda r: r.key == customer) if customer is not None else None
        records: list[Record] = await consume_until(self.settings.kafka_bootstrap, self.topic(logical),
                                                    count=count, where=where, timeout=timeout)
        return [r.value for r in records]

    async def balance(self, customer: str, changes: int) -> dict[str, Any]:
        """The balance after the customer's `changes`-th balance change."""
        return (await self.read("balance-changes", changes, customer=customer))[changes - 1]


@asynccontextmanager
async def live_worker(settings: Settings, *programs: Program, redis: Redis | None = None,
                      **options: Any) -> AsyncIterator[Live]:
    async with running_worker(settings, ProgramRegistry(programs), redis=redis, **options) as worker:
        yield Live(settings, worker)


def crash_without_committing(worker: LoyaltyWorker) -> None:
    """What a killed process leaves behind: no drain of in-flight batches, no offset commit."""
    consumer: Any = worker.app.consumer

    async def no_commit(*args: Any, **kwargs: Any) -> bool:
        return False

    consumer.commit = no_commit
    consumer.force_commit = no_commit
    consumer.commit_and_end_transactions = no_commit
    worker.app.before_stop = None
    worker._accepting = False


def dec(value: Any) -> Decimal:
    return Decimal(str(value))
