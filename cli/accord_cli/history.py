"""An agreement's history across services in one causal order, and its export.

Each service serves the events of its own log that concern an agreement
(`AuditService.AgreementHistory`), in log order, each with its chain hash. `causal_order`
merges those lists into one order in which

- every service's own events keep their log order, and
- an event comes after the event that caused it (its envelope's `causation_id` is the
  causing event's `event_id`: a consumer records the upstream event it applied) when that
  event is part of the history;

and, among the events free to come next, the one recorded earliest comes first (ties: the
direction events flow — agreements, metrics, billing — then position). Recording times
alone are not enough: two services' clocks may disagree, and a consumer may record in the
same instant as its source.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from accord.audit.v1 import audit_pb2
from accord.events.v1 import events_pb2

SERVICE_ORDER = {"agreements": 0, "metrics": 1, "billing": 2}
EXPORT_FORMAT = "accord.audit.export.v1"


@dataclass(frozen=True)
class Entry:
    """One event of the history and the proof of where it sits in its service's log."""

    envelope: events_pb2.EventEnvelope
    chain_hash: bytes

    @property
    def service(self) -> str:
        return self.envelope.source_service

    @property
    def key(self) -> tuple[str, int]:
        return (self.envelope.source_service, self.envelope.position)

    def as_dict(self) -> dict[str, Any]:
        doc = json_format.MessageToDict(self.envelope, preserving_proto_field_name=True)
        doc["chain_hash"] = self.chain_hash.hex()
        return doc


def entries_of(events: Iterable[audit_pb2.AuditedEvent]) -> list[Entry]:
    return [Entry(e.envelope, e.chain_hash) for e in events]


def causal_order(per_service: Mapping[str, Sequence[Entry]]) -> list[Entry]:
    """Merge each service's history (in its log order) into one causal order (see above)."""
    by_id: dict[str, tuple[str, int]] = {}
    for service, entries in per_service.items():
        for i, e in enumerate(entries):
            by_id[e.envelope.event_id] = (service, i)
    # Each event waits for its predecessor in its own log and for its cause, if present.
    waiting: dict[tuple[str, int], int] = {}
    unblocks: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for service, entries in per_service.items():
        for i, e in enumerate(entries):
            deps = []
            if i > 0:
                deps.append((service, i - 1))
            cause = by_id.get(e.envelope.causation_id)
            if cause is not None and cause != (service, i) and cause[0] != service:
                deps.append(cause)
            waiting[(service, i)] = len(deps)
            for d in deps:
                unblocks.setdefault(d, []).append((service, i))

    def rank(node: tuple[str, int]) -> tuple[Any, ...]:
        e = per_service[node[0]][node[1]]
        rec = e.envelope.recorded_at
        return (rec.seconds, rec.nanos, SERVICE_ORDER.get(node[0], 9), node[0], e.envelope.position)

    ready = [(rank(n), n) for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    out: list[Entry] = []
    while ready:
        _, node = heapq.heappop(ready)
        out.append(per_service[node[0]][node[1]])
        for nxt in unblocks.get(node, ()):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, (rank(nxt), nxt))
    if len(out) != len(waiting):  # a cycle: causation ids that contradict the logs' order
        placed = {e.key for e in out}
        rest = sorted((n for n in waiting if per_service[n[0]][n[1]].key not in placed), key=rank)
        out.extend(per_service[n[0]][n[1]] for n in rest)
    return out


def short_type(envelope: events_pb2.EventEnvelope) -> str:
    return envelope.type.rsplit(".", 1)[-1]


def payload_dict(envelope: events_pb2.EventEnvelope) -> dict[str, Any]:
    doc = json_format.MessageToDict(envelope, preserving_proto_field_name=True)
    payload = doc.get("payload") or {}
    payload.pop("@type", None)
    return dict(payload)


# -- export ---------------------------------------------------------------------------------------------
EVALUATION_TYPES = {"EvaluationUpdated", "WindowClosed", "EvaluationRestated"}
EVALUATION_COLUMNS = [
    "service", "position", "recorded_at", "event", "objective_id", "window_start", "window_end", "closed",
    "status", "value", "target", "agreement_version", "formula_id", "formula_version", "input_digest",
]  # fmt: skip
HISTORY_COLUMNS = [
    "recorded_at", "service", "position", "event_id", "event", "actor_role", "actor_department",
    "correlation_id", "causation_id", "chain_hash", "reason",
]  # fmt: skip


def history_rows(entries: Sequence[Entry]) -> list[dict[str, str]]:
    return [
        {
            "recorded_at": e.envelope.recorded_at.ToJsonString(),
            "service": e.service,
            "position": str(e.envelope.position),
            "event_id": e.envelope.event_id,
            "event": short_type(e.envelope),
            "actor_role": e.envelope.actor.role,
            "actor_department": e.envelope.actor.department,
            "correlation_id": e.envelope.correlation_id,
            "causation_id": e.envelope.causation_id,
            "chain_hash": e.chain_hash.hex(),
            # The event's own why, when it states one (a signal correction's, a dispute's, an
            # amendment's rejection…): beside who and when.
            "reason": str(payload_dict(e.envelope).get("reason", "")),
        }
        for e in entries
    ]


def evaluation_rows(entries: Sequence[Entry]) -> list[dict[str, str]]:
    rows = []
    for e in entries:
        kind = short_type(e.envelope)
        if kind not in EVALUATION_TYPES:
            continue
        payload = payload_dict(e.envelope)
        ev = payload.get("new") if kind == "EvaluationRestated" else payload.get("evaluation")
        ev = ev or {}
        rows.append(
            {
                "service": e.service,
                "position": str(e.envelope.position),
                "recorded_at": e.envelope.recorded_at.ToJsonString(),
                "event": kind,
                **{c: str(ev.get(c, "")) for c in EVALUATION_COLUMNS[4:]},
            }
        )
    return rows


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow(r)


def chain_page_lines(page: audit_pb2.ReadChainResponse) -> Iterable[str]:
    """One JSON line per record and per chain entry of a ReadChain page."""
    for r in page.records:
        yield json.dumps(
            {
                "record": {
                    "position": r.position,
                    "originator_id": r.originator_id,
                    "originator_version": r.originator_version,
                    "topic": r.topic,
                    "state": base64.b64encode(r.state).decode(),
                }
            },
            sort_keys=True,
        )
    for c in page.chain:
        yield json.dumps({"chain": {"position": c.position, "hash": c.hash.hex()}}, sort_keys=True)


def read_chain_file(path: Path) -> audit_pb2.ReadChainResponse:
    """A log exported by `chain_page_lines` as one ReadChainResponse (records and chain sorted)."""
    page = audit_pb2.ReadChainResponse()
    records = []
    chain = []
    with path.open() as f:
        for line in f:
            doc = json.loads(line)
            if "record" in doc:
                r = doc["record"]
                records.append(
                    audit_pb2.ChainRecord(
                        position=r["position"],
                        originator_id=r["originator_id"],
                        originator_version=r["originator_version"],
                        topic=r["topic"],
                        state=base64.b64decode(r["state"]),
                    )
                )
            elif "chain" in doc:
                chain.append(
                    audit_pb2.ChainEntry(position=doc["chain"]["position"], hash=bytes.fromhex(doc["chain"]["hash"]))
                )
    page.records.extend(sorted(records, key=lambda r: r.position))
    page.chain.extend(sorted(chain, key=lambda c: c.position))
    return page


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
