"""YAML files in a protobuf message's JSON form, with numbers kept as written.

The contracts carry decimals as strings ("99.9"), so a terms file that says `target: 99.9`
must give the field the text "99.9" — never a float's `99.90000000000001`. The loader keeps
the literal text of every plain number (and of every YAML timestamp or date, which the
contracts also carry as text), and `for_message` then gives each value the type its field
wants: the plain decimal text for a string field ("1e3" → "1000", "1_000.50" → "1000.50"),
the number for a numeric or enum field."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from google.protobuf.descriptor import FieldDescriptor


class Number(str):
    """A plain YAML number: its literal text, and the value YAML reads it as."""

    value: int | float

    def __new__(cls, text: str, value: int | float) -> Number:
        n = super().__new__(cls, text)
        n.value = value
        return n

    def plain(self) -> str:
        """The number as plain decimal text, exactly: no float rounding, no exponent."""
        if isinstance(self.value, int):
            return str(self.value)
        try:
            d = Decimal(str(self).replace("_", ""))
        except InvalidOperation:
            return str(self)
        return format(d, "f") if d.is_finite() else str(self)


class _Loader(yaml.SafeLoader):
    pass


def _number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Number:
    tag = node.tag.rsplit(":", 1)[-1]
    value = yaml.SafeLoader.construct_yaml_int(loader, node) if tag == "int" else loader.construct_yaml_float(node)
    return Number(node.value, value)


def _text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:int", _number)
_Loader.add_constructor("tag:yaml.org,2002:float", _number)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _text)


def load_yaml(text: str) -> Any:
    """YAML (JSON is YAML) with numbers as `Number` and timestamps as their text."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


_NUMERIC = {
    FieldDescriptor.TYPE_DOUBLE,
    FieldDescriptor.TYPE_FLOAT,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
}


def for_message(data: Any, descriptor: Any) -> Any:
    """`data` (from load_yaml) with each value typed for its field of `descriptor`."""
    if not isinstance(data, dict):
        return _plain(data)
    fields = {f.name: f for f in descriptor.fields} | {f.json_name: f for f in descriptor.fields}
    result: dict[Any, Any] = {}
    for key, value in data.items():
        field = fields.get(key) if isinstance(key, str) else None
        k = _key(key)
        if field is None:
            result[k] = _plain(value)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            result[k] = (
                {_key(mk): _field_value(mv, value_field) for mk, mv in value.items()}
                if isinstance(value, dict)
                else _plain(value)
            )
        elif field.is_repeated and isinstance(value, list):
            result[k] = [_field_value(v, field) for v in value]
        else:
            result[k] = _field_value(value, field)
    return result


def _field_value(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf.") and isinstance(value, Number):
            return value.plain() if field.message_type.name != "Value" else value.value
        return for_message(value, field.message_type)
    if isinstance(value, Number):
        if field.type == FieldDescriptor.TYPE_STRING:
            return value.plain()
        if field.type in _NUMERIC or field.type == FieldDescriptor.TYPE_ENUM:
            return value.value
    return _plain(value)


def _plain(value: Any) -> Any:
    """Outside any known field: numbers as YAML reads them."""
    if isinstance(value, Number):
        return value.value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _key(key: Any) -> Any:
    return key.plain() if isinstance(key, Number) else key
