"""The OpenAPI 3.1 document, assembled from the request/response models (pydantic emits JSON Schema 2020-12,
which is OpenAPI 3.1's dialect), so the document and the handlers share one definition of every body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from loyalty_stream.api import models as m

REF = "#/components/schemas/{model}"

_REQUESTS: tuple[type[BaseModel], ...] = (m.AdjustmentRequest, m.UnlockRequest, m.ReversalRequest)
_RESPONSES: tuple[type[BaseModel], ...] = (
    m.Accepted, m.Balance, m.History, m.Expirations, m.Promised, m.Notifications, m.Distribution, m.Programs,
    m.Health, m.Error,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema}


PROGRAM = _param("program", "path", "Program id.", {"type": "string", "minLength": 1, "maxLength": 100})
CUSTOMER = _param("customer", "path", "Customer id (the Kafka key).", {"type": "string", "minLength": 1,
                                                                         "maxLength": 200})
IDEMPOTENCY = _param("Idempotency-Key", "header", "Becomes the activity's event id: a retry with the same key "
                     "is applied once. Reusing a key for a different request answers 409. Generated when absent.",
                     {"type": "string", "minLength": 1, "maxLength": 200})
ERRORS = {
    "404": _json(m.Error, "The read model has never seen this customer in this program."),
    "422": _json(m.Error, "A parameter or body field is invalid; `fields` names each one."),
}
ADMIN_ERRORS = {
    "401": _json(m.Error, "Missing or wrong bearer token."),
    "409": _json(m.Error, "The Idempotency-Key was used for a different request."),
    "422": ERRORS["422"],
    "503": _json(m.Error, "Kafka did not accept the activity; retry with the same Idempotency-Key."),
}


def _customer_get(summary: str, model: type[BaseModel], *extra: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"tags": ["consumer"], "summary": summary, "parameters": [PROGRAM, CUSTOMER, *extra],
                    "responses": {"200": _json(model, summary), **ERRORS}}}


def _admin_post(summary: str, request: type[BaseModel], *extra: dict[str, Any], optional_body: bool = False
                ) -> dict[str, Any]:
    return {"post": {
        "tags": ["admin"], "summary": summary, "security": [{"bearer": []}],
        "parameters": [PROGRAM, CUSTOMER, *extra, IDEMPOTENCY],
        "requestBody": {"required": not optional_body, "content": {"application/json": {"schema": _ref(request)}}},
        "responses": {"202": _json(m.Accepted, "Published to the activity topic."), **ADMIN_ERRORS},
    }}


def build_openapi(version: str = "0.1.0") -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "validation") for model in _REQUESTS), *((model, "serialization") for model in _RESPONSES)]
    _, schemas = models_json_schema(models, ref_template=REF)
    customer = "/v1/programs/{program}/customers/{customer}"
    admin = "/v1/admin/programs/{program}/customers/{customer}"
    limit = _param("limit", "query", "How many entries (newest first).", {"type": "integer", "minimum": 1})
    return {
        "openapi": "3.1.0",
        "info": {"title": "loyalty-stream API", "version": version,
                 "description": "Consumer reads from the Redis read model; admin actions published as activities."},
        "paths": {
            "/healthz": {"get": {"tags": ["ops"], "summary": "Liveness: Redis answers",
                                 "responses": {"200": _json(m.Health, "Redis answers."),
                                               "503": _json(m.Health, "Redis does not answer.")}}},
            f"{customer}/balance": _customer_get("Balances and tier", m.Balance),
            f"{customer}/history": _customer_get("Recent point history", m.History, limit),
            f"{customer}/expirations": _customer_get(
                "Upcoming expiration groups", m.Expirations,
                _param("as_of", "query", "First day to include (ISO date); today (UTC) when absent.",
                       {"type": "string", "format": "date"})),
            f"{customer}/promised": _customer_get("Promised points and when they become available", m.Promised),
            f"{customer}/notifications": _customer_get("Recent notifications", m.Notifications, limit),
            f"{admin}/adjustments": _admin_post("Add or deduct points (ManualAdjustment)", m.AdjustmentRequest),
            f"{admin}/unlock": _admin_post("Make promised points current now (PointsUnlock)", m.UnlockRequest),
            f"{admin}/redemptions/{{redemption_id}}/reversal": _admin_post(
                "Reverse a redemption (RedemptionReversal)", m.ReversalRequest,
                _param("redemption_id", "path", "The redemption to reverse.", {"type": "string", "minLength": 1}),
                optional_body=True),
            "/v1/admin/programs": {"get": {
                "tags": ["admin"], "summary": "Programs the read model has seen", "security": [{"bearer": []}],
                "responses": {"200": _json(m.Programs, "Program ids."), "401": ADMIN_ERRORS["401"]}}},
            "/v1/admin/programs/{program}/distribution": {"get": {
                "tags": ["admin"], "summary": "Distribution of current balances", "security": [{"bearer": []}],
                "parameters": [PROGRAM, _param("buckets", "query", "Comma-separated, strictly increasing bucket "
                                               "edges, e.g. 0,100,500 (the configured ones when absent).",
                                               {"type": "string"})],
                "responses": {"200": _json(m.Distribution, "Customers per bucket."),
                              "401": ADMIN_ERRORS["401"], "422": ERRORS["422"]}}},
        },
        "components": {"schemas": schemas["$defs"],
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
