"""The JSON Schema of a terms file, built from the protobuf descriptor of
`accord.agreements.v1.AgreementTerms` and the objective parameters the agreements service
declares (`accord_agreements.terms.PARAMETERS`: types, units, ranges, enums, defaults).

`tools/make_terms_schema.py` writes it to `schemas/terms.schema.json`; a test keeps the
committed file equal to what this module builds. A terms file is the proto's JSON form with
the proto's field names (`objective_id`, not `objectiveId`), enums by name, instants as
RFC 3339 strings, and decimals as strings or plain numbers (`target: 99.9`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from accord.agreements.v1 import terms_pb2
from accord_agreements.terms import CALENDAR_24X7, CURRENCIES, OBJECTIVE_ID, PARAMETERS, Param

SCHEMA_ID = "https://accord.invalid/schemas/terms.schema.json"
# The decimal fields: strings in the proto, the ones `accord_agreements.terms.normalise` writes
# in plain notation. A terms file may give them as numbers.
DECIMAL_FIELDS = {
    "Objective.target",
    "Objective.slice_target",
    "Objective.warning_levels",
    "CreditTier.lower",
    "CreditTier.upper",
    "CreditTier.credit_percent",
    "Penalty.amount",
    "Penalty.grace_units",
    "Reward.stretch_target",
    "Reward.amount",
    "Consequences.cap_percent",
    "Consequences.minimum_amount",
    "Fee.amount",
}
# RFC 3339 with an offset (what the service's instants must be).
INSTANT = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
DECIMAL_TEXT = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
UINT32_MAX = 2**32 - 1
# Small hints the descriptor cannot carry.
HINTS: dict[str, dict[str, Any]] = {
    "Objective.objective_id": {"pattern": OBJECTIVE_ID.pattern},
    "Objective.calendar_id": {"description": f'"{CALENDAR_24X7}" or the id of a registered calendar'},
    "Fee.currency": {"enum": sorted(CURRENCIES)},
    "PriorityTarget.priority": {"enum": ["P1", "P2", "P3", "P4"]},
    "Window.rolling_days": {"maximum": 366},
    "AgreementTerms.time_zone": {"description": "an IANA time zone, e.g. Europe/Amsterdam"},
}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def decimal_schema(description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "anyOf": [{"type": "string", "pattern": DECIMAL_TEXT}, {"type": "number"}],
    }
    if description:
        schema["description"] = description
    return schema


def _enum_names(e: EnumDescriptor) -> list[str]:
    return [v.name for v in e.values if not v.name.endswith("_UNSPECIFIED")]


def _field_schema(msg: Descriptor, f: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    key = f"{msg.name}.{f.name}"
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        # Values are strings in the proto; a terms file may write a decimal as a number.
        return {"type": "object", "additionalProperties": {"type": ["string", "number"]}}
    if f.message_type is not None:
        if f.message_type.full_name == "google.protobuf.Timestamp":
            item: dict[str, Any] = {"type": "string", "pattern": INSTANT, "description": "RFC 3339 with an offset"}
        else:
            _message_schema(f.message_type, defs)
            item = {"$ref": f"#/$defs/{f.message_type.name}"}
    elif f.enum_type is not None:
        item = {"enum": _enum_names(f.enum_type)}
    elif key in DECIMAL_FIELDS:
        item = decimal_schema("a decimal: a string of digits or a plain number")
    elif f.type == FieldDescriptor.TYPE_STRING:
        item = {"type": "string"}
    elif f.type == FieldDescriptor.TYPE_BOOL:
        item = {"type": "boolean"}
    elif f.type == FieldDescriptor.TYPE_UINT32:
        item = {"type": "integer", "minimum": 0, "maximum": UINT32_MAX}
    else:  # pragma: no cover - terms.proto uses no other scalar
        raise ValueError(f"{key}: no schema for field type {f.type}")
    item = {**item, **HINTS.get(key, {})}
    if f.is_repeated:
        return {"type": "array", "items": item}
    return item


def _message_schema(msg: Descriptor, defs: dict[str, Any]) -> None:
    if msg.name in defs:
        return
    defs[msg.name] = {}  # reserve (recursion)
    props = {f.name: _field_schema(msg, f, defs) for f in msg.fields}
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if msg.name == "Objective":
        metrics = terms_pb2.Metric.DESCRIPTOR
        schema["allOf"] = [_parameters_rule(metric) for metric in _enum_names(metrics)]
    defs[msg.name] = schema


def param_schema(p: Param) -> dict[str, Any]:
    if p.type == "enum":
        s: dict[str, Any] = {"enum": list(p.choices)}
    else:
        s = decimal_schema()
        number: dict[str, Any] = {"type": "integer" if p.type == "integer" else "number"}
        if p.lo is not None:
            number["exclusiveMinimum" if p.lo_open else "minimum"] = _number(p.lo)
        if p.hi is not None and p.hi < Decimal("1E+18"):
            number["maximum"] = _number(p.hi)
        s["anyOf"] = [s["anyOf"][0], number]
    if p.unit:
        s["x-unit"] = p.unit
    if p.default:
        s["default"] = p.default
    return s


def _parameters_rule(metric: str) -> dict[str, Any]:
    params = PARAMETERS.get(metric, ())
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: param_schema(p) for p in params},
        "additionalProperties": False,
    }
    required = [p.name for p in params if p.required]
    if required:
        parameters["required"] = required
    return {
        "if": {"properties": {"metric": {"const": metric}}, "required": ["metric"]},
        "then": {"properties": {"parameters": parameters}},
    }


def build() -> dict[str, Any]:
    """The schema, deterministic (the same descriptor and parameters give the same dict)."""
    defs: dict[str, Any] = {}
    root = terms_pb2.AgreementTerms.DESCRIPTOR
    _message_schema(root, defs)
    top = defs.pop(root.name)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Accord agreement terms",
        "description": (
            "A terms file: accord.agreements.v1.AgreementTerms in its JSON form (protos/accord/agreements/v1/"
            "terms.proto). Generated by tools/make_terms_schema.py; do not edit."
        ),
        **top,
        "$defs": dict(sorted(defs.items())),
    }
