"""What every formula returns, and the digest of its inputs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

HUNDRED = Decimal(100)
ZERO = Decimal(0)
# Values are kept exact; this is only the precision at which they are reported and compared.
REPORT_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class Evaluated:
    """A computed value with everything needed to recompute it.

    `value` is None when the formula is undefined for the inputs (e.g. MTBF with no
    failure, a ratio with a zero denominator); `undefined` then says why."""

    formula_id: str
    formula_version: int
    value: Decimal | None
    parameters: dict[str, str]
    input_digest: str
    detail: dict[str, str] = field(default_factory=dict)
    undefined: str = ""

    @property
    def reported(self) -> Decimal | None:
        return None if self.value is None else self.value.quantize(REPORT_PLACES, rounding=ROUND_HALF_EVEN)


def _canonical(obj: Any) -> Any:
    if isinstance(obj, datetime):
        # One instant, one spelling: whatever offset it was written with.
        return obj.astimezone(UTC).isoformat()
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return str(seconds(obj))
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (set, frozenset)):
        return sorted((_canonical(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _canonical(getattr(obj, k)) for k in sorted(obj.__dataclass_fields__)}
    return obj


def digest(inputs: Any) -> str:
    """sha256 of the canonical JSON of the inputs: independent of the order they arrived in
    when the caller passes them sorted (formulas sort their inputs before digesting)."""
    data = json.dumps(_canonical(inputs), sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """numerator ÷ denominator exactly (to 28 significant digits), None when the denominator is 0."""
    d = Decimal(denominator)
    if d == 0:
        return None
    return Decimal(numerator) / d


def percent(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    r = ratio(numerator, denominator)
    return None if r is None else r * HUNDRED


def seconds(td: timedelta) -> Decimal:
    """A duration in seconds, exactly (microsecond resolution)."""
    return Decimal(td.days * 86400 + td.seconds) + Decimal(td.microseconds) / Decimal(1_000_000)
