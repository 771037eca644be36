"""The Redis projection: follows the output topics and keeps the read model the API serves.

A cache of the topics, never a source of truth: `rebuild` deletes every key and reads the topics from the
beginning. It reads `ledger`, `balance-changes`, `tier-changes` and `notifications` in its own consumer group
(`{app_id}-readmodel`), so it scales out by partition and never slows the worker.

One poll is one Redis transaction: load the views of the customers the batch touches (one pipeline), apply
the records with the pure functions of `readmodel.state`, and write the changes together with the next
offset of every partition (one MULTI/EXEC). The offsets in Redis, not the group's committed ones, decide where
reading resumes after an assignment: data and position can never disagree, and a Redis that lost its keys
(flushed, replaced, `rebuild`) is refilled from the beginning instead of staying half empty. The group's offsets
are still committed, after the write, so the usual lag tools see the projection.

Delivery is at least once (a crash between the write and nothing else loses nothing; a rebalance can hand a
partition over while its last batch is being written): every write is idempotent, see `readmodel.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty_stream.events.outputs import BalanceChange, LedgerEntry, Notification, TierChange
from loyalty_stream.readmodel.config import ReadModelSettings
from loyalty_stream.readmodel.keys import Keys
from loyalty_stream.readmodel.state import (
    CustomerView,
    apply_balance_change,
    apply_ledger,
    apply_notification,
    apply_tier_change,
)
from loyalty_stream.settings import Settings
from loyalty_stream.signals import run_until_signal
from loyalty_stream.stream.kafka_io import topic_partitions

log = logging.getLogger(__name__)

MODELS: dict[str, type[BaseModel]] = {
    "ledger": LedgerEntry,
    "balance-changes": BalanceChange,
    "tier-changes": TierChange,
    "notifications": Notification,
}
"""Logical topics the projection reads, and the contract of their values."""

# Keep the newest `ARGV[1]` members of a sorted set and drop the others from it and from its payload hash.
TRIM_SCRIPT = """
local keep = tonumber(ARGV[1])
local extra = redis.call('ZCARD', KEYS[1]) - keep
if extra <= 0 then return 0 end
local ids = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
for i = 1, #ids, 500 do
  local chunk = {unpack(ids, i, math.min(i + 499, #ids))}
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('HDEL', KEYS[2], unpack(chunk))
end
return #ids
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(mapping: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in mapping.items()}


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record, by its physical topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class Stats:
    records: int = 0
    applied: int = 0
    """Records applied; notifications and tier changes always count (their writes are idempotent by id)."""
    duplicates: int = 0
    """Ledger entries and balance changes already applied (redelivery, replay)."""
    skipped: int = 0
    """Records that are not the contract of their topic (logged, never retried: they cannot get better)."""
    drift: int = 0
    """Customers whose lots did not reconcile with their balances after a batch (an entry was missed)."""

    def add(self, other: Stats) -> None:
        self.records += other.records
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        self.drift += other.drift


class BadRecord(ValueError):
    pass


def decode(model: type[BaseModel], raw: bytes | None) -> Any:
    """Validate a record; a newer producer's unknown fields are dropped (the contracts forbid extras) rather
    than stopping the projection on a deploy-order accident."""
    if raw is None:
        raise BadRecord("empty record")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"not JSON: {exc}") from None
    if isinstance(data, dict):
        known = {k: v for k, v in data.items() if k in model.model_fields}
        if len(known) < len(data):
            with contextlib.suppress(ValidationError):
                return model.model_validate(known)
    raise BadRecord(f"not a {model.__name__}: {first.errors()[:3]}")


class Projection:
    """Applies output records to Redis. `apply` is the whole write path; `run`, `catch_up` and `rebuild` only
    decide which records it gets."""

    def __init__(self, settings: Settings, redis: Redis, *, config: ReadModelSettings | None = None,
                 zone_of: Callable[[str], tzinfo | None] | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.config = config or ReadModelSettings()
        self.keys = Keys.for_prefixes(settings.redis_prefix, settings.topic_prefix)
        self.logical = {settings.topic(name): name for name in MODELS}
        self.group_id = f"{settings.app_id}{self.config.group_suffix}"
        self.zone_of = zone_of or (lambda _program_id: None)
        self.totals = Stats()
        self.assigned = asyncio.Event()
        """Set once the group has assigned partitions and they are positioned (what tests wait for)."""
        self._trim = redis.register_script(TRIM_SCRIPT)

    # The write path ------------------------------------------------------------------------------------------
    async def apply(self, records: Sequence[Record]) -> Stats:
        """Apply one batch in a single Redis transaction, offsets included."""
        stats = Stats(records=len(records))
        decoded: list[tuple[str, Any]] = []
        offsets: dict[str, int] = {}
        for record in records:
            offsets[f"{record.topic}:{record.partition}"] = record.offset + 1
            logical = self.logical.get(record.topic)
            if logical is None:
                stats.skipped += 1
                continue
            try:
                decoded.append((logical, decode(MODELS[logical], record.value)))
            except BadRecord as exc:
                stats.skipped += 1
                log.warning("read model skips %s[%s]@%s: %s", record.topic, record.partition, record.offset, exc)
        views = await self._load({(m.program_id, m.customer_id) for _, m in decoded})
        for logical, message in decoded:
            view = views[(message.program_id, message.customer_id)]
            if logical == "ledger":
                done = apply_ledger(view, message, self.zone_of(message.program_id))
            elif logical == "balance-changes":
                done = apply_balance_change(view, message)
            elif logical == "tier-changes":
                done = apply_tier_change(view, message)
            else:
                done = apply_notification(view, message)
            stats.applied += done
            stats.duplicates += not done
        for view in views.values():
            if view.pending.lots and not view.consistent():
                stats.drift += 1
                log.warning("read model: lots of %s/%s do not reconcile with balance %s/%s at seq %s "
                            "(an entry was missed; `rebuild` recomputes them)", view.program_id,
                            view.customer_id, view.current, view.promised, view.seq)
        await self._write(views.values(), offsets)
        self.totals.add(stats)
        return stats

    async def _load(self, customers: Iterable[tuple[str, str]]) -> dict[tuple[str, str], CustomerView]:
        wanted = sorted(customers)
        if not wanted:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for program_id, customer_id in wanted:
                keys = self.keys.customer(program_id, customer_id)
                pipe.hgetall(keys.bal)
                pipe.hgetall(keys.lots)
            replies = await pipe.execute()
        return {
            (program_id, customer_id): CustomerView.from_redis(
                program_id, customer_id, _texts(replies[2 * i]), _texts(replies[2 * i + 1]))
            for i, (program_id, customer_id) in enumerate(wanted)
        }

    async def _write(self, views: Iterable[CustomerView], offsets: Mapping[str, int]) -> None:
        config = self.config
        async with self.redis.pipeline(transaction=True) as pipe:
            for view in views:
                pending = view.pending
                if not pending.any:
                    continue
                keys = self.keys.customer(view.program_id, view.customer_id)
                if pending.balance:
                    pipe.delete(keys.bal)
                    pipe.hset(keys.bal, mapping=view.to_hash())  # type: ignore[arg-type]
                    pipe.zadd(self.keys.distribution(view.program_id), {view.customer_id: float(view.current)})
                    pipe.sadd(self.keys.programs, view.program_id)
                if pending.lots:
                    kept = {lot_id: view.lots[lot_id].to_json() for lot_id in pending.lots if lot_id in view.lots}
                    gone = [lot_id for lot_id in pending.lots if lot_id not in view.lots]
                    if kept:
                        pipe.hset(keys.lots, mapping=kept)  # type: ignore[arg-type]
                    if gone:
                        pipe.hdel(keys.lots, *gone)
                    groups = view.expiration_groups(self.zone_of(view.program_id))
                    pipe.delete(keys.exp, keys.prm)
                    if groups:
                        pipe.hset(keys.exp, mapping={d.isoformat(): format(p, "f") for d, p in groups.items()})
                    promised = {f"{at.isoformat() if at else ''}|{bill or ''}": format(points, "f")
                                for at, bill, points in view.promised_groups()}
                    if promised:
                        pipe.hset(keys.prm, mapping=promised)  # type: ignore[arg-type]
                for items, zkey, hkey, limit in (
                    (pending.history, keys.hist, keys.hist_entries, config.history_limit),
                    (pending.notifications, keys.ntf, keys.ntf_entries, config.notifications_limit),
                    (pending.tier_changes, keys.tier, keys.tier_entries, config.tier_changes_limit),
                ):
                    if items:
                        pipe.zadd(zkey, {member: score for score, member, _ in items})
                        pipe.hset(hkey, mapping={member: payload for _, member, payload in items})
                        await self._trim(keys=[zkey, hkey], args=[limit], client=pipe)
                view.pending = type(pending)()
            if offsets:
                pipe.hset(self.keys.offsets, mapping=dict(offsets))  # type: ignore[arg-type]
            await pipe.execute()

    # Positions -----------------------------------------------------------------------------------------------
    async def stored_offsets(self) -> dict[str, int]:
        """Next offset to read per `topic:partition`, as written with the data."""
        return {k: int(v) for k, v in _texts(await self.redis.hgetall(self.keys.offsets)).items()}

    async def _position(self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
        stored = await self.stored_offsets()
        fresh = []
        for tp in partitions:
            offset = stored.get(f"{tp.topic}:{tp.partition}")
            if offset is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, offset)
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        found: list[TopicPartition] = []
        for topic in self.logical:
            found.extend(await topic_partitions(consumer, topic))
        return found

    def _consumer(self, group_id: str | None) -> AIOKafkaConsumer:
        s = self.settings
        options: dict[str, Any] = {}
        if group_id is not None:
            options = {
                "session_timeout_ms": int(s.broker_session_timeout * 1000),
                "heartbeat_interval_ms": int(s.broker_heartbeat_interval * 1000),
                "rebalance_timeout_ms": int(s.broker_rebalance_timeout * 1000),
            }
        wait = self.config.fetch_max_wait_ms
        if wait is None:
            wait = int(getattr(s, "fetch_max_wait_ms", 100))
        return AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=group_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=wait, **options)

    @staticmethod
    def _records(batch: Mapping[TopicPartition, Sequence[Any]]) -> list[Record]:
        return [Record(m.topic, m.partition, m.offset, m.value) for messages in batch.values() for m in messages]

    # Ways to feed it -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow the topics in the consumer group until `stop` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        consumer = self._consumer(self.group_id)
        consumer.subscribe(list(self.logical), listener=_Positioner(self, consumer))
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=int(self.config.poll_timeout * 1000),
                                               max_records=self.config.max_records)
                if not batch:
                    continue
                if not await self._apply_until_done(self._records(batch), stop):
                    break
                try:
                    await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batch.items() if messages})
                except KafkaError as exc:  # Redis holds the position; the group offset is for monitoring
                    log.info("read model: committing group offsets failed (%s); Redis has them", exc)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _apply_until_done(self, records: list[Record], stop: asyncio.Event) -> bool:
        """Retry a batch while Redis is away (the consumer has moved past it; Redis has not). False when stopped
        first: the batch was not written, so the next start reads it again from the offsets in Redis."""
        delay = 0.2
        while True:
            try:
                await self.apply(records)
                return True
            except (RedisError, OSError) as exc:
                log.warning("read model: Redis write failed (%s); retrying in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return False
            delay = min(delay * 2, 5.0)

    async def catch_up(self) -> Stats:
        """Without a group: read every partition from the stored offsets (the beginning when none) up to the end
        offsets of now, then return. The rebuild path, and what tests use to replay."""
        stats = Stats()
        consumer = self._consumer(None)
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            if not tps:
                return stats
            consumer.assign(tps)
            await self._position(consumer, tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=int(self.config.poll_timeout * 1000),
                                               max_records=self.config.max_records)
                if batch:
                    stats.add(await self.apply(self._records(batch)))
                remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
            return stats
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def reset(self) -> int:
        """Delete every key of the read model (offsets included); returns how many."""
        deleted = 0
        batch: list[Any] = []
        async for key in self.redis.scan_iter(match=self.keys.pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await self.redis.unlink(*batch)
        return deleted

    async def rebuild(self) -> Stats:
        """Reset the keys and read the topics again from the beginning. Stop the projection's group members
        first: one still running would keep writing from its own position into the emptied keys."""
        deleted = await self.reset()
        stats = await self.catch_up()
        log.info("read model rebuilt: %s keys deleted, %s records read, %s applied", deleted, stats.records,
                 stats.applied)
        return stats

    async def lag(self) -> int:
        """Records in the topics that the read model has not applied yet."""
        consumer = self._consumer(None)
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            ends = await consumer.end_offsets(tps) if tps else {}
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        stored = await self.stored_offsets()
        return sum(max(0, end - stored.get(f"{tp.topic}:{tp.partition}", 0)) for tp, end in ends.items())


class _Positioner(ConsumerRebalanceListener):  # type: ignore[misc]
    """On every assignment, position the partitions where Redis says the data ends."""

    def __init__(self, projection: Projection, consumer: AIOKafkaConsumer) -> None:
        self.projection = projection
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to hand over: every applied batch's offsets are already in Redis with its data."""

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.projection._position(self.consumer, assigned)
        self.projection.assigned.set()


# Entry points ------------------------------------------------------------------------------------------------------
def _zones(settings: Settings) -> tuple[Callable[[str], tzinfo | None], Any]:
    """Program time zones for history dates: the program files, then whatever the program topic adds."""
    from loyalty_stream.program.loader import ProgramError, ProgramRegistry

    try:
        registry = ProgramRegistry.from_files(settings.program_paths())
    except (ProgramError, OSError) as exc:
        log.warning("read model: programs not loaded (%s); history dates use each entry's own offset", exc)
        registry = ProgramRegistry()

    def zone_of(program_id: str) -> tzinfo | None:
        program = registry.get(program_id)
        return None if program is None else program.zone

    return zone_of, registry


async def project(settings: Settings | None = None, *, redis: Redis | None = None, rebuild: bool = False,
                  config: ReadModelSettings | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the projection until `stop` is set: optionally rebuild first, then follow in the consumer group."""
    from loyalty_stream.stream.program_feed import ProgramFeed

    settings = settings or Settings()
    own = redis is None
    client = redis if redis is not None else Redis.from_url(settings.redis_url)
    zone_of, registry = _zones(settings)
    feed = asyncio.create_task(ProgramFeed(settings.kafka_bootstrap, settings.topic("program"), registry).run())
    try:
        projection = Projection(settings, client, config=config, zone_of=zone_of)
        if rebuild:
            await projection.rebuild()
        await projection.run(stop)
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feed
        if own:
            await client.aclose()


def run_projection(settings: Settings | None = None, *, rebuild: bool = False,
                   config: ReadModelSettings | None = None) -> int:
    """`loyalty-stream readmodel [--rebuild]`: the projection in the foreground until SIGINT/SIGTERM."""
    return run_until_signal(lambda stop: project(settings, rebuild=rebuild, config=config, stop=stop))


def run_rebuild(settings: Settings | None = None, *, config: ReadModelSettings | None = None) -> int:
    """`loyalty-stream readmodel rebuild`: reset the keys, read the topics to their current end, and exit.
    A projection started afterwards continues from where the rebuild stopped."""

    async def main() -> Stats:
        resolved = settings or Settings()
        client = Redis.from_url(resolved.redis_url)
        try:
            zone_of, _ = _zones(resolved)
            return await Projection(resolved, client, config=config, zone_of=zone_of).rebuild()
        finally:
            await client.aclose()

    stats = asyncio.run(main())
    print(f"read model rebuilt: {stats.records} records read, {stats.applied} applied, {stats.skipped} skipped")
    return 0
