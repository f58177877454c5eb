"""The gateway's read model: current status of every agreement, department and service,
built from the agreements, metrics and billing streams (each event applied once, in order:
positions are tracked per stream) and rebuildable from scratch. Every answer says which
position of each stream it reflects. Nothing here is authoritative: the owning services'
stores are the record.

Each agreement's answer is kept ready (`Answer`): its summarised status, and, once asked for,
its typed gRPC answer and its HTTP JSON, serialised; an event that touches the agreement drops
it (an agreements-stream event also those of the agreements below it in the parent chain:
their effective terms merge its terms),
so a query is a lookup and a visibility check (a service registered drops the answers of the
agreements of its provider naming no service: they measure it from then on); `warm_task` rebuilds
dropped answers in the background once the gateway serves. `snapshot`/`restore` hand the whole model, with
each stream's position, to and from `accord_gateway.snapshot`."""

from __future__ import annotations

import asyncio
import copy
import gc
import heapq
import threading
from collections.abc import Callable, Coroutine, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from google.protobuf import json_format

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.billing.v1 import events_pb2 as billing_events
from accord.events.v1 import events_pb2
from accord.gateway.v1 import gateway_pb2 as gateway_pb
from accord.metrics.v1 import events_pb2 as metric_events
from accord_gateway import schemas
from accord_kit.agreement_terms import effective_terms
from accord_kit.evaluation import GATEWAY_FIELDS, Evaluation

STATES = {
    "AgreementDrafted": "DRAFT",
    "DraftRevised": "DRAFT",
    "AgreementProposed": "PROPOSED",
    "ProposalRejected": "DRAFT",
    "AgreementAccepted": "ACTIVE",
    "AgreementSuspended": "SUSPENDED",
    "AgreementResumed": "ACTIVE",
    "AgreementTerminated": "TERMINATED",
    "AgreementExpired": "EXPIRED",
}
HEALTH_ORDER = {"BREACHED": 0, "AT_RISK": 1, "NO_DATA": 2, "MET": 3, "": 4}
SOURCES = ("agreements", "metrics", "billing")
# The error budget over time: one point per evaluation metrics published for a window (at
# each change of an open window, at its closing and at a restatement), at most
# SERIES_POINTS per window (beyond, every other point is dropped, the first and last kept),
# for the SERIES_WINDOWS most recent windows of each objective.
SERIES_POINTS = 240
SERIES_WINDOWS = 24
# Burn-rate alert states: firing until metrics says it resolved (BurnRateAlertResolved, when
# the contract has it) or its window closes.
FIRING, RESOLVED, WINDOW_CLOSED = "FIRING", "RESOLVED", "WINDOW_CLOSED"


def _terms(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _utc(instant: str) -> str:
    """An RFC 3339 instant in UTC, one spelling (points are ordered and compared by it)."""
    return datetime.fromisoformat(instant).astimezone(UTC).isoformat()


def _new_status(agreement_id: str) -> dict[str, Any]:
    return {
        "agreement_id": agreement_id,
        "title": "",
        "state": "",
        "version": 0,
        "parties": {},
        "kind": "",
        "level": "",
        "time_zone": "",
        "service_ids": [],
        "terms": {},
        "pending_amendment": None,
        "objectives": {},  # objective id → current evaluation, history of closed windows, breaches
        "breaches": [],
        "statements": {},  # statement id → period, state, totals
        "disputes": [],
        "termination_rights": [],
        "versions": [],
    }


@dataclass
class Answer:
    """One agreement's answer as of the model's last event touching it: `summary` (the status
    as every view reads it: shared, never to be changed), and the serialised typed answer and
    HTTP JSON (built on first use)."""

    summary: dict[str, Any]
    typed: bytes | None = None
    json: bytes | None = None
    # Its parts of the department, service and portfolio views, built on first use
    # (`ReadModel.parts`): serialised for gRPC and as HTTP JSON.
    parts: ViewParts | None = None


@dataclass
class ViewParts:
    """An agreement's parts of the views that list it: its `AgreementBrief` (serialised,
    deterministically, and as the HTTP JSON of `schemas.AgreementBrief`), and its objectives as
    a portfolio's worst objectives — what they are ordered by (`worst_key`), each serialised and
    as JSON."""

    brief: bytes
    brief_json: bytes
    ranks: list[tuple[int, Decimal]]
    worst: list[bytes]
    worst_json: list[bytes]


def typed_status(summary: dict[str, Any]) -> gateway_pb.AgreementStatus:
    """An agreement's status as the typed `accord.gateway.v1.AgreementStatus`."""
    return json_format.ParseDict(summary, gateway_pb.AgreementStatus(), ignore_unknown_fields=True)


class ReadModel:
    """Thread-safe in-memory status, fed by the gateway's consumers (`apply_upstream`)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._positions = dict.fromkeys(SOURCES, 0)
        self._agreements: dict[str, dict[str, Any]] = {}
        self._statement_agreement: dict[str, str] = {}
        # The service registry (the agreements stream's ServiceRegistered): service id → its
        # provider department — the services an agreement naming none is measured on.
        self._services: dict[str, str] = {}
        # (agreement id, objective id) → window start → the window's budget series (see SERIES_POINTS)
        self._series: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._answers: dict[str, Answer] = {}
        self._also_changed: list[str] = []  # see apply_upstream
        # A consumer thread's run of events under way (`applying_run`): the agreements it changed,
        # told to the listeners at its end.
        self._run = threading.local()
        self.applied = 0  # events applied by this process (not those a snapshot brought)

    # -- the consumer's side ---------------------------------------------------------------
    def tracked_position(self, source: str) -> int:
        with self._lock:
            return self._positions.get(source, 0)

    def positions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._positions)

    def apply_upstream(self, source: str, envelope: events_pb2.EventEnvelope) -> bool:
        with self._lock:
            if envelope.position <= self._positions.get(source, 0):
                return False
            changed = self._apply(source, envelope)
            self._positions[source] = envelope.position
            self.applied += 1
            if changed:
                self._drop(changed, children=source == "agreements")
            # Agreements an event changed without naming them (a service registered: those measuring it).
            also, self._also_changed = self._also_changed, []
            listeners = list(self._listeners)
        held: list[str] | None = getattr(self._run, "changed", None)
        if held is not None:
            held.extend([changed] if changed else also)
            return True
        for aid in [changed] if changed else also:
            for listener in listeners:
                listener(aid)
        return True

    @contextmanager
    def applying_run(self) -> Iterator[None]:
        """A run of events a consumer applies together (accord_kit.consumer): the agreements they
        changed are told to the listeners once, at its end, not after each event. Metrics stores a
        window's evaluation and its breach (or warning, or alert) together; told between the two,
        a watcher showed the health BREACHED with no breach listed until the next event. Each
        consumer thread's run is its own."""
        changed: list[str] = []
        self._run.changed = changed
        try:
            yield
        finally:
            self._run.changed = None
            with self._lock:
                listeners = list(self._listeners)
            for aid in dict.fromkeys(changed):
                for listener in listeners:
                    listener(aid)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _apply(self, source: str, env: events_pb2.EventEnvelope) -> str:
        """Apply one event; returns the agreement id whose status changed ("" if none)."""
        name = env.type.rsplit(".", 1)[-1]
        if source == "agreements":
            return self._agreement_event(name, env)
        if source == "metrics":
            return self._metrics_event(name, env)
        if source == "billing":
            return self._billing_event(name, env)
        return ""

    def _agreement_event(self, name: str, env: events_pb2.EventEnvelope) -> str:
        if name == "ServiceRegistered":
            registered = agreement_events.ServiceRegistered()
            env.payload.Unpack(registered)
            self._services[registered.service_id] = registered.provider_department_id
            # Every agreement of that provider naming no service now measures it too (docs/domain.md
            # §1 "Services measured"): their kept answers go, and their watchers hear of it.
            self._also_changed = [
                aid
                for aid, st in self._agreements.items()
                if st["terms"] and registered.service_id in self._measured(self._effective(st["terms"]))
            ]
            for aid in self._also_changed:
                self._answers.pop(aid, None)
            return ""
        cls = getattr(agreement_events, name, None)
        if cls is None or "agreement_id" not in cls.DESCRIPTOR.fields_by_name:
            return ""
        msg = cls()
        env.payload.Unpack(msg)
        status = self._agreements.setdefault(msg.agreement_id, _new_status(msg.agreement_id))
        if name in STATES:
            status["state"] = STATES[name]
        if name in ("AgreementDrafted", "DraftRevised", "AgreementAccepted", "AmendmentAccepted") and msg.HasField(
            "terms"
        ):
            terms = _terms(msg.terms)
            status["terms"] = terms
            status["title"] = terms.get("title", "")
            status["parties"] = terms.get("parties") or {}
            status["kind"], status["level"] = terms.get("kind", ""), terms.get("level", "")
            status["time_zone"] = terms.get("time_zone", "")
            status["service_ids"] = list((terms.get("service") or {}).get("service_ids") or [])
        if name in ("AgreementAccepted", "AmendmentAccepted"):
            status["version"] = msg.version
            status["versions"].append(
                {
                    "terms": _terms(msg.terms),
                    "version": msg.version,
                    "effective_from": msg.effective_from.ToJsonString(),
                    "occurred_at": env.occurred_at.ToJsonString(),
                }
            )
            status["pending_amendment"] = None
        elif name == "AmendmentProposed":
            status["pending_amendment"] = {
                "amendment_id": msg.amendment_id,
                "proposed_by": msg.proposed_by_department_id,
                "effective_from": msg.effective_from.ToJsonString(),
                "reason": msg.reason,
            }
        elif name in ("AmendmentRejected", "AmendmentWithdrawn"):
            status["pending_amendment"] = None
        elif name == "TerminationRightRecorded":
            status["termination_rights"].append({"objective_id": msg.objective_id, "reason": msg.reason})
        return str(msg.agreement_id)

    def _objective(self, agreement_id: str, objective_id: str) -> dict[str, Any]:
        status = self._agreements.setdefault(agreement_id, _new_status(agreement_id))
        return status["objectives"].setdefault(
            objective_id,
            {"objective_id": objective_id, "current": None, "closed": [], "warnings": [], "burn_alerts": []},
        )

    def _metrics_event(self, name: str, env: events_pb2.EventEnvelope) -> str:
        # When metrics stored it, by its clock: an evaluation is as of then (its "now").
        at = env.recorded_at.ToJsonString()
        if name in ("EvaluationUpdated", "WindowClosed"):
            msg: Any = getattr(metric_events, name)()
            env.payload.Unpack(msg)
            e = Evaluation.from_message(msg.evaluation).to_record(GATEWAY_FIELDS)
            o = self._objective(e["agreement_id"], e["objective_id"])
            if not o["current"] or o["current"]["window_start"] <= e["window_start"]:
                o["current"] = e
            if name == "WindowClosed":
                o["closed"] = sorted(
                    [c for c in o["closed"] if c["window_start"] != e["window_start"]] + [e],
                    key=lambda c: c["window_start"],
                )
                for alert in o["burn_alerts"]:
                    if alert["window_start"] == e["window_start"] and alert["state"] == FIRING:
                        alert["state"], alert["ended_at"] = WINDOW_CLOSED, e["window_end"]
                        alert["resolution"] = "window_closed"
            # A closing evaluation is as of the window's end, whenever metrics closed it.
            self._point(e, e["window_end"] if name == "WindowClosed" else at)
            return str(e["agreement_id"])
        if name == "EvaluationRestated":
            r = metric_events.EvaluationRestated()
            env.payload.Unpack(r)
            e = Evaluation.from_message(r.new).to_record(GATEWAY_FIELDS)
            o = self._objective(e["agreement_id"], e["objective_id"])
            o["closed"] = sorted(
                [c for c in o["closed"] if c["window_start"] != e["window_start"]] + [{**e, "restated": True}],
                key=lambda c: c["window_start"],
            )
            if o["current"] and o["current"]["window_start"] == e["window_start"]:
                o["current"] = e
            self._point(e, at, restated=True)
            return str(e["agreement_id"])
        if name == "BreachDetected":
            b = metric_events.BreachDetected()
            env.payload.Unpack(b)
            status = self._agreements.setdefault(b.agreement_id, _new_status(b.agreement_id))
            status["breaches"].append(
                {
                    "objective_id": b.objective_id,
                    "window_start": b.window_start,
                    "window_end": b.window_end,
                    "subject": b.subject,
                    "value": b.value,
                    "target": b.target,
                    "certain_before_close": b.certain_before_close,
                    "at": at,
                }
            )
            return str(b.agreement_id)
        if name == "BudgetWarning":
            w = metric_events.BudgetWarning()
            env.payload.Unpack(w)
            self._objective(w.agreement_id, w.objective_id)["warnings"].append(
                {"window_start": w.window_start, "level": w.level, "consumed": w.consumed, "at": at}
            )
            return str(w.agreement_id)
        if name == "BurnRateAlert":
            a = metric_events.BurnRateAlert()
            env.payload.Unpack(a)
            self._objective(a.agreement_id, a.objective_id)["burn_alerts"].append(
                {
                    "window_start": a.window_start,
                    "name": a.name,
                    "factor": a.factor,
                    "long_rate": a.long_rate,
                    "short_rate": a.short_rate,
                    "at": at,
                    "state": FIRING,
                    "ended_at": "",
                    "resolution": "",
                }
            )
            return str(a.agreement_id)
        if name == "BurnRateAlertResolved":
            # Resolved by metrics (cleared, or its window closed): the latest firing of that pair.
            res = metric_events.BurnRateAlertResolved()
            env.payload.Unpack(res)
            o = self._objective(res.agreement_id, res.objective_id)
            for alert in reversed(o["burn_alerts"]):
                if alert["window_start"] == res.window_start and alert["name"] == res.name and alert["state"] == FIRING:
                    alert["state"], alert["ended_at"] = RESOLVED, at
                    alert["resolution"] = res.reason
                    break
            return str(res.agreement_id)
        return ""

    def _point(self, e: dict[str, Any], at: str, restated: bool = False) -> None:
        """Add an evaluation to its window's budget series (bounded: SERIES_POINTS, SERIES_WINDOWS)."""
        if e.get("budget_remaining", "") == "" and e.get("status", "") == "":
            return
        windows = self._series.setdefault((e["agreement_id"], e["objective_id"]), {})
        w = windows.setdefault(
            e["window_start"], {"window_start": e["window_start"], "window_end": e["window_end"], "points": []}
        )
        point = {
            "at": _utc(at),
            "budget_remaining": e.get("budget_remaining", ""),
            "budget_consumed": e.get("budget_consumed", ""),
            "value": e.get("value", ""),
            "status": e.get("status", ""),
            "closed": bool(e.get("closed")),
            "restated": restated,
        }
        points: list[dict[str, Any]] = w["points"]
        if points and points[-1]["at"] == at:
            points[-1] = point
        else:
            points.append(point)
        if len(points) > SERIES_POINTS:
            w["points"] = [*points[:-1:2], points[-1]] if len(points) % 2 == 0 else points[::2]
        if len(windows) > SERIES_WINDOWS:
            del windows[min(windows)]

    def _billing_event(self, name: str, env: events_pb2.EventEnvelope) -> str:
        if name == "StatementOpened":
            s = billing_events.StatementOpened()
            env.payload.Unpack(s)
            self._statement_agreement[s.statement_id] = s.agreement_id
            status = self._agreements.setdefault(s.agreement_id, _new_status(s.agreement_id))
            status["statements"][s.statement_id] = {
                "statement_id": s.statement_id,
                "period_start": s.period_start,
                "period_end": s.period_end,
                "currency": s.currency,
                "state": "OPEN",
                "net": "0",
                "totals": None,
                "claim_until": "",
                "assessments": [],
                "adjustments": [],
            }
            return str(s.agreement_id)
        aid = ""
        if name in (
            "StatementIssued",
            "StatementFinalized",
            "AssessmentRecorded",
            "AdjustmentRecorded",
            "DisputeOpened",
            "DisputeResolved",
            "StatementTotalsStated",
        ):
            msg: Any = getattr(billing_events, name)()
            env.payload.Unpack(msg)
            aid = self._statement_agreement.get(msg.statement_id, "")
        if not aid:
            return ""
        st = self._agreements[aid]["statements"][msg.statement_id]
        if name in ("AssessmentRecorded", "AdjustmentRecorded", "DisputeResolved", "StatementTotalsStated") and (
            msg.HasField("totals")
        ):
            # The statement's totals after this change, as billing states them: an open
            # statement's so far (provisional; StatementTotalsStated when only its fee changed —
            # a suspension, resumption, amendment or end), an issued one's with the dispute's
            # amount. Events recorded before billing stated them carry none: the totals held stay.
            st["net"] = msg.totals.net
            st["totals"] = _totals(msg.totals)
        if name in ("StatementIssued", "StatementFinalized"):
            st["state"] = "ISSUED" if name == "StatementIssued" else "FINAL"
            st["net"] = msg.totals.net
            st["totals"] = _totals(msg.totals)
            if name == "StatementIssued":
                st["claim_until"] = msg.claim_until
        elif name == "AssessmentRecorded":
            # Replaced while the statement is open: one per objective and window.
            row = {
                "objective_id": msg.objective_id,
                "window_start": msg.window_start,
                "status": msg.status,
                "value": msg.value,
                "net": msg.net,
                "agreement_version": msg.agreement_version,
                "lines": [
                    {"kind": x.kind, "amount": x.amount, "derivation": x.derivation, "applied": x.applied}
                    for x in msg.lines
                ],
            }
            st["assessments"] = sorted(
                [
                    a
                    for a in st["assessments"]
                    if (a["objective_id"], a["window_start"]) != (msg.objective_id, msg.window_start)
                ]
                + [row],
                key=lambda a: (a["objective_id"], a["window_start"]),
            )
        elif name == "AdjustmentRecorded":
            st["adjustments"].append(
                {
                    "objective_id": msg.objective_id,
                    "window_start": msg.window_start,
                    "period_start": msg.period_start,
                    "old_amount": msg.old_amount,
                    "new_amount": msg.new_amount,
                    "difference": msg.difference,
                    "reason": msg.reason,
                    "at": env.recorded_at.ToJsonString(),
                }
            )
        elif name == "DisputeOpened":
            self._agreements[aid]["disputes"].append(
                {
                    "dispute_id": msg.dispute_id,
                    "statement_id": msg.statement_id,
                    "objective_id": msg.objective_id,
                    "window_start": msg.window_start,
                    "state": "OPEN",
                    "reason": msg.reason,
                    "amount": "",
                    "resolution": "",
                    "opened_at": env.recorded_at.ToJsonString(),
                    "resolved_at": "",
                }
            )
        elif name == "DisputeResolved":
            for x in self._agreements[aid]["disputes"]:
                if x["dispute_id"] == msg.dispute_id:
                    x["state"] = "ACCEPTED" if msg.accepted else "REJECTED"
                    # The assessment's amount after an accepted dispute: known now, before the
                    # statement is final.
                    x["amount"] = msg.amount
                    x["resolution"] = msg.reason
                    x["resolved_at"] = env.recorded_at.ToJsonString()
        return aid

    def _drop(self, agreement_id: str, children: bool) -> None:
        """Drop the agreement's kept answer and, when its terms may have changed, those of the
        agreements below it (their effective terms merge its terms)."""
        self._answers.pop(agreement_id, None)
        if not children:
            return
        dropped = {agreement_id}
        while True:
            below = [
                aid
                for aid, s in self._agreements.items()
                if aid not in dropped and (s["terms"].get("parent_agreement_id") or "") in dropped
            ]
            if not below:
                return
            for aid in below:
                self._answers.pop(aid, None)
            dropped.update(below)

    def warm(self) -> int:
        """Build every agreement's answer an event dropped (summary, typed bytes, JSON, its parts
        of the views), so the next query finds it kept; returns how many were built. Takes the
        lock per agreement."""
        with self._lock:
            missing = [aid for aid, s in self._agreements.items() if s["state"] and aid not in self._answers]
        for aid in missing:
            answer = self.answer(aid)
            if answer is not None:
                self.typed(answer)
                self.json(answer)
                self.parts(answer)
        return len(missing)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self, serialise: Callable[[dict[str, Any]], bytes]) -> tuple[bytes, dict[str, int]]:
        """The whole model as JSON-shaped data with each stream's position, passed to
        `serialise` under the lock (consistent, and nothing changes while it reads); returns
        what it made and the positions."""
        with self._lock:
            state = {
                "positions": dict(self._positions),
                "agreements": self._agreements,
                "statement_agreement": self._statement_agreement,
                "services": self._services,
                "series": [[aid, oid, windows] for (aid, oid), windows in self._series.items()],
            }
            return serialise(state), dict(self._positions)

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the model by a snapshot's `state` (before any consumer starts)."""
        with self._lock:
            self._positions = dict.fromkeys(SOURCES, 0) | {k: int(v) for k, v in state["positions"].items()}
            self._agreements = dict(state["agreements"])
            self._statement_agreement = dict(state["statement_agreement"])
            self._services = dict(state["services"])
            self._series = {(aid, oid): windows for aid, oid, windows in state["series"]}
            self._answers.clear()

    # -- queries ------------------------------------------------------------------------------
    def answer(self, agreement_id: str) -> Answer | None:
        """The agreement's kept answer (built now if an event dropped it); None when unknown."""
        with self._lock:
            answer = self._answers.get(agreement_id)
            if answer is not None:
                return answer
            status = self._agreements.get(agreement_id)
            if not status or not status["state"]:
                return None
            status = copy.deepcopy(status)
            status["effective_terms"] = self._effective(status["terms"])
            status["measured_service_ids"] = self._measured(status["effective_terms"])
            answer = self._answers[agreement_id] = Answer(_summarise(status))
            return answer

    def agreement(self, agreement_id: str) -> dict[str, Any] | None:
        """The agreement's summarised status (shared: read it, never change it)."""
        answer = self.answer(agreement_id)
        return None if answer is None else answer.summary

    def typed(self, answer: Answer) -> bytes:
        """The answer as a serialised `accord.gateway.v1.AgreementStatus` (kept once built)."""
        if answer.typed is None:
            answer.typed = typed_status(answer.summary).SerializeToString(deterministic=True)
        return answer.typed

    def parts(self, answer: Answer) -> ViewParts:
        """The answer's parts of the department, service and portfolio views (kept once built)."""
        if answer.parts is None:
            brief = agreement_brief(answer.summary)
            worst = worst_objectives(answer.summary)
            answer.parts = ViewParts(
                json_format.ParseDict(brief, gateway_pb.AgreementBrief(), ignore_unknown_fields=True).SerializeToString(
                    deterministic=True
                ),
                schemas.AgreementBrief.model_validate(brief).model_dump_json(by_alias=True).encode(),
                [worst_key(w) for w in worst],
                [json_format.ParseDict(w, gateway_pb.WorstObjective()).SerializeToString() for w in worst],
                [schemas.WorstObjective.model_validate(w).model_dump_json(by_alias=True).encode() for w in worst],
            )
        return answer.parts

    def json(self, answer: Answer) -> bytes:
        """The answer as the HTTP JSON of `schemas.AgreementStatus` (kept once built)."""
        if answer.json is None:
            answer.json = schemas.AgreementStatus.model_validate(answer.summary).model_dump_json(by_alias=True).encode()
        return answer.json

    def _effective(self, terms: dict[str, Any], depth: int = 0) -> dict[str, Any]:
        """The terms merged with their parent chain (as the read model knows the parents)."""
        parent = self._agreements.get(terms.get("parent_agreement_id") or "")
        if parent is None or not parent["terms"] or depth > 8:
            return terms
        return effective_terms(self._effective(parent["terms"], depth + 1), terms)

    def _measured(self, effective: dict[str, Any]) -> list[str]:
        """The services effective terms measure (docs/domain.md §1 "Services measured"): those
        they name; naming none, every service registered with their provider department."""
        named = (effective.get("service") or {}).get("service_ids") or []
        if named:
            return sorted(set(named))
        provider = (effective.get("parties") or {}).get("provider_department_id") or ""
        return sorted(sid for sid, p in self._services.items() if provider and p == provider)

    def budget_series(self, agreement_id: str, objective_id: str) -> list[dict[str, Any]]:
        """The objective's budget series per window held (oldest window first, points by time)."""
        with self._lock:
            windows = copy.deepcopy(list(self._series.get((agreement_id, objective_id), {}).values()))
        for w in windows:
            w["points"].sort(key=lambda p: p["at"])
        return sorted(windows, key=lambda w: _instant(w["window_start"]))

    def current_objectives(self, states: frozenset[str]) -> list[tuple[str, list[str], str, dict[str, Any]]]:
        """(agreement id, the services it measures, objective id, the current window's
        evaluation) of every objective with one, of the agreements in `states`, sorted; cheap (no
        deep copy; the services from the agreement's kept answer)."""
        with self._lock:
            rows = []
            for aid, s in self._agreements.items():
                if s["state"] not in states or not any(o["current"] for o in s["objectives"].values()):
                    continue
                answer = self.answer(aid)
                services = list(answer.summary["measured_service_ids"]) if answer is not None else []
                rows += [(aid, services, oid, dict(o["current"])) for oid, o in s["objectives"].items() if o["current"]]
        rows.sort(key=lambda r: (r[0], r[2]))
        return rows

    def agreements(self) -> list[dict[str, Any]]:
        """Every agreement's summarised status (shared: read them, never change them)."""
        return [a.summary for a in self.answers()]

    def answers(self) -> list[Answer]:
        """Every agreement's answer, in the order the model learned of them."""
        with self._lock:
            ids = [aid for aid, s in self._agreements.items() if s["state"]]
            return [a for a in map(self.answer, ids) if a is not None]


def _totals(totals: billing_events.StatementTotals) -> dict[str, Any]:
    return json_format.MessageToDict(
        totals, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _summarise(s: dict[str, Any]) -> dict[str, Any]:
    """Derived figures: health, open breaches, credits this period and to date."""
    s["short_id"] = short_id(s["agreement_id"])
    s["time_zone"] = (s.get("effective_terms") or s["terms"]).get("time_zone") or s["time_zone"] or "UTC"
    objectives = list(s["objectives"].values())
    names = {o["objective_id"]: o.get("name", "") for o in (s["terms"].get("objectives") or [])}
    for o in objectives:
        o["name"] = names.get(o["objective_id"], "")
    s["objectives"] = sorted(
        objectives, key=lambda o: (HEALTH_ORDER.get((o["current"] or {}).get("status", ""), 4), o["objective_id"])
    )
    statuses = [(o["current"] or {}).get("status", "") for o in objectives]
    s["health"] = min(statuses, key=lambda x: HEALTH_ORDER.get(x, 4)) if statuses else ""
    current_windows = {(o["objective_id"], (o["current"] or {}).get("window_start")) for o in objectives}
    s["open_breaches"] = [b for b in s["breaches"] if (b["objective_id"], b["window_start"]) in current_windows]
    statements = sorted(s["statements"].values(), key=lambda x: x["period_start"])
    s["statements"] = statements

    # Every amount as soon as billing states it, but never a provisional one as settled: the
    # final statements' nets (credits to date), apart from the open ones' so far (this period)
    # and the issued ones' with their accepted disputes (awaiting final).
    def total(state: str) -> Decimal:
        return sum((Decimal(x["net"] or "0") for x in statements if x["state"] == state), Decimal(0))

    s["credits_to_date"] = str(total("FINAL"))
    s["credits_this_period"] = str(total("OPEN"))
    s["credits_awaiting_final"] = str(total("ISSUED"))
    s["credits_provisional"] = str(total("OPEN") + total("ISSUED"))
    return s


class Changes:
    """A subscription to changes of one agreement (or any, for None), registered for as
    long as the watcher lives, so a change between two looks is never missed."""

    def __init__(self, model: ReadModel, agreement_id: str | None) -> None:
        self.model = model
        self.agreement_id = agreement_id
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        model.add_listener(self._listener)

    def _listener(self, aid: str) -> None:
        if self.agreement_id is None or aid == self.agreement_id:
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True once something changed since the last wait (then reset); False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self.model.remove_listener(self._listener)


def warm_task(
    model: ReadModel, is_ready: Callable[[], bool], delay: float = 0.2
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A runtime task that, once the gateway is ready, rebuilds (in a worker thread) the
    answers events dropped, `delay` seconds after a change, so queries find them kept rather
    than build them."""

    async def run(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def listener(_: str) -> None:
            loop.call_soon_threadsafe(changed.set)

        model.add_listener(listener)
        try:
            while not stop.is_set():
                if is_ready():
                    changed.clear()
                    await asyncio.to_thread(model.warm)
                    # The model's objects are long-lived and acyclic (freed by reference counting
                    # when replaced): kept out of the collector's full passes, which would
                    # otherwise walk all of them and stall queries for a fraction of a second.
                    gc.freeze()
                    waiter = asyncio.ensure_future(changed.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                    for t in (waiter, stopper):
                        t.cancel()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            model.remove_listener(listener)

    return run


# -- views over the read model (pure) -----------------------------------------------------------
class NotVisibleError(LookupError):
    """Not there, or not for this caller: the same answer either way, so nothing leaks."""


def visible(status: dict[str, Any], role: str, department: str) -> bool:
    return role != "department" or department in (status.get("parties") or {}).values()


def agreement_view(model: ReadModel, agreement_id: str, role: str, department: str) -> dict[str, Any]:
    status = model.agreement(agreement_id)
    if status is None or not visible(status, role, department):
        raise NotVisibleError(f"no agreement {agreement_id!r} visible to this caller")
    return status


def short_id(agreement_id: str) -> str:
    """The first 8 characters of an agreement id: with the title and parties, enough to tell
    agreements apart on a page (the whole id is always beside it)."""
    return agreement_id[:8]


def agreement_brief(s: dict[str, Any]) -> dict[str, Any]:
    """An agreement's entry in the department, service and portfolio views (`AgreementBrief`)."""
    return {
        k: s[k]
        for k in (
            "agreement_id",
            "short_id",
            "title",
            "kind",
            "state",
            "version",
            "health",
            "parties",
            "service_ids",
            "measured_service_ids",
            "credits_to_date",
            "credits_provisional",
        )
    }


_Kept = TypeVar("_Kept")


class KeptAtPositions(Generic[_Kept]):
    """Answers kept while the read model's positions stand still: its state moves only with them
    (every event applied moves one, a snapshot restored sets them), so an answer built at these
    positions is the answer until one moves. All dropped when the positions move; at most
    `max_kept` kept at a time (the rest built per call). Used on the event loop's thread only."""

    def __init__(self, model: ReadModel, max_kept: int = 1024) -> None:
        self.model, self.max_kept = model, max_kept
        self._at: dict[str, int] | None = None  # the positions what is kept was built at
        self._kept: dict[Hashable, _Kept] = {}
        self.builds = 0  # answers built (not served kept)

    def get(self, key: Hashable, build: Callable[[dict[str, int]], _Kept]) -> _Kept:
        """The answer kept under `key` at the positions now, or `build(positions)`'s (kept)."""
        positions = self.model.positions()  # read before the build: what is kept is at least this new
        if positions != self._at:
            self._kept, self._at = {}, positions
        kept = self._kept.get(key)
        if kept is None:
            kept = build(positions)
            self.builds += 1
            if len(self._kept) < self.max_kept:
                self._kept[key] = kept
        return kept


def check_department_visible(department_id: str, role: str, department: str) -> None:
    """A department's view is its own members' (and any other role's) to see."""
    if role == "department" and department_id != department:
        raise NotVisibleError(f"department {department_id!r} is not visible to this caller")


def seen_by(role: str, department: str) -> str:
    """Whose view of the agreements a caller has (`visible`): a department sees its own, any
    other role all of them ("*")."""
    return department if role == "department" else "*"


@dataclass
class DepartmentParts:
    """A department's view before it is written out: its agreements' answers as provider and as
    customer (in the model's order), the agreements per health, and its balances."""

    department_id: str
    as_provider: list[Answer]
    as_customer: list[Answer]
    health: dict[str, int]
    balance: str
    balance_provisional: str


def department_parts(model: ReadModel, department_id: str, role: str, department: str) -> DepartmentParts:
    check_department_visible(department_id, role, department)
    rows = model.answers()
    as_provider = [a for a in rows if a.summary["parties"].get("provider_department_id") == department_id]
    as_customer = [a for a in rows if a.summary["parties"].get("customer_department_id") == department_id]
    health: dict[str, int] = {}
    for a in as_provider + as_customer:
        h = a.summary["health"] or "UNKNOWN"
        health[h] = health.get(h, 0) + 1

    def balance(field: str) -> Decimal:
        received = sum((Decimal(a.summary[field]) for a in as_customer), Decimal(0))
        return received - sum((Decimal(a.summary[field]) for a in as_provider), Decimal(0))

    return DepartmentParts(
        department_id, as_provider, as_customer, health,
        str(balance("credits_to_date")), str(balance("credits_provisional")),
    )  # fmt: skip


def department_view(model: ReadModel, department_id: str, role: str, department: str) -> dict[str, Any]:
    p = department_parts(model, department_id, role, department)
    return {
        "department_id": p.department_id,
        "as_provider": [agreement_brief(a.summary) for a in p.as_provider],
        "as_customer": [agreement_brief(a.summary) for a in p.as_customer],
        "health": p.health,
        "balance": p.balance,
        "balance_provisional": p.balance_provisional,
    }


def service_answers(model: ReadModel, service_id: str, role: str, department: str) -> list[Answer]:
    """The answers of the agreements whose current effective terms measure the service (those
    naming it, and those naming none whose provider provides it) that the caller may see."""
    return [
        a for a in model.answers()
        if service_id in a.summary["measured_service_ids"] and visible(a.summary, role, department)
    ]  # fmt: skip


def service_view(model: ReadModel, service_id: str, role: str, department: str) -> dict[str, Any]:
    rows = service_answers(model, service_id, role, department)
    return {"service_id": service_id, "agreements": [agreement_brief(a.summary) for a in rows]}


def worst_objectives(s: dict[str, Any]) -> list[dict[str, str]]:
    """An agreement's objectives as a portfolio's `worst_objectives` entries."""
    out = []
    for o in s["objectives"]:
        c = o["current"] or {}
        out.append(
            {
                "agreement_id": s["agreement_id"],
                "short_id": s["short_id"],
                "title": s["title"],
                "objective_id": o["objective_id"],
                "status": c.get("status", ""),
                "value": c.get("value", ""),
                "target": c.get("target", ""),
                "budget_remaining": c.get("budget_remaining", ""),
            }
        )
    return out


def worst_key(w: dict[str, str]) -> tuple[int, Decimal]:
    """What a portfolio orders its worst objectives by: health, then budget remaining (least first)."""
    return HEALTH_ORDER.get(w["status"], 4), Decimal(w["budget_remaining"] or "100")


WORST_LISTED = 50  # a portfolio's worst objectives, at most


@dataclass
class PortfolioParts:
    """A portfolio before it is written out: the answers the caller sees (in the model's order),
    the agreements per state and per health, and the answers in the order the portfolio lists
    them (worst health first, then by title)."""

    rows: list[Answer]
    by_state: dict[str, int]
    by_health: dict[str, int]
    listed: list[Answer]


def portfolio_parts(model: ReadModel, role: str, department: str) -> PortfolioParts:
    rows = [a for a in model.answers() if visible(a.summary, role, department)]
    by_state: dict[str, int] = {}
    by_health: dict[str, int] = {}
    for a in rows:
        s = a.summary
        by_state[s["state"]] = by_state.get(s["state"], 0) + 1
        h = s["health"] or "UNKNOWN"
        by_health[h] = by_health.get(h, 0) + 1
    listed = sorted(rows, key=lambda a: (HEALTH_ORDER.get(a.summary["health"], 4), a.summary["title"]))
    return PortfolioParts(rows, by_state, by_health, listed)


def worst_ranked(model: ReadModel, rows: list[Answer]) -> list[tuple[int, int]]:
    """The portfolio's worst objectives among these agreements' (their kept parts): each as (the
    agreement's index in `rows`, the objective's in its parts), worst first — as `portfolio_view`
    orders them (a stable sort: agreements in the model's order, objectives in theirs)."""
    ranked = ((h, b, i, j) for i, a in enumerate(rows) for j, (h, b) in enumerate(model.parts(a).ranks))
    return [(i, j) for _, _, i, j in heapq.nsmallest(WORST_LISTED, ranked)]


def portfolio_view(model: ReadModel, role: str, department: str) -> dict[str, Any]:
    p = portfolio_parts(model, role, department)
    worst = [w for a in p.rows for w in worst_objectives(a.summary)]
    worst.sort(key=worst_key)  # stable: agreements in the model's order, objectives in theirs
    return {
        "agreements": len(p.rows),
        "by_state": p.by_state,
        "by_health": p.by_health,
        "worst_objectives": worst[:WORST_LISTED],
        "list": [agreement_brief(a.summary) for a in p.listed],
    }


def budget_view(
    model: ReadModel,
    agreement_id: str,
    objective_id: str,
    role: str,
    department: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """One objective's error budget remaining over time, per window, in [start, end) (every
    window held when unset): windows overlapping the range, their points in [start, end] (a
    window's closing point is as of its end)."""
    status = agreement_view(model, agreement_id, role, department)
    objective = next((o for o in status["objectives"] if o["objective_id"] == objective_id), None)
    term = next(
        (o for o in (status["effective_terms"].get("objectives") or []) if o.get("objective_id") == objective_id), None
    )
    if objective is None and term is None:
        raise NotVisibleError(f"agreement {agreement_id!r} has no objective {objective_id!r}")
    objective = objective or {"current": None, "closed": []}
    closed = {c["window_start"]: c for c in objective["closed"]}
    current = objective["current"] or {}
    windows = []
    for w in model.budget_series(agreement_id, objective_id):
        w_start, w_end = _instant(w["window_start"]), _instant(w["window_end"])
        if (start is not None and w_end <= start) or (end is not None and w_start >= end):
            continue
        latest = closed.get(w["window_start"]) or (current if current.get("window_start") == w["window_start"] else {})
        points = [
            p
            for p in w["points"]
            if (start is None or _instant(p["at"]) >= start) and (end is None or _instant(p["at"]) <= end)
        ]
        windows.append(
            {
                "window_start": w["window_start"],
                "window_end": w["window_end"],
                "closed": bool(latest.get("closed")),
                "status": latest.get("status", ""),
                "budget_remaining": latest.get("budget_remaining", ""),
                "points": points,
            }
        )
    return {
        "agreement_id": agreement_id,
        "objective_id": objective_id,
        "name": (term or {}).get("name", ""),
        "time_zone": status["time_zone"],
        "target": (current or {}).get("target", "") or str((term or {}).get("target", "")),
        "from": start.isoformat() if start else "",
        "to": end.isoformat() if end else "",
        "windows": windows,
    }


def breach_windows(
    model: ReadModel, agreement_id: str, objective_id: str, role: str, department: str
) -> dict[str, Any]:
    """One objective's breach timeline: each breached window (oldest first) with its breaches
    and its evaluation; the signals that explain it are metrics' to give (explain.py)."""
    status = agreement_view(model, agreement_id, role, department)
    objective = next((o for o in status["objectives"] if o["objective_id"] == objective_id), None)
    known = {o.get("objective_id") for o in status["effective_terms"].get("objectives") or []}
    if objective is None and objective_id not in known:
        raise NotVisibleError(f"agreement {agreement_id!r} has no objective {objective_id!r}")
    evaluations = {e["window_start"]: e for e in (objective or {}).get("closed", [])}
    current = (objective or {}).get("current") or {}
    if current:
        evaluations.setdefault(current["window_start"], current)
    windows: dict[str, dict[str, Any]] = {}
    for b in status["breaches"]:
        if b["objective_id"] != objective_id:
            continue
        e = evaluations.get(b["window_start"], {})
        w = windows.setdefault(
            b["window_start"],
            {
                "window_start": b["window_start"],
                "window_end": b["window_end"],
                "status": e.get("status", ""),
                "value": e.get("value", ""),
                "target": e.get("target", b["target"]),
                "breaches": [],
                "signals": [],
                "signals_truncated": False,
                "signals_error": "",
            },
        )
        w["breaches"].append(b)
    return {
        "agreement_id": agreement_id,
        "objective_id": objective_id,
        "time_zone": status["time_zone"],
        "windows": sorted(windows.values(), key=lambda w: _instant(w["window_start"])),
    }
