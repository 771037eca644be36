"""Programs published to the `program` topic reach every worker's registry, without a restart.

Every worker must see every program, so this is not a Faust agent (which would get only some partitions):
a group-less aiokafka consumer reads all partitions from the beginning, last write per program id and
version wins (Tansu does not compact, so we never rely on compaction). A program that fails validation is
logged and skipped; the registry keeps serving the versions it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiokafka import AIOKafkaConsumer

from loyalty_stream.program.loader import ProgramError, ProgramRegistry, parse_program
from loyalty_stream.stream.kafka_io import topic_partitions

log = logging.getLogger(__name__)


def apply_program_record(registry: ProgramRegistry, key: bytes | None, value: bytes | None) -> str | None:
    """Add the program in one record to `registry`; returns a problem description, or None when added."""
    source = f"program topic key {key.decode('utf-8', 'replace') if key else '-'}"
    if value is None:
        return f"{source}: empty record (programs are never deleted, only superseded)"
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"{source}: not JSON: {exc}"
    if not isinstance(data, dict):
        return f"{source}: a program is a JSON object"
    try:
        program = parse_program(data, source)
    except ProgramError as exc:
        return str(exc)
    if key is not None and key.decode("utf-8", "replace") != program.id:
        return f"{source}: the key must be the program id {program.id!r}"
    current = registry.get(program.id, program.version)
    # Compared as data: a program's compiled expressions are closures, new at every parse, so two parses of
    # the same program are never `==` (republishing an unchanged version is not a conflict).
    if current is not None and current.model_dump(mode="json") != program.model_dump(mode="json"):
        return f"{source}: version {program.version} of {program.id!r} exists with other content; bump the version"
    registry.add(program)
    log.info("program %s version %s loaded from the program topic", program.id, program.version)
    return None


class ProgramFeed:
    """Follows the program topic and feeds the registry; `ready` is set once the backlog is read."""

    def __init__(self, bootstrap: str, topic: str, registry: ProgramRegistry) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.registry = registry
        self.ready = asyncio.Event()
        self.problems: list[str] = []

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, self.topic)
            if not tps:
                log.warning("program topic %s does not exist; programs come from files only", self.topic)
                self.ready.set()
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            backlog = {tp for tp in tps if ends[tp] > 0}
            if not backlog:
                self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batch.items():
                    for message in messages:
                        problem = apply_program_record(self.registry, message.key, message.value)
                        if problem is not None:
                            self.problems.append(problem)
                            log.error("%s", problem)
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        backlog.discard(tp)
                if not backlog:
                    self.ready.set()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
