"""One objective window's evaluation, typed: the one value metrics publishes, billing assesses
and the gateway shows (protos/accord/metrics/v1/events.proto `Evaluation`).

Two edges, each exact:
- the public message: `Evaluation.from_message(msg)` / `.to_message()`;
- the dict the services store (metrics' WindowEvaluation events, billing's Statement
  assessments): `Evaluation.from_record(d)` / `.to_record()`. `to_record()` gives the dict
  metrics records; `to_record(BILLING_FIELDS)` the one billing records inside an assessment;
  `to_record(GATEWAY_FIELDS)` the gateway's view. Stored records of earlier releases load as
  they are: no stored shape changes, a record converts at the edge.

A decimal is `None` when it is undefined (the message and the record hold ""); the budget and
burn-rate figures, which metrics records only for the objectives that have them, are left out
of a full record when `None`. A status is `None` when it is unspecified (the record holds "")."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from accord.metrics.v1 import events_pb2 as ev


class Status(enum.StrEnum):
    MET = "MET"
    AT_RISK = "AT_RISK"
    BREACHED = "BREACHED"
    NO_DATA = "NO_DATA"


_TO_PROTO = {s: ev.EvaluationStatus.Value(f"EVALUATION_STATUS_{s.value}") for s in Status}
_FROM_PROTO = {v: s for s, v in _TO_PROTO.items()}

# Record keys (in the order a metrics record holds them), with the dataclass field each maps to.
_KEYS: dict[str, str] = {
    "value": "value",
    "target": "target",
    "comparator": "comparator",
    "status": "status",
    "closed": "closed",
    "version": "agreement_version",
    "formula_id": "formula_id",
    "formula_version": "formula_version",
    "parameters": "parameters",
    "input_digest": "input_digest",
    "detail": "detail",
    "undefined": "undefined",
    "budget_consumed": "budget_consumed",
    "budget_remaining": "budget_remaining",
    "agreement_id": "agreement_id",
    "objective_id": "objective_id",
    "window_start": "window_start",
    "window_end": "window_end",
    "calendar_id": "calendar_id",
    "calendar_version": "calendar_version",
    "burn_rate": "burn_rate",
}
# Recorded only when the objective has them (a full record leaves them out when None).
_OPTIONAL = ("budget_consumed", "budget_remaining", "burn_rate")
_DECIMALS = ("value", "target", "budget_consumed", "budget_remaining", "burn_rate")
_INTS = ("version", "formula_version", "calendar_version")
_MAPS = ("parameters", "detail")

# The evaluation inside a billing assessment (Statement.Assessed), key for key.
BILLING_FIELDS = (
    "objective_id",
    "window_start",
    "window_end",
    "value",
    "target",
    "status",
    "closed",
    "version",
    "formula_id",
    "input_digest",
    "detail",
)
# The gateway's view of an objective's current and closed windows.
GATEWAY_FIELDS = (
    "agreement_id",
    "objective_id",
    "window_start",
    "window_end",
    "value",
    "target",
    "status",
    "closed",
    "budget_remaining",
    "budget_consumed",
    "input_digest",
    "burn_rate",
    "version",
)

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _decimal(raw: Any, name: str) -> Decimal | None:
    if raw in (None, ""):
        return None
    try:
        d = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"evaluation {name} {raw!r} is not a decimal") from None
    if not d.is_finite():
        raise ValueError(f"evaluation {name} {raw!r} is not a finite decimal")
    return d


def _status(raw: Any) -> Status | None:
    if raw in (None, "", "UNSPECIFIED"):
        return None
    try:
        return Status(raw)
    except ValueError:
        raise ValueError(f"evaluation status {raw!r} is not one of {', '.join(Status)}") from None


def _strings(raw: Mapping[Any, Any] | None) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (raw or {}).items()}) if raw else _EMPTY


@dataclass(frozen=True)
class Evaluation:
    """One objective over one window, as judged by the metrics service."""

    agreement_id: str = ""
    objective_id: str = ""
    window_start: str = ""  # RFC 3339, as recorded
    window_end: str = ""
    value: Decimal | None = None  # None: undefined (`undefined` says why)
    target: Decimal | None = None
    comparator: str = ""
    status: Status | None = None
    closed: bool = False
    agreement_version: int = 0  # the version in force at the window's start
    formula_id: str = ""
    formula_version: int = 0
    parameters: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    input_digest: str = ""
    detail: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    undefined: str = ""
    budget_consumed: Decimal | None = None
    budget_remaining: Decimal | None = None
    calendar_id: str = ""
    calendar_version: int = 0
    burn_rate: Decimal | None = None

    def __post_init__(self) -> None:
        # Frozen in depth: the maps are read-only copies of what was given.
        object.__setattr__(self, "parameters", _strings(self.parameters))
        object.__setattr__(self, "detail", _strings(self.detail))

    # -- the public message --------------------------------------------------------------------
    @classmethod
    def from_message(cls, msg: ev.Evaluation) -> Evaluation:
        return cls(
            agreement_id=msg.agreement_id,
            objective_id=msg.objective_id,
            window_start=msg.window_start,
            window_end=msg.window_end,
            value=_decimal(msg.value, "value"),
            target=_decimal(msg.target, "target"),
            comparator=msg.comparator,
            status=_FROM_PROTO.get(msg.status),
            closed=msg.closed,
            agreement_version=msg.agreement_version,
            formula_id=msg.formula_id,
            formula_version=msg.formula_version,
            parameters=dict(msg.parameters),
            input_digest=msg.input_digest,
            detail=dict(msg.detail),
            undefined=msg.undefined,
            budget_consumed=_decimal(msg.budget_consumed, "budget_consumed"),
            budget_remaining=_decimal(msg.budget_remaining, "budget_remaining"),
            calendar_id=msg.calendar_id,
            calendar_version=msg.calendar_version,
            burn_rate=_decimal(msg.burn_rate, "burn_rate"),
        )

    def to_message(self) -> ev.Evaluation:
        return ev.Evaluation(
            agreement_id=self.agreement_id,
            objective_id=self.objective_id,
            window_start=self.window_start,
            window_end=self.window_end,
            value=_text(self.value),
            target=_text(self.target),
            comparator=self.comparator,
            status=_TO_PROTO[self.status] if self.status is not None else ev.EVALUATION_STATUS_UNSPECIFIED,
            closed=self.closed,
            agreement_version=self.agreement_version,
            formula_id=self.formula_id,
            formula_version=self.formula_version,
            parameters=dict(self.parameters),
            input_digest=self.input_digest,
            detail=dict(self.detail),
            undefined=self.undefined,
            budget_consumed=_text(self.budget_consumed),
            budget_remaining=_text(self.budget_remaining),
            calendar_id=self.calendar_id,
            calendar_version=self.calendar_version,
            burn_rate=_text(self.burn_rate),
        )

    # -- the stored dict -----------------------------------------------------------------------
    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Evaluation:
        """An evaluation from a stored record: metrics' full one or billing's (a key left out
        takes its empty value)."""
        values: dict[str, Any] = {}
        for key, name in _KEYS.items():
            raw = record.get(key)
            if key in _DECIMALS:
                values[name] = _decimal(raw, key)
            elif key == "status":
                values[name] = _status(raw)
            elif key == "closed":
                values[name] = bool(raw)
            elif key in _INTS:
                values[name] = int(raw or 0)
            elif key in _MAPS:
                values[name] = raw or {}
            else:
                values[name] = "" if raw is None else str(raw)
        return cls(**values)

    def to_record(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The record with `fields` (record keys, in that order; each present, an undefined
        decimal as ""), or by default the full record as metrics stores it."""
        keys = list(_KEYS) if fields is None else list(fields)
        out: dict[str, Any] = {}
        for key in keys:
            v = getattr(self, _KEYS[key])
            if key in _DECIMALS:
                if v is None and fields is None and key in _OPTIONAL:
                    continue
                out[key] = _text(v)
            elif key == "status":
                out[key] = "" if v is None else v.value
            elif key in _MAPS:
                out[key] = dict(v)
            else:
                out[key] = v
        return out


def _text(d: Decimal | None) -> str:
    return "" if d is None else str(d)


def as_record(evaluation: Evaluation | Mapping[str, Any]) -> Mapping[str, Any]:
    """The record of an evaluation given typed or as its record (for readers of records)."""
    return evaluation.to_record() if isinstance(evaluation, Evaluation) else evaluation
