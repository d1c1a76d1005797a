"""Loading the JSON Schema files of ``schemas/events/`` and compiling them to validators.

The schema files are the one source of truth: validators are compiled from them
with jsonschema-rs (a compiled JSON Schema engine, ECMA-262 regular expressions),
never written a second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from runstream.errors import ConfigError

Validator = Any
"""A compiled jsonschema-rs validator (``is_valid``, ``validate``)."""

ENVELOPE = "envelope"


def schemas_root() -> Path:
    """The folder holding ``events/`` and ``clickhouse/``: packaged copy first, then the source tree."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_schemas", here.parent.parent / "schemas"):
        if (candidate / "events").is_dir():
            return candidate
    raise ConfigError(f"schema files not found beside {here}")


@dataclass(frozen=True)
class SchemaSet:
    """The compiled validators of one schema version: the envelope and one per event type."""

    version: int
    envelope: Validator
    payloads: dict[str, Validator]
    documents: dict[str, dict[str, Any]]


@cache
def load_schema_set(version: int) -> SchemaSet:
    folder = schemas_root() / "events" / f"v{version}"
    if not folder.is_dir():
        raise ConfigError(f"no event schemas for version {version} in {folder}")
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        documents[path.name.removesuffix(".json")] = json.loads(path.read_text("utf-8"))
    if ENVELOPE not in documents:
        raise ConfigError(f"{folder} has no envelope.json")
    compiled = {name: jsonschema_rs.validator_for(doc) for name, doc in documents.items()}
    envelope = compiled.pop(ENVELOPE)
    return SchemaSet(version=version, envelope=envelope, payloads=compiled, documents=documents)
