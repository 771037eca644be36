"""Bytes <-> contracts at the edge of the system, with a readable reason for anything that is not an activity.

The happy path is one pydantic `validate_json` call; only failures pay for classification, which names the
class of problem (not JSON, unknown type, schema violation) and the fields at fault.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

import orjson
from pydantic import BaseModel, ValidationError

from loyalty_stream.engine.json_out import encode_contract
from loyalty_stream.events.activities import ACTIVITY_TYPES, validate_activity_json
from loyalty_stream.events.envelope import Envelope


class DecodeError(ValueError):
    """An input message that cannot become an activity; `error_class` is the dead-letter category."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def _describe(error: ValidationError, limit: int = 5) -> str:
    parts = []
    for item in error.errors()[:limit]:
        location = ".".join(str(p) for p in item["loc"][1:] if p != item["loc"][0]) or "(root)"
        if item["loc"] and item["loc"][0] not in ACTIVITY_TYPES:
            location = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    more = len(error.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode_activity(raw: bytes | None) -> Envelope:
    """Parse and validate one activity, raising DecodeError with its class and reason."""
    if raw is None:
        raise DecodeError("not_json", "empty message (null value)")
    try:
        return validate_activity_json(raw)
    except ValidationError as exc:
        validation = exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError("schema_violation", f"an activity is a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind is None:
        raise DecodeError("unknown_type", f"missing 'type'; expected one of {sorted(ACTIVITY_TYPES)}")
    if kind not in ACTIVITY_TYPES:
        raise DecodeError("unknown_type", f"unknown type {kind!r}; expected one of {sorted(ACTIVITY_TYPES)}")
    raise DecodeError("schema_violation", f"{kind}: {_describe(validation)}")


def encode(message: BaseModel) -> bytes:
    """Canonical JSON of an output or activity (decimals as strings, so consumers never see a float).

    Byte for byte what pydantic's serializer writes for these contracts (fields in declaration order, decimals
    as `str`, date-times in ISO 8601 with `Z` for UTC, enums as their values), written by orjson straight from
    the model's fields, which is several times faster; anything orjson cannot write (a lone surrogate, an
    integer beyond 64 bits) goes through pydantic's serializer (`engine.json_out.encode_contract`, compiled)."""
    return encode_contract(message)


def right_sized(raw: bytes) -> bytes:
    """A copy of orjson output that holds only its own bytes, for anything kept for long (stored states, a
    replay's ledger). orjson (3.12) returns bytes whose allocation is at least 4 KiB and never shrunk: a
    retained 500-byte message costs 4 KiB and a fresh page (a page fault), which made a 20k-activity replay
    spend a third of its time in the kernel. The copy costs about 0.2 us."""
    return bytes(memoryview(raw))


def encode_many(messages: Iterable[BaseModel]) -> list[bytes]:
    return [encode(m) for m in messages]


def text_or_base64(raw: bytes | None) -> tuple[str, str]:
    """The original bytes for a dead letter: UTF-8 text when they decode, else base64."""
    if raw is None:
        return "", "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
