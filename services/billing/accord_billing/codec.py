"""Domain events of the billing service → their public messages (protos/accord/billing/v1/events.proto)."""

from __future__ import annotations

from typing import Any

from accord.billing.v1 import events_pb2 as ev
from accord_billing.domain import BilledAgreement, LedgerTransaction, Statement, TerminationWatch
from accord_kit.envelope import EventCodec


def totals_message(t: dict[str, Any], provisional: bool = False) -> ev.StatementTotals:
    """A statement's totals; `provisional` for an open statement's (so far)."""
    fields = ev.StatementTotals.DESCRIPTOR.fields_by_name
    return ev.StatementTotals(**{k: str(v) for k, v in t.items() if k in fields and k != "provisional"},
                              provisional=provisional)  # fmt: skip


def _stated(e: Any, message: Any, provisional: bool) -> Any:
    """`message` with the totals the event states (none on events recorded before they were)."""
    totals = getattr(e, "totals", None)
    if totals:
        message.totals.CopyFrom(totals_message(totals, provisional))
    return message


def codec() -> EventCodec:
    c = EventCodec("billing")
    sid = lambda e: str(e.originator_id)  # noqa: E731
    c.register(
        BilledAgreement.Seen, ev.AgreementVersionKnown, lambda e: ev.AgreementVersionKnown(agreement_id=e.agreement_id)
    )
    c.register(
        BilledAgreement.VersionInForce,
        ev.AgreementVersionKnown,
        lambda e: ev.AgreementVersionKnown(version=e.version, effective_from=e.effective_from),
    )
    c.register(BilledAgreement.Ended, ev.AgreementVersionKnown, lambda e: ev.AgreementVersionKnown(ended_at=e.at))
    c.register(
        BilledAgreement.Suspended,
        ev.AgreementVersionKnown,
        lambda e: ev.AgreementVersionKnown(suspended_at=e.at),
    )
    c.register(BilledAgreement.Resumed, ev.AgreementVersionKnown, lambda e: ev.AgreementVersionKnown(resumed_at=e.at))
    c.register(
        Statement.Opened,
        ev.StatementOpened,
        lambda e: ev.StatementOpened(
            statement_id=sid(e), agreement_id=e.agreement_id, period_start=e.period_start, period_end=e.period_end,
            currency=e.currency, fee_basis=int(getattr(e, "fee_basis", 1)),
        ),
    )  # fmt: skip

    def assessed(e: Any) -> ev.AssessmentRecorded:
        a = e.assessment
        objective_id, window_start = e.key.split("|", 1)
        return _stated(e, ev.AssessmentRecorded(
            statement_id=sid(e), objective_id=objective_id, window_start=window_start, status=a["status"],
            value=a["value"], input_digest=a["evaluation"].get("input_digest", ""), agreement_version=a["version"],
            lines=[ev.AssessmentLine(kind=x["kind"], amount=x["amount"], derivation=x["derivation"],
                                     applied=x["applied"]) for x in a["lines"]],
            net=a["net"], fee_basis=int(a.get("fee_basis") or 1), charged_share=a.get("charged_share", ""),
        ), provisional=True)  # fmt: skip

    c.register(Statement.Assessed, ev.AssessmentRecorded, assessed)

    def adjusted(e: Any) -> ev.AdjustmentRecorded:
        a = e.adjustment
        objective_id, window_start = a["key"].split("|", 1)
        return _stated(e, ev.AdjustmentRecorded(
            statement_id=sid(e), objective_id=objective_id, window_start=window_start, old_amount=a["old"],
            new_amount=a["new"], difference=a["difference"], reason=a["reason"],
            period_start=a.get("period_start", ""), period_before=a.get("period_before", ""),
            period_after=a.get("period_after", ""),
        ), provisional=True)  # fmt: skip

    c.register(Statement.Adjusted, ev.AdjustmentRecorded, adjusted)
    c.register(
        Statement.Issued,
        ev.StatementIssued,
        lambda e: ev.StatementIssued(statement_id=sid(e), totals=totals_message(e.totals), claim_until=e.claim_until),
    )
    c.register(
        Statement.Disputed,
        ev.DisputeOpened,
        lambda e: ev.DisputeOpened(
            statement_id=sid(e), dispute_id=e.dispute_id, objective_id=e.key.split("|", 1)[0],
            window_start=e.key.split("|", 1)[1], reason=e.reason,
        ),
    )  # fmt: skip
    c.register(
        Statement.Resolved,
        ev.DisputeResolved,
        lambda e: _stated(
            e,
            ev.DisputeResolved(
                statement_id=sid(e), dispute_id=e.dispute_id, accepted=e.accepted, amount=e.amount, reason=e.reason
            ),
            provisional=False,
        ),
    )
    c.register(
        Statement.TotalsStated,
        ev.StatementTotalsStated,
        lambda e: _stated(e, ev.StatementTotalsStated(statement_id=sid(e), reason=e.reason), provisional=True),
    )
    c.register(
        Statement.Finalized,
        ev.StatementFinalized,
        lambda e: ev.StatementFinalized(statement_id=sid(e), totals=totals_message(e.totals)),
    )
    c.register(
        LedgerTransaction.Posted,
        ev.LedgerTransactionPosted,
        lambda e: ev.LedgerTransactionPosted(
            transaction_id=sid(e), source=e.source, period=e.period, description=e.description,
            entries=[ev.LedgerEntry(**x) for x in e.entries],
        ),
    )  # fmt: skip
    c.register(
        TerminationWatch.Started,
        ev.BreachHistoryNoted,
        lambda e: ev.BreachHistoryNoted(agreement_id=e.agreement_id, objective_id=e.objective_id),
    )
    c.register(
        TerminationWatch.Noted,
        ev.BreachHistoryNoted,
        lambda e: ev.BreachHistoryNoted(window_start=e.window_start, breached=e.breached),
    )
    c.register(
        TerminationWatch.Granted,
        ev.TerminationRightGranted,
        lambda e: ev.TerminationRightGranted(
            agreement_id=e.agreement_id, objective_id=e.objective_id, reason=e.reason,
            breach_event_ids=list(e.breach_windows),
        ),
    )  # fmt: skip
    return c
