"""The schema of `transfuse bench --json`, and a small validator for it.

The schema is written in a subset of JSON Schema (type, properties, required,
additionalProperties, items, enum, minimum), so a full JSON Schema validator accepts it
too; `validate` implements just that subset, which keeps the test suite free of a
jsonschema dependency. `python -m transfuse.bench.schema` prints it as JSON.
"""

from __future__ import annotations

import json
from typing import Any

NUMBER_OR_NULL = {"type": ["number", "null"]}
STRING_OR_NULL = {"type": ["string", "null"]}
SYSTEM_STATUSES = ["ok", "absent", "unavailable", "skipped", "error", "mismatch"]

SYSTEM = {
    "type": "object",
    "required": ["status", "reason", "median_ms", "min_ms", "max_ms", "samples",
                 "calls_per_sample", "ratio", "max_error", "first_call_ms"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": SYSTEM_STATUSES},
        "reason": STRING_OR_NULL,  # why a system is absent/unavailable/skipped/failed
        "median_ms": {"type": ["number", "null"], "minimum": 0},  # per call
        "min_ms": {"type": ["number", "null"], "minimum": 0},
        "max_ms": {"type": ["number", "null"], "minimum": 0},
        "samples": {"type": ["integer", "null"], "minimum": 1},
        "calls_per_sample": {"type": ["integer", "null"], "minimum": 1},
        # CPU seconds per call (the compile suite's fresh processes measure them)
        "cpu_median_ms": {"type": ["number", "null"], "minimum": 0},
        "ratio": NUMBER_OR_NULL,  # median / transfuse median; above 1: transfuse faster
        "max_error": NUMBER_OR_NULL,  # max |result - reference| / max |reference|
        # the first, untimed call in the benchmark process: compiles for jit systems
        "first_call_ms": {"type": ["number", "null"], "minimum": 0},
    },
}

CASE = {
    "type": "object",
    "required": ["suite", "name", "description", "reference", "reference_note", "status",
                 "systems"],
    "additionalProperties": False,
    "properties": {
        "suite": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        # "transfuse-interpreter" (the transform without jit), "numpy" (fallback), ...
        "reference": {"type": "string"},
        "reference_note": STRING_OR_NULL,
        "status": {"enum": ["ok", "failed"]},
        "systems": {"type": "object", "additionalProperties": SYSTEM},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "transfuse bench results",
    "type": "object",
    "required": ["schema", "created", "command", "machine", "versions", "settings", "ok",
                 "cases"],
    "additionalProperties": False,
    "properties": {
        "schema": {"enum": ["transfuse-bench/1"]},
        "created": {"type": "string"},  # ISO 8601, UTC
        "command": {"type": "array", "items": {"type": "string"}},
        "machine": {
            "type": "object",
            "required": ["platform", "machine", "processor", "cpu_count", "python"],
            "additionalProperties": False,
            "properties": {
                "platform": {"type": "string"}, "machine": {"type": "string"},
                "processor": {"type": "string"}, "cpu_count": {"type": "integer"},
                "python": {"type": "string"},
            },
        },
        "versions": {"type": "object", "required": ["transfuse", "numpy", "numba"],
                     "additionalProperties": STRING_OR_NULL},
        "settings": {
            "type": "object",
            "required": ["quick", "repeat", "warmup", "baselines"],
            "additionalProperties": False,
            "properties": {
                "quick": {"type": "boolean"},
                "repeat": {"type": "integer", "minimum": 1},
                "warmup": {"type": "integer", "minimum": 0},
                "baselines": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ok": {"type": "boolean"},
        "cases": {"type": "array", "items": CASE},
    },
}


class SchemaError(ValueError):
    """A document does not follow the schema; the message gives the path."""


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(document: Any, schema: dict[str, Any] | None = None, path: str = "$") -> None:
    """Raise SchemaError at the first place `document` breaks `schema` (default: SCHEMA)."""
    schema = SCHEMA if schema is None else schema
    if "enum" in schema and document not in schema["enum"]:
        raise SchemaError(f"{path}: {document!r} is not one of {schema['enum']}")
    if "type" in schema:
        _check_type(document, schema["type"], path)
    if "minimum" in schema and _TYPES["number"](document) and document < schema["minimum"]:
        raise SchemaError(f"{path}: {document} is below the minimum {schema['minimum']}")
    if isinstance(document, dict):
        _validate_object(document, schema, path)
    if isinstance(document, list) and "items" in schema:
        for i, item in enumerate(document):
            validate(item, schema["items"], f"{path}[{i}]")


def _check_type(value: Any, expected: str | list[str], path: str) -> None:
    names = [expected] if isinstance(expected, str) else expected
    if not any(_TYPES[n](value) for n in names):
        raise SchemaError(f"{path}: expected {' or '.join(names)}, got "
                          f"{type(value).__name__} {value!r:.60}")


def _validate_object(document: dict, schema: dict[str, Any], path: str) -> None:
    for key in schema.get("required", ()):
        if key not in document:
            raise SchemaError(f"{path}: missing required key {key!r}")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in document.items():
        if key in properties:
            validate(value, properties[key], f"{path}.{key}")
        elif extra is False:
            raise SchemaError(f"{path}: unexpected key {key!r}")
        elif isinstance(extra, dict):
            validate(value, extra, f"{path}.{key}")


if __name__ == "__main__":
    print(json.dumps(SCHEMA, indent=2))
