"""The metrics domain (so far): recorded signal batches and the services whose signals
may be recorded (learned from the agreements stream)."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from accord_kit.topics import stored_as


class MetricsError(Exception):
    """Base of the metrics domain's errors."""


class NotTheProviderError(MetricsError):
    """The caller may not record signals of this service."""


class UnknownServiceError(MetricsError):
    """No registered service has this id."""


class NotFoundError(MetricsError):
    """No such agreement, objective or window evaluation."""


class NotAPartyError(MetricsError):
    """A department asked about an agreement it is not party to."""


class InvalidRequestError(MetricsError):
    """A query's arguments are missing, contradictory or out of range (the message says which)."""


class AmendmentNotPendingError(MetricsError):
    """The amendment was rejected, withdrawn or accepted: there is no proposal left to ask about."""


@stored_as("accord_metrics.domain:SignalBatch")
class SignalBatch(Aggregate):
    """Signals of one service recorded together: one event, whatever the number of signals.

    `batch` is the public `accord.metrics.v1.SignalBatch` in its wire format, base64: the
    raw record every evaluation is recomputed from, stored exactly as accepted."""

    class Recorded(Aggregate.Created):
        TOPIC = "accord_metrics.domain:SignalBatch.Recorded"
        service_id: str
        batch: str
        count: int

    @event(Recorded)
    def __init__(self, service_id: str, batch: str, count: int) -> None:
        self.service_id = service_id
        self.batch = batch
        self.count = count


@stored_as("accord_metrics.domain:SignalCorrection")
class SignalCorrection(Aggregate):
    """Signals recorded before, re-sent with another content: a correction, recorded as its
    own event — who (`actor`), when (the event's time), why (`reason`, and the fields that
    `changed` per signal), the digest of each content it replaces (`previous_digests`) and
    the new content (`batch`, wire format as `SignalBatch`). `agreement_ids`: the agreements
    judged on the service's signals when it was recorded (AgreementHistory shows it to them)."""

    class Corrected(Aggregate.Created):
        TOPIC = "accord_metrics.domain:SignalCorrection.Corrected"
        service_id: str
        batch: str
        count: int
        previous_digests: list[str]
        changed: list[str]
        actor: str
        reason: str
        agreement_ids: list[str]

    @event(Corrected)
    def __init__(
        self,
        service_id: str,
        batch: str,
        count: int,
        previous_digests: list[str],
        changed: list[str],
        actor: str,
        reason: str,
        agreement_ids: list[str],
    ) -> None:
        self.service_id = service_id
        self.batch = batch
        self.count = count
        self.previous_digests = previous_digests
        self.changed = changed
        self.actor = actor
        self.reason = reason
        self.agreement_ids = agreement_ids


@stored_as("accord_metrics.domain:KnownService")
class KnownService(Aggregate):
    """A registered service and its provider department."""

    class Known(Aggregate.Created):
        TOPIC = "accord_metrics.domain:KnownService.Known"
        service_id: str
        provider_department_id: str

    @staticmethod
    def create_id(service_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:metrics:service:{service_id}")

    @event(Known)
    def __init__(self, service_id: str, provider_department_id: str) -> None:
        self.service_id = service_id
        self.provider_department_id = provider_department_id


# -- the metrics service's view of agreements (from the AGREEMENTS stream) -------------------
REJECTED, WITHDRAWN, ACCEPTED = "rejected", "withdrawn", "accepted"  # how an amendment was concluded


@stored_as("accord_metrics.domain:AgreementView")
class AgreementView(Aggregate):
    """What metrics knows of one agreement: the terms of each accepted version with its
    effective-from instant, proposed terms (draft, amendments) and how each amendment was
    concluded (rejected, withdrawn, accepted), and when it ended."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    DraftNoted: ClassVar[type[Aggregate.Event]]
    AmendmentNoted: ClassVar[type[Aggregate.Event]]
    AmendmentConcluded: ClassVar[type[Aggregate.Event]]
    VersionInForce: ClassVar[type[Aggregate.Event]]
    Ended: ClassVar[type[Aggregate.Event]]
    Renewed: ClassVar[type[Aggregate.Event]]
    Suspended: ClassVar[type[Aggregate.Event]]
    Resumed: ClassVar[type[Aggregate.Event]]

    class Seen(Aggregate.Created):
        TOPIC = "accord_metrics.domain:AgreementView.Seen"
        agreement_id: str

    @staticmethod
    def create_id(agreement_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:metrics:agreement:{agreement_id}")

    @event(Seen)
    def __init__(self, agreement_id: str) -> None:
        self.agreement_id = agreement_id
        self.draft: dict[str, Any] = {}
        self.proposed: dict[str, dict[str, Any]] = {}  # every amendment ever proposed, concluded or not
        # amendment id → {"outcome": rejected | withdrawn | accepted, "reason", "version" (accepted)}
        self.concluded: dict[str, dict[str, Any]] = {}
        self.versions: list[dict[str, Any]] = []
        self.ended_at = ""
        self.end_of_term = ""

    def note_draft(self, terms: dict[str, Any]) -> None:
        self._draft_noted(terms=terms)

    @event("DraftNoted", topic="accord_metrics.domain:AgreementView.DraftNoted")
    def _draft_noted(self, terms: dict[str, Any]) -> None:
        self.draft = terms

    def note_amendment(self, amendment_id: str, terms: dict[str, Any]) -> None:
        self._amendment_noted(amendment_id=amendment_id, terms=terms)

    @event("AmendmentNoted", topic="accord_metrics.domain:AgreementView.AmendmentNoted")
    def _amendment_noted(self, amendment_id: str, terms: dict[str, Any]) -> None:
        self.proposed = {**self.proposed, amendment_id: terms}

    def accept(self, version: int, effective_from: str, amendment_id: str = "") -> None:
        if amendment_id:
            self.conclude_amendment(amendment_id, ACCEPTED, version=version)
        terms = self.proposed.get(amendment_id) if amendment_id else self.draft
        if terms is None or any(v["version"] == version for v in self.versions):
            return  # unknown amendment or already known version: nothing to add
        self._version_in_force(version=version, effective_from=effective_from, terms=terms)

    def conclude_amendment(self, amendment_id: str, outcome: str, reason: str = "", version: int = 0) -> None:
        """The amendment is no longer pending: rejected, withdrawn, or accepted as `version`.
        Its proposed terms stay known (history); only the first conclusion counts."""
        if amendment_id not in self.concluded:
            self._amendment_concluded(amendment_id=amendment_id, outcome=outcome, reason=reason, version=version)

    # A new event (not a new meaning of AmendmentNoted or VersionInForce): views recorded before
    # it existed simply hold no conclusions.
    @event("AmendmentConcluded", topic="accord_metrics.domain:AgreementView.AmendmentConcluded")
    def _amendment_concluded(self, amendment_id: str, outcome: str, reason: str, version: int) -> None:
        self.concluded = {**self.concluded, amendment_id: {"outcome": outcome, "reason": reason, "version": version}}

    @event("VersionInForce", topic="accord_metrics.domain:AgreementView.VersionInForce")
    def _version_in_force(self, version: int, effective_from: str, terms: dict[str, Any]) -> None:
        self.versions = [*self.versions, {"version": version, "effective_from": effective_from, "terms": terms}]
        self.end_of_term = (terms.get("term") or {}).get("effective_to", "") or self.end_of_term

    def end(self, at: str) -> None:
        if not self.ended_at:
            self._ended(at=at)

    @event("Ended", topic="accord_metrics.domain:AgreementView.Ended")
    def _ended(self, at: str) -> None:
        self.ended_at = at

    # Suspension (docs/domain.md §2): [at, resumed at) spans, the last one open ("") while
    # suspended. A view recorded before these events existed has none.
    @property
    def suspended(self) -> list[tuple[str, str]]:
        return list(getattr(self, "_suspensions", []))

    def suspend(self, at: str) -> None:
        spans = self.suspended
        if not spans or spans[-1][1]:
            self._suspended(agreement_id=self.agreement_id, at=at)

    # Named with the agreement (AgreementHistory finds them by it).
    @event("Suspended", topic="accord_metrics.domain:AgreementView.Suspended")
    def _suspended(self, agreement_id: str, at: str) -> None:
        self._suspensions = [*self.suspended, (at, "")]

    def resume(self, at: str) -> None:
        spans = self.suspended
        if spans and not spans[-1][1]:
            self._resumed(agreement_id=self.agreement_id, at=at)

    @event("Resumed", topic="accord_metrics.domain:AgreementView.Resumed")
    def _resumed(self, agreement_id: str, at: str) -> None:
        spans = self.suspended
        self._suspensions = [*spans[:-1], (spans[-1][0], at)]

    def renew(self, new_end: str) -> None:
        self._renewed(new_end=new_end)

    @event("Renewed", topic="accord_metrics.domain:AgreementView.Renewed")
    def _renewed(self, new_end: str) -> None:
        self.end_of_term = new_end


@stored_as("accord_metrics.domain:CalendarView")
class CalendarView(Aggregate):
    """Every version of a business calendar, as defined in the agreements service."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Defined: ClassVar[type[Aggregate.Event]]

    class Seen(Aggregate.Created):
        TOPIC = "accord_metrics.domain:CalendarView.Seen"
        calendar_id: str

    @staticmethod
    def create_id(calendar_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:metrics:calendar:{calendar_id}")

    @event(Seen)
    def __init__(self, calendar_id: str) -> None:
        self.calendar_id = calendar_id
        self.definitions: dict[str, dict[str, Any]] = {}

    def define(self, version: int, definition: dict[str, Any]) -> None:
        if str(version) not in self.definitions:
            self._defined(calendar_id=self.calendar_id, version=version, definition=definition)

    @event("Defined", topic="accord_metrics.domain:CalendarView.Defined")
    def _defined(self, calendar_id: str, version: int, definition: dict[str, Any]) -> None:
        self.definitions = {**self.definitions, str(version): definition}

    @property
    def latest(self) -> tuple[int, dict[str, Any]]:
        v = max(int(k) for k in self.definitions)
        return v, self.definitions[str(v)]

    def definition(self, version: int) -> dict[str, Any] | None:
        """The definition of one version (every version learned is kept), or None."""
        return self.definitions.get(str(version))


# -- outcomes ----------------------------------------------------------------------------------
MET, AT_RISK, BREACHED, NO_DATA = "MET", "AT_RISK", "BREACHED", "NO_DATA"


# What a running evaluation judged as of the pass's instant says (see WindowEvaluation.update):
# its judgement, budget and late subjects — not how long a late item has been open so far.
_OUTCOME = ("value", "target", "comparator", "status", "closed", "version", "formula_id", "formula_version",
            "budget_consumed", "budget_remaining", "undefined", "calendar_id", "calendar_version")  # fmt: skip
_OUTCOME_DETAIL = ("late", "late_open", "suspended")


def _outcome(evaluation: dict[str, Any]) -> tuple[Any, ...]:
    detail = evaluation.get("detail") or {}
    return tuple(evaluation.get(k) for k in _OUTCOME) + tuple(detail.get(k) for k in _OUTCOME_DETAIL)


@stored_as("accord_metrics.domain:WindowEvaluation")
class WindowEvaluation(Aggregate):
    """One objective of one agreement over one window: its running value, warnings, burn
    alerts and breaches, its closing, and any restatement after it closed."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Evaluated: ClassVar[type[Aggregate.Event]]
    Restated: ClassVar[type[Aggregate.Event]]
    Closed: ClassVar[type[Aggregate.Event]]
    Breached: ClassVar[type[Aggregate.Event]]
    BudgetWarning: ClassVar[type[Aggregate.Event]]
    BurnRateAlert: ClassVar[type[Aggregate.Event]]
    BurnRateAlertResolved: ClassVar[type[Aggregate.Event]]

    class Opened(Aggregate.Created):
        TOPIC = "accord_metrics.domain:WindowEvaluation.Opened"
        agreement_id: str
        objective_id: str
        window_start: str
        window_end: str

    @staticmethod
    def create_id(agreement_id: str, objective_id: str, window_start: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:metrics:window:{agreement_id}:{objective_id}:{window_start}")

    @event(Opened)
    def __init__(self, agreement_id: str, objective_id: str, window_start: str, window_end: str) -> None:
        self.agreement_id = agreement_id
        self.objective_id = objective_id
        self.window_start = window_start
        self.window_end = window_end
        self.current: dict[str, Any] = {}
        self.closed: dict[str, Any] = {}
        self.restatements: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.burn_alerts: list[str] = []
        self.breaches: list[str] = []  # subjects: "" for the objective, or e.g. a late ticket id
        self.breach_records: list[dict[str, Any]] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> WindowEvaluation:
        """The copy a load from the repository's cache hands out (a round changes it; saved, it
        is the one the store holds, and a failed save leaves the cached one as it was): its own
        attributes and pending events, sharing their values. The events below replace an
        attribute, never change its value in place (and no reader changes one), so that is a
        deep copy's independence without copying the hundreds of small objects a window's
        evaluations hold — most of a round's cost for an agreement judged."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__["_pending_events"] = list(self._pending_events)
        memo[id(self)] = clone
        return clone

    def update(self, evaluation: dict[str, Any], agreements_position: int = 0) -> None:
        """Record a new running (or, after closing, restated) evaluation if it changed.
        `agreements_position`: the agreements log's position up to which metrics had applied
        the agreements stream when it judged (carried by a restatement, see `close`)."""
        if self.closed:
            old = self.restatements[-1]["new"] if self.restatements else self.closed
            inputs_changed = evaluation["input_digest"] != self.closed["input_digest"] and (
                not self.restatements or evaluation["input_digest"] != self.restatements[-1]["new"]["input_digest"]
            )
            # The same inputs judged by another version of the terms (one metrics learned after
            # closing the window), or with another outcome (a suspension or end learned late).
            judged_otherwise = any(evaluation.get(k) != old.get(k) for k in ("version", "status", "value"))
            if inputs_changed or judged_otherwise:
                self._restated(old=old, new=evaluation, agreements_position=agreements_position)
            return
        if "as_of" in (evaluation.get("parameters") or {}):
            # Judged as of the pass's instant (tickets, tasks, follow-ups, FCR): its parameters,
            # digest and elapsed times change every pass; recorded again only when its outcome
            # (value, status, budget, late items…) does. Its closing records it in full.
            if _outcome(evaluation) != _outcome(self.current):
                self._evaluated(evaluation=evaluation)
            return
        if evaluation["input_digest"] != self.current.get("input_digest") or evaluation["status"] != self.current.get(
            "status"
        ):
            # The event itself, as `_evaluated` triggers it, without the decorator's working out of
            # its arguments again from the method's signature (a few per cent of a round that
            # records hundreds).
            self.trigger_event(self.Evaluated, evaluation=evaluation)

    @event("Evaluated", topic="accord_metrics.domain:WindowEvaluation.Evaluated")
    def _evaluated(self, evaluation: dict[str, Any]) -> None:
        self.current = evaluation

    # A closing or restatement records `agreements_position`: the position in the agreements
    # service's log up to which metrics had applied the agreements stream when it judged the
    # window (an upper bound of every agreements event the judgement read: the views it read
    # were loaded before it was taken). Billing applies the window only once its own consumer of
    # that stream has applied as far. Events recorded before it was kept hold none (0).
    @event("Restated", topic="accord_metrics.domain:WindowEvaluation.Restated")
    def _restated(self, old: dict[str, Any], new: dict[str, Any], agreements_position: int = 0) -> None:
        restatement: dict[str, Any] = {"old": old, "new": new}
        if agreements_position:
            restatement["agreements_position"] = agreements_position
        self.restatements = [*self.restatements, restatement]

    def close(self, evaluation: dict[str, Any], agreements_position: int = 0) -> None:
        if not self.closed:
            self._closed(evaluation=evaluation, agreements_position=agreements_position)

    @event("Closed", topic="accord_metrics.domain:WindowEvaluation.Closed")
    def _closed(self, evaluation: dict[str, Any], agreements_position: int = 0) -> None:
        self.closed = evaluation
        self.current = evaluation

    def breach(self, subject: str, value: str, target: str, certain_before_close: bool) -> None:
        if subject not in self.breaches:
            self._breached(
                agreement_id=self.agreement_id,
                objective_id=self.objective_id,
                window_start=self.window_start,
                window_end=self.window_end,
                subject=subject,
                value=value,
                target=target,
                certain_before_close=certain_before_close,
            )

    @event("Breached", topic="accord_metrics.domain:WindowEvaluation.Breached")
    def _breached(
        self,
        agreement_id: str,
        objective_id: str,
        window_start: str,
        window_end: str,
        subject: str,
        value: str,
        target: str,
        certain_before_close: bool,
    ) -> None:
        self.breaches = [*self.breaches, subject]
        self.breach_records = [
            *self.breach_records,
            {"subject": subject, "value": value, "target": target, "certain_before_close": certain_before_close},
        ]

    def warn(self, level: str, consumed: str) -> None:
        if level not in self.warnings:
            self._warned(
                agreement_id=self.agreement_id,
                objective_id=self.objective_id,
                window_start=self.window_start,
                level=level,
                consumed=consumed,
            )

    @event("BudgetWarning", topic="accord_metrics.domain:WindowEvaluation.BudgetWarning")
    def _warned(self, agreement_id: str, objective_id: str, window_start: str, level: str, consumed: str) -> None:
        self.warnings = [*self.warnings, level]

    # A burn-rate alert fires while its pair's condition holds and is resolved when it no longer
    # does, or when the window closes (docs/domain.md §3 "Warnings"); it may fire again later
    # in the window. `burn_alerts` keeps every firing, `burn_firing` those not resolved. A
    # window recorded before resolutions existed never resolved one: all it fired still fires.
    @property
    def burn_firing(self) -> list[str]:
        firing = getattr(self, "_burn_firing", None)
        return list(self.burn_alerts) if firing is None else list(firing)

    def burn_alert(self, name: str, factor: str, long_rate: str, short_rate: str) -> None:
        if name not in self.burn_firing:
            self._burn_alerted(
                agreement_id=self.agreement_id,
                objective_id=self.objective_id,
                window_start=self.window_start,
                name=name,
                factor=factor,
                long_rate=long_rate,
                short_rate=short_rate,
            )

    @event("BurnRateAlert", topic="accord_metrics.domain:WindowEvaluation.BurnRateAlert")
    def _burn_alerted(
        self,
        agreement_id: str,
        objective_id: str,
        window_start: str,
        name: str,
        factor: str,
        long_rate: str,
        short_rate: str,
    ) -> None:
        firing = self.burn_firing
        self.burn_alerts = [*self.burn_alerts, name]
        self._burn_firing = [*firing, name]

    def resolve_burn_alert(self, name: str, reason: str, long_rate: str = "", short_rate: str = "") -> None:
        """The firing alert `name` no longer holds (`reason` "cleared", with the rates that
        cleared it) or its window closed ("window_closed")."""
        if name in self.burn_firing:
            self._burn_resolved(
                agreement_id=self.agreement_id,
                objective_id=self.objective_id,
                window_start=self.window_start,
                name=name,
                reason=reason,
                long_rate=long_rate,
                short_rate=short_rate,
            )

    @event("BurnRateAlertResolved", topic="accord_metrics.domain:WindowEvaluation.BurnRateAlertResolved")
    def _burn_resolved(
        self,
        agreement_id: str,
        objective_id: str,
        window_start: str,
        name: str,
        reason: str,
        long_rate: str,
        short_rate: str,
    ) -> None:
        self._burn_firing = [n for n in self.burn_firing if n != name]

    @property
    def latest(self) -> dict[str, Any]:
        if self.restatements:
            return dict(self.restatements[-1]["new"])
        return dict(self.closed or self.current)
