"""The HTTP API over a real Redis: validation, auth, idempotency keys and the OpenAPI document; then, with a
worker and the projection running, the reads it serves and an adjustment that goes through to the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import test_utils, web
from pydantic import SecretStr
from redis.asyncio import Redis

from loyalty_stream.api.app import KafkaPublisher, create_app, serve
from loyalty_stream.api.config import ApiSettings
from loyalty_stream.readmodel.projection import project
from loyalty_stream.settings import Settings

from .harness import activity, dec, live_worker
from .test_readmodel import PROGRAM, eventually

pytestmark = pytest.mark.integration

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 3, 25, 12, 0, tzinfo=UTC)


class RecordingPublisher:
    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        self.sent.append((topic, key, orjson.loads(value)))


@contextlib.asynccontextmanager
async def client_for(app: web.Application) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


async def test_validation_auth_idempotency_and_documents(loyalty_settings: Settings, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    publisher = RecordingPublisher()
    app = create_app(loyalty_settings, ApiSettings(admin_token=SecretStr(TOKEN)), redis=redis, publisher=publisher,
                     clock=lambda: NOW)
    adjust = "/v1/admin/programs/rm/customers/alice/adjustments"
    body = {"direction": "add", "points": "25", "reason": "goodwill", "operator_id": "op-7"}
    try:
        async with client_for(app) as client:
            health = await client.get("/healthz")
            assert health.status == 200 and (await health.json())["redis"] is True
            document = await (await client.get("/openapi.json")).json()
            assert document["openapi"].startswith("3.1")
            assert "/v1/admin/programs/{program}/customers/{customer}/adjustments" in document["paths"]
            assert "AdjustmentRequest" in document["components"]["schemas"]
            page = await client.get("/admin")
            assert page.status == 200 and "<form" in await page.text()

            assert (await client.post(adjust, json=body)).status == 401
            wrong = await client.post(adjust, json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await client.get("/v1/admin/programs", headers={"Authorization": "Bearer nope"})).status == 401

            bad = await client.post(adjust, json={**body, "direction": "sideways", "points": "-3"}, headers=ADMIN)
            assert bad.status == 422
            assert sorted(f["field"] for f in (await bad.json())["fields"]) == ["direction", "points"]
            missing = await client.post(adjust, json={"direction": "add", "points": 5}, headers=ADMIN)
            assert sorted(f["field"] for f in (await missing.json())["fields"]) == ["operator_id", "reason"]
            not_json = await client.post(adjust, data=b"{nope", headers=ADMIN)
            assert not_json.status == 422 and (await not_json.json())["fields"][0]["field"] == "(body)"
            long_id = await client.post(f"/v1/admin/programs/rm/customers/{'x' * 201}/adjustments", json=body,
                                        headers=ADMIN)
            assert long_id.status == 422 and (await long_id.json())["fields"][0]["field"] == "customer"
            reads = "/v1/programs/rm/customers/nobody"
            assert (await (await client.get(f"{reads}/history?limit=0")).json())["fields"][0]["field"] == "limit"
            assert (await client.get(f"{reads}/expirations?as_of=soon")).status == 422
            assert (await client.get(f"{reads}/balance")).status == 404
            spread = await client.get("/v1/admin/programs/rm/distribution?buckets=5,1", headers=ADMIN)
            assert spread.status == 422 and (await spread.json())["fields"][0]["field"] == "buckets"
            assert publisher.sent == []

            first = await client.post(adjust, json=body, headers={**ADMIN, "Idempotency-Key": "adj-1"})
            assert first.status == 202
            assert await first.json() == {"status": "accepted", "event_id": "adj-1", "type": "ManualAdjustment",
                                          "topic": f"{loyalty_settings.topic_prefix}manual-adjustment"}
            retry = await client.post(adjust, json=body, headers={**ADMIN, "Idempotency-Key": "adj-1"})
            assert retry.status == 202  # published again; the engine drops the repeated event id
            other = await client.post(adjust, json={**body, "points": "26"},
                                      headers={**ADMIN, "Idempotency-Key": "adj-1"})
            assert other.status == 409
            topic, key, sent = publisher.sent[0]
            assert topic == f"{loyalty_settings.topic_prefix}manual-adjustment"
            assert (key, sent["type"], sent["event_id"], sent["event_time"], sent["payload"]) == (
                "alice", "ManualAdjustment", "adj-1", "2026-03-25T12:00:00Z",
                {"direction": "add", "points": "25", "reason": "goodwill", "operator_id": "op-7", "clamp": False})
            assert len(publisher.sent) == 2

            reverse = await client.post("/v1/admin/programs/rm/customers/alice/redemptions/r-1/reversal", headers=ADMIN)
            assert reverse.status == 202 and publisher.sent[-1][2]["payload"] == {"redemption_id": "r-1",
                                                                                   "bill_number": None}
            unlock = await client.post("/v1/admin/programs/rm/customers/alice/unlock", json={"bill_number": "B-1"},
                                       headers=ADMIN)
            assert unlock.status == 202 and (await unlock.json())["event_id"].startswith("api-")
            assert (await client.get("/nowhere")).status == 404
    finally:
        await redis.aclose()


async def test_reads_and_an_adjustment_through_to_the_ledger(loyalty_settings: Settings,
                                                              catalogue_topics: dict[str, str], redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    publisher = KafkaPublisher(loyalty_settings.kafka_bootstrap)
    app = create_app(loyalty_settings, ApiSettings(), redis=redis, publisher=publisher, clock=lambda: NOW)
    reads = "/v1/programs/rm/customers/alice"
    stop = asyncio.Event()
    projection = asyncio.create_task(project(loyalty_settings, redis=redis, stop=stop))  # the CLI's entry point
    try:
        async with live_worker(loyalty_settings, PROGRAM) as live, client_for(app) as client:
            await live.publish(activity("Registration", "reg-alice", "alice", "2026-03-01T10:00:00Z", program_id="rm"))
            await live.read("ledger", 1, customer="alice")
            await live.publish(activity("TransactionAdd", "t-1", "alice", "2026-03-05T10:00:00Z", program_id="rm",
                                        bill_number="B-1", amount="500"))

            async def balance_at(seq: int) -> dict[str, Any] | None:
                answer = await client.get(f"{reads}/balance")
                body = await answer.json() if answer.status == 200 else None
                # both sources of the answer (ledger: balances; balance changes: totals and tier) up to `seq`
                caught_up = body is not None and body["seq"] >= seq and (body["totals_seq"] or -1) >= seq
                return body if caught_up else None

            balance = await eventually(lambda: balance_at(2), what="balance at seq 2")
            assert (dec(balance["current"]), dec(balance["lifetime_earned"]), balance["tier"]) == (
                dec(150), dec(150), "silver")
            history = await (await client.get(f"{reads}/history?limit=1")).json()
            assert [item["text"] for item in history["items"]] == [
                "2026-03-05  +50 points earned on bill B-1 (PCT, rule 'pct'), usable through 2026-04-04; balance 150"]
            expirations = await (await client.get(f"{reads}/expirations?as_of=2026-04-01")).json()
            assert expirations["groups"] == [{"date": "2026-04-04", "points": "50"}] and expirations["total"] == "50"
            everything = await (await client.get(f"{reads}/expirations?as_of=2026-03-01")).json()
            assert everything["total"] == "150"
            assert (await (await client.get(f"{reads}/promised")).json())["items"] == []

            deduction = {"direction": "deduct", "points": "30", "reason": "duplicate order", "operator_id": "op-7"}
            posted = await client.post("/v1/admin/programs/rm/customers/alice/adjustments", json=deduction,
                                       headers={"Idempotency-Key": "support-42"})
            assert posted.status == 202 and (await posted.json())["event_id"] == "support-42"
            entry = (await live.read("ledger", 3, customer="alice"))[-1]
            assert (entry["kind"], entry["source_event_id"], dec(entry["amount"])) == ("adjust", "support-42", dec(-30))
            balance = await eventually(lambda: balance_at(3), what="balance after the adjustment")
            assert dec(balance["current"]) == dec(120)
            newest = (await (await client.get(f"{reads}/history?limit=1")).json())["items"][0]
            assert newest["text"] == "2026-03-25  -30 points deducted by operator op-7: duplicate order; balance 120"

            spread = await (await client.get("/v1/admin/programs/rm/distribution?buckets=0,100,200")).json()
            assert [(b["label"], b["customers"]) for b in spread["buckets"]] == [
                ("< 0", 0), ("[0, 100)", 0), ("[100, 200)", 1), (">= 200", 0)]
            assert (await (await client.get("/healthz")).json())["kafka"] is True
    finally:
        stop.set()
        await asyncio.wait_for(projection, 10)
        await publisher.stop()
        await redis.aclose()


async def test_serve_listens_until_stopped(loyalty_settings: Settings, redis_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(loyalty_settings.model_copy(update={"redis_url": redis_url}),
                                       ApiSettings(port=port), stop=stop))
    try:
        async with aiohttp.ClientSession() as session:
            async def healthy() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
                        return answer.status == 200
                return False

            await eventually(healthy, timeout=5, what="the API to answer")
    finally:
        stop.set()
        await asyncio.wait_for(server, 5)
