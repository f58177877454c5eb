"""Terms files: reading them (YAML or JSON, decimals as plain numbers or strings) and checking
them offline — against `schemas/terms.schema.json` and then with the agreements service's own
draft-time rules (`accord_agreements.terms.normalise`, `validate`, `check_not_ended`), so that
a file that passes here is refused by a running service only for what needs its records
(registered departments, services, calendars, parent and underpinning agreements)."""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from jsonschema import Draft202012Validator, ValidationError

from accord.agreements.v1 import terms_pb2
from accord_agreements import terms as rules
from accord_cli.terms_schema import DECIMAL_FIELDS, INSTANT

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "terms.schema.json"


class UnreadableError(Exception):
    """The file cannot be read, or is not YAML or JSON at all."""


class _Loader(yaml.SafeLoader):
    """YAML with exact numbers: `99.95` is Decimal("99.95"), never a float; instants and dates
    stay the text they were written as (the proto's JSON form wants strings)."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node))
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation:  # .inf, .nan: left to the rules to refuse
        return loader.construct_yaml_float(node)


def _text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _text)


def load_text(text: str, name: str = "") -> Any:
    """One YAML (or JSON) document with exact numbers; UnreadableError saying where it broke."""
    try:
        if name.endswith(".json"):
            return json.loads(text, parse_float=Decimal)
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except json.JSONDecodeError as e:
        raise UnreadableError(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UnreadableError(f"not valid YAML: {problem}{where}") from None


def load(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UnreadableError(f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    return load_text(text, path.name)


def dump_yaml(doc: Any) -> str:
    """YAML with decimals written as plain numbers."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def dump_yaml_all(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    text = format(value, "f")
    return dumper.represent_scalar("tag:yaml.org,2002:float" if "." in text else "tag:yaml.org,2002:int", text)


_Dumper.add_representer(Decimal, _represent_decimal)


# -- the proto's JSON form ------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _as_text(value: Any) -> Any:
    if not _is_number(value):
        return value
    text = rules.plain(value if not isinstance(value, float) else Decimal(repr(value)))
    return text if isinstance(text, str) else str(value)


def _proto_json(value: Any, msg: Descriptor) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        f = msg.fields_by_name.get(key)
        if f is None:
            out[key] = item
        elif f"{msg.name}.{key}" in DECIMAL_FIELDS:
            out[key] = [_as_text(i) for i in item] if isinstance(item, list) else _as_text(item)
        elif key == "parameters" and isinstance(item, dict):
            out[key] = {k: _as_text(v) for k, v in item.items()}
        elif f.message_type is not None and f.message_type.full_name != "google.protobuf.Timestamp":
            if isinstance(item, list):
                out[key] = [_proto_json(i, f.message_type) for i in item]
            else:
                out[key] = _proto_json(item, f.message_type)
        else:
            out[key] = item
    return out


def to_proto_json(doc: Any) -> Any:
    """A terms document in the proto's JSON form: every number of a decimal field (and of the
    parameters) as its plain string, so that `json_format.ParseDict` takes it."""
    return _proto_json(doc, terms_pb2.AgreementTerms.DESCRIPTOR)


def to_message(doc: Any) -> terms_pb2.AgreementTerms:
    if not isinstance(doc, dict):
        raise json_format.ParseError(f"terms must be a mapping of the AgreementTerms fields, not {_kind(doc)}")
    return json_format.ParseDict(to_proto_json(doc), terms_pb2.AgreementTerms())


# -- checking ------------------------------------------------------------------------------------------------
@cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def path_of(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the terms)"


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "nothing"
    return json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, list | dict) else str(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if _is_number(value):
        return "a number"
    return {str: "text", list: "a list", dict: "a mapping", type(None): "empty"}.get(type(value), type(value).__name__)


def _node(doc: Any, parts: Iterable[Any]) -> Any:
    for p in parts:
        try:
            doc = doc[p]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


def _schema_lines(e: ValidationError, doc: Any) -> list[str]:
    parts = list(e.absolute_path)
    where = path_of(parts)
    v, value = e.validator, e.instance
    if v == "additionalProperties":
        known = sorted(e.schema.get("properties", {}))
        extra = sorted(set(value) - set(known))
        if parts and parts[-1] == "parameters":
            metric = (_node(doc, parts[:-1]) or {}).get("metric")
            valid = ", ".join(known) or "none"
            return [
                f"{path_of([*parts, x])}: is not a parameter of {metric} (valid parameters: {valid})" for x in extra
            ]
        return [f"{path_of([*parts, x])}: is not a field here (valid fields: {', '.join(known)})" for x in extra]
    if v == "required":
        missing = [m for m in e.validator_value if not isinstance(value, dict) or m not in value]
        return [f"{path_of([*parts, m])}: is required" for m in missing]
    if v == "enum":
        return [f"{where}: {_show(value)} is not one of {', '.join(str(c) for c in e.validator_value)}"]
    if v == "type":
        want = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
        got = _show(value) if _is_number(value) else _kind(value)
        return [f"{where}: must be {' or '.join(_TYPE_WORDS.get(str(w), str(w)) for w in want)}, not {got}"]
    if v == "anyOf":  # a decimal: a string of digits or a number within its range
        if _is_number(value):
            for sub in e.context or []:
                if sub.validator != "type" or sub.validator_value == "integer":
                    return _schema_lines(sub, doc)
        return [f"{where}: must be a decimal number (plain digits, e.g. 12.5), not {_show(value)}"]
    if v == "pattern":
        if e.validator_value == INSTANT:
            return [f"{where}: must be an instant with an offset (e.g. 2026-01-01T00:00:00+01:00), not {_show(value)}"]
        if where.endswith("objective_id"):
            return [f"{where}: must be letters, digits, '-' or '_' (at most 64, starting with a letter or digit), "
                    f"not {_show(value)}"]  # fmt: skip
        return [f"{where}: {_show(value)} does not match {e.validator_value}"]
    if v in ("minimum", "exclusiveMinimum", "maximum"):
        word = {"minimum": "at least", "exclusiveMinimum": "greater than", "maximum": "at most"}[str(v)]
        return [f"{where}: must be {word} {e.validator_value} (got {_show(value)})"]
    return [f"{where}: {e.message}"]


def _order(line: str) -> list[tuple[int, Any]]:
    path = line.split(": ", 1)[0].replace("]", "").replace("[", ".")
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.split(".")]


def schema_errors(doc: Any) -> list[str]:
    lines: list[str] = []
    for e in validator().iter_errors(doc):
        for line in _schema_lines(e, doc):
            if line not in lines:
                lines.append(line)
    return sorted(lines, key=_order)


def rule_errors(doc: Any, now: datetime | None = None) -> list[str]:
    """The agreements service's draft-time rules on the terms as the service would read them:
    the document parsed into the proto and written back as the canonical JSON form."""
    try:
        message = to_message(doc)
    except json_format.ParseError as e:
        return [f"(the terms): {e}"]
    terms = json_format.MessageToDict(message, preserving_proto_field_name=True)
    terms = rules.normalise(terms)
    try:
        rules.validate(terms)
        rules.check_not_ended(terms, now or datetime.now(UTC))
    except rules.TermsInvalidError as e:
        return [str(problem) for problem in e.errors]
    return []


def check(doc: Any, now: datetime | None = None) -> list[str]:
    """Every problem of a terms document, one line each (empty: valid offline)."""
    if doc is None:
        return ["(the terms): the file is empty (a terms file is one mapping of the AgreementTerms fields)"]
    if not isinstance(doc, dict):
        return [f"(the terms): must be a mapping of the AgreementTerms fields, not {_kind(doc)}"]
    return schema_errors(doc) or rule_errors(doc, now)
