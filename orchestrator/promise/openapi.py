"""The promise API's OpenAPI 3.1 document, generated from its pydantic models (never written by hand)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from orchestrator import __version__
from orchestrator.promise.models import AvailabilityResponse, ProblemDetails, PromiseRequest, PromiseResponse

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json_body(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def openapi_document() -> dict[str, Any]:
    models = [
        (PromiseRequest, "validation"),
        (PromiseResponse, "serialization"),
        (AvailabilityResponse, "serialization"),
        (ProblemDetails, "serialization"),
    ]
    _, schemas = models_json_schema(models, ref_template=_REF)  # type: ignore[arg-type]
    problem = _json_body("ProblemDetails", "The request was refused; `detail` says why.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Order orchestrator: availability and delivery promise",
            "version": __version__,
            "description": (
                "What the orchestrator would do with a cart if the order came now: nodes, shipments, carrier "
                "services, dates and cost per delivery option, and available-to-promise per SKU. Answered "
                "from an in-memory view of the ledger and the network; nothing is reserved."
            ),
        },
        "paths": {
            "/v1/promise": {
                "post": {
                    "operationId": "promise",
                    "summary": "Quote a cart: per delivery option, the plan decide-node would make now",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PromiseRequest")}},
                    },
                    "responses": {
                        "200": _json_body("PromiseResponse", "One option per delivery option asked."),
                        "400": problem,
                        "503": problem,
                    },
                }
            },
            "/v1/availability": {
                "get": {
                    "operationId": "availability",
                    "summary": "Available to promise per SKU, per node and over the network",
                    "parameters": [
                        {
                            "name": "sku",
                            "in": "query",
                            "required": True,
                            "description": "A SKU; repeat for more (at most 100).",
                            "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
                            "style": "form",
                            "explode": True,
                        }
                    ],
                    "responses": {
                        "200": _json_body("AvailabilityResponse", "Per SKU asked."),
                        "400": problem,
                        "503": problem,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 once the views have caught up with their topics, 503 before",
                    "responses": {"200": {"description": "Ready."}, "503": problem},
                }
            },
        },
        "components": {"schemas": schemas["$defs"]},
    }


__all__ = ["openapi_document"]
