"""Billing's main path (docs/domain.md §5), as pure functions: the assessment billing records
for one metrics evaluation (the kit's typed `Evaluation`), which fee period a window is billed
in, the window a period waits for, the assessment that counts for a period (the worst window
per objective) and the period's totals.

Nothing here reads a store, a clock or the network; the application and the audit use it alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from google.protobuf import json_format

from accord_billing.assessment import CREDIT, REWARD, Line, Money, Totals, assess, statement_totals
from accord_kit.evaluation import BILLING_FIELDS, Evaluation
from accord_kit.timeline import calendar_window


def parse_instant(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)


def line_dict(line: Line) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "amount": str(line.amount.amount),
        "derivation": line.derivation,
        "applied": line.applied,
        "band": line.band,
    }


def fee_period(terms: Mapping[str, Any], instant: datetime) -> tuple[str, str]:
    """(start, end) of the fee period holding `instant`, in the terms' time zone (RFC 3339)."""
    kind = ((terms.get("fee") or {}).get("period") or "FEE_PERIOD_MONTH").removeprefix("FEE_PERIOD_")
    p = calendar_window(kind, instant, terms.get("time_zone") or "UTC")
    return p.start.isoformat(), p.end.isoformat()


EPSILON = timedelta(microseconds=1)
BREACHED_STATUS = "BREACHED"

# The rule a statement's money is computed by (its `fee_basis`, recorded when it is opened and
# on each of its assessments; events recorded before it existed read as 1). A statement keeps
# the rule it was opened with, so an issued statement re-derives as it was computed; new
# statements take the current one (services/billing/README.md, "How money is made").
#   1: the whole fee for every fee period the agreement is in term for any part of (less
#      suspended time and amendments' shares); percentage credits and the cap on the terms' fee.
#   2: the fee only for the time the agreement is in its term (a period it starts or ends
#      inside is charged its share); percentage credits and the cap on the fee the period
#      charges under the window's version: its fee × the charged share of the period.
FEE_BASES = (1, 2)
FEE_BASIS = 2


def charged_parts(
    period: tuple[datetime, datetime],
    cuts: Iterable[datetime],
    started: datetime,
    ended: datetime | None,
    suspensions: Iterable[tuple[datetime, datetime | None]],
    fee_basis: int,
) -> list[tuple[datetime, datetime, timedelta]]:
    """A fee period split at `cuts` (the instants its terms change) into parts (a, b, charged),
    `charged` the part's time that is charged: not suspended and (rule 2) within the agreement's
    term [started, ended). Rule 1 charges a part's time whether or not the agreement was in its
    term then (the whole period, as billing did before rule 2). The one computation of the
    period's charged time: its fee (`Billing.period_fee`) and its charged share (`charged_share`,
    what percentage credits and the cap are computed on) are both made from it."""
    start, end = period
    points = sorted({start, *(t for t in cuts if start < t < end)})
    held = list(suspensions)
    out: list[tuple[datetime, datetime, timedelta]] = []
    for a, b in zip(points, [*points[1:], end], strict=True):
        lo, hi = (max(a, started), min(b, ended) if ended is not None else b) if fee_basis >= 2 else (a, b)
        charged = max(hi - lo, timedelta(0))
        for since, until in held:
            s_lo, s_hi = max(lo, since), min(hi, until if until is not None else hi)
            charged -= max(s_hi - s_lo, timedelta(0))
        out.append((a, b, charged))
    return out


def seconds(t: timedelta) -> Fraction:
    """A duration in seconds, exactly."""
    return Fraction(t.days * 86400 + t.seconds) + Fraction(t.microseconds, 1_000_000)


def charged_share(
    period: tuple[datetime, datetime],
    started: datetime,
    ended: datetime | None,
    suspensions: Iterable[tuple[datetime, datetime | None]],
) -> Fraction:
    """The share of the fee period charged under rule 2: its time in the agreement's term and
    not suspended ÷ its time (1 for a whole period in term and never suspended)."""
    parts = charged_parts(period, (), started, ended, suspensions, 2)
    return sum((seconds(c) for _, _, c in parts), Fraction(0)) / seconds(period[1] - period[0])


def version_at(versions: Sequence[Mapping[str, Any]], when: datetime) -> Mapping[str, Any]:
    """The version in force at `when` (the latest whose effective_from is not after it; the
    first before any), as metrics picks the version that judges a window."""
    found = versions[0]
    for v in versions:
        if parse_instant(v["effective_from"]) <= when:
            found = v
    return found


def billed_instant(window_start: str, window_end: str, started: datetime, ended: datetime | None) -> datetime | None:
    """The instant whose fee period a closed window is billed in: its last instant (a window
    belongs to the period it closes in — a rolling window judged at a period's last
    midnight is that period's), kept within the agreement's term [started, ended). None for
    a window wholly outside the term (before the start, or from the end on)."""
    start, end = parse_instant(window_start), parse_instant(window_end)
    if end <= started or (ended is not None and start >= ended):
        return None
    instant = end - EPSILON
    if ended is not None:
        instant = min(instant, ended - EPSILON)
    return max(instant, started)


def window_end_of(objective: Mapping[str, Any], window_start: str, time_zone: str) -> str:
    """The end of the objective's window that starts at `window_start` (as metrics makes
    them: rolling N days, else the calendar window holding the start)."""
    w = objective.get("window") or {}
    kind = (w.get("kind") or "WINDOW_KIND_MONTH").removeprefix("WINDOW_KIND_")
    start = parse_instant(window_start)
    if kind == "ROLLING":
        return (start + timedelta(days=int(w.get("rolling_days") or 30))).isoformat()
    return calendar_window(kind, start, time_zone).end.isoformat()


def required_window(
    objective: Mapping[str, Any],
    time_zone: str,
    period: tuple[str, str],
    started: datetime,
    ended: datetime | None,
) -> tuple[datetime, datetime] | None:
    """What must have been received of an objective before its fee period `period` may be
    issued: (R, J) — a closed window ending at or after R (windows of an objective close in
    order, so every window ending by R is then known), judged by the version in force at J
    (if that version lacks the objective, metrics judges no such window). None when the
    period needs no window of it (every window ending in the period started before the
    agreement did)."""
    period_start, period_end = parse_instant(period[0]), parse_instant(period[1])
    holds_end = ended is not None and ended <= period_end
    cover = ended if ended is not None and holds_end else period_end
    if cover <= started or cover <= period_start:
        return None
    w = objective.get("window") or {}
    kind = (w.get("kind") or "WINDOW_KIND_MONTH").removeprefix("WINDOW_KIND_")

    def holding(instant: datetime) -> tuple[datetime, datetime]:
        if kind == "ROLLING":
            day = calendar_window("DAY", instant, time_zone)
            return day.end - timedelta(days=int(w.get("rolling_days") or 30)), day.end
        c = calendar_window(kind, instant, time_zone)
        return c.start, c.end

    w_start, w_end = holding(cover - EPSILON)
    if holds_end or w_end <= period_end:
        return w_end, max(w_start, started)
    # The window holding the period's end closes in a later period: the one before it is
    # the last this period holds.
    if w_start <= started or w_start <= period_start:
        return None
    previous_start, _ = holding(w_start - EPSILON)
    return w_start, max(previous_start, started)


def period_assessments(records: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The assessments that count for one fee period: per objective, ONE — the worst of the
    windows billed in the period: the highest net (what the provider owes most), then a
    BREACHED status, then the latest window. `records`: "<objective>|<window start>" → the
    assessment record. Ordered by objective."""
    return [record for _, record in _counting(records)]


def _counting(records: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """`period_assessments` with each record's key."""
    best: dict[str, tuple[tuple[Decimal, bool, datetime], str, Mapping[str, Any]]] = {}
    for key, record in records.items():
        objective_id, window_start = key.split("|", 1)
        rank = (
            Decimal(str(record["net"])),
            record.get("status") == BREACHED_STATUS,
            parse_instant(window_start),
        )
        if objective_id not in best or rank > best[objective_id][0]:
            best[objective_id] = (rank, key, record)
    return [(best[o][1], best[o][2]) for o in sorted(best)]


def period_totals(
    records: Mapping[str, Mapping[str, Any]], currency: str, settled: Mapping[str, Money] | None = None
) -> Totals:
    """A fee period's totals (cap, minimum, rewards) over the assessments that count
    (`period_assessments`), under the fee and consequences of its earliest window's terms.
    `settled`: assessment key → the amount an accepted dispute set for it; that assessment
    then counts as that one amount (a credit, or a reward when negative) under the same cap
    and minimum, so a dispute can never take back more than the period credited."""
    chosen = _counting(records)
    first = min(records.items(), key=lambda kv: parse_instant(kv[0].split("|", 1)[1]))[1] if records else None
    fee = first["fee"] if first else {"amount": "0", "currency": currency}
    consequences = first["consequences"] if first else {}
    assessments = []
    for key, a in chosen:
        assessed = assess(a["objective"], a["evaluation"], a["fee"], a["consequences"], share=record_share(a))
        if settled and key in settled:
            amount = settled[key]
            line = Line(
                kind=CREDIT if amount.amount >= 0 else REWARD,
                amount=amount,
                derivation=f"set by an accepted dispute: {amount}",
            )
            assessed = replace(assessed, band=None, lines=(line,))
        assessments.append(assessed)
    return statement_totals(assessments, consequences, fee, share=record_share(first) if first else None)


def record_share(record: Mapping[str, Any]) -> Fraction | None:
    """The charged share of its period an assessment record's percentages were computed on
    (rule 2), or None: computed on the terms' fee (rule 1, every record made before rule 2)."""
    if int(record.get("fee_basis") or 1) < 2:
        return None
    return Fraction(str(record["charged_share"]))


def assessed_record(
    terms: Mapping[str, Any], version: int, evaluation: Evaluation, share: Fraction | None = None
) -> dict[str, Any] | None:
    """The assessment billing records for one closed window judged by `version` (whose terms
    are `terms`), or None when those terms do not bill it (an objective they do not name,
    e.g. an inherited one, or no fee). `share`: the charged share of the period the window is
    billed in (`charged_share`) when its statement computes by rule 2 — its percentage
    credits are then of the version's fee × that share, and the record says so (`fee_basis`
    2, `charged_share`); None: rule 1, on the terms' fee (the record as rule 1 made it)."""
    objective = next(
        (o for o in terms.get("objectives") or [] if o.get("objective_id") == evaluation.objective_id), None
    )
    fee = terms.get("fee") or {}
    if objective is None or not fee:
        return None
    consequences = terms.get("consequences") or {}
    return _record(objective, evaluation.to_record(BILLING_FIELDS), fee, consequences, version, share)


def on_share(record: Mapping[str, Any], share: Fraction) -> dict[str, Any]:
    """A rule-2 assessment record assessed again, on the same terms and evaluation, with the
    period's charged share `share` (the agreement was suspended, resumed or ended after the
    window was assessed)."""
    return _record(record["objective"], record["evaluation"], record["fee"], record["consequences"],
                   record["version"], share)  # fmt: skip


def _record(
    objective: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    fee: Mapping[str, Any],
    consequences: Mapping[str, Any],
    version: int,
    share: Fraction | None,
) -> dict[str, Any]:
    a = assess(objective, evaluation, fee, consequences, share=share)
    basis = {} if share is None else {"fee_basis": 2, "charged_share": str(share)}
    return {
        **basis,
        "objective": objective,
        "evaluation": evaluation,
        "fee": fee,
        "consequences": consequences,
        "version": version,
        "status": a.status,
        "value": "" if a.value is None else str(a.value),
        "band": a.band,
        "lines": [line_dict(line) for line in a.lines],
        "net": str(a.net.amount),
        "notes": list(a.notes),
    }


def terms_dict(msg: Any) -> dict[str, Any]:
    """accord.agreements.v1.AgreementTerms in canonical JSON form (proto field names)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)
