"""`schemas/` holds one JSON Schema per event, and it is current with the pydantic models."""

from __future__ import annotations

from pathlib import Path

from loyalty_stream.events.schema_export import MODELS, stale_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schemas_are_current() -> None:
    assert stale_schemas(SCHEMAS) == [], "run `make schemas` and commit the result"


def test_every_event_has_a_schema() -> None:
    assert {p.stem for p in SCHEMAS.glob("*.json")} == {m.__name__ for m in MODELS}


def test_stale_detection_notices_a_change(tmp_path: Path) -> None:
    for model in MODELS:
        (tmp_path / f"{model.__name__}.json").write_text("{}")
    assert len(stale_schemas(tmp_path)) == len(MODELS)
