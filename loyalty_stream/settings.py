"""Runtime configuration, read once from the environment (prefix ``LOYALTY_``).

One flat ``Settings`` object is shared by the worker, the API, the CLI, the dev stack and the tests, so that a
value such as the Kafka bootstrap address is spelled the same way everywhere. Values come from, in order of
precedence: keyword arguments, ``LOYALTY_*`` environment variables, a ``.env`` file in the working
directory, and the defaults below. ``REDIS_URL`` (without prefix) is accepted too because it is the
conventional name that hosted Redis services and docker-compose files export.

The broker timeouts default to production-safe values; the tests and the embedded dev stack shorten them
because the embedded broker (Tansu) holds every group join for up to the rebalance timeout (see
``loyalty_stream.stream.faust_settings``).
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The repository root when running from a source checkout or an editable install (``loyalty_stream/..``).
#: For a regular wheel install this directory holds no ``topics/`` or ``programs/``; the loaders then fall
#: back to the copies shipped inside the package or to explicit paths.
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """All knobs of the service. Field names map to ``LOYALTY_<NAME>`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="LOYALTY_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    # --- where things are -----------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of Kafka brokers (no kafka:// scheme).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("LOYALTY_REDIS_URL", "REDIS_URL"),
        description="Redis used by the read model (projection) and the API.",
    )

    redis_prefix: str = Field(
        default="loyalty:",
        description="Prefix of every Redis key the read model writes; tests use a fresh one each.",
    )

    # --- identity and naming ------------------------------------------------------------------------------
    app_id: str = Field(
        default="loyalty-stream",
        description="Faust app id: names the consumer group and the table changelog topics.",
    )
    topic_prefix: str = Field(
        default="",
        description="Prepended verbatim to every catalogue topic name (include your own separator, e.g. "
        "'t-1234-'). Tests use a fresh prefix each so they never see each other's data.",
    )

    # --- program definitions ------------------------------------------------------------------------------
    program_dir: Path = Field(
        default=Path("programs"),
        description="Directory of program YAML files; relative paths resolve against the working directory, "
        "then the repository root.",
    )
    program_files: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["default.yaml"],
        description="Program files inside program_dir to load at start; env form is comma-separated.",
    )

    # --- topics -------------------------------------------------------------------------------------------
    catalogue_path: Path | None = Field(
        default=None,
        description="Topic catalogue YAML. None means the repository's topics/catalogue.yaml, or the copy "
        "shipped in the package when installed (see loyalty_stream.stream.catalogue).",
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        description="Override the partition count of every customer-keyed topic (they stay co-partitioned).",
    )
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of created topics.")

    # --- Faust worker ---------------------------------------------------------------------------------------
    store: str = Field(default="memory://", description="Faust table store URL (memory:// or rocksdb://).")
    rocksdb_block_cache_mb: int = Field(
        default=64, ge=1,
        description="RocksDB block cache per table partition (rocksdb:// store). Faust's own default is 2 GiB per "
        "partition, which lets a worker's memory grow far past what its customers' states need.",
    )
    rocksdb_write_buffer_mb: int = Field(
        default=16, ge=1, description="RocksDB write buffer (memtable) size per table partition (rocksdb:// store).")
    state_cache: int = Field(
        default=16384, ge=0,
        description="Decoded customer states the worker keeps, most recently used first, so a returning "
        "customer's state is neither decoded again nor freed (a hit needs the exact bytes the store holds, so "
        "a state restored from the changelog is decoded afresh). Measured on the benchmark (100k activities, "
        "50k customers): 16384 states cost about 320 MB (~20 KB each at its mean stored state of 3.5 KB), hit "
        "48% of activities and made the worker end to end ~25% faster than 1024 (which hit 10% and was no "
        "faster than no cache: each miss decoded one state and freed another). 0: decode every time.",
    )
    engine_processes: int = Field(
        default=0, ge=0,
        description="Processes that run decode -> engine -> encode beside the worker's own, which keeps Kafka, "
        "the table and every guarantee (`stream.engine_process`); customers are split between them. 0: all in "
        "the worker's process, on one core. A worker then uses up to this many cores for its rules.",
    )
    gc_interval: float = Field(
        default=600.0, ge=0,
        description="Seconds between two collections of the worker process's reference cycles. The worker turns "
        "CPython's automatic collector off (`runtime.tune_gc`): the engine makes no cycles, Faust and aiokafka "
        "a few dozen per thousand records, and automatic collections walked the young cached states in pauses "
        "of 100-400 ms every few seconds (the p99 latency) and cost 5-10% of the worker's time. A collection "
        "walks every object allocated since start-up: about 2 s at the benchmark's 16384 cached states, once per "
        "interval, between batches, logged. 0: the automatic collector instead, with raised thresholds.",
    )
    broker_rebalance_timeout: float = Field(default=60.0, gt=0)
    broker_session_timeout: float = Field(default=60.0, gt=0)
    broker_heartbeat_interval: float = Field(default=3.0, gt=0)
    broker_commit_interval: float = Field(default=2.8, gt=0)
    producer_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = Field(
        default="zstd",
        description="Compression of the worker's record batches (outputs, changelog). A record's ledger "
        "entries and customer state are about 11 KB of JSON that zstd shrinks about 10x for about 15 us of "
        "CPU: the broker stores and copies a tenth, and the worker's sends to it cost a tenth. Every Kafka "
        "client since 2.1 reads zstd; 'none' writes plain batches.",
    )
    fetch_max_wait_ms: int = Field(
        default=500, ge=0,
        description="How long the broker may hold a fetch that has no data yet. Kafka answers as soon as data "
        "arrives; the embedded broker (Tansu) looks again every quarter of this wait, so it adds up to a "
        "quarter of it there (the dev stack and tests use 20 ms).",
    )
    fetch_min_bytes: int = Field(
        default=1, ge=1,
        description="Bytes a fetch of the worker's consumer waits for (up to fetch_max_wait_ms) before the broker "
        "answers. 1 (Kafka's default) answers at once. Under a steady load below capacity a larger value makes the "
        "worker take fewer, larger batches (fewer fetches, produce requests and stored batches); under a load "
        "that does not fill it in the wait, every fetch waits the whole wait. A backlog fills any fetch at once. "
        "The dev stack and tests use 8 KB: what it did on the embedded broker is in bench/FINDINGS.md.",
    )
    fetch_min_bytes_adaptive: bool = Field(
        default=True,
        description="Ask for fetch_min_bytes only while the input brings that many bytes within "
        "fetch_max_wait_ms, and for 1 byte otherwise (measured every half second; `stream.fetch_pacing`): a "
        "lighter load would make every fetch wait the whole wait for nothing. Off: always fetch_min_bytes.",
    )
    data_dir: Path = Field(
        default=Path(tempfile.gettempdir()) / "loyalty-stream",
        description="Parent of Faust's per-app data directory (<data_dir>/<app_id>-data). Outside the work "
        "tree so tests leave no litter; point it at a volume when using a persistent (rocksdb://) store.",
    )
    web_enabled: bool = Field(default=False, description="Faust's own web server (off: the API is separate).")
    web_port: int = Field(default=6066, ge=0, le=65535)

    @field_validator("program_files", mode="before")
    @classmethod
    def _split_program_files(cls, value: object) -> object:
        """Accept ``a.yaml,b.yaml`` (env form) as well as a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("kafka_bootstrap", mode="after")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        """Tolerate ``kafka://host:port`` (Faust's URL form); aiokafka wants bare ``host:port``."""
        return ",".join(part.strip().removeprefix("kafka://") for part in value.split(",") if part.strip())

    def program_paths(self) -> list[Path]:
        """Absolute paths of the program files to load (first existing candidate directory wins)."""
        base = self.program_dir
        if not base.is_absolute():
            candidates = [Path.cwd() / base, REPO_ROOT / base]
            base = next((c for c in candidates if c.is_dir()), candidates[0])
        return [base / name for name in self.program_files]

    def topic(self, logical: str) -> str:
        """Physical topic name of a catalogue topic under this deployment's prefix."""
        from loyalty_stream.stream.catalogue import topic_name

        return topic_name(logical, self.topic_prefix)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings read from the environment once; tests build their own ``Settings(...)``."""
    return Settings()
