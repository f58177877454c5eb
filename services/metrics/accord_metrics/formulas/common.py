"""What every formula returns, and the digest of its inputs."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NewType

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


# One input's canonical JSON, as `digest` writes it (e.g. a call's UTC record). A type for the
# checker only: at run time the str itself (a str subclass would store its text apart from the
# object, ≈ 70 B more for each input an open window holds).
Encoded = NewType("Encoded", str)


class EncodedList(list[Encoded]):
    """A list of inputs already encoded (`Encoded`), as a value of a dict `digest` digests:
    spliced into its JSON as they are — the very bytes (and so the digest) the inputs
    themselves would give. Encoding each input once and keeping it (on the input, which is
    frozen) is what makes judging an open window again cost only its new inputs' encoding."""


def encoded(item: Any, encode: Callable[[Any], Any]) -> Encoded:
    """`item` encoded as `canonical_json(encode(item))`, computed once per (frozen) input object
    and kept on it (under the encoding's name, so two encodings of one object never mix)."""
    name = "_accord_encoded_" + encode.__name__
    held = getattr(item, name, None)
    if held is None:
        held = Encoded(canonical_json(encode(item)))
        _keep(item, name, held)
    return held


def _keep(item: Any, name: str, held: Encoded) -> None:
    """Keep `held` on `item` under `name`: in its dict, or in a slot of that name (a slotted input,
    such as `contact.Call`, declares one); an object that can hold neither is encoded each time."""
    try:
        object.__setattr__(item, name, held)
    except (AttributeError, TypeError):
        pass


def encoded_all(
    items: Iterable[Any], encode: Callable[[Any], Any], direct: Callable[[Any], str] | None = None
) -> list[Encoded]:
    """`encoded(item, encode)` of each item, in one loop (what is kept on an item read without a
    call per item). `direct`, when given, writes an item's canonical JSON itself — exactly
    `canonical_json(encode(item))`, without the generic walk — kept under the same name."""
    name = "_accord_encoded_" + encode.__name__
    out: list[Encoded] = []
    append = out.append
    for item in items:
        held = getattr(item, name, None)
        if held is None:
            if direct is None:
                held = encoded(item, encode)
            else:
                held = Encoded(direct(item))
                _keep(item, name, held)
        append(held)
    return out


def _canonical(obj: Any) -> Any:
    if isinstance(obj, EncodedList):
        raise TypeError("an EncodedList is spliced only as a dict's value (see canonical_json)")
    if isinstance(obj, datetime):
        # One instant, one spelling: whatever offset it was written with.
        return utc_iso(obj)
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


def canonical_json(inputs: Any) -> str:
    """The canonical JSON of the inputs: what `digest` digests. A dict's values that are
    `EncodedList`s (at any depth of dicts) are spliced in as they are."""
    if isinstance(inputs, EncodedList):
        return "[" + ",".join(inputs) + "]"
    if isinstance(inputs, dict) and _holds_encoded(inputs):
        items = sorted(((str(k), v) for k, v in inputs.items()), key=lambda kv: kv[0])
        return "{" + ",".join(json.dumps(k) + ":" + canonical_json(v) for k, v in items) + "}"
    return json.dumps(_canonical(inputs), sort_keys=True, separators=(",", ":"))


def _holds_encoded(d: dict[Any, Any]) -> bool:
    return any(isinstance(v, EncodedList) or (isinstance(v, dict) and _holds_encoded(v)) for v in d.values())


def digest(inputs: Any) -> str:
    """sha256 of the canonical JSON of the inputs: independent of the order they arrived in
    when the caller passes them sorted (formulas sort their inputs before digesting)."""
    return "sha256:" + hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


# -- the bucketed digest of a list of input records (the formulas with a running form, since their
# versions "contact.asa" … "contact.aht" v2, "contact.fcr" v3, "availability.time" and "mtbf" v2,
# "availability.requests" v3). The records, each its canonical JSON, are dealt into BUCKETS (64)
# buckets by the CRC-32 of its bytes modulo 64, each bucket keeping the records' order; the list's
# place in the payload holds the 64 buckets' digests (the lowercase hex SHA-256 of the bucket's
# records joined by ",", an empty bucket that of no byte), in bucket order, as JSON strings; the
# input digest is the SHA-256 of that payload's canonical JSON, as before. Every record is still
# digested, in order within its bucket; but a record changed, taken out or placed before others
# changes the digest of its bucket alone — a running form brought the digest up to date hashing
# that bucket again (≈ 1/64 of the records), not every record after its place (the running forms
# now keep the versions bucketed by hours, below: `formulas.running.RunDigest`; these versions
# are kept for the windows closed with them). 64: a batch appended touches each bucket once (a few µs a
# bucket), a correction hashes ≈ 1/64 of the window. The bucket is a partition, not a secret:
# two lists of records with one digest would need two buckets with one SHA-256.
BUCKETS = 64
EMPTY_BUCKET = Encoded('"' + hashlib.sha256(b"").hexdigest() + '"')


def bucket_of(record: str) -> int:
    """The bucket of a record (its canonical JSON, ASCII) in a bucketed digest."""
    return zlib.crc32(record.encode()) & (BUCKETS - 1)


def bucket_digest(records: list[str]) -> Encoded:
    """One bucket's digest as the bucketed list holds it: the hex SHA-256 of its records joined by
    ",", as a JSON string."""
    return Encoded('"' + hashlib.sha256(",".join(records).encode()).hexdigest() + '"') if records else EMPTY_BUCKET


def bucketed(records: Iterable[str]) -> EncodedList:
    """The bucketed form of a sorted list of records (each its canonical JSON): the 64 buckets'
    digests, what a bucketed digest's payload holds in the list's place."""
    buckets: list[list[str]] = [[] for _ in range(BUCKETS)]
    for record in records:
        buckets[bucket_of(record)].append(record)
    return EncodedList(map(bucket_digest, buckets))


# The bucketed digest by hours ("contact.asa", "contact.abandonment_rate", "contact.service_level"
# and "contact.aht" v4: docs/domain.md §4, "The input digest"). The records, in the order the inputs
# arrived, are dealt into the 64 buckets as above; within a bucket they are grouped in runs by the
# hour (UTC) their input arrived in, each run's digest the hex SHA-256 of its records joined by ",",
# and the bucket's digest the hex SHA-256 of its runs' digests joined by "," (in the hours' order;
# an empty bucket that of no byte). A change then reaches one run of one bucket — the inputs of one
# hour there, a few dozen at a contact centre's busiest — which a running form hashes again from
# the inputs themselves, so no record need be held (`formulas.running.RunDigest`); and a run
# whose hour is over keeps its digest, 32 bytes, for as long as nothing in it changes.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)


# `utc_iso`'s pieces: each hour's text up to its minutes ("2026-02-15T12:"), by hours since the
# epoch (a few thousand kept: a month's inputs fall in 744 hours), and each "MM:SS+00:00".
_HOUR_TEXT: dict[int, str] = {}
_HOUR_TEXT_KEPT = 8192
_MINUTE_SECOND_UTC = [f"{m:02d}:{s:02d}+00:00" for m in range(60) for s in range(60)]


def utc_iso(t: datetime) -> str:
    """`t.astimezone(UTC).isoformat()`: the same text, for an instant in UTC (every input a
    signal was converted to) without writing its date and offset anew — which was a third of
    encoding a call's record and more than half of an outage's, every input a round folds
    (services/metrics/README.md, "An instant's text, by its hour"). Any other `t` (another
    offset, naive) as `astimezone` and `isoformat` write it."""
    if t.tzinfo is not UTC:
        return t.astimezone(UTC).isoformat()
    if t.microsecond:
        return t.isoformat()  # its fraction written by `isoformat` itself: as quick as pieces here
    since = t - _EPOCH
    hour_in_day, rest = divmod(since.seconds, 3600)
    hour = since.days * 24 + hour_in_day
    text = _HOUR_TEXT.get(hour)
    if text is None:
        if len(_HOUR_TEXT) >= _HOUR_TEXT_KEPT:
            _HOUR_TEXT.clear()
        text = _HOUR_TEXT[hour] = t.replace(minute=0).isoformat()[:14]
    return text + _MINUTE_SECOND_UTC[rest]


def hour_of(t: datetime) -> int:
    """The hour an instant falls in: whole hours since 1970-01-01T00:00Z (an instant before it
    counts down from -1)."""
    return (t - _EPOCH) // _HOUR


def run_digest(records: list[str]) -> str:
    """One run's digest in a bucketed digest by hours: the hex SHA-256 of its records joined by ","."""
    return hashlib.sha256(",".join(records).encode()).hexdigest()


def hour_bucketed(pairs: Iterable[tuple[int, str]]) -> EncodedList:
    """The bucketed form by hours of records in order, given as (hour, record) pairs — the hours
    never decreasing: what the payload holds in the list's place (see above). Each run is hashed
    when its bucket's next hour begins, and its records dropped: a window's records (a month of a
    contact centre's calls when it closes) need not be held all at once."""
    hours: list[int | None] = [None] * BUCKETS
    runs: list[list[str]] = [[] for _ in range(BUCKETS)]
    states: list[Any] = [None] * BUCKETS  # per bucket, the SHA-256 over its runs' digests so far

    def close(b: int) -> None:
        d = run_digest(runs[b]).encode()
        if states[b] is None:
            states[b] = hashlib.sha256(d)
        else:
            states[b].update(b"," + d)

    for hour, record in pairs:
        b = bucket_of(record)
        held = hours[b]
        if held == hour:
            runs[b].append(record)
            continue
        if held is not None:
            if held > hour:
                raise ValueError(f"records out of order: hour {hour} after hour {held}")
            close(b)
        hours[b], runs[b] = hour, [record]
    for b in range(BUCKETS):
        if hours[b] is not None:
            close(b)
    return EncodedList(Encoded('"' + st.hexdigest() + '"') if st is not None else EMPTY_BUCKET for st in states)


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
