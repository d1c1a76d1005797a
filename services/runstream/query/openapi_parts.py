"""Building blocks of the OpenAPI document (``query.openapi``): parameters, answers, schemas."""

from __future__ import annotations

from typing import Any

from runstream.query.grammar import STATUSES

JSONObj = dict[str, Any]


def param(name: str, where: str, description: str, schema: JSONObj, *, required: bool = False) -> JSONObj:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


def q(name: str, description: str, schema: JSONObj | None = None) -> JSONObj:
    return param(name, "query", description, schema or {"type": "string"})


WORKSPACE = q("workspace", "Workspace (tenant); default `default`.", {"type": "string", "default": "default"})
RUN_ID = param(
    "run_id", "path", "Run id.", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}
)
MAX_POINTS = q(
    "max_points",
    "Most buckets (or points) per series; a longer series is downsampled in SQL into at most this many "
    "fixed-width step buckets, each with its min, max and last value, so spikes survive.",
    {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
)


def ok(description: str, schema: JSONObj) -> JSONObj:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


def errors(*codes: str) -> JSONObj:
    texts = {
        "400": "A parameter is malformed or out of range; the body names it.",
        "404": "What the path names does not exist.",
        "500": "A stored file does not match its size or sha256.",
        "503": "The projection store is unavailable; retry.",
    }
    ref = {"$ref": "#/components/schemas/Error"}
    return {c: {"description": texts[c], "content": {"application/json": {"schema": ref}}} for c in codes}


def get(summary: str, parameters: list[JSONObj], responses: JSONObj, *, tag: str = "query") -> JSONObj:
    return {"summary": summary, "tags": [tag], "parameters": parameters, "responses": responses}


def ref(name: str) -> JSONObj:
    return {"$ref": f"#/components/schemas/{name}"}


NUMBER = {
    "description": "A number, or the string NaN, Infinity or -Infinity (JSON has no such numbers).",
    "oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}],
}
NULLABLE_NUMBER = {"oneOf": [NUMBER, {"type": "null"}]}
TIME = {"type": ["string", "null"], "format": "date-time", "description": "ISO 8601, UTC."}

SCHEMAS: JSONObj = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "examples": ["bad parameter"]},
            "parameter": {"type": "string", "description": "The parameter at fault (400)."},
            "detail": {"type": "string"},
        },
    },
    "Number": NUMBER,
    "Summary": {
        "type": "object",
        "description": "Of one metric of one run. min and max ignore NaN unless every value is NaN.",
        "properties": {
            "last": {**NUMBER, "description": "Value at the highest step."},
            "min": NUMBER,
            "max": NUMBER,
            "count": {"type": "integer"},
            "first_step": {"type": "integer"},
            "last_step": {"type": "integer"},
            "last_ts": TIME,
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string"},
            "workspace": {"type": "string"},
            "experiment": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": list(STATUSES)},
            "compute": {"type": ["string", "null"]},
            "parent_run_id": {"type": ["string", "null"]},
            "created_at": TIME,
            "queued_at": TIME,
            "started_at": TIME,
            "ended_at": TIME,
            "duration_ms": {"type": ["integer", "null"], "description": "ended_at - started_at."},
            "error": {"type": ["string", "null"]},
            "last_event_at": TIME,
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "properties": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        },
    },
    "RunNode": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "status": {"type": ["string", "null"]},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/RunNode"}},
        },
    },
    "Point": {"type": "object", "properties": {"step": {"type": "integer"}, "value": NUMBER, "ts": TIME}},
    "Bucket": {
        "type": "object",
        "properties": {
            "step_min": {"type": "integer"},
            "step_max": {"type": "integer"},
            "min": NUMBER,
            "max": NUMBER,
            "last": {**NUMBER, "description": "Value at the bucket's highest step."},
            "count": {"type": "integer"},
        },
    },
    "Series": {
        "type": "object",
        "description": "Points (downsampled false) or buckets of bucket_width steps (downsampled true).",
        "properties": {
            "downsampled": {"type": "boolean"},
            "bucket_width": {"type": ["integer", "null"]},
            "points": {"type": "array", "items": ref("Point")},
            "buckets": {"type": "array", "items": ref("Bucket")},
        },
    },
}
