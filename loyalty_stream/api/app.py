"""The HTTP API (aiohttp): consumer reads from the Redis read model, admin actions published as activities.

Reads never touch Kafka and writes never touch the customer state: an admin action becomes an activity on its
topic (ManualAdjustment, PointsUnlock, RedemptionReversal) and the worker applies it like any other, so it is
validated, idempotent, replayable and on the ledger like everything else. The answer is 202 with the event id;
the effect shows in the read model once the worker and the projection have caught up (about a second).

The event id is the client's `Idempotency-Key` when given (the engine drops a repeated event id, so a retry
is applied once), else generated. The key is remembered in Redis with a fingerprint of the request for a day,
so reusing a key for a different request answers 409 instead of being silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty_stream.api import models as m
from loyalty_stream.api.admin_page import ADMIN_PAGE
from loyalty_stream.api.config import ApiSettings
from loyalty_stream.api.openapi import build_openapi
from loyalty_stream.events import activities as act
from loyalty_stream.events.codec import encode
from loyalty_stream.events.envelope import CustomerId, Envelope, EventId, ProgramId
from loyalty_stream.events.outputs import Notification
from loyalty_stream.readmodel.distribution import parse_edges
from loyalty_stream.readmodel.keys import Keys
from loyalty_stream.readmodel.reader import ReadModel
from loyalty_stream.settings import Settings
from loyalty_stream.signals import run_until_signal

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PROGRAM: TypeAdapter[str] = TypeAdapter(ProgramId)
_CUSTOMER: TypeAdapter[str] = TypeAdapter(CustomerId)
_EVENT_ID: TypeAdapter[str] = TypeAdapter(EventId)

SETTINGS_KEY = web.AppKey("settings", Settings)
API_KEY = web.AppKey("api", ApiSettings)
READER_KEY = web.AppKey("reader", ReadModel)
PUBLISHER_KEY: web.AppKey[Publisher] = web.AppKey("publisher")
KEYS_KEY = web.AppKey("keys", Keys)
CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")


# Publishing -------------------------------------------------------------------------------------------------
class PublishError(RuntimeError):
    pass


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, key: str, value: bytes) -> None: ...


class KafkaPublisher:
    """An aiokafka producer started on first use, so the read endpoints work while Kafka is away."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def _ensure(self) -> Any:
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=False)
                try:
                    await producer.start()
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise PublishError(f"Kafka at {self.bootstrap} is not reachable: {exc}") from exc
                self._producer = producer
            return self._producer

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        from aiokafka.errors import KafkaError

        producer = await self._ensure()
        try:
            await producer.send_and_wait(topic, value=value, key=key.encode())
        except KafkaError as exc:
            raise PublishError(f"Kafka did not accept the record: {exc}") from exc

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


# Errors -----------------------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, fields: list[m.FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.fields = fields or []
        self.headers = headers


def _json_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=model.model_dump_json(), status=status, content_type="application/json",
                        headers=headers)


def invalid(field: str, message: str, kind: str = "value_error") -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {message}", [m.FieldError(field=field, message=message,
                                                                                 type=kind)])


def _from_validation(error: ValidationError, prefix: str = "") -> ApiError:
    fields = [m.FieldError(field=prefix + (".".join(str(p) for p in e["loc"]) or "(body)"), message=e["msg"],
                           type=e["type"]) for e in error.errors()]
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
    return ApiError(422, "validation_error", summary, fields)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON with the same shape (`models.Error`), including aiohttp's own 404/405."""
    try:
        return await handler(request)
    except ApiError as exc:
        body = m.Error(error=exc.error, message=exc.message, fields=exc.fields)
        return _json_response(body, exc.status, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json_response(m.Error(error=exc.reason.lower().replace(" ", "_"), message=exc.reason), exc.status)
    except RedisError as exc:
        log.warning("read model unavailable: %s", exc)
        return _json_response(m.Error(error="unavailable", message="the read model (Redis) is not reachable"), 503)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin endpoints want `Authorization: Bearer <LOYALTY_API_ADMIN_TOKEN>` when a token is configured."""
    token = request.app[API_KEY].admin_token
    if token is not None and request.path.startswith("/v1/admin/"):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "unauthorized", "admin endpoints need 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="loyalty-admin"'})
    return await handler(request)


# Parameters -------------------------------------------------------------------------------------------------
def _path(request: web.Request, name: str, adapter: TypeAdapter[str]) -> str:
    try:
        return adapter.validate_python(request.match_info[name])
    except ValidationError as exc:
        raise invalid(name, exc.errors()[0]["msg"], exc.errors()[0]["type"]) from None


def _ids(request: web.Request) -> tuple[str, str]:
    return _path(request, "program", _PROGRAM), _path(request, "customer", _CUSTOMER)


def _limit(request: web.Request) -> int:
    api = request.app[API_KEY]
    raw = request.query.get("limit")
    if raw is None:
        return api.history_default
    if not raw.isdigit() or not 1 <= int(raw) <= api.history_max:
        raise invalid("limit", f"must be an integer from 1 to {api.history_max}")
    return int(raw)


def _today(request: web.Request) -> date:
    return request.app[CLOCK_KEY]().astimezone(UTC).date()


# Consumer endpoints ------------------------------------------------------------------------------------------
async def _known(request: web.Request, program_id: str, customer_id: str) -> None:
    if await request.app[READER_KEY].view(program_id, customer_id) is None:
        raise ApiError(404, "not_found", f"no customer {customer_id!r} in program {program_id!r} (yet)")


async def balance(request: web.Request) -> web.Response:
    program_id, customer_id = _ids(request)
    view = await request.app[READER_KEY].view(program_id, customer_id)
    if view is None:
        raise ApiError(404, "not_found", f"no customer {customer_id!r} in program {program_id!r} (yet)")
    return _json_response(m.Balance(
        program_id=program_id, customer_id=customer_id, current=view.current, promised=view.promised,
        lifetime_earned=view.lifetime_earned, redeemed=view.redeemed, expired=view.expired, returned=view.returned,
        tier=view.tier, seq=view.seq, totals_seq=view.change_seq, updated_at=view.updated_at))


async def history(request: web.Request) -> web.Response:
    program_id, customer_id = _ids(request)
    limit = _limit(request)
    items = await request.app[READER_KEY].history(program_id, customer_id, limit)
    if not items:
        await _known(request, program_id, customer_id)
    return _json_response(m.History(program_id=program_id, customer_id=customer_id,
                                    items=[m.HistoryItem.model_validate(item) for item in items]))


async def expirations(request: web.Request) -> web.Response:
    program_id, customer_id = _ids(request)
    raw = request.query.get("as_of")
    try:
        as_of = date.fromisoformat(raw) if raw else _today(request)
    except ValueError:
        raise invalid("as_of", "must be an ISO date (YYYY-MM-DD)") from None
    groups = await request.app[READER_KEY].expirations(program_id, customer_id, as_of)
    if not groups:
        await _known(request, program_id, customer_id)
    return _json_response(m.Expirations(
        program_id=program_id, customer_id=customer_id, as_of=as_of, total=sum((p for _, p in groups), Decimal(0)),
        groups=[m.ExpirationGroup(date=day, points=points) for day, points in groups]))


async def promised(request: web.Request) -> web.Response:
    program_id, customer_id = _ids(request)
    rows = await request.app[READER_KEY].promised(program_id, customer_id)
    if not rows:
        await _known(request, program_id, customer_id)
    return _json_response(m.Promised(
        program_id=program_id, customer_id=customer_id, total=sum((p for _, _, p in rows), Decimal(0)),
        items=[m.PromisedGroup(available_at=at, bill_number=bill, points=points) for at, bill, points in rows]))


async def notifications(request: web.Request) -> web.Response:
    program_id, customer_id = _ids(request)
    items = await request.app[READER_KEY].notifications(program_id, customer_id, _limit(request))
    if not items:
        await _known(request, program_id, customer_id)
    return _json_response(m.Notifications(program_id=program_id, customer_id=customer_id,
                                          items=[Notification.model_validate(item) for item in items]))


# Admin endpoints ---------------------------------------------------------------------------------------------
async def _body(request: web.Request, model: type[m.Request], optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if not optional:
            raise invalid("(body)", "a JSON object is required")
        raw = b"{}"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("(body)", "not valid JSON", "json_invalid") from None
    if not isinstance(data, dict):
        raise invalid("(body)", "must be a JSON object", "model_type")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None


def _event_id(request: web.Request) -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return f"api-{uuid.uuid4().hex}"
    try:
        return _EVENT_ID.validate_python(key)
    except ValidationError as exc:
        raise invalid("Idempotency-Key", exc.errors()[0]["msg"], exc.errors()[0]["type"]) from None


async def _remember(request: web.Request, event_id: str, fingerprint: str) -> None:
    """Refuse a key reused for another request; a retry of the same request goes through (the engine drops
    the duplicate event id, and re-publishing covers a first attempt that failed after this point)."""
    app = request.app
    key = app[KEYS_KEY].idempotency(event_id)
    try:
        redis = app[READER_KEY].redis
        if await redis.set(key, fingerprint, nx=True, ex=app[API_KEY].idempotency_ttl):
            return
        stored = await redis.get(key)
    except RedisError as exc:  # the engine still drops repeated event ids; only the 409 check is lost
        log.warning("idempotency keys unavailable (%s); publishing %s unchecked", exc, event_id)
        return
    if stored is not None and (stored.decode() if isinstance(stored, bytes) else stored) != fingerprint:
        raise ApiError(409, "idempotency_conflict",
                       f"Idempotency-Key {event_id!r} was already used for a different request")


async def _publish(request: web.Request, build: Callable[[str, str, str, datetime], Envelope],
                   body: m.Request) -> web.Response:
    program_id, customer_id = _ids(request)
    event_id = _event_id(request)
    at = body.event_time or request.app[CLOCK_KEY]()
    try:
        activity = build(event_id, program_id, customer_id, at)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    explicit = body.model_dump(mode="json", exclude={"event_time"} if body.event_time is None else set())
    kind = type(activity).__name__
    fingerprint = hashlib.sha256(orjson.dumps([kind, program_id, customer_id, request.match_info.get("redemption_id"),
                                               explicit], option=orjson.OPT_SORT_KEYS)).hexdigest()
    if "Idempotency-Key" in request.headers:
        await _remember(request, event_id, fingerprint)
    topic = request.app[SETTINGS_KEY].topic(_TOPICS[kind])
    try:
        await request.app[PUBLISHER_KEY].publish(topic, customer_id, encode(activity))
    except PublishError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return _json_response(m.Accepted(event_id=event_id, type=kind, topic=topic), status=202)


_TOPICS = {"ManualAdjustment": "manual-adjustment", "PointsUnlock": "points-unlock",
           "RedemptionReversal": "redemption-reversal"}


async def adjustments(request: web.Request) -> web.Response:
    body: m.AdjustmentRequest = await _body(request, m.AdjustmentRequest)

    def build(event_id: str, program_id: str, customer_id: str, at: datetime) -> Envelope:
        return act.ManualAdjustment(
            event_id=event_id, program_id=program_id, customer_id=customer_id, event_time=at,
            payload=act.ManualAdjustmentPayload(direction=body.direction, points=body.points, reason=body.reason,
                                                operator_id=body.operator_id, clamp=body.clamp))

    return await _publish(request, build, body)


async def unlock(request: web.Request) -> web.Response:
    body: m.UnlockRequest = await _body(request, m.UnlockRequest)

    def build(event_id: str, program_id: str, customer_id: str, at: datetime) -> Envelope:
        return act.PointsUnlock(event_id=event_id, program_id=program_id, customer_id=customer_id, event_time=at,
                                payload=act.PointsUnlockPayload(bill_number=body.bill_number, item_ids=body.item_ids))

    return await _publish(request, build, body)


async def reversal(request: web.Request) -> web.Response:
    body: m.ReversalRequest = await _body(request, m.ReversalRequest, optional=True)
    redemption_id = request.match_info["redemption_id"].strip()
    if not redemption_id:
        raise invalid("redemption_id", "must not be empty")

    def build(event_id: str, program_id: str, customer_id: str, at: datetime) -> Envelope:
        return act.RedemptionReversal(
            event_id=event_id, program_id=program_id, customer_id=customer_id, event_time=at,
            payload=act.RedemptionReversalPayload(redemption_id=redemption_id, bill_number=body.bill_number))

    return await _publish(request, build, body)


async def programs(request: web.Request) -> web.Response:
    return _json_response(m.Programs(programs=await request.app[READER_KEY].programs()))


async def distribution(request: web.Request) -> web.Response:
    program_id = _path(request, "program", _PROGRAM)
    raw = request.query.get("buckets")
    try:
        edges = parse_edges(raw) if raw is not None else list(request.app[API_KEY].distribution_edges)
    except ValueError as exc:
        raise invalid("buckets", str(exc)) from None
    result = await request.app[READER_KEY].distribution(program_id, edges)
    return _json_response(m.Distribution(
        program_id=program_id, customers=result.customers,
        buckets=[m.DistributionBucket(lower=b.bucket.lower, upper=b.bucket.upper, label=b.bucket.label,
                                      customers=b.customers) for b in result.buckets],
        percentiles={f"p{p}": value for p, value in result.percentiles.items()},
        min=result.minimum, max=result.maximum))


# Ops ----------------------------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    try:
        redis_ok = bool(await asyncio.wait_for(request.app[READER_KEY].redis.ping(), 2.0))
    except (RedisError, OSError, TimeoutError):
        redis_ok = False
    health = m.Health(status="ok" if redis_ok else "unavailable", redis=redis_ok,
                      kafka=request.app[PUBLISHER_KEY].connected)
    return _json_response(health, 200 if redis_ok else 503)


async def admin_page(request: web.Request) -> web.Response:
    return web.Response(text=ADMIN_PAGE, content_type="text/html")


def create_app(settings: Settings, api: ApiSettings | None = None, *, redis: Redis, publisher: Publisher,
               clock: Callable[[], datetime] | None = None) -> web.Application:
    """The aiohttp application; the caller owns `redis` and `publisher` (tests pass fakes or their own)."""
    api = api or ApiSettings()
    app = web.Application(middlewares=[errors_middleware, auth_middleware])
    keys = Keys.for_prefixes(settings.redis_prefix, settings.topic_prefix)
    app[SETTINGS_KEY] = settings
    app[API_KEY] = api
    app[KEYS_KEY] = keys
    app[READER_KEY] = ReadModel(redis, keys)
    app[PUBLISHER_KEY] = publisher
    app[CLOCK_KEY] = clock or (lambda: datetime.now(UTC))
    document = orjson.dumps(build_openapi())

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    customer = "/v1/programs/{program}/customers/{customer}"
    admin = "/v1/admin/programs/{program}/customers/{customer}"
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/admin", admin_page)
    app.router.add_get(f"{customer}/balance", balance)
    app.router.add_get(f"{customer}/history", history)
    app.router.add_get(f"{customer}/expirations", expirations)
    app.router.add_get(f"{customer}/promised", promised)
    app.router.add_get(f"{customer}/notifications", notifications)
    app.router.add_post(f"{admin}/adjustments", adjustments)
    app.router.add_post(f"{admin}/unlock", unlock)
    app.router.add_post(f"{admin}/redemptions/{{redemption_id}}/reversal", reversal)
    app.router.add_get("/v1/admin/programs", programs)
    app.router.add_get("/v1/admin/programs/{program}/distribution", distribution)
    return app


# Entry points -------------------------------------------------------------------------------------------------
async def serve(settings: Settings | None = None, api: ApiSettings | None = None, *, redis: Redis | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve the API until `stop` is set (or the task is cancelled)."""
    settings = settings or Settings()
    api = api or ApiSettings()
    client = redis if redis is not None else Redis.from_url(settings.redis_url)
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    runner = web.AppRunner(create_app(settings, api, redis=client, publisher=publisher), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, api.host, api.port)
        await site.start()
        if api.admin_token is None:
            log.warning("LOYALTY_API_ADMIN_TOKEN is not set: the admin endpoints are open")
        log.info("loyalty-stream API on http://%s:%s (admin page /admin, OpenAPI /openapi.json)", api.host, api.port)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await publisher.stop()
        if redis is None:
            await client.aclose()


def run_api(settings: Settings | None = None, api: ApiSettings | None = None) -> int:
    """`loyalty-stream api`: the API in the foreground until SIGINT/SIGTERM."""
    return run_until_signal(lambda stop: serve(settings, api, stop=stop))
