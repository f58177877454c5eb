"""What a department does: reference data, drafting, proposing, accepting, amending, status
(more in lifecycle, money and signals_cmd)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import json_format
from rich.table import Table

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.gateway.v1 import gateway_pb2 as gpb
from accord.gateway.v1 import gateway_pb2_grpc as gpb_grpc
from accord_cli.core import (
    agreement_table,
    app,
    channel,
    emit,
    metadata,
    out,
    read_terms,
    register_app,
    state,
    timestamp_of,
)


# -- reference data -------------------------------------------------------------------------------
@register_app.command("department")
def register_department(department_id: str, name: str) -> None:
    """Register a department (admin)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RegisterDepartment(
            apb.RegisterDepartmentRequest(department_id=department_id, name=name), metadata=metadata()
        )
    emit(r)


@register_app.command("service")
def register_service(service_id: str, name: str, provider: str) -> None:
    """Register a service and its provider department (admin)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RegisterService(
            apb.RegisterServiceRequest(service_id=service_id, name=name, provider_department_id=provider),
            metadata=metadata(),
        )
    emit(r)


# -- agreements ------------------------------------------------------------------------------------
@app.command()
def draft(terms_file: Path, request_id: Annotated[str, typer.Option(help="Retry-safe request id")] = "") -> None:
    """Draft an agreement from a YAML file of terms (the provider)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).DraftAgreement(
            apb.DraftAgreementRequest(terms=read_terms(terms_file), request_id=request_id), metadata=metadata()
        )
    emit(r, agreement_table(r.agreement))


@app.command()
def propose(agreement_id: str) -> None:
    """Propose a draft to the customer (the provider)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).ProposeAgreement(
            apb.ProposeAgreementRequest(agreement_id=agreement_id), metadata=metadata()
        )
    emit(r, agreement_table(r.agreement))


@app.command()
def accept(agreement_id: str) -> None:
    """Accept a proposed agreement: version 1 (the customer)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).AcceptAgreement(
            apb.AcceptAgreementRequest(agreement_id=agreement_id), metadata=metadata()
        )
    emit(r, agreement_table(r.agreement))


@app.command()
def reject(agreement_id: str, reason: Annotated[str, typer.Option(help="Why")]) -> None:
    """Reject a proposal with a reason (the customer)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RejectProposal(
            apb.RejectProposalRequest(agreement_id=agreement_id, reason=reason), metadata=metadata()
        )
    emit(r, agreement_table(r.agreement))


@app.command()
def amend(
    agreement_id: str,
    terms_file: Path,
    effective_from: Annotated[str, typer.Option(help="ISO-8601 instant (a local time with --tz)")],
    reason: Annotated[str, typer.Option(help="Why")],
    tz: Annotated[str, typer.Option("--tz", help="IANA zone for a time without an offset")] = "",
) -> None:
    """Propose an amendment: the complete new terms from a YAML file (a party)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).ProposeAmendment(
            apb.ProposeAmendmentRequest(
                agreement_id=agreement_id,
                terms=read_terms(terms_file),
                effective_from=timestamp_of(effective_from, tz, "--effective-from"),
                reason=reason,
            ),
            metadata=metadata(),
        )
    emit(r, agreement_table(r.agreement))
    if not state.as_json:
        out.print(f"amendment id: [bold]{r.amendment_id}[/bold]")


@app.command("accept-amendment")
def accept_amendment(agreement_id: str, amendment_id: str) -> None:
    """Accept a pending amendment (the counterparty)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).AcceptAmendment(
            apb.AcceptAmendmentRequest(agreement_id=agreement_id, amendment_id=amendment_id), metadata=metadata()
        )
    emit(r, agreement_table(r.agreement))


@app.command()
def status(agreement_id: Annotated[str, typer.Argument(help="An agreement; without it, the portfolio")] = "") -> None:
    """Current status from the gateway."""
    with channel("gateway") as ch:
        stub = gpb_grpc.GatewayServiceStub(ch)
        if agreement_id:
            r = stub.GetAgreementStatus(gpb.GetAgreementStatusRequest(agreement_id=agreement_id), metadata=metadata())
        else:
            r = stub.GetPortfolio(gpb.GetPortfolioRequest(), metadata=metadata())
    answer = r.agreement if agreement_id else r.portfolio
    doc = {
        "status": json_format.MessageToDict(
            answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        ),
        "positions": {k: int(v) for k, v in r.positions.items()},
    }
    if state.as_json or not agreement_id:
        emit(doc)
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
