"""JSON Schemas of every message in and out, generated from the pydantic models into `schemas/`."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from loyalty_stream.events import activities, outputs

MODELS: tuple[type[BaseModel], ...] = (
    *activities.ACTIVITY_TYPES.values(),
    outputs.LedgerEntry,
    outputs.BalanceChange,
    outputs.Notification,
    outputs.RedemptionResult,
    outputs.TierChange,
    outputs.CouponIssued,
    outputs.DeadLetter,
)


def render_schemas() -> dict[str, bytes]:
    """File name -> canonical JSON bytes of that model's schema (sorted keys, so diffs are stable)."""
    rendered: dict[str, bytes] = {}
    for model in MODELS:
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://loyalty-stream.dev/schemas/{model.__name__}.json"
        options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        rendered[f"{model.__name__}.json"] = orjson.dumps(schema, option=options) + b"\n"
    return rendered


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_schemas().items():
        path = directory / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.name not in {p.name for p in written}:
            stale.unlink()
    return written


def stale_schemas(directory: Path) -> list[str]:
    """Names of schema files that are missing, different or no longer generated."""
    expected = render_schemas()
    problems = [n for n, c in expected.items() if not (directory / n).exists() or (directory / n).read_bytes() != c]
    problems += [p.name for p in directory.glob("*.json") if p.name not in expected]
    return sorted(problems)
