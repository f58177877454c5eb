"""Billing's audit (docs/domain.md §6), as pure functions: re-deriving every assessment from the
upstream logs and comparing it with what billing recorded, pricing a what-if, and a fee
period on both time axes (as known at T, as effective now).

Nothing here reads a store, a clock or the network: the application hands in the upstream
envelopes, billing's statements and the recording times, so each function is tested on
exactly the data it is given."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
from accord_billing.assessment import (
    Assessment,
    AssessmentError,
    CurrencyMismatchError,
    Money,
    Totals,
    assess,
    describe_band,
    statement_totals,
)
from accord_billing.domain import OPEN, Statement
from accord_billing.periods import (
    BREACHED_STATUS,
    EPSILON,
    FEE_BASIS,
    assessed_record,
    billed_instant,
    charged_share,
    fee_period,
    parse_instant,
    record_share,
    terms_dict,
    version_at,
)
from accord_kit.agreement_terms import effective_terms, state_change_at
from accord_kit.evaluation import Evaluation, as_record

ACCEPTED_TYPES = (
    agreement_events.AgreementAccepted.DESCRIPTOR.full_name,
    agreement_events.AmendmentAccepted.DESCRIPTOR.full_name,
)
CLOSED_TYPES = (
    metric_events.WindowClosed.DESCRIPTOR.full_name,
    metric_events.EvaluationRestated.DESCRIPTOR.full_name,
)
PROGRESS_EVERY = 100  # windows between two progress reports


class UpstreamLogError(Exception):
    """An upstream service's log could not be read (the re-derivation cannot be done now)."""


WindowKey = tuple[str, str, str]  # agreement id, objective id, window start (as the evaluation states it)


# -- re-derivation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One window where the re-derivation and billing's record disagree, or only one has it."""

    agreement_id: str
    objective_id: str
    window_start: str
    recorded_net: str  # "" when billing recorded nothing
    rederived_net: str  # "" when there is nothing (or nothing possible) to re-derive
    currency: str
    differences: tuple[str, ...]
    statement_id: str


@dataclass
class Rederivation:
    checked: int = 0
    mismatches: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    unexplained: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class _Recorded:
    net: str
    assessment: dict[str, Any] | None  # None: an adjustment recorded before adjustments kept theirs
    statement: Statement
    via_adjustment: bool


def agreement_versions(envelopes: Iterable[events_pb2.EventEnvelope]) -> dict[str, dict[int, dict[str, Any]]]:
    """agreement id → version → its terms, from the agreements log's accepted versions."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for env in envelopes:
        if env.type not in ACCEPTED_TYPES:
            continue
        msg: Any = (
            agreement_events.AgreementAccepted()
            if env.type == ACCEPTED_TYPES[0]
            else agreement_events.AmendmentAccepted()
        )
        env.payload.Unpack(msg)
        out.setdefault(msg.agreement_id, {})[msg.version] = terms_dict(msg.terms)
    return out


@dataclass(frozen=True)
class AgreementLog:
    """One agreement as the agreements log states it: its accepted versions (number,
    effective_from, own terms), its end, if any, and its suspensions ([suspended, resumed),
    None while under way), each dated as billing and metrics date them (`state_change_at`)."""

    versions: tuple[dict[str, Any], ...]
    ended: datetime | None
    suspensions: tuple[tuple[datetime, datetime | None], ...] = ()

    def charged_share(self, period_start: str, period_end: str) -> Fraction:
        """The share of a fee period charged under rule 2 (`periods.charged_share`)."""
        period = (parse_instant(period_start), parse_instant(period_end))
        return charged_share(period, self.started, self.ended, self.suspensions)

    @property
    def started(self) -> datetime:
        return parse_instant(self.versions[0]["effective_from"])


ENDED_TYPES = (
    agreement_events.AgreementTerminated.DESCRIPTOR.full_name,
    agreement_events.AgreementExpired.DESCRIPTOR.full_name,
)
STATE_TYPES = (
    agreement_events.AgreementSuspended.DESCRIPTOR.full_name,
    agreement_events.AgreementResumed.DESCRIPTOR.full_name,
)


def agreement_logs(envelopes: Iterable[events_pb2.EventEnvelope]) -> dict[str, AgreementLog]:
    """agreement id → its accepted versions and end, from the agreements log."""
    versions: dict[str, dict[int, dict[str, Any]]] = {}
    ended: dict[str, datetime] = {}
    suspended: dict[str, list[list[datetime | None]]] = {}
    for env in sorted(envelopes, key=lambda e: e.position):
        if env.type in ACCEPTED_TYPES:
            msg: Any = (
                agreement_events.AgreementAccepted()
                if env.type == ACCEPTED_TYPES[0]
                else agreement_events.AmendmentAccepted()
            )
            env.payload.Unpack(msg)
            versions.setdefault(msg.agreement_id, {})[msg.version] = {
                "version": msg.version,
                "effective_from": msg.effective_from.ToDatetime(tzinfo=UTC).isoformat(),
                "terms": terms_dict(msg.terms),
            }
        elif env.type in ENDED_TYPES:
            end: Any = (
                agreement_events.AgreementTerminated()
                if env.type == ENDED_TYPES[0]
                else agreement_events.AgreementExpired()
            )
            env.payload.Unpack(end)
            when = end.effective_at if env.type == ENDED_TYPES[0] else end.at
            ended.setdefault(end.agreement_id, when.ToDatetime(tzinfo=UTC))
        elif env.type in STATE_TYPES:
            change: Any = (
                agreement_events.AgreementSuspended()
                if env.type == STATE_TYPES[0]
                else agreement_events.AgreementResumed()
            )
            env.payload.Unpack(change)
            spans = suspended.setdefault(change.agreement_id, [])
            at = state_change_at(env, change)
            if env.type == STATE_TYPES[0] and (not spans or spans[-1][1] is not None):
                spans.append([at, None])
            elif env.type == STATE_TYPES[1] and spans and spans[-1][1] is None:
                spans[-1][1] = at
    return {
        aid: AgreementLog(
            tuple(v[n] for n in sorted(v)),
            ended.get(aid),
            tuple((a, b) for a, b in suspended.get(aid, []) if a is not None),
        )
        for aid, v in versions.items()
    }


def effective_at(
    logs: Mapping[str, AgreementLog], terms: dict[str, Any], when: datetime, depth: int = 0
) -> dict[str, Any]:
    """`terms` merged with their parent chain as in force at `when` (the kit's rule)."""
    parent = logs.get(terms.get("parent_agreement_id") or "")
    if parent is None or depth > 8:
        return terms
    parent_terms = effective_at(logs, dict(version_at(parent.versions, when)["terms"]), when, depth + 1)
    return effective_terms(parent_terms, terms)


def latest_evaluations(envelopes: Iterable[events_pb2.EventEnvelope]) -> dict[WindowKey, metric_events.Evaluation]:
    """The latest closed evaluation of every window in the metrics log: the closing one, or
    the last restatement's new evaluation (log order)."""
    out: dict[WindowKey, metric_events.Evaluation] = {}
    for env in sorted(envelopes, key=lambda e: e.position):
        if env.type == CLOSED_TYPES[0]:
            closed = metric_events.WindowClosed()
            env.payload.Unpack(closed)
            e = closed.evaluation
        elif env.type == CLOSED_TYPES[1]:
            restated = metric_events.EvaluationRestated()
            env.payload.Unpack(restated)
            e = restated.new
        else:
            continue
        out[(e.agreement_id, e.objective_id, e.window_start)] = e
    return out


def _key(agreement_id: str, key: str) -> WindowKey:
    objective_id, window_start = key.split("|", 1)
    return agreement_id, objective_id, window_start


def recorded_windows(statements: Iterable[Statement]) -> dict[WindowKey, _Recorded]:
    """What billing recorded for each window: the latest adjustment of it (statements in
    period order, adjustments in the order recorded), else its assessment."""
    out: dict[WindowKey, _Recorded] = {}
    ordered = sorted(statements, key=lambda s: (s.agreement_id, parse_instant(s.period_start)))
    for s in ordered:
        for key, a in s.assessments.items():
            out.setdefault(_key(s.agreement_id, key), _Recorded(a["net"], a, s, False))
    for s in ordered:
        for adj in s.adjustments:
            out[_key(s.agreement_id, adj["key"])] = _Recorded(adj["new"], adj.get("assessment"), s, True)
    return out


def rederive(
    metrics: Iterable[events_pb2.EventEnvelope],
    agreements: Iterable[events_pb2.EventEnvelope],
    statements: Iterable[Statement],
    agreement_id: str = "",
    progress: Callable[[int], None] | None = None,
) -> Rederivation:
    """Re-assess every window the metrics log closed (its latest evaluation) under the terms,
    from the agreements log, of the version that judged it, and compare with billing's
    `statements`: net, status, band, lines, the evaluation's value and digest, the version,
    and the statement it is on. `agreement_id` limits it to one agreement; `progress` is
    called with the number of windows checked so far."""
    logs = agreement_logs(agreements)
    versions = {aid: {v["version"]: v["terms"] for v in log.versions} for aid, log in logs.items()}
    evaluations = latest_evaluations(metrics)
    wanted = [s for s in statements if not agreement_id or s.agreement_id == agreement_id]
    records = recorded_windows(wanted)
    result = Rederivation()
    seen: set[WindowKey] = set()
    for key, msg in sorted(evaluations.items()):
        aid, oid, start = key
        if agreement_id and aid != agreement_id:
            continue
        seen.add(key)
        rec = records.get(key)
        terms = versions.get(aid, {}).get(msg.agreement_version)
        if terms is None:
            # No terms to judge it by. Unless billing recorded it or knows the agreement, it is
            # an agreement that was never accepted: nothing was to be billed.
            if rec is not None or aid in versions:
                why = (
                    f"agreement {aid} is not in the agreements log"
                    if aid not in versions
                    else f"version {msg.agreement_version} of agreement {aid} is not in the agreements log"
                )
                result.mismatches.append(_finding(key, rec, "", "", (f"cannot re-derive: {why}",)))
            continue
        log = logs[aid]
        instant = billed_instant(msg.window_start, msg.window_end, log.started, log.ended)
        if instant is None:  # outside the agreement's term: nothing is billed
            if rec is not None:
                result.unexplained.append(_finding(key, rec, "", "", ("the window lies outside the agreement's term",)))
            continue
        terms = effective_at(logs, terms, max(parse_instant(start), log.started))
        in_force = effective_at(logs, dict(version_at(log.versions, instant)["terms"]), instant)
        period_start, period_end = fee_period(in_force, instant)
        # The rule the window was computed by, as billing recorded it (rule 1 for a record made
        # before rule 2: it carries none); a window billing never recorded, the current rule.
        basis = int((rec.assessment or {}).get("fee_basis") or 1) if rec is not None else FEE_BASIS
        share = log.charged_share(period_start, period_end) if basis >= 2 else None
        if share is not None and rec is not None and rec.assessment and _provisional(rec):
            # An open statement's windows are on the share known when each was assessed (a
            # suspension or an end later in the period changes it): provisional, like its totals;
            # the issue assesses them again on the period's share, which is then held to the log.
            share = record_share(rec.assessment)
        try:
            expected = assessed_record(terms, msg.agreement_version, Evaluation.from_message(msg), share)
        except AssessmentError as e:
            result.mismatches.append(_finding(key, rec, "", "", (f"cannot re-derive: {e}",)))
            continue
        if expected is None:
            if rec is not None:
                result.unexplained.append(
                    _finding(key, rec, "", "", (f"version {msg.agreement_version}'s terms do not bill {oid!r}",))
                )
            continue
        result.checked += 1
        if progress is not None and result.checked % PROGRESS_EVERY == 0:
            progress(result.checked)
        currency = expected["fee"].get("currency", "")
        statement_id = str(Statement.create_id(aid, period_start))
        if rec is None:
            result.missing.append(
                Finding(aid, oid, start, "", expected["net"], currency, ("billing recorded nothing",), statement_id)
            )
            continue
        differences = compare(rec, expected, statement_id)
        if differences:
            result.mismatches.append(_finding(key, rec, expected["net"], currency, differences))
    for key, rec in sorted(records.items()):
        if key not in seen:
            result.unexplained.append(_finding(key, rec, "", "", ("no closed window in the metrics log",)))
    if progress is not None:
        progress(result.checked)
    return result


def _provisional(rec: _Recorded) -> bool:
    """Billing's record of a window is on a statement still OPEN (not an adjustment)."""
    return not rec.via_adjustment and rec.statement.state == OPEN


def _finding(
    key: WindowKey, rec: _Recorded | None, rederived: str, currency: str, differences: tuple[str, ...]
) -> Finding:
    return Finding(
        key[0],
        key[1],
        key[2],
        rec.net if rec else "",
        rederived,
        currency or (rec.statement.currency if rec else ""),
        differences,
        str(rec.statement.id) if rec else "",
    )


def compare(rec: _Recorded, expected: dict[str, Any], statement_id: str) -> tuple[str, ...]:
    """What differs between billing's record of a window and its re-derivation."""
    out: list[str] = []
    if _decimal(rec.net) != _decimal(expected["net"]):
        out.append(f"net: recorded {rec.net}, rederived {expected['net']}")
    if not rec.via_adjustment and str(rec.statement.id) != statement_id:
        out.append(
            f"statement: recorded on {rec.statement.id} (period from {rec.statement.period_start}),"
            f" rederived {statement_id}"
        )
    a = rec.assessment
    if a is None:
        return tuple(out)  # an old adjustment keeps only its amounts: the net is all there is to compare
    basis, kept = int(a.get("fee_basis") or 1), int(getattr(rec.statement, "fee_basis", 1))
    if not rec.via_adjustment and basis != kept:
        out.append(f"fee basis: recorded by rule {basis} on a statement computed by rule {kept}")
    if a.get("charged_share") != expected.get("charged_share"):
        recorded, rederived = (
            a.get("charged_share") or "none (rule 1)",
            expected.get("charged_share") or "none (rule 1)",
        )
        out.append(f"charged share of the period: recorded {recorded}, rederived {rederived}")
    if a.get("status") != expected["status"]:
        out.append(f"status: recorded {a.get('status')}, rederived {expected['status']}")
    if (a.get("band") or None) != (expected["band"] or None):
        out.append(f"band: recorded {_band(a.get('band'))}, rederived {_band(expected['band'])}")
    recorded_lines, expected_lines = _lines(a.get("lines") or []), _lines(expected["lines"])
    if recorded_lines != expected_lines:
        out.append(f"lines: recorded {_lines_text(recorded_lines)}, rederived {_lines_text(expected_lines)}")
    evaluation = a.get("evaluation") or {}
    if str(evaluation.get("value", "")) != expected["evaluation"]["value"]:
        value = expected["evaluation"]["value"]
        out.append(f"evaluation value: recorded {evaluation.get('value')!r}, metrics {value!r}")
    if evaluation.get("input_digest", "") != expected["evaluation"]["input_digest"]:
        out.append("evaluation input digest: billing's copy differs from the metrics log's")
    if a.get("version") != expected["version"]:
        out.append(f"agreement version: recorded {a.get('version')}, rederived {expected['version']}")
    return tuple(out)


def _decimal(raw: Any) -> Decimal | None:
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        return None


def _band(band: Mapping[str, Any] | None) -> str:
    return describe_band(band) if band else "none"


def _lines(lines: Sequence[Mapping[str, Any]]) -> list[tuple[str, Decimal | None, bool, str]]:
    return [
        (x["kind"], _decimal(x["amount"]), bool(x.get("applied")), json.dumps(x.get("band"), sort_keys=True))
        for x in lines
    ]


def _lines_text(lines: list[tuple[str, Decimal | None, bool, str]]) -> str:
    items = (f"{k} {amount}{'' if applied else ' (not applied)'}" for k, amount, applied, _ in lines)
    return "[" + ", ".join(items) + "]"


# -- what-if pricing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricedWindow:
    objective_id: str
    window_start: str
    period_start: str
    assessment: Assessment


@dataclass(frozen=True)
class PricedPeriod:
    period_start: str
    period_end: str
    totals: Totals


@dataclass(frozen=True)
class Pricing:
    currency: str
    windows: tuple[PricedWindow, ...]
    periods: tuple[PricedPeriod, ...]
    total: Money


def price(
    terms: Mapping[str, Any],
    evaluations: Sequence[Evaluation | Mapping[str, Any]],
    currency: str,
    share_of: Callable[[str, str], Fraction | None] | None = None,
) -> Pricing:
    """Closed `evaluations` (typed, or as their records) priced under `terms`: each
    window assessed, then each fee period's totals (one assessment per objective: its worst
    window of the period, as on a statement; cap, minimum, rewards), then the sum.
    `currency` is the agreement's: terms with another fee currency are refused. `share_of`:
    (period start, end) → the share of that period its fee is charged for, that percentage
    credits and the cap are of (rule 2), or None (rule 1: of the terms' fee); unset: None."""
    fee = terms.get("fee") or {}
    if fee.get("currency") != currency:
        raise CurrencyMismatchError(
            f"the terms' fee is in {fee.get('currency') or 'no currency'}, the agreement's in {currency}:"
            " amounts in different currencies are never mixed"
        )
    if not evaluations:
        raise AssessmentError("evaluations: give at least one closed evaluation to price")
    objectives = {o.get("objective_id"): o for o in terms.get("objectives") or []}
    consequences = terms.get("consequences") or {}
    windows: list[PricedWindow] = []
    seen: dict[tuple[str, str], int] = {}
    for i, given in enumerate(evaluations):
        e = as_record(given)
        oid, start = e["objective_id"], e["window_start"]
        objective = objectives.get(oid)
        if objective is None:
            named = ", ".join(map(repr, objectives)) or "none"
            raise AssessmentError(f"evaluations[{i}]: objective {oid!r} is not in the terms (they name {named})")
        if (oid, start) in seen:
            raise AssessmentError(f"evaluations[{i}] repeats the window of evaluations[{seen[(oid, start)]}]")
        seen[(oid, start)] = i
        try:
            instant = parse_instant(start)
            if e.get("window_end"):  # billed in the period the window closes in
                instant = max(instant, parse_instant(e["window_end"]) - EPSILON)
        except ValueError:
            raise AssessmentError(
                f"evaluations[{i}].window_start/window_end must be RFC 3339 instants, not {start!r}"
            ) from None
        period_start, period_end = fee_period(terms, instant)
        share = share_of(period_start, period_end) if share_of is not None else None
        try:
            a = assess(objective, e, fee, consequences, share=share)
        except AssessmentError as err:
            raise type(err)(f"evaluations[{i}] ({oid}, window from {start}): {err}") from None
        windows.append(PricedWindow(oid, start, period_start, a))
    periods: list[PricedPeriod] = []
    for start in sorted({w.period_start for w in windows}, key=parse_instant):
        _, end = fee_period(terms, parse_instant(start))
        share = share_of(start, end) if share_of is not None else None
        totals = statement_totals(
            _worst_per_objective([w for w in windows if w.period_start == start]), consequences, fee, share
        )
        periods.append(PricedPeriod(start, end, totals))
    return Pricing(currency, tuple(windows), tuple(periods), Money.total((p.totals.net for p in periods), currency))


def _worst_per_objective(windows: Sequence[PricedWindow]) -> list[Assessment]:
    """One assessment per objective for a period: its worst window (`period_assessments`)."""
    best: dict[str, tuple[tuple[Decimal, bool, datetime], Assessment]] = {}
    for w in windows:
        a = w.assessment
        rank = (a.net.amount, a.status == BREACHED_STATUS, parse_instant(w.window_start))
        if w.objective_id not in best or rank > best[w.objective_id][0]:
            best[w.objective_id] = (rank, a)
    return [best[o][1] for o in sorted(best)]


def totals_dict(t: Totals) -> dict[str, str]:
    """A period's totals in the form of the StatementTotals message (no adjustments or disputes)."""
    return {
        "currency": t.currency,
        "credits_before_cap": str(t.credits_before_cap.amount),
        "cap_cut": str(t.cap_cut.amount),
        "minimum_cut": str(t.minimum_cut.amount),
        "credits_issued": str(t.credits_issued.amount),
        "rewards": str(t.rewards.amount),
        "adjustments": "0",
        "disputes": "0",
        "net": str(t.net.amount),
    }


# -- as known / as effective ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedAdjustment:
    """An adjustment as recorded: on which statement, when (and, in a result of
    `both_axes`, whether it was recorded by the instant looked from)."""

    statement: Statement
    adjustment: dict[str, Any]
    recorded_at: datetime
    known_at: bool = False


@dataclass(frozen=True)
class WindowAtBothTimes:
    objective_id: str
    window_start: str
    issued_net: Decimal | None  # on the period's statement as known at `at`
    known_net: Decimal | None  # as the ledger knew it at `at`
    effective_net: Decimal  # correct now
    difference: Decimal  # effective − known (unknown = 0)


@dataclass(frozen=True)
class PeriodAtBothTimes:
    now: Statement
    as_known: Statement | None
    corrections: tuple[PlacedAdjustment, ...]
    windows: tuple[WindowAtBothTimes, ...]
    known_total: Decimal
    effective_total: Decimal

    @property
    def total_difference(self) -> Decimal:
        return self.effective_total - self.known_total


def both_axes(
    at: datetime,
    periods: Sequence[tuple[Statement, Statement | None]],
    adjustments: Iterable[PlacedAdjustment],
) -> list[PeriodAtBothTimes]:
    """Each period (its statement now, and as known at `at`) on both time axes. `adjustments`
    are every adjustment of the agreement with when it was recorded: those of a period's
    windows (on later statements) correct it; those recorded by `at` were known then."""
    placed = sorted(adjustments, key=lambda p: (p.recorded_at, parse_instant(p.statement.period_start)))
    out: list[PeriodAtBothTimes] = []
    for now, known in periods:
        start, end = parse_instant(now.period_start), parse_instant(now.period_end)
        corrections = tuple(
            replace(p, known_at=p.recorded_at <= at)
            for p in placed
            if start <= parse_instant(p.adjustment["key"].split("|", 1)[1]) < end
        )
        keys = set(now.assessments) | {p.adjustment["key"] for p in corrections}
        windows = []
        for key in sorted(keys):
            issued = Decimal(known.assessments[key]["net"]) if known and key in known.assessments else None
            mine = [p for p in corrections if p.adjustment["key"] == key]
            known_adjustments = [p for p in mine if p.known_at]
            known_net = Decimal(known_adjustments[-1].adjustment["new"]) if known_adjustments else issued
            effective = Decimal(mine[-1].adjustment["new"] if mine else now.assessments[key]["net"])
            objective_id, window_start = key.split("|", 1)
            windows.append(
                WindowAtBothTimes(
                    objective_id, window_start, issued, known_net, effective, effective - _or_zero(known_net)
                )
            )
        out.append(
            PeriodAtBothTimes(
                now,
                known,
                corrections,
                tuple(windows),
                _sum(_worst_nets(windows, lambda w: w.known_net), now.currency),
                _sum(_worst_nets(windows, lambda w: w.effective_net), now.currency),
            )
        )
    return out


def _worst_nets(
    windows: Sequence[WindowAtBothTimes], net: Callable[[WindowAtBothTimes], Decimal | None]
) -> list[Decimal]:
    """Per objective, the net of its worst window (the highest; as a statement counts one
    assessment per objective and period); windows with no net are left out."""
    best: dict[str, Decimal] = {}
    for w in windows:
        value = net(w)
        if value is not None and (w.objective_id not in best or value > best[w.objective_id]):
            best[w.objective_id] = value
    return list(best.values())


def _or_zero(d: Decimal | None) -> Decimal:
    return Decimal(0) if d is None else d


def _sum(amounts: Iterable[Decimal], currency: str) -> Decimal:
    """Amounts already at the currency's minor unit, added (0.00 for none)."""
    return Money.total((Money(d, currency) for d in amounts), currency).amount
