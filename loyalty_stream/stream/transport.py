"""The worker's Faust app and transport: a tunable fetch wait, and a batch path for the activity topics.

Faust delivers every record on its own: ``Consumer._drain_messages`` wraps each one in ``wait_first`` (two
tasks and an ``asyncio.wait`` per record), the conductor wraps it in an event and a queue hop, the stream
acks it. Measured on the embedded broker, a Faust agent that does nothing tops out near 8,000 records/s,
below the worker's target before any engine work. Three changes, all in subclasses of Faust's aiokafka
driver (and ``faust.App._new_transport``); nothing else in Faust is touched:

``fetch_max_wait_ms``
    Faust hard-codes ``fetch_max_wait_ms=1500`` when it builds the aiokafka consumer. Tansu answers a
    parked fetch at its deadline rather than when data arrives, so that constant alone made produce ->
    processed take up to 0.75 s on average. :class:`LoyaltyConsumerThread` sets the value from
    ``LoyaltyApp.fetch_max_wait_ms`` on the consumer before it starts (aiokafka reads it at ``start()``).

Batch delivery
    :class:`LoyaltyConsumer` replaces ``_drain_messages``, the loop that turns each fetch into callbacks.
    Records of ``LoyaltyApp.batch_topics`` go to ``LoyaltyApp.batch_handler`` as one list per fetch, in
    offset order per partition; every other record (table changelogs during recovery) goes through the
    conductor exactly as before. The loop keeps Faust's bookkeeping: read offsets, gaps, flow control (a
    fetch that completes while the flow is stopped is dropped and the consumer seeks back to the committed
    offsets), paused partitions, ``track_message`` and ``broker_commit_every``. The handler owns
    acknowledgement: it calls ``consumer.ack(message)`` once a record's effects are durable, and Faust
    commits acked offsets as it always does (periodic commit, commit on stop). The topics stay registered
    with the conductor (``app.topics.add``), so subscription, partition assignment and ``acks_enabled_for``
    are unchanged.

End offsets for table recovery
    Tansu answers ListOffsets with the base offset of a partition's last record batch + 1, so Faust, which
    recovers a table up to that offset, left out the rest of the last batch (customers' latest states,
    gone after a restart). :func:`probe_end_offsets` corrects the end offsets from a fetch's high watermark.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Message], int], Awaitable[None]]
"""handler(messages, generation_id): the records of one fetch for the batch topics."""


class LoyaltyApp(faust.App):
    """``faust.App`` whose consumer uses :class:`LoyaltyTransport`; configured by the worker."""

    fetch_max_wait_ms: int | None = None
    batch_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None
    before_stop: Callable[[], Awaitable[None]] | None = None

    def _new_transport(self) -> Any:
        return LoyaltyTransport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        # Let the worker finish what it started (outputs, changelog, acks) while the consumer can still
        # commit; Faust then stops the fetcher and commits what is acked.
        if self.before_stop is not None:
            try:
                await self.before_stop()
            except Exception:
                log.exception("worker shutdown hook failed; unacked records will be redelivered")
        await super().on_stop()


class LoyaltyConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)  # read by AIOKafkaConsumer.start() for its Fetcher
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """End offsets for table recovery, corrected for brokers whose ListOffsets is behind (Tansu)."""
        ends = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return ends
        transport = cast(driver.Transport, self.transport)
        conf = self.app.conf
        return await probe_end_offsets(  # type: ignore[return-value]
            driver.server_list(transport.url, transport.default_port), ends,
            timeout=conf.broker_request_timeout,
            **driver.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )


class LoyaltyConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return LoyaltyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by every stream test
        app = cast(LoyaltyApp, self.app)
        handler = app.batch_handler
        batch_topics = app.batch_topics
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        track = self.track_message
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if records is None or self.should_stop or not records:
                    continue
                if not self.flow_active:
                    # Same as Consumer.getmany: records fetched while the flow was stopped belong to a
                    # rebalance; seek back to the committed offsets.
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        log.warning("seek after stopped flow failed: %r", exc)
                    continue
                generation = app.consumer_generation_id
                batch: list[Message] = []
                others: list[Message] = []
                for tp, tp_records in records.items():
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    wanted = handler is not None and tp.topic in batch_topics
                    target = batch if wanted else others
                    last = read_offset[tp]
                    for record in tp_records:
                        offset = record.offset
                        if last is not None and offset < last:
                            continue  # already read (Faust drops these too)
                        if last and offset - last > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, last + 1, offset)
                        target.append(to_message(tp, record))
                        last = offset
                    read_offset[tp] = last
                for message in others:  # the classic per-record path (changelogs)
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                if batch:
                    for message in batch:
                        track(message)
                    assert handler is not None
                    await handler(batch, generation)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class LoyaltyTransport(driver.Transport):
    Consumer = LoyaltyConsumer


async def probe_end_offsets(bootstrap: Any, ends: Mapping[Any, int | None], *, timeout: float = 30.0,
                            **client_options: Any) -> dict[Any, int | None]:
    """The true end offset of each partition, given what ListOffsets answered.

    Tansu answers ListOffsets(latest) with *the base offset of the last record batch + 1*: a partition whose
    last produce request carried 6 records reports an end 5 short. Faust reads a changelog up to that end
    when it recovers a table, so the states in the last batch of a partition were silently left out. A fetch
    from ``end - 1`` returns that last batch, and the fetch response's high watermark is right; on Kafka it
    equals what ListOffsets said, so this only costs one small fetch per partition.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    wanted = {tp: end for tp, end in ends.items() if end}
    if not wanted:
        return dict(ends)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=10, max_partition_fetch_bytes=1, **client_options)
    await probe.start()
    found: dict[Any, int | None] = dict(ends)
    try:
        by_aiokafka = {TopicPartition(tp.topic, tp.partition): tp for tp in wanted}
        probe.assign(list(by_aiokafka))
        for atp, tp in by_aiokafka.items():
            probe.seek(atp, wanted[tp] - 1)
        remaining = set(by_aiokafka)
        deadline = asyncio.get_running_loop().time() + timeout
        while remaining and asyncio.get_running_loop().time() < deadline:
            batch = await probe.getmany(*remaining, timeout_ms=200)
            for atp in list(remaining):
                highwater = probe.highwater(atp)
                if atp in batch or (highwater is not None and highwater >= wanted[by_aiokafka[atp]]):
                    tp = by_aiokafka[atp]
                    found[tp] = max(wanted[tp], highwater or 0)
                    remaining.discard(atp)
        if remaining:
            log.warning("could not confirm the end offsets of %s; using ListOffsets", sorted(map(str, remaining)))
    finally:
        await probe.stop()
    return found
