"""Contact-centre formulas (docs/domain.md §4 "Contact centre"): ASA, abandonment rate, service
level (TSF) in its five variants, first-contact resolution and average handle time.

Conventions shared by every function here:

- The caller passes the calls of the measurement window (e.g. selected by `entered_queue`);
  these functions do not select by time, except `fcr`, which takes an optional window
  because it needs contacts on either side of it to tell first contacts from repeats.
- A call's *wait* is `answered_at − entered_queue` (answered) or `abandoned_at −
  entered_queue` (abandoned), exact to the microsecond: nothing is truncated to whole
  seconds or minutes, so a wait of 20.000001 s is not within a 20 s threshold.
- "Within T" is inclusive: wait ≤ T (docs/domain.md writes A≤T). "Before S" is exclusive:
  a short abandon is an abandon with wait < S (docs/domain.md writes Ab<S); a call abandoned
  at exactly S is an ordinary abandon.
- O (offered) is every call passed in: answered, abandoned, and calls that are neither
  (still queued, transferred out, …; reported in detail as `other`). The service-level
  variants use the denominators of docs/domain.md (A + Ab …), which never include `other`.
- Values are exact Decimals; a zero denominator gives `value=None` with `undefined` set.
- `input_digest` digests the calls sorted by id (datetimes as UTC instants) together with
  the parameters, so the order the calls arrived in does not change it. Duplicate call
  ids are refused (ValueError): they would be counted twice. Since v2 of the call formulas
  (v3 of FCR) the digest is bucketed (`common.bucketed`) and covers the formula id and
  version; the earlier versions' digest (the records in one list) is kept for the windows
  recorded with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from operator import attrgetter
from typing import Any, TypeVar

from accord_kit.timeline import Interval
from accord_metrics.formulas.common import (
    ZERO,
    Encoded,
    EncodedList,
    Evaluated,
    bucketed,
    canonical_json,
    digest,
    encoded,
    encoded_all,
    hour_bucketed,
    hour_of,
    percent,
    ratio,
    seconds,
    utc_iso,
)

# The versions of "contact.asa", "contact.abandonment_rate", "contact.service_level" and
# "contact.aht" computed: v4 digests its calls bucketed in the order they arrived, each bucket in
# runs by the hour they arrived in (`common.hour_bucketed`: a change hashes one hour of one bucket
# again, from the calls themselves, so a running form holds no record); v3 bucketed in the order
# they arrived (entry into the queue, then id: a batch of new calls lands after those held,
# whatever their ids); v2 bucketed in the order of their ids (new calls with random ids — UUIDs —
# land among the held ones of every bucket); v1 in one list, by id. v1 to v3 are kept for the
# windows recorded with them. The value and detail are the same in all four.
VERSION = 4
VERSIONS = (1, 2, 3, 4)
# The versions of "contact.fcr" computed: v2 judges each first contact once, in the window in which
# its outcome became known; v3 is v2 with the bucketed digest (the outcomes by first contact's id);
# v4 is v3 with the outcomes in the order they became known (decided, then id); v5 is v4 with each
# bucket in runs by the hour the outcomes became known in (`common.hour_bucketed`, as the call
# formulas' v4: a running form holds no record); v1 to v4 are kept for the windows recorded with
# them (restated and re-derived by the version they closed with).
FCR_VERSION = 5
FCR_VERSIONS = (1, 2, 3, 4, 5)


class ServiceLevelVariant(StrEnum):
    """How abandoned calls count in the service level (docs/domain.md §4); pinned in the objective."""

    ANSWERED_OVER_OFFERED = "ANSWERED_OVER_OFFERED"  # A≤T ÷ (A + Ab)
    ANSWERED_OVER_ANSWERED = "ANSWERED_OVER_ANSWERED"  # A≤T ÷ A
    ABANDONS_NEUTRAL = "ABANDONS_NEUTRAL"  # A≤T ÷ (A + Ab>T)
    ABANDONS_SUCCESS = "ABANDONS_SUCCESS"  # (A≤T + Ab≤T) ÷ (A + Ab)
    SHORT_ABANDONS_SUCCESS = "SHORT_ABANDONS_SUCCESS"  # (A≤T + Ab<S) ÷ (A + Ab)


class FcrMethod(StrEnum):
    """How first-contact resolution is known (docs/domain.md §4)."""

    FLAGGED = "FLAGGED"  # the agent's flag on the first contact
    REPEAT_CONTACT = "REPEAT_CONTACT"  # inferred: no repeat contact within the repeat window


def _aware(name: str, t: datetime | None) -> None:
    if t is not None and (t.tzinfo is None or t.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware")


def _decimal(owner: object, name: str) -> None:
    v = getattr(owner, name)
    if isinstance(v, bool) or not isinstance(v, (Decimal, int)):
        raise TypeError(f"{name} must be a Decimal (never a float), got {type(v).__name__}")
    if not isinstance(v, Decimal):
        object.__setattr__(owner, name, Decimal(v))
    if getattr(owner, name) < 0:
        raise ValueError(f"{name} must not be negative")


class _KeepsRecord:
    """Where a call keeps its canonical JSON once encoded (`common.encoded`): a slot, so a call
    (a slotted dataclass) holds no dict — a contact centre's open month holds millions of them."""

    __slots__ = ("_accord_encoded_utc_record",)


@dataclass(frozen=True, slots=True)
class Call(_KeepsRecord):
    """One contact that entered the queue. At most one of `answered_at` / `abandoned_at`."""

    call_id: str
    entered_queue: datetime
    answered_at: datetime | None = None
    abandoned_at: datetime | None = None
    talk_seconds: Decimal = ZERO
    hold_seconds: Decimal = ZERO
    after_call_seconds: Decimal = ZERO
    customer_id: str = ""
    reason: str = ""
    resolved_first_contact: bool | None = None

    def __post_init__(self) -> None:
        entered, answered, abandoned = self.entered_queue, self.answered_at, self.abandoned_at
        # Each instant timezone-aware (`_aware`; one in UTC is, the usual case, told first).
        if entered is None or entered.tzinfo is not UTC:
            _aware("entered_queue", entered)
        if answered is not None and answered.tzinfo is not UTC:
            _aware("answered_at", answered)
        if abandoned is not None and abandoned.tzinfo is not UTC:
            _aware("abandoned_at", abandoned)
        if answered is not None and abandoned is not None:
            raise ValueError(f"call {self.call_id}: answered and abandoned")
        if answered is not None and answered < entered:
            raise ValueError(f"call {self.call_id}: answered before it entered the queue")
        if abandoned is not None and abandoned < entered:
            raise ValueError(f"call {self.call_id}: abandoned before it entered the queue")
        for name in ("talk_seconds", "hold_seconds", "after_call_seconds"):
            v = getattr(self, name)
            if type(v) is not Decimal:
                _decimal(self, name)
            elif v < 0:  # `_decimal` of a Decimal
                raise ValueError(f"{name} must not be negative")

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def abandoned(self) -> bool:
        return self.abandoned_at is not None

    @property
    def wait(self) -> timedelta | None:
        """Time in queue until answered or abandoned; None for a call that is neither."""
        end = self.answered_at if self.answered_at is not None else self.abandoned_at
        return None if end is None else end - self.entered_queue


# -- shared helpers -----------------------------------------------------------------------------
def utc_record(obj: Any) -> Any:
    """Inputs as plain data with every instant in UTC, so the digest depends on the instant and
    not on the offset it was written with; tuples of instants/intervals are sorted."""
    if isinstance(obj, datetime):
        return obj.astimezone(UTC)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: utc_record(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        items = [utc_record(v) for v in obj]
        if all(isinstance(v, (datetime, Interval)) for v in obj):
            return sorted(items, key=lambda v: (v["start"], v["end"]) if isinstance(v, dict) else v)
        return items
    return obj


def sorted_records(items: Iterable[Any], key: Callable[[Any], str], what: str) -> EncodedList:
    """The inputs as UTC records sorted by id, each as its canonical JSON (encoded once per
    input: `common.encoded`): what a formula digests, so arrival order does not matter. A
    repeated id is refused (so no two records tie)."""
    records: list[tuple[str, Encoded]] = []
    seen: set[str] = set()
    for item in items:
        k = key(item)
        if k in seen:
            raise ValueError(f"{what} {k!r} appears twice")
        seen.add(k)
        records.append((k, encoded(item, utc_record)))
    records.sort(key=lambda r: r[0])
    return EncodedList(r[1] for r in records)


def td_param(td: timedelta | None) -> str:
    """A duration as a parameter string: exact seconds, or "none"."""
    return "none" if td is None else str(seconds(td))


def instant_param(t: datetime | None) -> str:
    """An instant as a parameter string: ISO 8601 in UTC, or "none"."""
    return "none" if t is None else utc_iso(t)


def is_bucketed(formula: str, version: int) -> bool:
    """Whether this version of a contact formula digests its records bucketed."""
    return version >= (3 if formula == "contact.fcr" else 2)


def by_hour(formula: str, version: int) -> bool:
    """Whether this version of a contact formula digests its records bucketed in runs by the hour
    they arrived in (`common.hour_bucketed`): a call by its entry into the queue, a first contact's
    outcome by when it became known."""
    return version >= (5 if formula == "contact.fcr" else 4)


def by_arrival(formula: str, version: int) -> bool:
    """Whether this version of a contact formula digests its records in the order they arrived —
    a call by its entry into the queue, a first contact's outcome by when it became known, then
    by id — rather than by id alone."""
    return version >= (4 if formula == "contact.fcr" else 3)


# A call's place in the order of arrival: (its entry into the queue, its id); a first contact's
# outcome's: (when it became known, the first contact's id). Getters in C: a running form's
# bisections call them at every step.
arrival: Callable[[Call], tuple[datetime, str]] = attrgetter("entered_queue", "call_id")
decision: Callable[[FirstContactOutcome], tuple[datetime, str]] = attrgetter("decided", "call_id")


def _check_version(formula: str, version: int) -> None:
    kept = FCR_VERSIONS if formula == "contact.fcr" else VERSIONS
    if version not in kept:
        raise ValueError(f"{formula} has versions {kept}, not {version}")


def digest_payload(formula: str, version: int, inputs: list[Any], parameters: dict[str, str]) -> dict[str, Any]:
    """What a contact formula's input digest digests, `inputs` in the records' place (the sorted
    records, their bucketed form, or a running form's slot): a bucketed version names itself."""
    if is_bucketed(formula, version):
        return {"formula_id": formula, "formula_version": version, "inputs": inputs, "parameters": parameters}
    return {"inputs": inputs, "parameters": parameters}


def evaluated(
    formula: str,
    value: Decimal | None,
    parameters: dict[str, str],
    records: list[Any],
    detail: dict[str, str],
    undefined: str,
    extra: dict[str, Any] | None = None,
    version: int = 1,
    *,
    buckets: bool = False,
) -> Evaluated:
    """The result, with the digest of the sorted input records, the parameters and `extra`
    (e.g. a calendar's definition); `buckets`: the records bucketed (`digest_payload`)."""
    payload: dict[str, Any] = (
        digest_payload(formula, version, bucketed(records), parameters)
        if buckets
        else {"inputs": records, "parameters": parameters}
    )
    if extra:
        payload.update(extra)
    return Evaluated(
        formula_id=formula,
        formula_version=version,
        value=value,
        parameters=parameters,
        input_digest=digest(payload),
        detail=detail,
        undefined="" if value is not None else undefined,
    )


def _check_short(short_abandon: timedelta | None) -> None:
    if short_abandon is not None and short_abandon < timedelta(0):
        raise ValueError("the short-abandon threshold S must not be negative")


_CALL_FIELDS = tuple(sorted(f.name for f in dataclasses.fields(Call)))
# What `call_json` writes by concatenation, in this order (a field added to Call must be added there).
if _CALL_FIELDS != (
    "abandoned_at", "after_call_seconds", "answered_at", "call_id", "customer_id", "entered_queue", "hold_seconds",
    "reason", "resolved_first_contact", "talk_seconds",
):  # fmt: skip
    raise AssertionError(f"call_json writes other fields than a Call's: {_CALL_FIELDS}")


def call_json(c: Call) -> str:
    """A call's canonical JSON, written directly: exactly `canonical_json(utc_record(c))`
    (instants in UTC, ISO 8601; Decimals as strings; keys sorted), without the generic walk.
    A call of the usual types (str ids, Decimal seconds, aware datetimes, a flag or None) is
    written by concatenation — strings escaped by the very function `json.dumps` escapes them
    with, an instant's ISO form and a Decimal's string needing none; any other by `json.dumps`."""
    entered, answered, abandoned = c.entered_queue, c.answered_at, c.abandoned_at
    talk, hold, after = c.talk_seconds, c.hold_seconds, c.after_call_seconds
    call_id, customer, reason, resolved = c.call_id, c.customer_id, c.reason, c.resolved_first_contact
    if (
        type(call_id) is str and type(customer) is str and type(reason) is str
        and type(talk) is Decimal and type(hold) is Decimal and type(after) is Decimal
        and isinstance(entered, datetime)
        and (answered is None or isinstance(answered, datetime))
        and (abandoned is None or isinstance(abandoned, datetime))
        and (resolved is None or resolved is True or resolved is False)
    ):  # fmt: skip
        return (
            '{"abandoned_at":' + _instant_json(abandoned)
            + ',"after_call_seconds":"' + str(after)
            + '","answered_at":' + _instant_json(answered)
            + ',"call_id":' + _json_string(call_id)
            + ',"customer_id":' + _json_string(customer)
            + ',"entered_queue":"' + utc_iso(entered)
            + '","hold_seconds":"' + str(hold)
            + '","reason":' + _json_string(reason)
            + ',"resolved_first_contact":' + ("null" if resolved is None else "true" if resolved else "false")
            + ',"talk_seconds":"' + str(talk) + '"}'
        )  # fmt: skip
    record: dict[str, Any] = {}
    for name in _CALL_FIELDS:
        v = getattr(c, name)
        if isinstance(v, datetime):
            v = utc_iso(v)
        elif isinstance(v, Decimal):
            v = str(v)
        record[name] = v
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


_json_string = json.encoder.encode_basestring_ascii  # a str as `json.dumps` (ensure_ascii) writes it


def _instant_json(t: datetime | None) -> str:
    return "null" if t is None else '"' + utc_iso(t) + '"'


def _distinct_ids(calls: Sequence[Call]) -> list[str]:
    """The calls' ids; `ValueError` naming the first repeated (`sorted_records`') when one is."""
    ids = [c.call_id for c in calls]
    if len(set(ids)) != len(ids):
        sorted_records(calls, lambda c: c.call_id, "call")  # raises
    return ids


def _records(calls: Sequence[Call], in_arrival: bool = False) -> list[Any]:
    """The calls' records sorted by id, as `sorted_records` gives them (a repeated id refused) —
    `in_arrival`: by entry into the queue, then id (`arrival`)."""
    ids = _distinct_ids(calls)
    encs = encoded_all(calls, utc_record, call_json)
    if in_arrival:
        places = sorted(range(len(ids)), key=lambda i: arrival(calls[i]))
    else:
        places = sorted(range(len(ids)), key=ids.__getitem__)
    return EncodedList(encs[i] for i in places)


def _inputs(formula: str, version: int, calls: Sequence[Call]) -> list[Any]:
    """What a call formula's digest payload holds in the inputs' place, by its version: the
    records by id in one list (v1), bucketed by id (v2), bucketed in the order the calls arrived
    (v3), bucketed in that order in runs by the hour they arrived in (v4)."""
    if not by_hour(formula, version):
        records = _records(calls, by_arrival(formula, version))
        return bucketed(records) if is_bucketed(formula, version) else records
    # Encoded as they are hashed, not kept on the calls (as `_records` keeps them): a window's
    # formula at its close would otherwise leave a record on every call held (≈ 300 B a call).
    _distinct_ids(calls)
    ordered = calls if all(arrival(a) <= arrival(b) for a, b in pairwise(calls)) else sorted(calls, key=arrival)
    return hour_bucketed((hour_of(c.entered_queue), call_json(c)) for c in ordered)


# -- formulas ------------------------------------------------------------------------------------
def _calls_result(
    formula: str, version: int, value: Decimal | None, params: dict[str, str], inputs: list[Any],
    detail: dict[str, str], undefined: str,
) -> Evaluated:  # fmt: skip
    """The result, its digest that of `digest_payload` with `inputs` (`_inputs`) and the parameters."""
    return Evaluated(
        formula, version, value, params, digest(digest_payload(formula, version, inputs, params)), detail,
        "" if value is not None else undefined,
    )  # fmt: skip


def asa(calls: Sequence[Call], *, version: int = VERSION) -> Evaluated:
    """Average speed of answer, "contact.asa" v4 (docs/domain.md §4 "Contact centre"):
    Σ queue wait of answered calls ÷ A, in seconds. Zero waits count; abandoned calls
    (and calls neither answered nor abandoned) are excluded. A = 0 → undefined. v1 to v3: the same
    value, its calls digested otherwise (see `VERSIONS`)."""
    _check_version("contact.asa", version)
    records = _inputs("contact.asa", version, calls)
    answered = [c for c in calls if c.answered]
    total_wait = sum((seconds(c.wait) for c in answered if c.wait is not None), ZERO)
    detail = {"unit": "seconds", "answered": str(len(answered)), "total_wait_seconds": str(total_wait)}
    return _calls_result(
        "contact.asa", version, ratio(total_wait, len(answered)), {}, records, detail, "no answered call"
    )


def abandonment_rate(
    calls: Sequence[Call], short_abandon: timedelta | None = None, *, version: int = VERSION
) -> Evaluated:
    """Abandonment rate, "contact.abandonment_rate" v4 (docs/domain.md §4 "Contact centre"):
    (Ab − Ab<S) ÷ (O − Ab<S) × 100. With S set, calls abandoned with a wait < S are
    neither offered nor abandoned; with S None nothing is discounted. O − Ab<S = 0 → undefined.
    v1 to v3: the same value, its calls digested otherwise (see `VERSIONS`)."""
    _check_version("contact.abandonment_rate", version)
    records = _inputs("contact.abandonment_rate", version, calls)
    _check_short(short_abandon)
    offered = len(calls)
    waits = [c.wait for c in calls if c.abandoned and c.wait is not None]
    short = sum(1 for w in waits if short_abandon is not None and w < short_abandon)
    value = percent(len(waits) - short, offered - short)
    detail = {
        "unit": "percent",
        "offered": str(offered),
        "abandoned": str(len(waits)),
        "short_abandoned": str(short),
    }
    params = {"short_abandon_seconds": td_param(short_abandon)}
    return _calls_result("contact.abandonment_rate", version, value, params, records, detail, "no offered call")


def service_level_ratio(
    v: ServiceLevelVariant, answered: int, answered_within: int, counted: int, counted_within: int, short: int
) -> tuple[int, int]:
    """A service-level variant's numerator and denominator from its counts: answered calls and
    those within T, abandons counted (not short) and those within T, and short abandons (see
    `service_level`); shared with the running form (`formulas.running`)."""
    a, a_in, ab, ab_in = answered, answered_within, counted, counted_within
    if v is ServiceLevelVariant.ANSWERED_OVER_OFFERED:
        return a_in, a + ab
    if v is ServiceLevelVariant.ANSWERED_OVER_ANSWERED:
        return a_in, a
    if v is ServiceLevelVariant.ABANDONS_NEUTRAL:
        return a_in, a + ab - ab_in
    if v is ServiceLevelVariant.ABANDONS_SUCCESS:
        return a_in + ab_in, a + ab
    return a_in + short, a + ab + short


def service_level(
    calls: Sequence[Call],
    variant: ServiceLevelVariant | str,
    threshold: timedelta,
    short_abandon: timedelta | None = None,
    *,
    version: int = VERSION,
) -> Evaluated:
    """Service level / TSF ("X % within T"), "contact.service_level" v4 (docs/domain.md §4
    "Contact centre"), in the variant pinned by the objective, × 100:

    - ANSWERED_OVER_OFFERED   A≤T ÷ (A + Ab)
    - ANSWERED_OVER_ANSWERED  A≤T ÷ A
    - ABANDONS_NEUTRAL        A≤T ÷ (A + Ab>T)   (abandons within T leave the ratio)
    - ABANDONS_SUCCESS        (A≤T + Ab≤T) ÷ (A + Ab)
    - SHORT_ABANDONS_SUCCESS  (A≤T + Ab<S) ÷ (A + Ab)   (S required)

    "Within T" is wait ≤ T (inclusive); Ab<S is wait < S (exclusive). When S is set, the
    general rule applies to the first four variants: short abandons are neither offered
    nor abandoned, so they leave Ab, Ab≤T and Ab>T. SHORT_ABANDONS_SUCCESS is the variant
    that counts them as successes instead, so there Ab is every abandon (short ones
    included) — otherwise its numerator would name calls its denominator had dropped.
    A zero denominator → undefined. v1 to v3: the same value, its calls digested otherwise (see
    `VERSIONS`)."""
    _check_version("contact.service_level", version)
    records = _inputs("contact.service_level", version, calls)
    v = ServiceLevelVariant(variant)
    if threshold < timedelta(0):
        raise ValueError("the answer threshold T must not be negative")
    _check_short(short_abandon)
    if v is ServiceLevelVariant.SHORT_ABANDONS_SUCCESS and short_abandon is None:
        raise ValueError("SHORT_ABANDONS_SUCCESS needs the short-abandon threshold S")
    answered = [c.wait for c in calls if c.answered and c.wait is not None]
    abandoned = [c.wait for c in calls if c.abandoned and c.wait is not None]
    a = len(answered)
    a_in = sum(1 for w in answered if w <= threshold)
    short = [w for w in abandoned if short_abandon is not None and w < short_abandon]
    counted = [w for w in abandoned if short_abandon is None or w >= short_abandon]
    ab = len(counted)
    ab_in = sum(1 for w in counted if w <= threshold)
    ab_over = ab - ab_in
    num, den = service_level_ratio(v, a, a_in, ab, ab_in, len(short))
    detail = {
        "unit": "percent",
        "answered": str(a),
        "answered_within": str(a_in),
        "abandoned": str(len(abandoned)),
        "short_abandoned": str(len(short)),
        "abandoned_within": str(ab_in),
        "abandoned_after": str(ab_over),
        "other": str(len(calls) - a - len(abandoned)),
        "numerator": str(num),
        "denominator": str(den),
    }
    params = {
        "variant": v.value,
        "threshold_seconds": td_param(threshold),
        "short_abandon_seconds": td_param(short_abandon),
    }
    return _calls_result(
        "contact.service_level", version, percent(num, den), params, records, detail, "zero denominator"
    )


def first_contacts(contacts: Sequence[Call], repeat_window: timedelta = timedelta(days=7)) -> dict[str, list[str]]:
    """The episodes FCR is computed over: {first contact id: [its repeat contact ids]}.

    Only handled (answered) calls are contacts. Contacts are grouped by (customer_id,
    reason) and ordered by arrival (`entered_queue`, then call_id). The earliest is a first
    contact; every later contact of the group arriving within `repeat_window` of it
    (0 ≤ Δ ≤ window, inclusive) is a repeat of it; the first one after the window is the
    next first contact. Episodes are anchored at the first contact (not chained), so a
    customer calling every 6 days about one reason has a first contact every other call."""
    if repeat_window < timedelta(0):
        raise ValueError("the repeat window must not be negative")
    groups: dict[tuple[str, str], list[Call]] = {}
    for c in contacts:
        if c.answered:
            groups.setdefault((c.customer_id, c.reason), []).append(c)
    episodes: dict[str, list[str]] = {}
    for group in groups.values():
        group.sort(key=lambda c: (c.entered_queue, c.call_id))
        anchor: Call | None = None
        for c in group:
            if anchor is not None and c.entered_queue - anchor.entered_queue <= repeat_window:
                episodes[anchor.call_id].append(c.call_id)
            else:
                anchor = c
                episodes[c.call_id] = []
    return episodes


@dataclass(frozen=True, slots=True)
class FirstContactOutcome(_KeepsRecord):
    """One first contact as it decides a window ("contact.fcr" v2's digested record): the
    contact, the instant its outcome became known, whether it was resolved, the agent's flag
    (FLAGGED) and the repeat that decided it (REPEAT_CONTACT; "" when none came)."""

    call_id: str
    customer_id: str
    reason: str
    entered_queue: datetime
    decided: datetime
    resolved: bool
    flag: bool | None
    repeat_id: str


def outcome_json(o: FirstContactOutcome) -> str:
    """An outcome's record, `canonical_json(utc_record(o))`, not kept on it (v5's running form
    encodes a run's outcomes again when it changes, and holds no record)."""
    return canonical_json(utc_record(o))


def fcr_contacts(calls: Sequence[Call], method: FcrMethod | str) -> list[Call]:
    """The calls first-contact resolution by `method` is computed over: every call (FLAGGED), or
    those with a customer id (REPEAT_CONTACT: repeats are counted per customer, so a call without
    one — refused at intake since, see signals.proto — is no one's first contact)."""
    if FcrMethod(method) is FcrMethod.FLAGGED:
        return list(calls)
    return [c for c in calls if c.customer_id]


def outcome_of(
    first: Call, decided: datetime, resolved: bool, flag: bool | None, repeat_id: str
) -> FirstContactOutcome:
    """The outcome of `first` (its fields copied in): what `decide_group` makes for `group_outcomes`."""
    return FirstContactOutcome(
        first.call_id, first.customer_id, first.reason, first.entered_queue, decided, resolved, flag, repeat_id
    )


_Made = TypeVar("_Made")


def group_outcomes(
    group: Sequence[Call], method: FcrMethod, repeat_window: timedelta, window: Interval
) -> dict[str, FirstContactOutcome]:
    """ "contact.fcr" v2's outcomes of one customer and reason's contacts (answered, in
    `first_contacts`' order: arrival, then id) whose decision lies in `window`, by first contact
    id (`decide_group`)."""
    return decide_group(group, method, repeat_window, window, outcome_of)


def decide_group(
    group: Sequence[Call], method: FcrMethod, repeat_window: timedelta, window: Interval,
    make: Callable[[Call, datetime, bool, bool | None, str], _Made],
) -> dict[str, _Made]:  # fmt: skip
    """`group_outcomes`' rule, each outcome made by `make` from (first contact, decision,
    resolved, flag, repeat's id) — the rule `fcr` and its running form (`formulas/running.py`,
    `FcrTally`, which holds its outcomes otherwise) both apply."""
    by_repeat = method is FcrMethod.REPEAT_CONTACT
    anchor: Call | None = None
    first_repeat: dict[str, Call] = {}
    firsts: list[Call] = []
    for c in group:
        if anchor is not None and c.entered_queue - anchor.entered_queue <= repeat_window:
            first_repeat.setdefault(anchor.call_id, c)
        else:
            anchor = c
            firsts.append(c)
    out: dict[str, _Made] = {}
    for first in firsts:
        r = first_repeat.get(first.call_id) if by_repeat else None
        if not by_repeat:
            decided, ok = first.entered_queue, first.resolved_first_contact is True
        elif r is not None:
            decided, ok = r.entered_queue, False
        else:
            decided, ok = first.entered_queue + repeat_window, True
        if window.contains(decided):
            flag = None if by_repeat else first.resolved_first_contact
            out[first.call_id] = make(first, decided, ok, flag, "" if r is None else r.call_id)
    return out


def fcr(
    contacts: Sequence[Call],
    method: FcrMethod | str,
    repeat_window: timedelta = timedelta(days=7),
    *,
    window: Interval | None = None,
    as_of: datetime | None = None,
    version: int = FCR_VERSION,
) -> Evaluated:
    """First-contact resolution, "contact.fcr" v5 (docs/domain.md §4 "Contact centre"):
    first contacts resolved on first contact ÷ first contacts × 100, each first contact judged
    once, in the window in which its outcome became known.

    First contacts and repeats are as in `first_contacts` (handled calls only; the first
    of a customer+reason, and its repeats within `repeat_window`, inclusive). The instant a
    first contact's outcome becomes known (its *decision*):
    - FLAGGED: its own entry into the queue (the agent's flag is on it): resolved when
      `resolved_first_contact` is True; False or None (no flag) is not resolved (the
      unflagged are counted in detail).
    - REPEAT_CONTACT: the entry of its first repeat (not resolved), or, with no repeat, the
      end of its repeat window, `entered_queue + repeat_window` (resolved) — the last instant
      a repeat would still have been one (the window is inclusive).
    It counts in `window` (required) when its decision lies in it, [start, end), and, with
    `as_of`, before `as_of` (an open window: one whose decision is still ahead is `pending`).
    Pass every contact: those before the window decide first-ness, and a first contact from
    before the window may be decided in it. The input digest covers the outcomes of the first
    contacts counted (`FirstContactOutcome`), so a closed window's digest — and a restatement —
    changes only when one of its outcomes does, whatever contacts arrive later. v5 digests them
    bucketed in the order they became known (`decision`), each bucket in runs by the hour (UTC)
    they became known in (`common.hour_bucketed`); v4 bucketed in that order (`common.bucketed`),
    v3 bucketed by first contact's id, v2 in one list by id (all kept for the windows recorded
    with them).

    v1 (`version=1`, kept for the windows recorded with it): the first contacts that arrived
    in `window` (all, without one), each as of `as_of` — REPEAT_CONTACT: one without a repeat
    whose repeat window is still open then (arrival + window > as_of) is pending and left
    out, so a closed window never counted the first contacts of its last repeat-window's
    days that had no repeat; the digest covers every contact passed. No first contact →
    undefined."""
    _check_version("contact.fcr", version)
    m = FcrMethod(method)
    _aware("as_of", as_of)
    if version == 1:
        return _fcr_v1(contacts, m, repeat_window, window, as_of)
    if window is None:
        raise ValueError(f"contact.fcr v{version} judges a window: pass it")
    if repeat_window < timedelta(0):
        raise ValueError("the repeat window must not be negative")
    groups: dict[tuple[str, str], list[Call]] = {}
    seen: set[str] = set()
    for c in contacts:
        if c.call_id in seen:
            raise ValueError(f"call {c.call_id!r} appears twice")
        seen.add(c.call_id)
        if c.answered:
            groups.setdefault((c.customer_id, c.reason), []).append(c)
    counted: list[FirstContactOutcome] = []
    pending = 0
    for group in groups.values():
        group.sort(key=lambda c: (c.entered_queue, c.call_id))
        for outcome in group_outcomes(group, m, repeat_window, window).values():
            if as_of is not None and outcome.decided >= as_of:
                pending += 1
            else:
                counted.append(outcome)
    resolved = sum(1 for o in counted if o.resolved)
    detail = {
        "unit": "percent",
        "first_contacts": str(len(counted)),
        "resolved": str(resolved),
        "repeated": str(sum(1 for o in counted if o.repeat_id)),
        "pending": str(pending),
        "unflagged": str(sum(1 for o in counted if m is FcrMethod.FLAGGED and o.flag is None)),
    }
    params = _fcr_params(m, repeat_window, window, as_of)
    value = percent(resolved, len(counted))
    if by_hour("contact.fcr", version):  # in the order they became known, in runs by that hour
        ordered = sorted(counted, key=decision)
        inputs = hour_bucketed((hour_of(o.decided), outcome_json(o)) for o in ordered)
        return _calls_result("contact.fcr", version, value, params, inputs, detail, "no first contact")
    if by_arrival("contact.fcr", version):  # the outcomes are of distinct first contacts
        records: list[Any] = EncodedList(encoded(o, utc_record) for o in sorted(counted, key=decision))
    else:
        records = sorted_records(counted, lambda o: o.call_id, "first contact")
    return evaluated(
        "contact.fcr",
        value,
        params,
        records,
        detail,
        "no first contact",
        version=version,
        buckets=is_bucketed("contact.fcr", version),
    )


def _fcr_params(
    m: FcrMethod, repeat_window: timedelta, window: Interval | None, as_of: datetime | None
) -> dict[str, str]:
    return {
        "method": m.value,
        "repeat_window_seconds": td_param(repeat_window),
        "window_start": instant_param(None if window is None else window.start),
        "window_end": instant_param(None if window is None else window.end),
        "as_of": instant_param(as_of),
    }


def _fcr_v1(
    contacts: Sequence[Call], m: FcrMethod, repeat_window: timedelta, window: Interval | None, as_of: datetime | None
) -> Evaluated:
    """ "contact.fcr" v1 (see `fcr`): the first contacts that arrived in the window, as of `as_of`."""
    records = _records(contacts)
    episodes = first_contacts(contacts, repeat_window)
    by_id = {c.call_id: c for c in contacts}
    resolved = denominator = pending = unflagged = 0
    for first_id, repeats in episodes.items():
        first = by_id[first_id]
        if window is not None and not window.contains(first.entered_queue):
            continue
        if m is FcrMethod.FLAGGED:
            ok = first.resolved_first_contact is True
            unflagged += first.resolved_first_contact is None
        else:
            if not repeats and as_of is not None and first.entered_queue + repeat_window > as_of:
                pending += 1
                continue
            ok = not repeats
        denominator += 1
        resolved += ok
    detail = {
        "unit": "percent",
        "first_contacts": str(denominator),
        "resolved": str(resolved),
        "pending": str(pending),
        "unflagged": str(unflagged),
        "repeat_contacts": str(sum(len(r) for r in episodes.values())),
    }
    params = _fcr_params(m, repeat_window, window, as_of)
    return evaluated(
        "contact.fcr", percent(resolved, denominator), params, records, detail, "no first contact", version=1
    )


def aht(calls: Sequence[Call], *, version: int = VERSION) -> Evaluated:
    """Average handle time, "contact.aht" v4 (docs/domain.md §4 "Contact centre"):
    (talk + hold + after-call work) ÷ handled contacts, in seconds. Handled contacts are
    the answered calls; only their times are summed. No handled contact → undefined.
    v1 to v3: the same value, its calls digested otherwise (see `VERSIONS`)."""
    _check_version("contact.aht", version)
    records = _inputs("contact.aht", version, calls)
    handled = [c for c in calls if c.answered]
    work = sum((c.talk_seconds + c.hold_seconds + c.after_call_seconds for c in handled), ZERO)
    detail = {"unit": "seconds", "handled": str(len(handled)), "total_handle_seconds": str(work)}
    return _calls_result("contact.aht", version, ratio(work, len(handled)), {}, records, detail, "no handled contact")
