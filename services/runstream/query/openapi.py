"""The OpenAPI 3.1 document of Runstream's HTTP API, served at ``/api/v1/openapi.json``.

Written by hand: the routes are few and each answer's shape is described once here.
``tests/integration/test_query_openapi.py`` checks that every HTTP route of the
application is in it and that it validates as OpenAPI 3.1.
"""

from __future__ import annotations

from functools import cache

from runstream.query.grammar import AGGREGATES, OPERATORS, SORT_ATTRIBUTES, STATUSES
from runstream.query.openapi_parts import (
    MAX_POINTS,
    NULLABLE_NUMBER,
    RUN_ID,
    SCHEMAS,
    TIME,
    WORKSPACE,
    JSONObj,
    errors,
    get,
    ok,
    param,
    q,
    ref,
)


def _paths() -> JSONObj:
    runs_table_params = [
        param("experiment", "path", "Experiment name (URL-encoded).", {"type": "string"}),
        WORKSPACE,
        q("status", "Comma-separated statuses to keep: " + ", ".join(STATUSES) + "."),
        {
            **q(
                "tag", "Keep runs with this tag: `key=value`, `key:value` or `key` (has the tag). Repeatable."
            ),
            "schema": {"type": "array", "items": {"type": "string"}},
            "explode": True,
        },
        {
            **q(
                "where",
                "Summary predicates `AGG(metric) OP number`, comma-separated or repeated; all must hold. "
                f"AGG: {', '.join(AGGREGATES)}; OP: {' '.join(OPERATORS)}. Example `min(loss)<0.2`.",
            ),
            "schema": {"type": "array", "items": {"type": "string"}},
            "explode": True,
        },
        q(
            "sort",
            "`AGG(metric)` or one of " + ", ".join(SORT_ATTRIBUTES) + "; `-` in front for descending. "
            "Runs without a value come last. Default `-created_at`.",
        ),
        q("columns", "Comma-separated summary columns to return, e.g. `last(loss),min(acc)` (at most 20)."),
        q("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        q("cursor", "`next_cursor` of the previous page (opaque). Pages never skip or repeat a run."),
    ]
    run_ref = ref("Run")
    series_map = {
        "type": "object",
        "additionalProperties": {"allOf": [ref("Series"), {"properties": {"summary": ref("Summary")}}]},
    }
    target = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "runs_total": {"type": "integer"},
            "queued": {"type": "integer"},
            "running": {"type": "integer"},
            "last_activity": TIME,
            "runs": {"type": "array", "items": ref("RunNode")},
        },
    }
    compare_params = [
        WORKSPACE,
        q("runs", "Comma-separated run ids (at most 50).", {"type": "string"}),
        q("metrics", "Comma-separated metric names (at most 20).", {"type": "string"}),
        MAX_POINTS,
    ]
    compare_answer = ok(
        "Per run, the summary and series of each metric it logged.",
        {
            "type": "object",
            "properties": {
                "max_points": {"type": "integer"},
                "metrics": {"type": "array", "items": {"type": "string"}},
                "runs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"run_id": {"type": "string"}, "metrics": series_map},
                    },
                },
            },
        },
    )
    file_bytes = {
        "200": {
            "description": "The file's bytes, checked against its size and sha256.",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                }
            },
        }
    }
    return {
        "/api/v1/openapi.json": {
            "get": get("This document.", [], ok("OpenAPI 3.1.", {"type": "object"}), tag="meta")
        },
        "/api/v1/events": {
            "post": {
                "summary": "Append events (a JSON array, optionally gzip) to the log.",
                "tags": ["ingest"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}}
                    },
                },
                "responses": {
                    "200": {"description": "All accepted, with their partition and offset."},
                    "207": {"description": "Some rejected: each names its index, field and rule."},
                    "400": {"description": "Not a JSON array."},
                    "413": {"description": "Body or event count over the limit."},
                    "422": {"description": "All rejected."},
                    "503": {"description": "The log is unavailable; retry (event ids make it harmless)."},
                },
            }
        },
        "/api/v1/tokens": {
            "get": get(
                "Every token grant an admin token may see (never a token or its digest).",
                [],
                {
                    **ok("Grants.", {"type": "object", "properties": {"tokens": {"type": "array"}}}),
                    **errors(),
                },
                tag="tokens",
            ),
            "post": {
                "summary": "Issue a token scoped to a workspace and a role (admin); the token is shown once.",
                "tags": ["tokens"],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": TOKEN_REQUEST}},
                },
                "responses": {
                    "201": {"description": "The grant and its `token`."},
                    "400": {"description": "A field breaks its rule; `parameter` names it."},
                    "403": {"description": "Not an admin token, or another workspace."},
                },
            },
        },
        "/api/v1/tokens/{token_id}": {
            "delete": {
                "summary": "Revoke a token: from then on it gets 401 and its live sockets are closed.",
                "tags": ["tokens"],
                "parameters": [param("token_id", "path", "The grant id.", {"type": "string"})],
                "responses": {
                    "200": {"description": "The revoked grant."},
                    "404": {"description": "No such token (or not one this admin token may see)."},
                },
            }
        },
        "/api/v1/projection/wait": {
            "get": get(
                "Wait until the projections hold the given log positions (read-your-writes).",
                [
                    q("positions", "`P:O[,P:O...]`: partitions and offsets as ingest answered them."),
                    q("timeout", "Seconds to wait, at most 30.", {"type": "number", "default": 10}),
                ],
                {
                    **ok(
                        "Whether every position is projected.",
                        {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                    ),
                    **errors("400"),
                },
                tag="ingest",
            )
        },
        "/api/v1/experiments": {
            "get": get(
                "Experiments with their run counts and last activity.",
                [WORKSPACE],
                {
                    **ok(
                        "Most recently active first.",
                        {
                            "type": "object",
                            "properties": {
                                "experiments": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "experiment": {"type": "string"},
                                            "runs": {"type": "integer"},
                                            "active_runs": {"type": "integer", "description": "Running."},
                                            "queued_runs": {"type": "integer"},
                                            "last_activity": TIME,
                                        },
                                    },
                                }
                            },
                        },
                    ),
                    **errors("400", "503"),
                },
            )
        },
        "/api/v1/experiments/{experiment}/runs": {
            "get": get(
                "The runs table of an experiment: filter, sort by a summary or attribute, page by cursor.",
                runs_table_params,
                {
                    **ok(
                        "One page; `columns` holds the requested summaries, keyed as asked.",
                        {
                            "type": "object",
                            "properties": {
                                "runs": {
                                    "type": "array",
                                    "items": {
                                        "allOf": [
                                            run_ref,
                                            {
                                                "properties": {
                                                    "columns": {
                                                        "type": "object",
                                                        "additionalProperties": NULLABLE_NUMBER,
                                                    }
                                                }
                                            },
                                        ]
                                    },
                                },
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}": {
            "get": get(
                "A run: state, tags, properties, metric summaries and its child-run tree.",
                [RUN_ID, WORKSPACE],
                {
                    **ok(
                        "The run.",
                        {
                            "allOf": [
                                run_ref,
                                {
                                    "properties": {
                                        "metrics": {
                                            "type": "object",
                                            "additionalProperties": ref("Summary"),
                                        },
                                        "children": {"type": "array", "items": ref("RunNode")},
                                        "children_truncated": {"type": "boolean"},
                                    }
                                },
                            ]
                        },
                    ),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}/metrics": {
            "get": get(
                "Every metric of a run with all its points in step order.",
                [RUN_ID, WORKSPACE],
                {
                    **ok(
                        "Points per metric.",
                        {
                            "type": "object",
                            "properties": {
                                "metrics": {
                                    "type": "object",
                                    "additionalProperties": {"type": "array", "items": ref("Point")},
                                }
                            },
                        },
                    ),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}/metrics/{name}": {
            "get": get(
                "One series, downsampled in SQL to at most max_points buckets unless short or full=true.",
                [
                    RUN_ID,
                    param("name", "path", "Metric name (URL-encoded).", {"type": "string"}),
                    WORKSPACE,
                    MAX_POINTS,
                    q(
                        "full",
                        "Every point (series of at most 100,000 points).",
                        {"type": "boolean", "default": False},
                    ),
                ],
                {
                    **ok(
                        "The series and its summary.",
                        {"allOf": [ref("Series"), {"properties": {"summary": ref("Summary")}}]},
                    ),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}/values": {
            "get": get(
                "Lists, tables (dicts of columns) and rows logged one by one (as tables in row order).",
                [RUN_ID, WORKSPACE],
                {
                    **ok(
                        "Values by name.",
                        {
                            "type": "object",
                            "properties": {
                                "lists": {"type": "object"},
                                "tables": {"type": "object"},
                                "rows": {"type": "object"},
                            },
                        },
                    ),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}/logs": {
            "get": get(
                "Log lines after a line number, in (line_no, stream) order.",
                [
                    RUN_ID,
                    WORKSPACE,
                    q(
                        "stream",
                        "stdout or stderr; both when absent.",
                        {"type": "string", "enum": ["stdout", "stderr"]},
                    ),
                    q(
                        "after_line",
                        "Lines with a greater line_no.",
                        {"type": "integer", "minimum": -1, "default": -1},
                    ),
                    q(
                        "limit",
                        "Lines per page.",
                        {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                    ),
                ],
                {
                    **ok(
                        "A page; `next_after_line` is null on the last one.",
                        {
                            "type": "object",
                            "properties": {
                                "lines": {"type": "array"},
                                "next_after_line": {"type": ["integer", "null"]},
                            },
                        },
                    ),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}/files": {
            "get": get(
                "Complete files of a run (every chunk stored): the latest upload of each path.",
                [
                    RUN_ID,
                    WORKSPACE,
                    q("kind", "snapshot or output.", {"type": "string", "enum": ["snapshot", "output"]}),
                ],
                {
                    **ok("Files.", {"type": "object", "properties": {"files": {"type": "array"}}}),
                    **errors("400", "404", "503"),
                },
            )
        },
        "/api/v1/runs/{run_id}/files/{path}": {
            "get": get(
                "Download a file.",
                [
                    RUN_ID,
                    param("path", "path", "File path (URL-encoded; may hold /).", {"type": "string"}),
                    WORKSPACE,
                ],
                {**file_bytes, **errors("400", "404", "500", "503")},
            )
        },
        "/api/v1/runs/{run_id}/snapshot": {
            "get": get(
                "Download the run's snapshot (the latest snapshot file, a zip of the source folder).",
                [RUN_ID, WORKSPACE],
                {**file_bytes, **errors("400", "404", "500", "503")},
            )
        },
        "/api/v1/compare": {
            "get": get(
                "Several runs x several metrics: summaries and series in one answer.",
                compare_params,
                {**compare_answer, **errors("400", "503")},
            ),
            "post": {
                "summary": "Compare, with the runs and metrics in a JSON body.",
                "tags": ["query"],
                "parameters": [WORKSPACE],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "runs": {"type": "array", "items": {"type": "string"}},
                                    "metrics": {"type": "array", "items": {"type": "string"}},
                                    "max_points": {"type": "integer"},
                                },
                            }
                        }
                    }
                },
                "responses": {**compare_answer, **errors("400", "503")},
            },
        },
        "/api/v1/compute": {
            "get": get(
                "Compute targets with their queued and running runs, child runs nested under their parents.",
                [WORKSPACE],
                {
                    **ok(
                        "Targets.",
                        {"type": "object", "properties": {"targets": {"type": "array", "items": target}}},
                    ),
                    **errors("400", "503"),
                },
            )
        },
        "/api/v1/compute/{name}": {
            "get": get(
                "One compute target.",
                [param("name", "path", "Compute target.", {"type": "string"}), WORKSPACE],
                {**ok("The target.", target), **errors("400", "404", "503")},
            )
        },
    }


TOKEN_REQUEST: JSONObj = {
    "type": "object",
    "required": ["workspace", "role"],
    "additionalProperties": False,
    "properties": {
        "workspace": {"type": "string", "description": "A workspace name, or `*` for every workspace."},
        "role": {"enum": ["read", "ingest", "admin"]},
        "name": {"type": "string", "maxLength": 200},
        "expires_in": {"type": "number", "exclusiveMinimum": 0, "description": "Lifetime in seconds."},
    },
}


@cache
def openapi_document() -> JSONObj:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Runstream",
            "version": "1",
            "description": (
                "Live tracking of machine-learning runs. Every request needs "
                "`Authorization: Bearer <token>`, a token scoped to a workspace and a role (read, "
                "ingest, admin); another workspace gets 403. The websocket `/api/v1/live` (a run's "
                "events from a cursor) is described in the README."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
