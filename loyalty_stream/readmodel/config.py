"""Knobs of the projection only (prefix ``LOYALTY_READMODEL_``); where Kafka and Redis are stays in ``Settings``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReadModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_READMODEL_", env_file=".env", extra="ignore")

    history_limit: int = Field(default=200, ge=1, le=100_000,
                               description="Ledger entries kept per customer and program for the history view.")
    notifications_limit: int = Field(default=50, ge=1, le=10_000,
                                     description="Notifications kept per customer and program.")
    tier_changes_limit: int = Field(default=50, ge=1, le=10_000,
                                    description="Tier changes kept per customer and program.")
    max_records: int = Field(default=1000, ge=1,
                             description="Records per poll: one Redis transaction per poll, so this bounds it.")
    poll_timeout: float = Field(default=0.5, gt=0, description="Seconds a poll waits for records.")
    fetch_max_wait_ms: int | None = Field(
        default=None, ge=0,
        description="Broker long-poll. None: the worker's (LOYALTY_FETCH_MAX_WAIT_MS), else 100 ms; keep it short "
        "on Tansu, which answers a parked fetch only at its deadline (see stream/faust_settings.py).")
    group_suffix: str = Field(default="-readmodel", description="Consumer group is <app_id><group_suffix>.")
