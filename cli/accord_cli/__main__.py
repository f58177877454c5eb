"""`accord` — what a department or an auditor does, from a terminal or a script.

Tokens come from --token, the ACCORD_TOKEN environment variable, or `token = "…"` in
~/.config/accord/config.toml (or the file ACCORD_CONFIG names). Addresses come from
ACCORD_AGREEMENTS_ADDR, ACCORD_METRICS_ADDR, ACCORD_BILLING_ADDR, ACCORD_GATEWAY_ADDR
(defaults: 127.0.0.1:50051…50054). `--json` prints machine-readable output.

Exit codes scripts can rely on: 0 done; 2 bad usage; 3 not found; 4 not authenticated or
not allowed; 5 refused as invalid or not possible now; 6 a concurrent change won (retry);
1 anything else (the service unreachable, an internal error)."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

# The public event messages, so that replayed envelopes' payloads can be shown as JSON.
from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import events_pb2 as _agreement_events  # noqa: F401
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.billing.v1 import events_pb2 as _billing_events  # noqa: F401
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.gateway.v1 import gateway_pb2 as gpb
from accord.gateway.v1 import gateway_pb2_grpc as gpb_grpc
from accord.metrics.v1 import events_pb2 as _metric_events  # noqa: F401
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc

EXIT = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.UNAUTHENTICATED: 4,
    grpc.StatusCode.PERMISSION_DENIED: 4,
    grpc.StatusCode.INVALID_ARGUMENT: 5,
    grpc.StatusCode.FAILED_PRECONDITION: 5,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.ABORTED: 6,
}
DEFAULT_ADDR = {
    "agreements": "127.0.0.1:50051",
    "metrics": "127.0.0.1:50052",
    "billing": "127.0.0.1:50053",
    "gateway": "127.0.0.1:50054",
}

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
register_app = typer.Typer(help="Reference data (admins).", no_args_is_help=True)
audit_app = typer.Typer(help="What an auditor does: replay, recompute.", no_args_is_help=True)
app.add_typer(register_app, name="register")
app.add_typer(audit_app, name="audit")
out = Console()
err = Console(stderr=True)


class State:
    token: str = ""
    as_json: bool = False


state = State()


@app.callback()
def _options(
    token: Annotated[str, typer.Option(help="Bearer token (else ACCORD_TOKEN, else the config file)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    state.token = token or os.environ.get("ACCORD_TOKEN", "") or _config_token()
    state.as_json = as_json


def _config_token() -> str:
    path = Path(os.environ.get("ACCORD_CONFIG", Path.home() / ".config" / "accord" / "config.toml"))
    if not path.exists():
        return ""
    try:
        return str(tomllib.loads(path.read_text()).get("token", ""))
    except tomllib.TOMLDecodeError as e:
        err.print(f"[red]config file {path} is not valid TOML: {e}[/red]")
        raise typer.Exit(2) from None


def _metadata() -> list[tuple[str, str]]:
    if not state.token:
        err.print(
            '[red]no token: pass --token, set ACCORD_TOKEN, or put token = "…" in ~/.config/accord/config.toml[/red]'
        )
        raise typer.Exit(4)
    return [("authorization", f"Bearer {state.token}")]


@contextmanager
def _channel(service: str) -> Iterator[grpc.Channel]:
    addr = os.environ.get(f"ACCORD_{service.upper()}_ADDR", DEFAULT_ADDR[service])
    with grpc.insecure_channel(addr) as ch:
        try:
            yield ch
        except grpc.RpcError as e:
            code = e.code()
            details = e.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                err.print(f"[red]{service} at {addr} is not reachable: {details}[/red]")
                raise typer.Exit(1) from None
            if state.as_json:
                print(json.dumps({"error": details, "code": code.name}))
            else:
                err.print(f"[red]{code.name}: {details}[/red]")
            raise typer.Exit(EXIT.get(code, 1)) from None


def _emit(message: Message | dict[str, Any], table: Table | None = None) -> None:
    if state.as_json or table is None:
        doc = (
            json_format.MessageToDict(message, preserving_proto_field_name=True)
            if isinstance(message, Message)
            else message
        )
        print(json.dumps(doc, indent=None if state.as_json else 2, sort_keys=True))
    else:
        out.print(table)


def _terms(path: Path) -> terms_pb2.AgreementTerms:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        err.print(f"[red]cannot read terms from {path}: {e}[/red]")
        raise typer.Exit(2) from None
    try:
        return json_format.ParseDict(data, terms_pb2.AgreementTerms())
    except json_format.ParseError as e:
        err.print(f"[red]{path} is not valid agreement terms: {e}[/red]")
        raise typer.Exit(5) from None


def _stamp(value: str) -> Timestamp:
    t = Timestamp()
    try:
        t.FromDatetime(datetime.fromisoformat(value).astimezone(UTC))
    except ValueError:
        err.print(f"[red]not an ISO-8601 instant with a time zone: {value!r}[/red]")
        raise typer.Exit(2) from None
    return t


def _agreement_table(a: apb.Agreement) -> Table:
    t = Table(title=f"{a.terms.title} ({a.agreement_id})")
    t.add_column("state")
    t.add_column("version")
    t.add_column("revision")
    t.add_column("provider → customer")
    t.add_row(apb.AgreementState.Name(a.state).removeprefix("AGREEMENT_STATE_"), str(a.version), str(a.revision),
              f"{a.terms.parties.provider_department_id} → {a.terms.parties.customer_department_id}")  # fmt: skip
    return t


# -- reference data -------------------------------------------------------------------------------
@register_app.command("department")
def register_department(department_id: str, name: str) -> None:
    """Register a department (admin)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RegisterDepartment(
            apb.RegisterDepartmentRequest(department_id=department_id, name=name), metadata=_metadata()
        )
    _emit(r)


@register_app.command("service")
def register_service(service_id: str, name: str, provider: str) -> None:
    """Register a service and its provider department (admin)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RegisterService(
            apb.RegisterServiceRequest(service_id=service_id, name=name, provider_department_id=provider),
            metadata=_metadata(),
        )
    _emit(r)


# -- agreements ------------------------------------------------------------------------------------
@app.command()
def draft(terms_file: Path, request_id: Annotated[str, typer.Option(help="Retry-safe request id")] = "") -> None:
    """Draft an agreement from a YAML file of terms (the provider)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).DraftAgreement(
            apb.DraftAgreementRequest(terms=_terms(terms_file), request_id=request_id), metadata=_metadata()
        )
    _emit(r, _agreement_table(r.agreement))


@app.command()
def propose(agreement_id: str) -> None:
    """Propose a draft to the customer (the provider)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).ProposeAgreement(
            apb.ProposeAgreementRequest(agreement_id=agreement_id), metadata=_metadata()
        )
    _emit(r, _agreement_table(r.agreement))


@app.command()
def accept(agreement_id: str) -> None:
    """Accept a proposed agreement: version 1 (the customer)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).AcceptAgreement(
            apb.AcceptAgreementRequest(agreement_id=agreement_id), metadata=_metadata()
        )
    _emit(r, _agreement_table(r.agreement))


@app.command()
def reject(agreement_id: str, reason: Annotated[str, typer.Option(help="Why")]) -> None:
    """Reject a proposal with a reason (the customer)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RejectProposal(
            apb.RejectProposalRequest(agreement_id=agreement_id, reason=reason), metadata=_metadata()
        )
    _emit(r, _agreement_table(r.agreement))


@app.command()
def amend(
    agreement_id: str,
    terms_file: Path,
    effective_from: Annotated[str, typer.Option(help="ISO-8601 instant")],
    reason: Annotated[str, typer.Option(help="Why")],
) -> None:
    """Propose an amendment: the complete new terms from a YAML file (a party)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).ProposeAmendment(
            apb.ProposeAmendmentRequest(
                agreement_id=agreement_id,
                terms=_terms(terms_file),
                effective_from=_stamp(effective_from),
                reason=reason,
            ),
            metadata=_metadata(),
        )
    _emit(r, _agreement_table(r.agreement))
    if not state.as_json:
        out.print(f"amendment id: [bold]{r.amendment_id}[/bold]")


@app.command("accept-amendment")
def accept_amendment(agreement_id: str, amendment_id: str) -> None:
    """Accept a pending amendment (the counterparty)."""
    with _channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).AcceptAmendment(
            apb.AcceptAmendmentRequest(agreement_id=agreement_id, amendment_id=amendment_id), metadata=_metadata()
        )
    _emit(r, _agreement_table(r.agreement))


@app.command()
def dispute(
    statement_id: str, objective_id: str, window_start: str, reason: Annotated[str, typer.Option(help="Why")]
) -> None:
    """Dispute an assessment of an issued statement (the customer)."""
    with _channel("billing") as ch:
        r = bpb_grpc.BillingServiceStub(ch).DisputeAssessment(
            bpb.DisputeAssessmentRequest(
                statement_id=statement_id, objective_id=objective_id, window_start=window_start, reason=reason
            ),
            metadata=_metadata(),
        )
    _emit(r)


@app.command()
def status(agreement_id: Annotated[str, typer.Argument(help="An agreement; without it, the portfolio")] = "") -> None:
    """Current status from the gateway."""
    with _channel("gateway") as ch:
        stub = gpb_grpc.GatewayServiceStub(ch)
        if agreement_id:
            r = stub.GetAgreementStatus(gpb.GetAgreementStatusRequest(agreement_id=agreement_id), metadata=_metadata())
        else:
            r = stub.GetPortfolio(gpb.GetPortfolioRequest(), metadata=_metadata())
    doc = json_format.MessageToDict(r, preserving_proto_field_name=True)
    if state.as_json or not agreement_id:
        _emit(doc)
        return
    s = doc["status"]
    t = Table(title=f"{s.get('title')} — {s.get('state')}, health {s.get('health') or '–'}")
    for col in ("objective", "status", "value", "target", "budget left %"):
        t.add_column(col)
    for o in s.get("objectives", []):
        c = o.get("current") or {}
        t.add_row(
            o.get("objective_id"),
            c.get("status", ""),
            c.get("value", ""),
            c.get("target", ""),
            c.get("budget_remaining", ""),
        )
    out.print(t)


# -- audit -----------------------------------------------------------------------------------------
def _read_log(service: str, predicate: Any, progress: Progress) -> list[events_pb2.EventEnvelope]:
    found: list[events_pb2.EventEnvelope] = []
    with _channel(service) as ch:
        stub = events_pb2_grpc.EventLogServiceStub(ch)
        first = stub.ReadEvents(events_pb2.ReadEventsRequest(after_position=0, limit=1), metadata=_metadata())
        task = progress.add_task(f"reading {service}", total=max(first.head_position, 1))
        after = 0
        while True:
            r = stub.ReadEvents(events_pb2.ReadEventsRequest(after_position=after, limit=2000), metadata=_metadata())
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
        with _channel("agreements") as ch:
            history = list(apb_grpc.AgreementsServiceStub(ch).StreamHistory(
                apb.StreamHistoryRequest(agreement_id=agreement_id), metadata=_metadata()))  # fmt: skip
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
    with _channel("metrics") as ch:
        r = mpb_grpc.MetricsServiceStub(ch).RecomputeWindow(
            mpb.RecomputeWindowRequest(agreement_id=agreement_id, objective_id=objective_id, window_start=window_start),
            metadata=_metadata(),
        )
    _emit({"matches": r.matches, "recorded": r.recorded.value, "recomputed": r.recomputed.value,
           "input_digest": r.recorded.input_digest})  # fmt: skip
    if not r.matches:
        raise typer.Exit(5)


def main() -> int:
    try:
        app()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
