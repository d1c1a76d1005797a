"""Loading the JSON Schema files of ``schemas/events/`` and compiling them to validators.

The schema files are the one source of truth: validation code is compiled from
them with fastjsonschema, never written a second time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema

from runstream.errors import ConfigError

Validator = Callable[[Any], Any]

ENVELOPE = "envelope"


def schemas_root() -> Path:
    """The folder holding ``events/`` and ``clickhouse/``: packaged copy first, then the source tree."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_schemas", here.parent.parent / "schemas"):
        if (candidate / "events").is_dir():
            return candidate
    raise ConfigError(f"schema files not found beside {here}")


def _ecma_patterns(node: Any) -> Any:
    """ECMA-262 ``$`` matches only at the very end; Python's also before a final newline.

    Rewrite a closing ``$`` as ``\\Z`` so ``"loss\\n"`` does not pass a name pattern.
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str) and value.endswith("$"):
                out[key] = re.sub(r"\$$", r"\\Z", value)
            else:
                out[key] = _ecma_patterns(value)
        return out
    if isinstance(node, list):
        return [_ecma_patterns(item) for item in node]
    return node


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
    compiled = {
        name: fastjsonschema.compile(_ecma_patterns(doc), use_formats=False)
        for name, doc in documents.items()
    }
    envelope = compiled.pop(ENVELOPE)
    return SchemaSet(version=version, envelope=envelope, payloads=compiled, documents=documents)
