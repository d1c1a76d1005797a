"""Validating events against the compiled schemas, with errors that name the field and the rule."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, cast

import jsonschema_rs

from runstream.errors import EventValidationError
from runstream.events.schemas import SchemaSet, load_schema_set
from runstream.types import Envelope

CURRENT_SCHEMA_VERSION = 1

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# upcast_vN_vN+1 steps, applied in order to events older than CURRENT_SCHEMA_VERSION.
UPCASTERS: dict[int, Upcaster] = {}


def new_event_id() -> str:
    return str(uuid.uuid4())


def shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(prefix: str, parts: list[str | int]) -> str:
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out or "event"


def _translate(exc: jsonschema_rs.ValidationError, prefix: str, rule_schema: Any) -> EventValidationError:
    """Our error from jsonschema-rs's: the field (a dotted path), the rule (the schema keyword)."""
    parts: list[str | int] = list(exc.instance_path)
    rule = str(exc.schema_path[-1]) if exc.schema_path else "schema"
    kind = exc.kind.as_dict() if hasattr(exc.kind, "as_dict") else {}
    if rule == "required" and isinstance(kind.get("property"), str):
        field = _join(prefix, [*parts, kind["property"]])
        return EventValidationError(field, rule, f"{field} is required", None)
    if rule == "additionalProperties":
        unexpected = kind.get("unexpected") or ["?"]
        field = _join(prefix, [*parts, str(unexpected[0])])
        return EventValidationError(field, rule, f"{field} is not an allowed field", None)
    field = _join(prefix, parts)
    detail = str(exc.message)
    if rule in ("anyOf", "oneOf"):
        detail = f"must be {_describe_options(rule_schema)}; received {shorten(exc.instance)}"
    return EventValidationError(field, rule, f"{field}: {detail}", exc.instance)


def _describe_options(definitions: Any) -> str:
    options: list[str] = []
    for definition in definitions if isinstance(definitions, list) else []:
        if isinstance(definition, dict) and "enum" in definition:
            options.append("one of " + ", ".join(repr(v) for v in definition["enum"]))
        elif isinstance(definition, dict) and "type" in definition:
            options.append(f"a {definition['type']}")
    return " or ".join(options) or "a valid value"


def _resolve(document: dict[str, Any], path: list[str | int]) -> Any:
    node: Any = document
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


class EventValidator:
    """Checks decoded events against the schema files and upcasts old versions.

    ``validate`` returns the event as the current version or raises
    ``EventValidationError`` naming the first field that broke a rule.
    """

    def __init__(self, current_version: int = CURRENT_SCHEMA_VERSION) -> None:
        self.current_version = current_version
        self._sets: dict[int, SchemaSet] = {v: load_schema_set(v) for v in range(1, current_version + 1)}

    @property
    def event_types(self) -> list[str]:
        return sorted(self._sets[self.current_version].payloads)

    def validate(self, data: Any) -> Envelope:
        if not isinstance(data, dict):
            raise EventValidationError(
                "event", "type", f"an event must be a JSON object; received {shorten(data)}", data
            )
        version = data.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool):
            if version > self.current_version:
                raise EventValidationError(
                    "schema_version",
                    "maximum",
                    f"schema_version {version} is newer than this server reads "
                    f"(up to {self.current_version})",
                    version,
                )
            schema_set = self._sets.get(version, self._sets[self.current_version])
        else:
            schema_set = self._sets[self.current_version]
        if not schema_set.envelope.is_valid(data):
            raise self._first_error(schema_set.envelope, data, schema_set.documents["envelope"], "")
        event_type = data["type"]
        payload_validator = schema_set.payloads.get(event_type)
        if payload_validator is None:
            known = ", ".join(sorted(schema_set.payloads))
            raise EventValidationError(
                "type",
                "enum",
                f"type: unknown event type {shorten(event_type)}; known types: {known}",
                event_type,
            )
        if not payload_validator.is_valid(data["payload"]):
            raise self._first_error(
                payload_validator, data["payload"], schema_set.documents[event_type], "payload"
            )
        semantic = SEMANTIC_CHECKS.get(event_type)
        if semantic is not None:
            semantic(data["payload"])
        return cast(Envelope, self._upcast(data))

    @staticmethod
    def _first_error(
        validator: Any, data: Any, document: dict[str, Any], prefix: str
    ) -> EventValidationError:
        # Only reached for invalid input: the fast is_valid() already said no.
        try:
            validator.validate(data)
        except jsonschema_rs.ValidationError as exc:
            return _translate(exc, prefix, _resolve(document, list(exc.schema_path)))
        except (ValueError, OverflowError) as exc:
            return EventValidationError(prefix or "event", "type", f"{prefix or 'event'}: {exc}", None)
        return EventValidationError(prefix or "event", "schema", f"{prefix or 'event'} is not valid", None)

    def _upcast(self, data: dict[str, Any]) -> dict[str, Any]:
        version = int(data["schema_version"])
        while version < self.current_version:
            data = UPCASTERS[version](data)
            version += 1
            data["schema_version"] = version
        return data


def _columns_of_equal_length(payload: dict[str, Any]) -> None:
    columns: dict[str, list[Any]] = payload["columns"]
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        for name, length in lengths.items():
            if length != lengths[first]:
                raise EventValidationError(
                    f"payload.columns.{name}",
                    "equalLength",
                    f"payload.columns.{name} has {length} values but payload.columns.{first} has "
                    f"{lengths[first]}: every column of a table must have the same length",
                    length,
                )


# Rules JSON Schema cannot say, per event type.
SEMANTIC_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "table.logged": _columns_of_equal_length,
}


def check_size(field: str, size: int, limit: int) -> None:
    """Raise when an encoded event is larger than the log accepts."""
    if size > limit:
        raise EventValidationError(
            field,
            "maxBytes",
            f"{field} is {size} bytes encoded; the limit is {limit} bytes",
            size,
        )
