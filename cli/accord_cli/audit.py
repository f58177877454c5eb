"""What an auditor does: replay an agreement across services, reconstruct it as known and as
effective at an instant, verify the services' hash-chained logs, re-derive evaluations and
assessments from the raw inputs, price a proposed amendment over past periods, export
everything for an offline check."""

from __future__ import annotations

import json
from typing import Any

import typer
from google.protobuf import json_format
from rich.progress import Progress
from rich.table import Table

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord_cli.core import audit_app, channel, emit, err, metadata, out, state


# -- audit -----------------------------------------------------------------------------------------
def _read_log(service: str, predicate: Any, progress: Progress) -> list[events_pb2.EventEnvelope]:
    found: list[events_pb2.EventEnvelope] = []
    with channel(service) as ch:
        stub = events_pb2_grpc.EventLogServiceStub(ch)
        first = stub.ReadEvents(events_pb2.ReadEventsRequest(after_position=0, limit=1), metadata=metadata())
        task = progress.add_task(f"reading {service}", total=max(first.head_position, 1))
        after = 0
        while True:
            r = stub.ReadEvents(events_pb2.ReadEventsRequest(after_position=after, limit=2000), metadata=metadata())
            if not r.events:
                break
            found.extend(e for e in r.events if predicate(e))
            after = r.events[-1].position
            progress.update(task, completed=after)
        progress.update(task, completed=max(first.head_position, 1))
    return found


def _mentions(agreement_id: str) -> Any:
    def predicate(env: events_pb2.EventEnvelope) -> bool:
        return agreement_id in env.payload.value.decode("latin-1")

    return predicate


@audit_app.command("replay")
def replay(agreement_id: str) -> None:
    """An agreement's whole history across services, in recorded order: terms and versions,
    evaluations, breaches, restatements, assessments, disputes, ledger entries — each with its
    source service and position (auditors, admins)."""
    with Progress(console=err, transient=True, disable=state.as_json) as progress:
        with channel("agreements") as ch:
            history = list(apb_grpc.AgreementsServiceStub(ch).StreamHistory(
                apb.StreamHistoryRequest(agreement_id=agreement_id), metadata=metadata()))  # fmt: skip
        events = history + _read_log("metrics", _mentions(agreement_id), progress)
        events += _read_log("billing", _mentions(agreement_id), progress)
    events.sort(key=lambda e: (e.recorded_at.ToDatetime(), e.source_service, e.position))
    if state.as_json:
        for e in events:
            print(json.dumps(json_format.MessageToDict(e, preserving_proto_field_name=True), sort_keys=True))
        return
    t = Table(title=f"history of agreement {agreement_id}: {len(events)} events")
    for col in ("recorded at", "service", "position", "event", "actor"):
        t.add_column(col)
    for e in events:
        t.add_row(e.recorded_at.ToJsonString(), e.source_service, str(e.position), e.type.rsplit(".", 1)[-1],
                  e.actor.department or e.actor.role)  # fmt: skip
    out.print(t)


@audit_app.command("recompute")
def recompute(agreement_id: str, objective_id: str, window_start: str) -> None:
    """Recompute a window from the raw signals; exit 5 when it does not match the record."""
    with channel("metrics") as ch:
        r = mpb_grpc.MetricsServiceStub(ch).RecomputeWindow(
            mpb.RecomputeWindowRequest(agreement_id=agreement_id, objective_id=objective_id, window_start=window_start),
            metadata=metadata(),
        )
    emit({"matches": r.matches, "recorded": r.recorded.value, "recomputed": r.recomputed.value,
           "input_digest": r.recorded.input_digest})  # fmt: skip
    if not r.matches:
        raise typer.Exit(5)
