"""The envelope every activity carries: who, which program, when it happened, and a unique id.

`event_time` is the business time of the activity (bill date, registration date). The engine uses it, never
the processing time, so replays and late events are evaluated exactly as when they happened.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

EventId = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
ProgramId = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, max_digits=28)]
"""A non-negative exact amount of money (never a float)."""
Points = Annotated[Decimal, Field(gt=0, allow_inf_nan=False, max_digits=28)]
"""A strictly positive exact number of points."""
FieldValue = str | int | Decimal | bool
"""A custom or extended field value (integers and decimals are kept exact)."""

SCHEMA_VERSION = 1


class Contract(BaseModel):
    """Base of every message in and out: strict about unknown fields so typos surface as dead letters."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Envelope(Contract):
    event_id: EventId = Field(description="Unique id of this activity; redelivery with the same id is a no-op.")
    program_id: ProgramId = Field(description="The loyalty program that evaluates this activity.")
    customer_id: CustomerId = Field(description="The customer; also the Kafka key.")
    event_time: AwareDatetime = Field(description="When the activity happened (ISO 8601 with offset).")
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)


