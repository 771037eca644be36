"""Plain aiokafka helpers for the CLI, replay and tests: produce a batch, read a topic without a group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of `topic`, sorted; asks the broker when the consumer's metadata does not know the topic
    yet (a consumer without a subscription fetches no metadata of its own). Empty when it does not exist."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def produce_records(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, *, idle_timeout: float = 1.0
                     ) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Everything currently in `topic` (partition, offset, key, value), read up to the end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[tuple[int, int, bytes | None, bytes | None]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout * 1000))
            if not batch:
                break
            for tp, messages in batch.items():
                for m in messages:
                    records.append((m.partition, m.offset, m.key, m.value))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


async def tail_topic(
    bootstrap: str,
    topic: str,
    show: Callable[[bytes | None, bytes | None, int, int], None],
    *,
    from_beginning: bool = False,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    count = 0
    try:
        while max_messages is None or count < max_messages:
            timeout = idle_timeout if idle_timeout is not None else 3600.0
            batch = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=100)
            if not batch and idle_timeout is not None:
                break
            for messages in batch.values():
                for m in messages:
                    show(m.key, m.value, m.partition, m.offset)
                    count += 1
                    if max_messages is not None and count >= max_messages:
                        return count
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await consumer.stop()
    return count
