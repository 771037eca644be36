"""Spike, kept as a regression test: a minimal faust-streaming app on the embedded broker.

It proves the configuration in ``loyalty_stream.stream.faust_settings`` (read its docstring for the
findings): an agent over a co-partitioned input topic, a Table of orjson bytes reassigned on every update,
sends to an output topic and to the dead-letter topic, started in-process in the test's event loop; and a
second app with the same id restores the table from the changelog and resumes from committed offsets.

The apps are the worker's `LoyaltyApp` (Faust's own agent path, with the worker's consumer). With a plain
`faust.App` the restart test once waited in vain for the record produced between the two runs (one full
suite in many): Faust drops records fetched while table recovery pauses their partition, and only a seek it
happens to make afterwards fetches them again; the worker's consumer seeks back to them itself
(`stream/transport.py`).
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson
import pytest

from loyalty_stream.settings import Settings
from loyalty_stream.stream.faust_settings import EMBEDDED_BROKER_OVERRIDES, faust_config, for_embedded_broker
from loyalty_stream.stream.transport import LoyaltyApp
from tests.fixtures.cluster import Cluster, consume_until, produce, produce_many, running_app

pytestmark = pytest.mark.integration

#: Generous: measured ~2.1 s on Tansu (1 s Faust table-manager sleep + ~1 s group join).
STARTUP_BUDGET_S = 15.0


def build_counter_app(settings: Settings) -> tuple[faust.App, Any]:
    """transaction-add -> per-customer count/total in a Table -> ledger (bad JSON -> dead-letter)."""
    app = LoyaltyApp(**faust_config(settings))
    source = app.topic(settings.topic("transaction-add"), key_type=bytes, value_type=bytes)
    ledger = app.topic(settings.topic("ledger"), key_type=bytes, value_type=bytes)
    dead_letter = app.topic(settings.topic("dead-letter"), key_type=bytes, value_type=bytes)
    counts = app.Table("counts", default=None, key_type=bytes, value_type=bytes)

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            key, value, message = event.key, event.value, event.message
            try:
                amount = int(orjson.loads(value)["amount"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                record = {"reason": reason, "topic": message.topic, "offset": message.offset}
                await dead_letter.send(key=key, value=orjson.dumps(record))
                continue
            current = counts.get(key)
            state = orjson.loads(current) if current is not None else {"n": 0, "total": 0}
            state = {"n": state["n"] + 1, "total": state["total"] + amount}
            counts[key] = orjson.dumps(state)  # reassign: this is what writes the changelog
            await ledger.send(key=key, value=orjson.dumps({"customer": key.decode(), **state}))

    return app, counts


def test_faust_config_is_what_the_spike_found(loyalty_settings: Settings) -> None:
    config = faust_config(loyalty_settings)
    assert config["id"] == loyalty_settings.app_id
    assert config["broker"] == [f"kafka://{loyalty_settings.kafka_bootstrap}"]
    assert config["processing_guarantee"] == "at_least_once"
    assert config["key_serializer"] == config["value_serializer"] == "raw"
    assert config["web_enabled"] is False
    assert config["topic_partitions"] == 4
    assert config["consumer_auto_offset_reset"] == "earliest"
    assert config["stream_wait_empty"] is False
    assert config["table_standby_replicas"] == 0
    assert config["broker_request_timeout"] >= config["broker_session_timeout"]
    fast = for_embedded_broker(Settings())
    assert {k: getattr(fast, k) for k in EMBEDDED_BROKER_OVERRIDES} == EMBEDDED_BROKER_OVERRIDES


async def test_agent_table_and_output(
    cluster: Cluster,
    loyalty_settings: Settings,
    catalogue_topics: dict[str, str],
    record_property: Any,
) -> None:
    bootstrap = loyalty_settings.kafka_bootstrap
    source, ledger = catalogue_topics["transaction-add"], catalogue_topics["ledger"]
    # Input produced BEFORE the app exists: earliest offset reset must pick it up.
    await produce_many(
        bootstrap,
        source,
        [("c-1", b'{"amount": 10}'), ("c-2", b'{"amount": 5}'), ("c-1", b'{"amount": 7}')],
    )

    app, counts = build_counter_app(loyalty_settings)
    started = time.monotonic()
    async with running_app(app):
        ready = time.monotonic() - started
        first = await consume_until(bootstrap, ledger, count=1, timeout=STARTUP_BUDGET_S)
        first_processed = time.monotonic() - started
        records = await consume_until(bootstrap, ledger, count=3, timeout=10)
        by_customer = {r.key: r.value for r in records}
        assert by_customer["c-1"] == {"customer": "c-1", "n": 2, "total": 17}
        assert by_customer["c-2"] == {"customer": "c-2", "n": 1, "total": 5}
        assert [r.value["n"] for r in records if r.key == "c-1"] == [1, 2]
        assert orjson.loads(counts[b"c-1"]) == {"n": 2, "total": 17}

        # Steady state: one more event, end to end.
        sent = time.monotonic()
        await produce(bootstrap, source, "c-2", b'{"amount": 1}')
        await consume_until(bootstrap, ledger, count=4, timeout=10)
        latency = time.monotonic() - sent

        # Bad input goes to the dead-letter topic and good input after it still flows.
        await produce(bootstrap, source, "c-3", b"{not json")
        await produce(bootstrap, source, "c-3", b'{"amount": 2}')
        [dead] = await consume_until(bootstrap, catalogue_topics["dead-letter"], count=1, timeout=10)
        assert dead.key == "c-3" and dead.value["reason"].startswith("JSONDecodeError")
        after = await consume_until(bootstrap, ledger, where=lambda r: r.key == "c-3", count=1, timeout=10)
        assert after[0].value["total"] == 2
        assert first

    record_property("faust_ready_s", round(ready, 2))
    record_property("faust_first_processed_s", round(first_processed, 2))
    record_property("faust_steady_latency_s", round(latency, 2))
    print(
        f"faust on {cluster.kafka_source}: ready {ready:.2f}s, first processed {first_processed:.2f}s, "
        f"steady latency {latency:.2f}s"
    )
    assert first_processed < STARTUP_BUDGET_S


async def test_restart_with_same_app_id_restores_table_and_offsets(
    loyalty_settings: Settings, catalogue_topics: dict[str, str]
) -> None:
    bootstrap = loyalty_settings.kafka_bootstrap
    source, ledger = catalogue_topics["transaction-add"], catalogue_topics["ledger"]
    await produce_many(bootstrap, source, [("c-1", b'{"amount": 3}'), ("c-1", b'{"amount": 4}')])

    first_app, _ = build_counter_app(loyalty_settings)
    async with running_app(first_app):
        await consume_until(bootstrap, ledger, count=2, timeout=STARTUP_BUDGET_S)
    # app.stop() commits the processed offsets; the changelog holds the table.

    await produce(bootstrap, source, "c-1", b'{"amount": 5}')
    second_app, counts = build_counter_app(loyalty_settings)  # same app id, brand-new App object
    async with running_app(second_app):
        assert orjson.loads(counts[b"c-1"])["n"] >= 2, "table restored from the changelog before processing"
        records = await consume_until(
            bootstrap, ledger, lambda rs: any(r.value["n"] == 3 for r in rs), timeout=STARTUP_BUDGET_S
        )
        assert orjson.loads(counts[b"c-1"]) == {"n": 3, "total": 12}
    # Nothing was reprocessed: exactly one ledger record per input.
    assert [r.value["n"] for r in records] == [1, 2, 3]
    final = await consume_until(bootstrap, ledger)
    assert len(final) == 3
