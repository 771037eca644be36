"""Knobs of the HTTP API only (prefix ``LOYALTY_API_``); where Kafka and Redis are stays in ``Settings``."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from loyalty_stream.readmodel.distribution import DEFAULT_EDGES, parse_edges


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_API_", env_file=".env", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to listen on (0.0.0.0 in a container).")
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the /v1/admin endpoints require. Unset: admin endpoints are open (development "
        "only; the API logs a warning at start).",
    )
    history_default: int = Field(default=20, ge=1, description="History entries when ?limit= is absent.")
    history_max: int = Field(default=200, ge=1, description="Largest ?limit= accepted (the projection keeps "
                             "LOYALTY_READMODEL_HISTORY_LIMIT entries per customer).")
    distribution_edges: Annotated[list[Decimal], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_EDGES),
        description="Default bucket edges of the balance distribution; env form is comma-separated.",
    )
    idempotency_ttl: int = Field(default=86_400, ge=1,
                                 description="Seconds an Idempotency-Key is remembered with its request.")

    @field_validator("distribution_edges", mode="before")
    @classmethod
    def _split_edges(cls, value: object) -> object:
        return parse_edges(value) if isinstance(value, str) else value
