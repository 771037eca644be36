"""The ``faust.App`` configuration of the worker, and what the Tansu spike taught us about it.

``faust_config(settings)`` returns the keyword arguments for ``faust.App(**faust_config(settings))``. Every
choice below was measured with faust-streaming 0.15.3 / mode-streaming 0.7.1 / aiokafka 0.14.0 against the
embedded Tansu broker (``tests/integration/test_faust_on_tansu.py`` keeps these findings honest).

Findings
--------
Start-up time (``await app.start()`` to the first processed message, one agent + one table, 4 partitions)
    ~2.1 s with ``broker_session_timeout=2``. It is two fixed costs:

    * 1.0 s: ``TableManager.on_start`` sleeps one second before registering tables. Hard-coded in Faust.
    * Tansu holds a JoinGroup for about half the **session** timeout (rounded up to a whole second, at least
      1 s) - not the rebalance timeout: session 2 -> 1 s, 4 -> 2 s, 6 -> 3 s, 10 -> 5 s, and the default 60 s
      would make every start and every rebalance take 30 s. Hence the short timeouts in tests and in
      ``loyalty-stream dev`` (:data:`EMBEDDED_BROKER_OVERRIDES`). A 2 s session with 0.5 s heartbeats stayed
      in the group through 60 s of constant traffic with both cores saturated by other processes.

    ``await app.start()`` returns once the group is joined and recovery is done in practice, but the reliable
    readiness signal is ``app.tables.recovery.completed`` (an ``asyncio.Event``), see the snippet below.
    ``await app.stop()`` takes ~10 ms.

Steady-state latency
    Faust's consumer long-polls with a hard-coded ``fetch_max_wait_ms=1500``. Tansu does not answer a parked
    fetch when data arrives: it looks again every quarter of the fetch's wait (measured: wait 500 ms, a
    record produced 50 / 137 / 300 ms into the wait arrived at 250 / 250 / 375 ms; wait 100 ms, at most
    25 ms later), so produce -> processed was up to ~375 ms. The worker's transport
    (``stream/transport.py``) sets ``Settings.fetch_max_wait_ms`` instead: 500 ms by default (Kafka answers
    as soon as data arrives) and 20 ms for Tansu (:data:`EMBEDDED_BROKER_OVERRIDES`): at most ~5 ms added
    per hop. Shorter waits buy little latency and cost CPU on both sides while idle: an empty poll loop over
    4 partitions cost Tansu 10 % and aiokafka 7 % of a core at 5 ms, 3 % and 3 % at 20 ms, and a Faust
    worker's own consumer thread more. A plain ``faust.App`` built from this config still waits 1.5 s.
    Tansu holds a parked fetch until it has ``fetch_min_bytes`` too (at its quarter-wait looks), and each
    fetch that returns data costs it a walk over every batch stored in the partition: 8 KB for Tansu
    (``Settings.fetch_min_bytes``) made a steady 1,000 activities/s cheaper for the broker and the worker
    and lowered its p99. At 250/s, 8 KB takes longer than the wait to arrive, so each hop would wait all of
    it while Tansu looks at the parked fetch every 5 ms anyway: the worker asks for the 8 KB only while its
    input brings them within the wait (``Settings.fetch_min_bytes_adaptive``, ``stream/fetch_pacing.py``),
    and for 1 byte below. An idle worker costs Tansu about 0.16 of a core at a 20 ms wait (0.06 at 80 ms):
    each look at a parked fetch walks all of its partitions, 40 of them for the 10 activity topics. The
    figures are in ``bench/FINDINGS.md`` (sessions 17 and 18).

End offsets on Tansu
    Tansu answers ListOffsets(latest) with *the base offset of the partition's last record batch + 1*: after
    one produce request of 6 records to an empty partition it says 1, not 6. Fetch responses carry the right
    high watermark. Faust recovers a table up to the ListOffsets answer, so the worker's transport corrects
    it (``transport.probe_end_offsets``); anything that reads "up to the end offsets" on Tansu should too.

Serializers: raw, always
    The app-wide ``key_serializer``/``value_serializer`` are ``"raw"``. With Faust's default (json) a value
    that is not JSON makes the agent *crash* with ``ValueDecodeError`` before our code sees it; the
    supervisor restarts it, and the stream stalls. Raw bytes in, ``pydantic.model_validate_json`` in the
    agent, and a failure goes to the dead-letter topic - which is what "nothing lost" requires.

Tables: ``key_type=bytes, value_type=bytes``
    A Table derives its changelog serializers from ``key_type``/``value_type`` only (``bytes`` -> raw,
    anything else -> json); a ``schema=`` argument is ignored for the changelog. A table declared with
    ``schema=faust.Schema(... raw ...)`` but no types writes raw bytes and then fails to *recover* them as
    JSON ("Error in recovery", then recovery hangs forever). Declare tables as
    ``app.Table(name, default=None, key_type=bytes, value_type=bytes)``, encode values with orjson, and
    reassign after every change (an in-place mutation writes no changelog record). Use ``table.get(key)``:
    ``default=None`` makes ``table[key]`` raise ``KeyError``. A table written outside stream iteration (a
    timer, the scheduler) needs ``use_partitioner=True``, or the write has no partition to go to.

Restart restores state
    Stopping the app and starting a new ``faust.App`` with the same id on the same broker restores the
    table from its changelog (``<app_id>-<table>-changelog``) and resumes from the committed offsets: no
    input is reprocessed when the previous run had committed (``broker_commit_interval``; ``app.stop()``
    also commits). A new app id starts empty and, with ``consumer_auto_offset_reset="earliest"``, reads
    every input topic from the beginning.

Compression
    The worker's producer writes zstd batches (``Settings.producer_compression``). A record's outputs and
    customer state are about 11 KB of JSON (6.5 ledger entries of about 700 bytes, a 6.7 KB state on
    average) that zstd level 3 shrinks 8-12x at 500-900 MB/s. Tansu stores a batch as it arrives, so its CPU
    per record fell with the bytes: with 2 engine processes, broker 0.30 -> 0.13 of a core, worker +0.09
    (compressing, less sending), throughput +15-20 %. Consumers (Faust's table recovery included) need the
    codec: ``cramjam``, a dependency.

Tansu specifics
    * Idempotent producers and transactions are unsupported (InitProducerId answers UNKNOWN), hence
      ``processing_guarantee="at_least_once"`` (Faust's exactly-once also has duplicate bugs). Idempotence
      is ours: processed ids in the customer state and stable output ids.
    * CreateTopics accepts configs and DescribeConfigs echoes them, but the memory engine does not compact.
    * Unknown topics are auto-created (4 partitions) on produce and on a Metadata request that names them
      (aiokafka's consumer sends one on subscribe): create the catalogue first.
    * Faust's own topics (leader ``<app_id>-__assignor-__leader``, table changelogs) are created by Faust
      with ``topic_partitions`` partitions, which must equal the catalogue's customer partition count so a
      table partition lines up with the input partition (co-partitioning). ``faust_config`` sets it.
    * Faust leaves a ``<id>-data`` directory in the working directory unless ``datadir`` is set; we put it
      under ``Settings.data_dir``.

Starting an app in-process (tests)
    Build a fresh app per test (fresh ``app_id`` -> fresh consumer group and changelogs)::

        app = faust.App(**faust_config(settings))      # settings: the ``loyalty_settings`` fixture
        ...  # declare topics / tables / agents on ``app``
        await app.start()
        await asyncio.wait_for(app.tables.recovery.completed.wait(), 30)
        try:
            ...  # produce, then consume_until(...) on the output topic
        finally:
            await app.stop()

    ``tests/fixtures/cluster.py`` wraps this as ``async with running_app(app): ...``. Do not use
    ``faust.Worker`` in tests: it installs signal handlers, configures logging and wants its own loop.
"""

from __future__ import annotations

from typing import Any

from loyalty_stream.settings import Settings
from loyalty_stream.stream.catalogue import load_catalogue

#: Group timeouts for the embedded broker (tests, ``loyalty-stream dev``): a group join then takes ~1 s.
EMBEDDED_BROKER_OVERRIDES: dict[str, float] = {
    "broker_rebalance_timeout": 2.0,
    "broker_session_timeout": 2.0,
    "broker_heartbeat_interval": 0.5,
    "broker_commit_interval": 0.5,
    # Tansu looks at a parked fetch every quarter of this wait (see above): at most ~5 ms added per hop.
    "fetch_max_wait_ms": 20,
    # Fewer, larger fetches under a steady load: each fetch that returns data costs Tansu a walk over every
    # batch stored in the partition, and each batch the worker takes in becomes produce requests and more
    # stored batches (see ``Settings.fetch_min_bytes``), while the input fills them within the wait
    # (``Settings.fetch_min_bytes_adaptive``).
    "fetch_min_bytes": 8192,
}

#: Records handed to the worker per fetch (``broker_max_poll_records``). One fetch is processed without
#: yielding to the event loop, so this bounds how long timers wait behind a batch; larger batches amortise
#: little more once a batch is a few hundred records.
MAX_POLL_RECORDS = 500

#: Producer batching. Customer states (the table changelog) are a few KB each, so Faust's 16 KB batches held
#: a handful and every flush was many small requests; outputs go out without lingering (latency).
PRODUCER_MAX_BATCH_SIZE = 512 * 1024  # under Kafka's default message.max.bytes (1 MB)


def for_embedded_broker(settings: Settings) -> Settings:
    """``settings`` with the short group timeouts that make Faust start in ~2 s on Tansu."""
    return settings.model_copy(update=EMBEDDED_BROKER_OVERRIDES)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App(**faust_config(settings))`` (``id`` included).

    Creates ``settings.data_dir`` if missing: Faust creates only the last level of its ``datadir``.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue(settings.catalogue_path, partitions=settings.partitions)
    brokers = [f"kafka://{address}" for address in settings.kafka_bootstrap.split(",") if address]
    return {
        "id": settings.app_id,
        "broker": brokers,
        "store": settings.store,
        "datadir": str(settings.data_dir / f"{settings.app_id}-data"),
        "autodiscover": False,
        # At-least-once: Tansu has no transactions, and Faust's exactly-once mode duplicates. The engine
        # makes reprocessing harmless (processed ids, stable output ids).
        "processing_guarantee": "at_least_once",
        # Raw bytes everywhere: decoding is ours so that bad input reaches the dead-letter path.
        "key_serializer": "raw",
        "value_serializer": "raw",
        # Group membership. Tansu holds a join for ~session/2, so dev and tests shorten these.
        "broker_rebalance_timeout": settings.broker_rebalance_timeout,
        "broker_session_timeout": settings.broker_session_timeout,
        "broker_heartbeat_interval": settings.broker_heartbeat_interval,
        "broker_request_timeout": max(90.0, settings.broker_session_timeout + 30.0),
        "broker_commit_interval": settings.broker_commit_interval,
        "broker_max_poll_records": MAX_POLL_RECORDS,
        "producer_linger": 0.0,
        "producer_max_batch_size": PRODUCER_MAX_BATCH_SIZE,
        "producer_compression_type": None if settings.producer_compression == "none" else settings.producer_compression,
        # A fresh deployment (or test app id) reads every activity from the beginning.
        "consumer_auto_offset_reset": "earliest",
        # Do not wait for in-flight events on rebalance/stop: processing is idempotent, and it keeps
        # rebalances and shutdown fast.
        "stream_wait_empty": False,
        # Faust-created topics (changelogs, leader) must be co-partitioned with the catalogue's inputs.
        "topic_partitions": catalogue.customer_partitions,
        "topic_replication_factor": settings.replication_factor,
        # Standbys only help with several workers; raise for a multi-node production deployment.
        "table_standby_replicas": 0,
        "web_enabled": settings.web_enabled,
        "web_port": settings.web_port,
    }
