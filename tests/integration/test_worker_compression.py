"""The worker writes zstd record batches (``Settings.producer_compression``), and everything reads them back.

The broker is asked for a partition's raw bytes, so the test sees the batch attributes on the wire, not what a
consumer hands on after decompressing. The other integration tests (recovery from the changelog included) run
with the default, zstd."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.memory_records import MemoryRecords

from loyalty_stream.settings import Settings

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

EARNING = program(
    rounding={"decimals": 2},
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
    rule_sets={"TransactionAdd": [
        {"name": "base", "rules": [{"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]}]},
)


async def wire_codecs(bootstrap: str, topic: str) -> set[int]:
    """The compression codec of every record batch the broker holds in `topic` (read raw, from offset 0)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    codecs: set[int] = set()
    try:
        await client.force_metadata_update()
        for partition in sorted(client.cluster.partitions_for_topic(topic) or ()):
            node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            request = FetchRequest(10, 1, 1 << 20, 0, [(topic, [(partition, 0, 1 << 20)])])
            response: Any = await client.send(node, request)
            for _, partitions in response.topics:
                for *_, data in partitions:
                    records = MemoryRecords(data) if data else None
                    while records is not None and (batch := records.next_batch()) is not None:
                        codecs.add(batch.compression_type)
    finally:
        await client.close()
    return codecs


@pytest.mark.parametrize(("compression", "codec"), [("zstd", DefaultRecordBatch.CODEC_ZSTD),
                                                    ("none", DefaultRecordBatch.CODEC_NONE)])
async def test_outputs_and_changelog_go_out_in_the_configured_codec(
        loyalty_settings: Settings, catalogue_topics: dict[str, str], compression: str, codec: int) -> None:
    settings = loyalty_settings.model_copy(update={"producer_compression": compression})
    async with live_worker(settings, EARNING) as live:
        await live.publish(activity("TransactionAdd", "t-1", "zoe", "2026-03-02T10:00:00Z", bill_number="B-1",
                                    amount="80.00"))
        assert dec((await live.balance("zoe", 1))["current"]) == dec(8)  # read back through the consumer
        [entry] = await live.read("ledger", 1, customer="zoe")
        assert entry["kind"] == "earn"
        changelog = live.worker.customers.changelog_topic.get_topic_name()
        for topic in (live.topic("ledger"), live.topic("balance-changes"), changelog):
            assert await wire_codecs(settings.kafka_bootstrap, topic) == {codec}, topic
