"""The worker's Faust app and transport: a tunable fetch wait, and a batch path for the activity topics.

Faust delivers every record on its own: ``Consumer._drain_messages`` wraps each one in ``wait_first`` (two
tasks and an ``asyncio.wait`` per record), the conductor wraps it in an event and a queue hop, the stream
acks it. Measured on the embedded broker, a Faust agent that does nothing tops out near 8,000 records/s,
below the worker's target before any engine work. Three changes, all in subclasses of Faust's aiokafka
driver (and ``faust.App._new_transport``); nothing else in Faust is touched:

``fetch_max_wait_ms`` and ``fetch_min_bytes``
    Faust hard-codes ``fetch_max_wait_ms=1500`` when it builds the aiokafka consumer. Tansu looks at a
    parked fetch only every quarter of its wait, not when data arrives, so that constant alone made
    produce -> processed take up to ~375 ms. :class:`LoyaltyConsumerThread` sets the value from
    ``LoyaltyApp.fetch_max_wait_ms`` on the consumer before it starts (aiokafka reads it at ``start()``),
    and ``LoyaltyApp.fetch_min_bytes`` likewise (Faust passes none: aiokafka's 1). With
    ``LoyaltyApp.fetch_min_bytes_adaptive`` the consumer asks for those bytes only while the input rate brings
    them within the wait (:class:`~loyalty_stream.stream.fetch_pacing.FetchMinBytes`, after every fetch).

Batch delivery
    :class:`LoyaltyConsumer` replaces ``_drain_messages``, the loop that turns each fetch into callbacks.
    Records of ``LoyaltyApp.batch_topics`` go to ``LoyaltyApp.batch_handler`` as one list per fetch, in
    offset order per partition; every other record (table changelogs during recovery) goes through the
    conductor exactly as before. The loop keeps Faust's bookkeeping: read offsets, gaps, flow control (a
    fetch that completes while the flow is stopped is dropped and the consumer seeks back to the committed
    offsets), paused partitions, ``track_message`` and ``broker_commit_every``, with two corrections for
    what a fetch racing a rebalance brings back: records of a partition that was paused meanwhile are
    dropped *and the partition is sought back to them* (Faust only drops them, and its seek to the committed
    offsets leaves a partition without a committed offset where the fetcher is: they were lost), and a gap
    never covers records already delivered (``perform_seek`` moves the read offsets back after the fetcher
    moved on; such a gap made Faust's commit crawl one offset at a time). The handler owns
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
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

from loyalty_stream.stream.fetch_pacing import FetchMinBytes

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Message], int], Awaitable[None]]
"""handler(messages, generation_id): the records of one fetch for the batch topics."""


class LoyaltyApp(faust.App):
    """``faust.App`` whose consumer uses :class:`LoyaltyTransport`; configured by the worker."""

    fetch_max_wait_ms: int | None = None
    fetch_min_bytes: int | None = None
    fetch_min_bytes_adaptive: bool = False
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
    #: The consumer's min-bytes controller (None: the min bytes are fixed), used after every fetch.
    pacing: FetchMinBytes | None = None

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        for name in ("fetch_max_wait_ms", "fetch_min_bytes"):  # AIOKafkaConsumer.start() gives them its Fetcher
            value = getattr(self.app, name, None)
            if value is not None:
                setattr(consumer, f"_{name}", int(value))
        self.pacing = fetch_pacing(self.app)
        if self.pacing is not None:
            consumer._fetch_min_bytes = self.pacing.current  # the min bytes only once the input rate fills them
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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Highest offset handed on (to the batch handler or the conductor) per partition since it was assigned.
        #: Unlike ``_read_offset`` it never moves back when Faust seeks, so a gap is never laid over records
        #: that were delivered (see ``_gap_start``).
        self._delivered: dict[TP, int] = {}

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return LoyaltyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:  # Faust drops its per-partition bookkeeping (acks, gaps, read offsets) here too
            self._delivered.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _gap_start(self, tp: TP, last: int) -> int:
        """First offset of a gap that ends before a record at an offset beyond ``last + 1``.

        ``last`` is Faust's read offset, which ``perform_seek`` sets back to the committed offset after a
        rebalance - also when the fetcher had already moved on and records past it were delivered (the
        recovery resumes the partitions before it seeks, and the seek's read offsets are written after the
        fetcher's answer): a gap counted from ``last`` then covers acked offsets, and Faust's commit, which
        walks consecutive acked offsets, advanced by one offset per commit, minutes for a few hundred
        records. A gap only ever covers offsets that were never delivered."""
        delivered = self._delivered.get(tp)
        return last + 1 if delivered is None else max(last, delivered) + 1

    async def _rewind(self, fetched: dict[TP, int]) -> None:
        """Put the fetch position of each partition back to the first of its records that were dropped.

        Records of a partition that is not active (Faust pauses every partition while it recovers the tables
        after an assignment) come back from a fetch that began before the pause. The fetcher has moved past
        them, and Faust's seek to the committed offsets does not bring it back for a partition without a
        committed offset (aiokafka's ``seek_to_committed`` skips those): dropping them silently lost them,
        and the acks of the later records committed past them."""
        try:  # in the consumer's thread, like the recovery's seeks (`Consumer.seek` is not)
            await self.seek_wait(fetched)
        except Exception as exc:  # no longer assigned: its next owner starts from the committed offset
            log.warning("could not seek %s back after a fetch for a paused partition: %r", fetched, exc)

    def _pace(self, pacing: FetchMinBytes, records: Mapping[TP, list[Any]]) -> None:
        """Give the min bytes for the input rate to aiokafka's fetcher, which reads them for each request."""
        fetched = sum(record.serialized_value_size for tp_records in records.values() for record in tp_records)
        self._thread._ensure_consumer()._fetcher._fetch_min_bytes = pacing.observe(fetched, time.monotonic())

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by every stream test
        app = cast(LoyaltyApp, self.app)
        handler = app.batch_handler
        batch_topics = app.batch_topics
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        delivered = self._delivered
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        track = self.track_message
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        pacing = cast(LoyaltyConsumerThread, self._thread).pacing
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
                if pacing is not None:
                    self._pace(pacing, records)
                batch: list[Message] = []
                others: list[Message] = []
                paused: dict[TP, int] = {}
                for tp, tp_records in records.items():
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        if tp_records:
                            paused[tp] = tp_records[0].offset  # fetched again once resumed (`_rewind`)
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
                            start = self._gap_start(tp, last)
                            if start < offset:
                                await self._add_gap(tp, start, offset - 1)  # both ends included
                        target.append(to_message(tp, record))
                        last = offset
                    read_offset[tp] = last
                    if last is not None and last > delivered.get(tp, -1):
                        delivered[tp] = last
                if paused:
                    await self._rewind(paused)
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


def fetch_pacing(app: Any) -> FetchMinBytes | None:
    """The min-bytes controller of ``app``'s consumer, or None when its min bytes are fixed."""
    ceiling, wait = getattr(app, "fetch_min_bytes", None), getattr(app, "fetch_max_wait_ms", None)
    if not (getattr(app, "fetch_min_bytes_adaptive", False) and ceiling and ceiling > 1 and wait):
        return None
    return FetchMinBytes(ceiling=int(ceiling), max_wait_s=wait / 1000)


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
