"""The gateway's read model: current status of every agreement, department and service,
built from the agreements, metrics and billing streams (each event applied once, in order:
positions are tracked per stream) and rebuildable from scratch. Every answer says which
position of each stream it reflects. Nothing here is authoritative: the owning services'
stores are the record."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.billing.v1 import events_pb2 as billing_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
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


def _terms(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _new_status(agreement_id: str) -> dict[str, Any]:
    return {
        "agreement_id": agreement_id,
        "title": "",
        "state": "",
        "version": 0,
        "parties": {},
        "kind": "",
        "level": "",
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


class ReadModel:
    """Thread-safe in-memory status, fed by the gateway's consumers (`apply_upstream`)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._positions = dict.fromkeys(SOURCES, 0)
        self._agreements: dict[str, dict[str, Any]] = {}
        self._statement_agreement: dict[str, str] = {}
        self._listeners: list[Callable[[str], None]] = []

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
            listeners = list(self._listeners)
        if changed:
            for listener in listeners:
                listener(changed)
        return True

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
                    "at": env.occurred_at.ToJsonString(),
                }
            )
            return str(b.agreement_id)
        if name == "BudgetWarning":
            w = metric_events.BudgetWarning()
            env.payload.Unpack(w)
            self._objective(w.agreement_id, w.objective_id)["warnings"].append(
                {"window_start": w.window_start, "level": w.level}
            )
            return str(w.agreement_id)
        if name == "BurnRateAlert":
            a = metric_events.BurnRateAlert()
            env.payload.Unpack(a)
            self._objective(a.agreement_id, a.objective_id)["burn_alerts"].append(
                {"window_start": a.window_start, "name": a.name}
            )
            return str(a.agreement_id)
        return ""

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
            }
            return str(s.agreement_id)
        if name in ("StatementIssued", "StatementFinalized"):
            msg: Any = getattr(billing_events, name)()
            env.payload.Unpack(msg)
            aid = self._statement_agreement.get(msg.statement_id, "")
            if aid:
                st = self._agreements[aid]["statements"][msg.statement_id]
                st["state"] = "ISSUED" if name == "StatementIssued" else "FINAL"
                st["net"] = msg.totals.net
            return aid
        if name in ("DisputeOpened", "DisputeResolved"):
            d: Any = getattr(billing_events, name)()
            env.payload.Unpack(d)
            aid = self._statement_agreement.get(d.statement_id, "")
            if aid:
                disputes = self._agreements[aid]["disputes"]
                if name == "DisputeOpened":
                    disputes.append(
                        {
                            "dispute_id": d.dispute_id,
                            "statement_id": d.statement_id,
                            "objective_id": d.objective_id,
                            "state": "OPEN",
                            "reason": d.reason,
                        }
                    )
                else:
                    for x in disputes:
                        if x["dispute_id"] == d.dispute_id:
                            x["state"] = "ACCEPTED" if d.accepted else "REJECTED"
            return aid
        return ""

    # -- queries ------------------------------------------------------------------------------
    def agreement(self, agreement_id: str) -> dict[str, Any] | None:
        with self._lock:
            status = self._agreements.get(agreement_id)
            if not status or not status["state"]:
                return None
            status = copy.deepcopy(status)
            status["effective_terms"] = self._effective(status["terms"])
        return _summarise(status)

    def _effective(self, terms: dict[str, Any], depth: int = 0) -> dict[str, Any]:
        """The terms merged with their parent chain (as the read model knows the parents)."""
        parent = self._agreements.get(terms.get("parent_agreement_id") or "")
        if parent is None or not parent["terms"] or depth > 8:
            return terms
        return effective_terms(self._effective(parent["terms"], depth + 1), terms)

    def current_objectives(self, states: frozenset[str]) -> list[tuple[str, list[str], str, dict[str, Any]]]:
        """(agreement id, its service ids, objective id, the current window's evaluation) of
        every objective with one, of the agreements in `states`, sorted; cheap (no deep copy)."""
        with self._lock:
            rows = [
                (aid, list(s["service_ids"]), oid, dict(o["current"]))
                for aid, s in self._agreements.items()
                if s["state"] in states
                for oid, o in s["objectives"].items()
                if o["current"]
            ]
        rows.sort(key=lambda r: (r[0], r[2]))
        return rows

    def agreements(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = [copy.deepcopy(s) for s in self._agreements.values() if s["state"]]
        return [_summarise(s) for s in rows]


def _summarise(s: dict[str, Any]) -> dict[str, Any]:
    """Derived figures: health, open breaches, credits this period and to date."""
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
    s["credits_to_date"] = str(sum((Decimal(x["net"] or "0") for x in statements if x["state"] != "OPEN"), Decimal(0)))
    s["credits_this_period"] = statements[-1]["net"] if statements and statements[-1]["state"] != "OPEN" else "0"
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


def _brief(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: s[k]
        for k in ("agreement_id", "title", "state", "version", "health", "parties", "service_ids", "credits_to_date")
    }


def department_view(model: ReadModel, department_id: str, role: str, department: str) -> dict[str, Any]:
    if role == "department" and department_id != department:
        raise NotVisibleError(f"department {department_id!r} is not visible to this caller")
    rows = model.agreements()
    as_provider = [s for s in rows if s["parties"].get("provider_department_id") == department_id]
    as_customer = [s for s in rows if s["parties"].get("customer_department_id") == department_id]
    health: dict[str, int] = {}
    for s in as_provider + as_customer:
        health[s["health"] or "UNKNOWN"] = health.get(s["health"] or "UNKNOWN", 0) + 1
    received = sum((Decimal(s["credits_to_date"]) for s in as_customer), Decimal(0))
    paid = sum((Decimal(s["credits_to_date"]) for s in as_provider), Decimal(0))
    return {
        "department_id": department_id,
        "as_provider": [_brief(s) for s in as_provider],
        "as_customer": [_brief(s) for s in as_customer],
        "health": health,
        "balance": str(received - paid),
    }


def service_view(model: ReadModel, service_id: str, role: str, department: str) -> dict[str, Any]:
    rows = [s for s in model.agreements() if service_id in s["service_ids"] and visible(s, role, department)]
    return {"service_id": service_id, "agreements": [_brief(s) for s in rows]}


def portfolio_view(model: ReadModel, role: str, department: str) -> dict[str, Any]:
    rows = [s for s in model.agreements() if visible(s, role, department)]
    by_state: dict[str, int] = {}
    by_health: dict[str, int] = {}
    worst = []
    for s in rows:
        by_state[s["state"]] = by_state.get(s["state"], 0) + 1
        by_health[s["health"] or "UNKNOWN"] = by_health.get(s["health"] or "UNKNOWN", 0) + 1
        for o in s["objectives"]:
            c = o["current"] or {}
            worst.append(
                {
                    "agreement_id": s["agreement_id"],
                    "title": s["title"],
                    "objective_id": o["objective_id"],
                    "status": c.get("status", ""),
                    "value": c.get("value", ""),
                    "target": c.get("target", ""),
                    "budget_remaining": c.get("budget_remaining", ""),
                }
            )
    worst.sort(key=lambda w: (HEALTH_ORDER.get(w["status"], 4), Decimal(w["budget_remaining"] or "100")))
    return {
        "agreements": len(rows),
        "by_state": by_state,
        "by_health": by_health,
        "worst_objectives": worst[:50],
        "list": [_brief(s) for s in sorted(rows, key=lambda s: (HEALTH_ORDER.get(s["health"], 4), s["title"]))],
    }
