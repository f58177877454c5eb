"""The BillingService gRPC servicer: protobuf ⇄ the application's records; errors through ERROR_MAP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from decimal import Decimal
from typing import Any

import grpc

from accord.billing.v1 import billing_pb2 as pb
from accord.billing.v1 import billing_pb2_grpc as pb_grpc
from accord.billing.v1 import events_pb2 as ev
from accord.events.v1 import events_pb2
from accord_billing import audit, periods
from accord_billing.application import Billing
from accord_billing.assessment import AssessmentError, Line, describe_band
from accord_billing.codec import totals_message
from accord_billing.domain import InvalidRequestError, NotAPartyError, NotFoundError, Statement, TransitionError
from accord_kit.application import MAX_READ_LIMIT
from accord_kit.context import current_principal
from accord_kit.eventlog import EventLogClient
from accord_kit.inputs import decimal, iso_instant, required_instant
from accord_kit.threads import finish_in_thread

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotAPartyError: grpc.StatusCode.PERMISSION_DENIED,
    TransitionError: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    AssessmentError: grpc.StatusCode.INVALID_ARGUMENT,
    audit.UpstreamLogError: grpc.StatusCode.UNAVAILABLE,
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


def statement_message(s: Statement, totals: dict[str, Any] | None = None) -> pb.Statement:
    """The statement's answer; `totals` as they stand (`Billing.current_totals`), else as recorded
    (issued / final: the audit's statement as known at an instant)."""
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
    out.adjustments.extend(adjustment_message(sid, a) for a in s.adjustments)
    for dispute_id, d in s.disputes.items():
        objective_id, window_start = d["key"].split("|", 1)
        out.disputes.append(
            pb.Dispute(
                dispute_id=dispute_id, objective_id=objective_id, window_start=window_start, reason=d["reason"],
                state=d["state"], amount=d.get("amount", ""), resolution=d.get("resolution", ""),
            )
        )  # fmt: skip
    if totals is not None:
        out.totals.CopyFrom(totals_message(totals, provisional=s.state == "OPEN"))
    elif s.totals:
        out.totals.CopyFrom(totals_message(s.totals))
    return out


def adjustment_message(statement_id: str, a: dict[str, Any]) -> ev.AdjustmentRecorded:
    objective_id, window_start = a["key"].split("|", 1)
    return ev.AdjustmentRecorded(
        statement_id=statement_id, objective_id=objective_id, window_start=window_start, old_amount=a["old"],
        new_amount=a["new"], difference=a["difference"], reason=a["reason"],
        period_start=a.get("period_start", ""), period_before=a.get("period_before", ""),
        period_after=a.get("period_after", ""),
    )  # fmt: skip


def line_message(line: Line) -> ev.AssessmentLine:
    return ev.AssessmentLine(
        kind=line.kind, amount=str(line.amount.amount), derivation=line.derivation, applied=line.applied
    )


def finding_message(f: audit.Finding) -> pb.RederivationFinding:
    return pb.RederivationFinding(
        agreement_id=f.agreement_id, objective_id=f.objective_id, window_start=f.window_start,
        recorded_net=f.recorded_net, rederived_net=f.rederived_net, currency=f.currency,
        differences=list(f.differences), statement_id=f.statement_id,
    )  # fmt: skip


def pricing_message(p: audit.Pricing) -> pb.PriceEvaluationsResponse:
    out = pb.PriceEvaluationsResponse(total=ev.Money(amount=str(p.total.amount), currency=p.currency))
    for w in p.windows:
        a = w.assessment
        out.evaluations.append(
            pb.PricedEvaluation(
                objective_id=w.objective_id, window_start=w.window_start, period_start=w.period_start,
                status=a.status, value="" if a.value is None else str(a.value),
                band=describe_band(a.band) if a.band else "",
                band_json=json.dumps(a.band, sort_keys=True) if a.band else "",
                lines=[line_message(x) for x in a.lines],
                net=ev.Money(amount=str(a.net.amount), currency=a.currency), notes=list(a.notes),
            )
        )  # fmt: skip
    for period in p.periods:
        out.periods.append(
            pb.PricedPeriod(
                period_start=period.period_start, period_end=period.period_end,
                totals=totals_message(audit.totals_dict(period.totals)),
                lines=[line_message(x) for x in period.totals.lines],
            )
        )  # fmt: skip
    return out


def _amount(d: Decimal | None) -> str:
    return "" if d is None else str(d)


def period_message(p: audit.PeriodAtBothTimes) -> pb.PeriodAtBothTimes:
    out = pb.PeriodAtBothTimes(
        period_start=p.now.period_start, period_end=p.now.period_end, currency=p.now.currency,
        known_total=str(p.known_total), total_difference=str(p.total_difference),
        as_effective=pb.EffectivePeriod(
            statement=statement_message(p.now), total=str(p.effective_total),
            corrections=[
                pb.Correction(
                    adjustment=adjustment_message(str(c.statement.id), c.adjustment),
                    recorded_at=c.recorded_at.astimezone(UTC).isoformat(), known_at=c.known_at,
                )
                for c in p.corrections
            ],
        ),
        windows=[
            pb.WindowAtBothTimes(
                objective_id=w.objective_id, window_start=w.window_start, issued_net=_amount(w.issued_net),
                known_net=_amount(w.known_net), effective_net=str(w.effective_net), difference=str(w.difference),
            )
            for w in p.windows
        ],
    )  # fmt: skip
    if p.as_known is not None:
        out.as_known.CopyFrom(statement_message(p.as_known))
    return out


class BillingServicer(pb_grpc.BillingServiceServicer):
    def __init__(self, app: Billing, upstream_logs: Callable[[str], EventLogClient] | None = None) -> None:
        self.app = app
        # A client of an upstream service's EventLogService, by service name (re-derivation).
        self.upstream_logs = upstream_logs

    async def _answer(self, s: Statement) -> pb.Statement:
        """A statement's answer with its totals as they stand (taken in a worker thread)."""
        return statement_message(s, await finish_in_thread(self.app.current_totals, s))

    async def GetStatement(self, request: pb.GetStatementRequest, context: Any) -> pb.GetStatementResponse:
        s = await finish_in_thread(self.app.statement, current_principal(), request.statement_id)
        return pb.GetStatementResponse(statement=await self._answer(s))

    async def ListStatements(self, request: pb.ListStatementsRequest, context: Any) -> pb.ListStatementsResponse:
        rows = await finish_in_thread(self.app.statements, current_principal(), request.agreement_id)
        return pb.ListStatementsResponse(statements=[await self._answer(s) for s in rows])

    async def GetAssessment(self, request: pb.GetAssessmentRequest, context: Any) -> pb.GetAssessmentResponse:
        s = await finish_in_thread(self.app.statement, current_principal(), request.statement_id)
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
        dispute_id = await finish_in_thread(
            self.app.dispute, caller, request.statement_id, request.objective_id, request.window_start, request.reason
        )
        return pb.DisputeAssessmentResponse(dispute_id=dispute_id)

    async def ResolveDispute(self, request: pb.ResolveDisputeRequest, context: Any) -> pb.ResolveDisputeResponse:
        caller = current_principal()
        assert caller is not None
        if request.accept:
            decimal(request.amount, "amount", required=True)  # finite: no NaN, no Infinity
        s = await finish_in_thread(
            self.app.resolve,
            caller,
            request.statement_id,
            request.dispute_id,
            request.accept,
            request.amount,
            request.reason,
        )
        return pb.ResolveDisputeResponse(statement=await self._answer(s))

    async def GetLedgerEntries(self, request: pb.GetLedgerEntriesRequest, context: Any) -> pb.GetLedgerEntriesResponse:
        rows = await finish_in_thread(self.app.ledger, current_principal(), request.department_id)
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
        iso_instant(request.period_start, "period_start")
        balances = await finish_in_thread(
            self.app.balances, current_principal(), request.department_id, request.period_start
        )
        return pb.GetBalancesResponse(
            balances=[
                pb.Balance(department_id=dept, currency=cur, amount=str(amount))
                for (dept, cur), amount in sorted(balances.items())
            ]
        )

    # -- audit ------------------------------------------------------------------------------------------
    async def RederiveAssessments(
        self, request: pb.RederiveAssessmentsRequest, context: Any
    ) -> AsyncIterator[pb.RederiveAssessmentsProgress]:
        logs: dict[str, list[events_pb2.EventEnvelope]] = {}
        read = 0
        for source, types in (("agreements", audit.ACCEPTED_TYPES), ("metrics", audit.CLOSED_TYPES)):
            logs[source] = []
            async for page in self._read_log(source):
                read += len(page)
                logs[source].extend(e for e in page if e.type in types)
                yield pb.RederiveAssessmentsProgress(phase=f"reading {source}", events_read=read)
        # The comparison runs in a worker thread; its progress comes back through a queue.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | None] = asyncio.Queue()

        def progress(checked: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, checked)

        work = asyncio.ensure_future(
            finish_in_thread(self.app.rederive, logs["metrics"], logs["agreements"], request.agreement_id, progress)
        )
        work.add_done_callback(lambda _: queue.put_nowait(None))
        while (checked := await queue.get()) is not None:
            yield pb.RederiveAssessmentsProgress(phase="comparing", events_read=read, windows_checked=checked)
        result = await work
        yield pb.RederiveAssessmentsProgress(
            phase="done", events_read=read, windows_checked=result.checked, done=True, checked=result.checked,
            mismatches=[finding_message(f) for f in result.mismatches],
            missing=[finding_message(f) for f in result.missing],
            unexplained=[finding_message(f) for f in result.unexplained],
        )  # fmt: skip

    async def _read_log(self, source: str) -> AsyncIterator[list[events_pb2.EventEnvelope]]:
        """The whole log of an upstream service, page by page."""
        if self.upstream_logs is None:
            raise audit.UpstreamLogError(f"this billing service has no client for the {source} service's log")
        client = self.upstream_logs(source)
        after = 0
        try:
            while True:
                try:
                    envs, head = await client.read_events(after, MAX_READ_LIMIT)
                except grpc.aio.AioRpcError as e:
                    raise audit.UpstreamLogError(
                        f"cannot read the {source} service's log at {client.address}: {e.code().name} {e.details()}"
                    ) from None
                if not envs:
                    return
                yield envs
                after = envs[-1].position
                if after >= head:
                    return
        finally:
            await client.close()

    async def PriceEvaluations(self, request: pb.PriceEvaluationsRequest, context: Any) -> pb.PriceEvaluationsResponse:
        terms = periods.terms_dict(request.terms) if request.HasField("terms") else {}
        pricing = await finish_in_thread(
            self.app.price_evaluations,
            current_principal(),
            request.agreement_id,
            terms or None,
            list(request.evaluations),
        )
        return pricing_message(pricing)

    async def StatementsAt(self, request: pb.StatementsAtRequest, context: Any) -> pb.StatementsAtResponse:
        if not request.HasField("at"):
            raise InvalidRequestError("at is required: the instant whose knowledge to reconstruct")
        at = required_instant(request.at, "at")
        periods = await finish_in_thread(self.app.statements_at, current_principal(), request.agreement_id, at)
        return pb.StatementsAtResponse(periods=[period_message(p) for p in periods])


def register_billing(
    app: Billing, upstream_logs: Callable[[str], EventLogClient] | None = None
) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_BillingServiceServicer_to_server(BillingServicer(app, upstream_logs), server)
        return str(pb.DESCRIPTOR.services_by_name["BillingService"].full_name)

    return register
