"""The BillingService gRPC servicer: protobuf ⇄ the application's records; errors through ERROR_MAP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc

from accord.billing.v1 import billing_pb2 as pb
from accord.billing.v1 import billing_pb2_grpc as pb_grpc
from accord.billing.v1 import events_pb2 as ev
from accord_billing.application import Billing
from accord_billing.assessment import AssessmentError
from accord_billing.codec import totals_message
from accord_billing.domain import InvalidRequestError, NotAPartyError, NotFoundError, Statement, TransitionError
from accord_kit.context import current_principal

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotAPartyError: grpc.StatusCode.PERMISSION_DENIED,
    TransitionError: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    AssessmentError: grpc.StatusCode.INVALID_ARGUMENT,
}
STATE = {"OPEN": pb.STATEMENT_STATE_OPEN, "ISSUED": pb.STATEMENT_STATE_ISSUED, "FINAL": pb.STATEMENT_STATE_FINAL}


def assessment_message(statement_id: str, key: str, a: dict[str, Any]) -> ev.AssessmentRecorded:
    objective_id, window_start = key.split("|", 1)
    return ev.AssessmentRecorded(
        statement_id=statement_id,
        objective_id=objective_id,
        window_start=window_start,
        status=a["status"],
        value=a["value"],
        input_digest=a["evaluation"].get("input_digest", ""),
        agreement_version=a["version"],
        lines=[
            ev.AssessmentLine(kind=x["kind"], amount=x["amount"], derivation=x["derivation"], applied=x["applied"])
            for x in a["lines"]
        ],
        net=a["net"],
    )


def statement_message(s: Statement) -> pb.Statement:
    sid = str(s.id)
    out = pb.Statement(
        statement_id=sid,
        agreement_id=s.agreement_id,
        period_start=s.period_start,
        period_end=s.period_end,
        currency=s.currency,
        state=STATE[s.state],
        issued_at=s.issued_at,
        claim_until=s.claim_until,
    )
    out.assessments.extend(assessment_message(sid, k, a) for k, a in sorted(s.assessments.items()))
    for a in s.adjustments:
        objective_id, window_start = a["key"].split("|", 1)
        out.adjustments.append(
            ev.AdjustmentRecorded(
                statement_id=sid, objective_id=objective_id, window_start=window_start, old_amount=a["old"],
                new_amount=a["new"], difference=a["difference"], reason=a["reason"],
            )
        )  # fmt: skip
    for dispute_id, d in s.disputes.items():
        objective_id, window_start = d["key"].split("|", 1)
        out.disputes.append(
            pb.Dispute(
                dispute_id=dispute_id, objective_id=objective_id, window_start=window_start, reason=d["reason"],
                state=d["state"], amount=d.get("amount", ""), resolution=d.get("resolution", ""),
            )
        )  # fmt: skip
    if s.totals:
        out.totals.CopyFrom(totals_message(s.totals))
    return out


class BillingServicer(pb_grpc.BillingServiceServicer):
    def __init__(self, app: Billing) -> None:
        self.app = app

    async def GetStatement(self, request: pb.GetStatementRequest, context: Any) -> pb.GetStatementResponse:
        s = await asyncio.to_thread(self.app.statement, current_principal(), request.statement_id)
        return pb.GetStatementResponse(statement=statement_message(s))

    async def ListStatements(self, request: pb.ListStatementsRequest, context: Any) -> pb.ListStatementsResponse:
        rows = await asyncio.to_thread(self.app.statements, current_principal(), request.agreement_id)
        return pb.ListStatementsResponse(statements=[statement_message(s) for s in rows])

    async def GetAssessment(self, request: pb.GetAssessmentRequest, context: Any) -> pb.GetAssessmentResponse:
        s = await asyncio.to_thread(self.app.statement, current_principal(), request.statement_id)
        key = f"{request.objective_id}|{request.window_start}"
        a = s.assessments.get(key)
        if a is None:
            raise NotFoundError(f"statement {request.statement_id} has no assessment of {request.objective_id!r} "
                                f"for the window starting {request.window_start}")  # fmt: skip
        return pb.GetAssessmentResponse(
            assessment=assessment_message(str(s.id), key, a),
            formula_id=a["evaluation"].get("formula_id", ""),
            band_json=json.dumps(a["band"], sort_keys=True) if a.get("band") else "",
            notes=a.get("notes", []),
        )

    async def DisputeAssessment(
        self, request: pb.DisputeAssessmentRequest, context: Any
    ) -> pb.DisputeAssessmentResponse:
        caller = current_principal()
        assert caller is not None
        dispute_id = await asyncio.to_thread(
            self.app.dispute, caller, request.statement_id, request.objective_id, request.window_start, request.reason
        )
        return pb.DisputeAssessmentResponse(dispute_id=dispute_id)

    async def ResolveDispute(self, request: pb.ResolveDisputeRequest, context: Any) -> pb.ResolveDisputeResponse:
        caller = current_principal()
        assert caller is not None
        s = await asyncio.to_thread(
            self.app.resolve,
            caller,
            request.statement_id,
            request.dispute_id,
            request.accept,
            request.amount,
            request.reason,
        )
        return pb.ResolveDisputeResponse(statement=statement_message(s))

    async def GetLedgerEntries(self, request: pb.GetLedgerEntriesRequest, context: Any) -> pb.GetLedgerEntriesResponse:
        rows = await asyncio.to_thread(self.app.ledger, current_principal(), request.department_id)
        return pb.GetLedgerEntriesResponse(
            transactions=[
                ev.LedgerTransactionPosted(
                    transaction_id=str(t.id), source=t.source, period=t.period, description=t.description,
                    entries=[ev.LedgerEntry(**e) for e in t.entries],
                )
                for t in rows
            ]
        )  # fmt: skip

    async def GetBalances(self, request: pb.GetBalancesRequest, context: Any) -> pb.GetBalancesResponse:
        balances = await asyncio.to_thread(
            self.app.balances, current_principal(), request.department_id, request.period_start
        )
        return pb.GetBalancesResponse(
            balances=[
                pb.Balance(department_id=dept, currency=cur, amount=str(amount))
                for (dept, cur), amount in sorted(balances.items())
            ]
        )


def register_billing(app: Billing) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_BillingServiceServicer_to_server(BillingServicer(app), server)
        return str(pb.DESCRIPTOR.services_by_name["BillingService"].full_name)

    return register
