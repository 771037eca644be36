"""`loyalty-stream`: run the worker or the embedded dev stack, manage topics, publish and tail events.

Subcommands follow the faust/kafka tools: `worker`, `dev`, `topics create|list`, `publish TYPE --json|--file`,
`tail TOPIC`, `schemas export|check`, `programs validate`, `replay`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from loyalty_stream.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap", None):
        overrides["kafka_bootstrap"] = args.bootstrap
    if getattr(args, "prefix", None) is not None:
        overrides["topic_prefix"] = args.prefix
    if getattr(args, "program", None):
        overrides["program_files"] = [str(Path(p).resolve()) for p in args.program]
    return Settings(**overrides)


def _registry(settings: Settings) -> Any:
    from loyalty_stream.program.loader import ProgramRegistry

    return ProgramRegistry.from_files(settings.program_paths())


# worker / dev ----------------------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    from loyalty_stream.stream.runtime import run_worker_forever

    settings = _settings(args)
    return run_worker_forever(settings, _registry(settings), loglevel=args.loglevel)


def cmd_dev(args: argparse.Namespace) -> int:
    from loyalty_stream.stream.runtime import run_dev_stack

    return run_dev_stack(_settings(args), loglevel=args.loglevel, port=args.port)


# topics ----------------------------------------------------------------------------------------------------
def cmd_topics(args: argparse.Namespace) -> int:
    from loyalty_stream.stream.catalogue import create_topics, load_catalogue

    settings = _settings(args)
    catalogue = load_catalogue(settings.catalogue_path, partitions=settings.partitions)
    if args.action == "list":
        for topic in catalogue:
            print(f"{topic.physical_name(settings.topic_prefix):40} {topic.role:8} partitions={topic.partitions} "
                  f"cleanup={topic.cleanup_policy} value={topic.value_schema}")
        return 0
    created = asyncio.run(create_topics(settings.kafka_bootstrap, catalogue, settings.topic_prefix))
    print(f"{len(created)} topics created, {len(catalogue) - len(created)} already existed")
    return 0


# publish ---------------------------------------------------------------------------------------------------
def build_activity(kind: str, body: dict[str, Any], default_program: str) -> dict[str, Any]:
    """Fill what a human leaves out (id, time, program); the result is validated like any other input."""
    message = dict(body)
    message["type"] = kind
    message.setdefault("event_id", f"cli-{uuid.uuid4()}")
    message.setdefault("event_time", datetime.now(UTC).isoformat())
    message.setdefault("program_id", default_program)
    return message


def cmd_publish(args: argparse.Namespace) -> int:
    from loyalty_stream.events.activities import ACTIVITY_TYPES
    from loyalty_stream.events.codec import DecodeError, decode_activity
    from loyalty_stream.stream.catalogue import load_catalogue
    from loyalty_stream.stream.kafka_io import produce_records
    from loyalty_stream.stream.processor import TOPIC_OF_ACTIVITY

    if args.type not in ACTIVITY_TYPES:
        print(f"unknown type {args.type!r}; one of {sorted(ACTIVITY_TYPES)}", file=sys.stderr)
        return 2
    settings = _settings(args)
    text = Path(args.file).read_bytes() if args.file else (args.json or "").encode()
    if not text:
        print("give the event with --json '{...}' or --file F", file=sys.stderr)
        return 2
    loaded = orjson.loads(text)
    bodies = loaded if isinstance(loaded, list) else [loaded]
    records = []
    for body in bodies:
        message = build_activity(args.type, body, args.program_id)
        raw = orjson.dumps(message)
        if not args.raw:
            try:
                decode_activity(raw)
            except DecodeError as exc:
                print(f"not published: {exc.reason} (use --raw to send it anyway)", file=sys.stderr)
                return 1
        records.append((str(message.get("customer_id", "")).encode() or None, raw))
    catalogue = load_catalogue(settings.catalogue_path, partitions=settings.partitions)
    topic = catalogue[TOPIC_OF_ACTIVITY[args.type]].physical_name(settings.topic_prefix)
    asyncio.run(produce_records(settings.kafka_bootstrap, topic, records))
    for (_, raw) in records:
        print(f"published to {topic}: {raw.decode()}")
    return 0


# tail ------------------------------------------------------------------------------------------------------
def cmd_tail(args: argparse.Namespace) -> int:
    from loyalty_stream.stream.catalogue import load_catalogue
    from loyalty_stream.stream.kafka_io import tail_topic

    settings = _settings(args)
    catalogue = load_catalogue(settings.catalogue_path, partitions=settings.partitions)
    name = catalogue[args.topic].physical_name(settings.topic_prefix) if args.topic in catalogue else args.topic

    def show(key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        text = value.decode("utf-8", "replace") if value is not None else "null"
        if args.pretty and value is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                text = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
        prefix = f"{partition}:{offset} {key.decode('utf-8', 'replace') if key else '-'} " if args.verbose else ""
        print(prefix + text, flush=True)

    count = asyncio.run(tail_topic(settings.kafka_bootstrap, name, show, from_beginning=args.from_beginning,
                                   max_messages=args.max, idle_timeout=args.timeout))
    print(f"-- {count} messages from {name}", file=sys.stderr)
    return 0


# schemas / programs ----------------------------------------------------------------------------------------
def cmd_schemas(args: argparse.Namespace) -> int:
    from loyalty_stream.events.schema_export import stale_schemas, write_schemas

    directory = Path(args.dir)
    if args.action == "check":
        stale = stale_schemas(directory)
        if stale:
            print(f"stale schemas in {directory}: {', '.join(stale)}; run `make schemas`", file=sys.stderr)
            return 1
        print(f"{directory}: schemas are current")
        return 0
    written = write_schemas(directory)
    print(f"wrote {len(written)} schemas to {directory}")
    return 0


def cmd_programs(args: argparse.Namespace) -> int:
    """`validate` checks files; `publish` also sends them to the program topic, where every worker picks
    the new version up without a restart (a program is keyed by its id; bump the version to change it)."""
    from loyalty_stream.program.loader import ProgramError, read_program_file

    failed = 0
    valid = []
    for name in args.files:
        try:
            program = read_program_file(Path(name))
        except ProgramError as exc:
            print(exc, file=sys.stderr)
            failed += 1
        else:
            valid.append(program)
            print(f"{name}: ok (program {program.id} version {program.version})")
    if failed or args.action == "validate":
        return 1 if failed else 0
    from loyalty_stream.stream.catalogue import load_catalogue
    from loyalty_stream.stream.kafka_io import produce_records

    settings = _settings(args)
    topic = load_catalogue(settings.catalogue_path)["program"].physical_name(settings.topic_prefix)
    records = [(p.id.encode(), orjson.dumps(p.model_dump(mode="json", exclude={"compiled"}))) for p in valid]
    asyncio.run(produce_records(settings.kafka_bootstrap, topic, records))
    print(f"published {len(records)} program(s) to {topic}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from loyalty_stream.api.app import run_api
    from loyalty_stream.api.config import ApiSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return run_api(_settings(args), ApiSettings(**overrides))


def cmd_readmodel(args: argparse.Namespace) -> int:
    from loyalty_stream.readmodel.projection import run_projection, run_rebuild

    if args.action == "rebuild":
        return run_rebuild(_settings(args))
    return run_projection(_settings(args), rebuild=args.rebuild)


def cmd_replay(args: argparse.Namespace) -> int:
    from loyalty_stream.replay.runner import run_replay_command

    return run_replay_command(args, _settings(args))


# parser ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loyalty-stream", description=__doc__)
    parser.add_argument("-b", "--bootstrap", help="Kafka bootstrap servers (env LOYALTY_KAFKA_BOOTSTRAP)")
    parser.add_argument("--prefix", help="topic name prefix (env LOYALTY_TOPIC_PREFIX)")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the stream worker against a Kafka cluster")
    worker.add_argument("-l", "--loglevel", default="info")
    worker.add_argument("--program", action="append", help="program file (repeatable)")
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="embedded broker + Redis + topics + worker, in the foreground")
    dev.add_argument("-l", "--loglevel", default="warning")
    dev.add_argument("--program", action="append", help="program file (repeatable)")
    dev.add_argument("--port", type=int, default=9092, help="broker port (a free one if taken)")
    dev.set_defaults(func=cmd_dev)

    topics = sub.add_parser("topics", help="apply or show the topic catalogue")
    topics.add_argument("action", choices=["create", "list"])
    topics.set_defaults(func=cmd_topics)

    publish = sub.add_parser("publish", help="publish an activity (id, time and program filled in if absent)")
    publish.add_argument("type", help="activity type, e.g. TransactionAdd")
    publish.add_argument("--json", help="the event (or a list of events) as JSON")
    publish.add_argument("--file", help="a file holding the event (or a list of events) as JSON")
    publish.add_argument("--program-id", default="default")
    publish.add_argument("--raw", action="store_true", help="send without validating (to try the dead-letter path)")
    publish.set_defaults(func=cmd_publish)

    tail = sub.add_parser("tail", help="print a topic's messages (catalogue name or full name)")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("-n", "--max", type=int, default=None, help="stop after N messages")
    tail.add_argument("--timeout", type=float, default=None, help="stop after N idle seconds")
    tail.add_argument("--pretty", action="store_true")
    tail.add_argument("-v", "--verbose", action="store_true", help="show partition:offset and key")
    tail.set_defaults(func=cmd_tail)

    schemas = sub.add_parser("schemas", help="export or check the JSON Schemas of every event")
    schemas.add_argument("action", choices=["export", "check"])
    schemas.add_argument("--dir", default="schemas")
    schemas.set_defaults(func=cmd_schemas)

    programs = sub.add_parser("programs", help="validate program files, or publish them to running workers")
    programs.add_argument("action", choices=["validate", "publish"])
    programs.add_argument("files", nargs="+")
    programs.set_defaults(func=cmd_programs)

    api = sub.add_parser("api", help="HTTP API: consumer reads, admin adjustments, /admin page, /openapi.json")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)

    readmodel = sub.add_parser("readmodel", help="run the Redis projection (or rebuild it from the topics)")
    readmodel.add_argument("action", nargs="?", choices=["run", "rebuild"], default="run")
    readmodel.add_argument("--rebuild", action="store_true", help="reset the keys, then follow the topics")
    readmodel.set_defaults(func=cmd_readmodel)

    replay = sub.add_parser("replay", help="re-evaluate activity topics offline under a program")
    replay.add_argument("--program", action="append", help="program file(s) to evaluate with")
    replay.add_argument("--out", help="write the resulting ledger as JSON lines here")
    replay.add_argument("--compare", action="store_true", help="diff against the live ledger topic")
    replay.add_argument("-j", "--jobs", type=int, default=0,
                        help="processes replaying customer shards in parallel (default: one per CPU)")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
