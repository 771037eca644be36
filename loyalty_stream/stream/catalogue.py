"""Typed view of the topic catalogue, and idempotent creation of its topics.

Where the catalogue lives
    ``topics/catalogue.yaml`` at the repository root is the single file people edit. A byte-identical copy
    is kept at ``loyalty_stream/stream/catalogue.yaml`` and shipped as package data so that an installed
    wheel (Docker image, ``pip install .``) finds it without the repository. ``make catalogue`` refreshes
    the copy and ``tests/integration/test_stack.py`` fails when the two differ. We chose a committed copy
    over a symlink (breaks on Windows and in sdists) and over a build hook that copies at build time
    (invisible magic that an editable install skips) because it behaves the same in every install mode.

    Resolution order of :func:`default_catalogue_path`: ``Settings.catalogue_path`` when given, else the
    repository's ``topics/catalogue.yaml`` when running from a checkout, else the packaged copy.

Topic creation on Tansu (the embedded broker)
    CreateTopics *with* configs (``cleanup.policy``, ``retention.ms``) is accepted and DescribeConfigs returns
    them, but the memory storage engine does not enforce them: a compacted topic still returns every record.
    Consumers of ``program`` must therefore treat the topic as last-write-wins per key themselves. Tansu
    also auto-creates unknown topics on produce *and on a Metadata request naming them* (with 4
    partitions), so a typo in a topic name does not fail; create the catalogue first and use its names.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from loyalty_stream.settings import REPO_ROOT

log = logging.getLogger(__name__)

Role = Literal["input", "output", "control"]
CleanupPolicy = Literal["delete", "compact"]

ROLES: tuple[Role, ...] = ("input", "output", "control")
CLEANUP_POLICIES: tuple[CleanupPolicy, ...] = ("delete", "compact")
CUSTOMER_KEY = "customer_id"

REPO_CATALOGUE = REPO_ROOT / "topics" / "catalogue.yaml"
PACKAGED_CATALOGUE_NAME = "catalogue.yaml"

_LEGAL_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# Kafka error codes create_topics may answer with that we treat as success / retry without configs.
_TOPIC_ALREADY_EXISTS = 36
_INVALID_CONFIG = 40
_UNSUPPORTED_VERSION = 35


class CatalogueError(ValueError):
    """The catalogue file is malformed or breaks an invariant (e.g. co-partitioning)."""


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic, or an existing topic has the wrong partition count."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the catalogue, by its logical (unprefixed) name."""

    name: str
    role: Role
    partitions: int
    key: str
    value_schema: str
    cleanup_policy: CleanupPolicy = "delete"
    retention_ms: int = -1
    description: str = ""

    @property
    def customer_keyed(self) -> bool:
        return self.key == CUSTOMER_KEY

    @property
    def compacted(self) -> bool:
        return self.cleanup_policy == "compact"

    def physical_name(self, prefix: str = "") -> str:
        return topic_name(self.name, prefix)

    def configs(self) -> dict[str, str]:
        """Kafka topic configs for CreateTopics."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All topics, in file order. Immutable; use :meth:`with_partitions` for an override."""

    topics: tuple[TopicSpec, ...]
    version: int = 1
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self.topics)

    def __len__(self) -> int:
        return len(self.topics)

    def __contains__(self, logical: object) -> bool:
        return any(t.name == logical for t in self.topics)

    def __getitem__(self, logical: str) -> TopicSpec:
        for spec in self.topics:
            if spec.name == logical:
                return spec
        raise KeyError(f"topic {logical!r} is not in the catalogue ({self.source or 'in memory'})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.topics)

    def by_role(self, role: Role) -> tuple[TopicSpec, ...]:
        return tuple(t for t in self.topics if t.role == role)

    @property
    def inputs(self) -> tuple[TopicSpec, ...]:
        return self.by_role("input")

    @property
    def outputs(self) -> tuple[TopicSpec, ...]:
        return self.by_role("output")

    @property
    def control(self) -> tuple[TopicSpec, ...]:
        return self.by_role("control")

    @property
    def customer_partitions(self) -> int:
        """The shared partition count of all customer-keyed topics (the worker's table partitions)."""
        counts = {t.partitions for t in self.topics if t.customer_keyed}
        return counts.pop() if counts else 1

    def with_partitions(self, partitions: int | None) -> Catalogue:
        """Copy with every customer-keyed topic at ``partitions`` (None: unchanged); control keeps its own."""
        if partitions is None:
            return self
        if partitions < 1:
            raise CatalogueError(f"partitions must be >= 1, got {partitions}")
        topics = tuple(replace(t, partitions=partitions) if t.customer_keyed else t for t in self.topics)
        return Catalogue(topics=topics, version=self.version, source=self.source)

    def physical_names(self, prefix: str = "") -> list[str]:
        return [t.physical_name(prefix) for t in self.topics]


def topic_name(logical: str, prefix: str = "") -> str:
    """Physical topic name: ``prefix`` is prepended verbatim (it carries its separator, e.g. ``t-1a2b-``)."""
    name = f"{prefix}{logical}"
    if not _LEGAL_TOPIC.match(name) or name in {".", ".."}:
        raise ValueError(f"illegal Kafka topic name {name!r} (allowed: letters, digits, '.', '_', '-')")
    return name


def _validate(catalogue: Catalogue) -> None:
    seen: set[str] = set()
    for spec in catalogue.topics:
        if spec.name in seen:
            raise CatalogueError(f"duplicate topic {spec.name!r}")
        seen.add(spec.name)
        topic_name(spec.name)
        if spec.role not in ROLES:
            raise CatalogueError(f"{spec.name}: role must be one of {ROLES}, got {spec.role!r}")
        if spec.cleanup_policy not in CLEANUP_POLICIES:
            raise CatalogueError(f"{spec.name}: cleanup_policy must be one of {CLEANUP_POLICIES}")
        if spec.partitions < 1:
            raise CatalogueError(f"{spec.name}: partitions must be >= 1")
        if spec.retention_ms < -1:
            raise CatalogueError(f"{spec.name}: retention_ms must be -1 (forever) or >= 0")
        if not spec.value_schema:
            raise CatalogueError(f"{spec.name}: value_schema is required")
    counts = {t.name: t.partitions for t in catalogue.topics if t.customer_keyed}
    if len(set(counts.values())) > 1:
        raise CatalogueError(f"customer-keyed topics must be co-partitioned, got partition counts {counts}")


def default_catalogue_path(explicit: Path | str | None = None) -> Path:
    """The catalogue file to read: explicit path, else the checkout's ``topics/``, else the packaged copy."""
    if explicit is not None:
        return Path(explicit)
    if REPO_CATALOGUE.is_file():
        return REPO_CATALOGUE
    packaged = importlib.resources.files(__package__ or "loyalty_stream.stream") / PACKAGED_CATALOGUE_NAME
    # The package is installed as plain files (setuptools wheel, not a zip), so this is a real path.
    return Path(str(packaged))


def parse_catalogue(data: Mapping[str, Any], source: str = "") -> Catalogue:
    """Build a :class:`Catalogue` from the decoded YAML mapping."""
    if not isinstance(data, Mapping) or not isinstance(data.get("topics"), list):
        raise CatalogueError(f"{source or 'catalogue'}: expected a mapping with a 'topics' list")
    known = set(TopicSpec.__slots__)
    specs: list[TopicSpec] = []
    for i, raw in enumerate(data["topics"]):
        if not isinstance(raw, Mapping):
            raise CatalogueError(f"{source}: topics[{i}] must be a mapping")
        unknown = set(raw) - known
        if unknown:
            raise CatalogueError(f"{source}: topics[{i}] has unknown fields {sorted(unknown)}")
        missing = {"name", "role", "partitions", "key", "value_schema"} - set(raw)
        if missing:
            raise CatalogueError(f"{source}: topics[{i}] lacks {sorted(missing)}")
        specs.append(
            TopicSpec(
                name=str(raw["name"]),
                role=cast(Role, raw["role"]),
                partitions=int(raw["partitions"]),
                key=str(raw["key"]),
                value_schema=str(raw["value_schema"]),
                cleanup_policy=cast(CleanupPolicy, raw.get("cleanup_policy", "delete")),
                retention_ms=int(raw.get("retention_ms", -1)),
                description=str(raw.get("description", "")).strip(),
            )
        )
    return Catalogue(topics=tuple(specs), version=int(data.get("version", 1)), source=source)


def load_catalogue(path: Path | str | None = None, *, partitions: int | None = None) -> Catalogue:
    """Read and validate the catalogue; ``partitions`` overrides all customer-keyed topics (``Settings``)."""
    resolved = default_catalogue_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CatalogueError(f"topic catalogue not found at {resolved}") from exc
    return parse_catalogue(yaml.safe_load(text), source=str(resolved)).with_partitions(partitions)


async def create_topics(
    bootstrap: str,
    catalogue: Catalogue,
    prefix: str = "",
    *,
    replication_factor: int = 1,
    with_configs: bool = True,
    timeout: float = 30.0,
) -> list[str]:
    """Ensure every catalogue topic exists under ``prefix``; return the physical names it had to create.

    An empty list means everything already existed (``Catalogue.physical_names(prefix)`` lists them all).

    Idempotent: topics that already exist are accepted when their partition count matches the catalogue
    (a mismatch breaks co-partitioning silently, so it raises :class:`TopicCreationError`). When the broker
    rejects the configs (INVALID_CONFIG / UNSUPPORTED_VERSION) the topic is created without them and a warning
    is logged. Returns once the topics are visible in metadata (Kafka creates them asynchronously).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    wanted = {t.physical_name(prefix): t for t in catalogue}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    missing: list[str] = []
    await admin.start()
    try:
        async with asyncio.timeout(timeout):
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if missing:
                retry = await _create(admin, NewTopic, wanted, missing, replication_factor, with_configs)
                if retry:
                    log.warning("broker rejected topic configs; creating %s without configs", retry)
                    still = await _create(admin, NewTopic, wanted, retry, replication_factor, False)
                    if still:
                        raise TopicCreationError(f"broker refused to create topics {still}")
                log.info("created topics %s", missing)
            await _wait_visible(admin, wanted)
    finally:
        await admin.close()
    return missing


async def _create(
    admin: Any,
    new_topic: Any,
    wanted: Mapping[str, TopicSpec],
    names: list[str],
    replication_factor: int,
    with_configs: bool,
) -> list[str]:
    """Send one CreateTopics request; return the names to retry without configs, raise on other errors."""
    request = [
        new_topic(
            name,
            wanted[name].partitions,
            replication_factor,
            topic_configs=wanted[name].configs() if with_configs else None,
        )
        for name in names
    ]
    response = await admin.create_topics(request)
    retry: list[str] = []
    errors: dict[str, str] = {}
    for item in response.topic_errors:
        topic, code = item[0], item[1]
        message = item[2] if len(item) > 2 else None
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        if with_configs and code in (_INVALID_CONFIG, _UNSUPPORTED_VERSION):
            retry.append(topic)
            continue
        errors[topic] = f"error {code}: {message}"
    if errors:
        raise TopicCreationError(f"could not create topics: {errors}")
    return retry


async def _wait_visible(admin: Any, wanted: Mapping[str, TopicSpec]) -> None:
    """Poll metadata until every topic is there with its partitions; check partition counts."""
    delay = 0.05
    while True:
        described = await admin.describe_topics(list(wanted))
        counts = {
            t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0 and t["partitions"]
        }
        if all(name in counts for name in wanted):
            wrong = {n: (counts[n], s.partitions) for n, s in wanted.items() if counts[n] != s.partitions}
            if wrong:
                raise TopicCreationError(
                    f"existing topics have the wrong partition count (have, want): {wrong}; "
                    "delete them or use another topic_prefix"
                )
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
