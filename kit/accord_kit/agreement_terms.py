"""For consumers of the agreements stream: the effective terms of an agreement with a parent
(docs/domain.md §1) — the parent's effective terms with the child's components over them,
objectives merged one by one. The agreements service applies the same rule in its own
domain (`accord_agreements.terms.merge`); tests/test_contract_rules.py keeps the two equal."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

OWN_KEYS = ("parties", "kind", "level", "parent_agreement_id", "title")


def effective_terms(parent_effective: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(parent_effective)
    for key, value in child.items():
        if key != "objectives" and value not in (None, "", [], {}):
            merged[key] = copy.deepcopy(value)
    objectives = {o["objective_id"]: o for o in parent_effective.get("objectives") or [] if o.get("objective_id")}
    for o in child.get("objectives") or []:
        if o.get("objective_id"):
            objectives[o["objective_id"]] = copy.deepcopy(o)
    merged["objectives"] = list(objectives.values())
    for key in OWN_KEYS:
        if key in child:
            merged[key] = copy.deepcopy(child[key])
    return merged


def state_change_at(envelope: Any, message: Any) -> datetime:
    """When an `AgreementSuspended` or `AgreementResumed` takes effect: the instant the event
    carries (`suspended_at` / `resumed_at`, the agreements service's clock at the command),
    else — an event recorded before that field existed — its recording time, else its
    occurrence. Metrics (what is measured) and billing (what is charged) both date a
    suspension by this one rule, so they stop and start at the same instant."""
    field = "suspended_at" if message.DESCRIPTOR.name == "AgreementSuspended" else "resumed_at"
    for holder, name in ((message, field), (envelope, "recorded_at"), (envelope, "occurred_at")):
        if holder.HasField(name):
            return getattr(holder, name).ToDatetime(tzinfo=UTC)
    raise ValueError(f"{message.DESCRIPTOR.name} of agreement {message.agreement_id} carries no instant")
