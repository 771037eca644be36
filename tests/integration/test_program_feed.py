"""A program version published to the program topic reaches the running worker without a restart."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from loyalty_stream.settings import Settings
from tests.fixtures.cluster import ConsumeTimeout, produce

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration


def _program(version: int, percent: int) -> dict:
    return {"id": "p", "version": version, "redeem_conditions": [{"code": "ANY"}], "rounding": {"decimals": 0},
            "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": percent}}],
            "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [
                {"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]}]}}


@pytest.mark.parametrize("engine_process", [False, True], ids=["one-process", "engine-process"])
async def test_new_program_version_applies_to_later_activities(loyalty_settings: Settings,
                                                               catalogue_topics: dict[str, str],
                                                               engine_process: bool) -> None:
    """With the engine process, the worker hands the new version on with the next batch."""
    loyalty_settings = loyalty_settings.model_copy(update={"engine_processes": int(engine_process)})
    async with live_worker(loyalty_settings, program(**_program(1, 10))) as live:
        await live.publish(activity("TransactionAdd", "t1", "pia", "2026-06-01T10:00:00Z", bill_number="B1",
                                    amount="100"))
        assert dec((await live.balance("pia", 1))["current"]) == dec(10)
        await produce(loyalty_settings.kafka_bootstrap, live.topic("program"), "p", orjson.dumps(_program(2, 30)))
        registry = live.worker.registry
        for _ in range(100):
            current = registry.get("p")
            if current is not None and current.version == 2:
                break
            await asyncio.sleep(0.1)
        await live.publish(activity("TransactionAdd", "t2", "pia", "2026-06-02T10:00:00Z", bill_number="B2",
                                    amount="100"))
        assert dec((await live.balance("pia", 2))["current"]) == dec(40)
        ledger = await live.read("ledger", 2, customer="pia")
        assert [e["program_version"] for e in ledger] == [1, 2]


async def test_activities_waiting_at_start_see_the_programs_already_on_the_program_topic(
        loyalty_settings: Settings, catalogue_topics: dict[str, str]) -> None:
    """A restart: the program topic and the activity topics both hold a backlog. The worker reads the program
    topic's backlog before the first activity, so none is dead-lettered as unknown_program."""
    topic_program = {**_program(1, 20), "id": "q"}
    await produce(loyalty_settings.kafka_bootstrap, catalogue_topics["program"], "q", orjson.dumps(topic_program))
    purchase = activity("TransactionAdd", "tq", "quinn", "2026-06-01T10:00:00Z", program_id="q", bill_number="BQ",
                        amount="100")
    await produce(loyalty_settings.kafka_bootstrap, catalogue_topics["transaction-add"], "quinn",
                  orjson.dumps(purchase))
    async with live_worker(loyalty_settings, program(**_program(1, 10))) as live:
        assert dec((await live.balance("quinn", 1))["current"]) == dec(20)
        with pytest.raises(ConsumeTimeout):
            await live.read("dead-letter", 1, timeout=2.0)
