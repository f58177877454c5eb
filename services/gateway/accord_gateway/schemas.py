"""The shapes of the gateway's HTTP answers (pydantic models): what the OpenAPI document
publishes and what every answer is validated against on its way out. Decimals and instants
are strings (exact decimals; RFC 3339 instants), an empty string where there is no value.
Agreement terms stay the proto3 JSON of `accord.agreements.v1.AgreementTerms` (field names
as in `protos/accord/agreements/v1/terms.proto`): the contract defines them, not this module."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Decimal = str  # an exact decimal as text ("99.95"), "" when undefined
Instant = str  # RFC 3339
MEASURED = (
    "The services its effective terms measure: those they name, or (naming none) every service registered with"
    " its provider department, one registered later included"
)


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class Positions(_Model):
    """The position of each stream's last event the answer reflects."""

    agreements: int
    metrics: int
    billing: int


class Parties(_Model):
    provider_department_id: str = ""
    customer_department_id: str = ""


class EvaluationView(_Model):
    """One objective over one window, as metrics evaluated it."""

    agreement_id: str
    objective_id: str
    window_start: Instant
    window_end: Instant
    value: Decimal
    target: Decimal
    status: str = Field(description="MET, AT_RISK, BREACHED, NO_DATA, or empty when unspecified")
    closed: bool
    budget_remaining: Decimal = Field(description="% of the error budget left (availability objectives)")
    budget_consumed: Decimal
    input_digest: str
    burn_rate: Decimal = Field(description="Over the fastest alert pair's long window, open windows only")
    version: int = Field(description="The agreement version that judged the window")
    restated: bool = Field(default=False, description="A late signal restated this closed window")


class BudgetWarningView(_Model):
    window_start: Instant
    level: Decimal = Field(description="The warning level crossed, % of the budget (e.g. 75)")
    consumed: Decimal = Field(description="% of the budget used when it was crossed")
    at: Instant


class BurnRateAlertView(_Model):
    window_start: Instant
    name: str = Field(description='The alert pair, e.g. "14.4x 1:00:00/0:05:00"')
    factor: Decimal
    long_rate: Decimal
    short_rate: Decimal
    at: Instant = Field(description="When it fired")
    state: str = Field(description="FIRING, RESOLVED (metrics said so) or WINDOW_CLOSED (its window ended)")
    ended_at: Instant = Field(description="When it resolved or its window closed; empty while firing")
    resolution: str = Field(
        description='Why it ended, as metrics says ("cleared", "window_closed"); empty while firing'
    )


class ObjectiveView(_Model):
    objective_id: str
    name: str
    current: EvaluationView | None
    closed: list[EvaluationView]
    warnings: list[BudgetWarningView]
    burn_alerts: list[BurnRateAlertView]


class BreachView(_Model):
    objective_id: str
    window_start: Instant
    window_end: Instant
    subject: str = Field(description="Empty for the objective itself; a ticket or task id")
    value: Decimal
    target: Decimal
    certain_before_close: bool = False
    at: Instant = Field(description="When metrics detected it")


class AssessmentLineView(_Model):
    kind: str = Field(description="CREDIT, FIXED_PENALTY, PER_UNIT_PENALTY, REWARD")
    amount: Decimal
    derivation: str
    applied: bool


class AssessmentView(_Model):
    """One objective's closed window assessed on a statement; amounts are positive when the
    provider owes the customer."""

    objective_id: str
    window_start: Instant
    status: str
    value: Decimal
    net: Decimal
    agreement_version: int
    lines: list[AssessmentLineView]


class AdjustmentView(_Model):
    """A change to an issued period, on this statement (docs/domain.md §5)."""

    objective_id: str
    window_start: Instant
    period_start: Instant
    old_amount: Decimal
    new_amount: Decimal
    difference: Decimal = Field(description="What it adds to this statement")
    reason: str
    at: Instant


class TotalsView(_Model):
    currency: str
    credits_before_cap: Decimal
    cap_cut: Decimal
    minimum_cut: Decimal
    credits_issued: Decimal
    rewards: Decimal
    adjustments: Decimal
    disputes: Decimal
    net: Decimal
    fee: Decimal
    provisional: bool = Field(
        default=False, description="An open statement's totals so far (as if issued now); false once issued"
    )


class StatementView(_Model):
    statement_id: str
    period_start: Instant
    period_end: Instant
    currency: str
    state: str = Field(description="OPEN, ISSUED or FINAL")
    net: Decimal = Field(
        description="The net as billing last stated it: so far while open, with every accepted dispute once"
        " issued, as final once final; 0 until billing states an amount"
    )
    totals: TotalsView | None = Field(
        description="As billing last stated them: with each assessment or adjustment on the open statement"
        " (provisional), at issue, with each resolved dispute, at the finalisation; null until the first"
    )
    claim_until: Instant
    assessments: list[AssessmentView]
    adjustments: list[AdjustmentView]


class DisputeView(_Model):
    dispute_id: str
    statement_id: str
    objective_id: str
    window_start: Instant
    state: str = Field(description="OPEN, ACCEPTED or REJECTED")
    reason: str
    amount: Decimal = Field(description="The assessment's amount after an accepted dispute")
    resolution: str
    opened_at: Instant
    resolved_at: Instant


class TerminationRightView(_Model):
    objective_id: str
    reason: str


class VersionView(_Model):
    terms: dict[str, Any] = Field(description="accord.agreements.v1.AgreementTerms as proto3 JSON")
    version: int
    effective_from: Instant
    occurred_at: Instant


class PendingAmendmentView(_Model):
    amendment_id: str
    proposed_by: str
    effective_from: Instant
    reason: str


class AgreementStatus(_Model):
    agreement_id: str
    short_id: str = Field(description="The id's first 8 characters, shown beside the title")
    title: str
    state: str = Field(description="DRAFT, PROPOSED, ACTIVE, SUSPENDED, TERMINATED or EXPIRED")
    version: int
    parties: Parties
    kind: str
    level: str
    time_zone: str = Field(description="The agreement's IANA time zone: its windows' and dates' zone")
    service_ids: list[str] = Field(description="The services its own latest terms name")
    measured_service_ids: list[str] = Field(description=MEASURED)
    terms: dict[str, Any] = Field(description="accord.agreements.v1.AgreementTerms as proto3 JSON")
    effective_terms: dict[str, Any] = Field(description="The terms merged with their parent chain, as terms")
    pending_amendment: PendingAmendmentView | None
    objectives: list[ObjectiveView] = Field(description="Worst first")
    breaches: list[BreachView]
    open_breaches: list[BreachView] = Field(description="Breaches of current windows")
    statements: list[StatementView]
    disputes: list[DisputeView]
    termination_rights: list[TerminationRightView]
    versions: list[VersionView]
    health: str = Field(description="The worst objective status")
    credits_to_date: Decimal = Field(description="Settled: the sum of the FINAL statements' nets")
    credits_this_period: Decimal = Field(
        description="Provisional: the OPEN statements' nets so far, as billing last stated them (0 when none is open)"
    )
    credits_awaiting_final: Decimal = Field(
        description="Provisional: the ISSUED (not final) statements' nets, accepted disputes included when resolved"
    )
    credits_provisional: Decimal = Field(
        description="Every credit not final yet: credits_this_period + credits_awaiting_final"
    )


class AgreementBrief(_Model):
    agreement_id: str
    short_id: str
    title: str
    kind: str
    state: str
    version: int
    health: str
    parties: Parties
    service_ids: list[str] = Field(description="The services its own latest terms name")
    credits_to_date: Decimal = Field(description="FINAL statements only")
    credits_provisional: Decimal = Field(description="Not final yet: open statements so far and issued ones")
    measured_service_ids: list[str] = Field(description=MEASURED)


class DepartmentStatus(_Model):
    department_id: str
    as_provider: list[AgreementBrief]
    as_customer: list[AgreementBrief]
    health: dict[str, int] = Field(description="Agreements per health")
    balance: Decimal = Field(description="Credits received as customer minus paid as provider, FINAL statements only")
    balance_provisional: Decimal = Field(
        description="The same of the credits not final yet (open statements so far, issued ones)"
    )


class ServiceStatus(_Model):
    service_id: str
    agreements: list[AgreementBrief] = Field(description="The agreements whose effective terms measure the service")


class WorstObjective(_Model):
    agreement_id: str
    short_id: str
    title: str
    objective_id: str
    status: str
    value: Decimal
    target: Decimal
    budget_remaining: Decimal


class Portfolio(_Model):
    agreements: int
    by_state: dict[str, int]
    by_health: dict[str, int]
    worst_objectives: list[WorstObjective] = Field(description="At most 50, worst first")
    agreement_list: list[AgreementBrief] = Field(alias="list", description="Worst health first, then by title")


class BudgetPoint(_Model):
    at: Instant = Field(description="As of when (a closing evaluation: the window's end)")
    budget_remaining: Decimal
    budget_consumed: Decimal
    value: Decimal
    status: str
    closed: bool
    restated: bool


class BudgetWindow(_Model):
    window_start: Instant
    window_end: Instant
    closed: bool
    status: str
    budget_remaining: Decimal = Field(description="The window's latest (closing, or restated) figure")
    points: list[BudgetPoint]


class Budget(_Model):
    """One objective's error budget remaining over time, window by window."""

    agreement_id: str
    objective_id: str
    name: str
    time_zone: str = Field(description="The agreement's IANA time zone")
    target: Decimal
    from_: Instant = Field(alias="from", description="The range asked for (empty: unbounded)")
    to: Instant
    windows: list[BudgetWindow] = Field(description="Oldest first; the most recent 24 windows are held")


class SignalView(_Model):
    """An outage or maintenance signal as metrics holds it (its latest content)."""

    signal_id: str
    service_id: str
    kind: str = Field(description="outage or maintenance")
    start: Instant
    end: Instant = Field(description="Empty while an outage is under way")
    minutes: Decimal = Field(description="Its length in minutes (empty while under way)")
    cause: str = Field(description="An outage's cause, a maintenance's reason")
    planned: bool
    source: str = Field(description="Where it came from (provenance), empty when not given")
    reference: str


class BreachWindow(_Model):
    """A breached window, its breaches and the outage signals in it."""

    window_start: Instant
    window_end: Instant
    status: str
    value: Decimal
    target: Decimal
    breaches: list[BreachView]
    signals: list[SignalView]
    signals_truncated: bool = Field(description="More than 1,000 signals overlapped; the first 1,000 are given")
    signals_error: str = Field(description="Why the signals could not be read from metrics; empty when they were")


class BreachTimeline(_Model):
    agreement_id: str
    objective_id: str
    time_zone: str
    windows: list[BreachWindow] = Field(description="Oldest first")


class AgreementAnswer(_Model):
    status: AgreementStatus
    positions: Positions


class DepartmentAnswer(_Model):
    status: DepartmentStatus
    positions: Positions


class ServiceAnswer(_Model):
    status: ServiceStatus
    positions: Positions


class PortfolioAnswer(_Model):
    status: Portfolio
    positions: Positions


class BudgetAnswer(_Model):
    status: Budget
    positions: Positions


class BreachesAnswer(_Model):
    status: BreachTimeline
    positions: Positions


class StreamProgress(_Model):
    position: int
    stream_head: int | None


class Health(_Model):
    status: str = Field(description="SERVING or NOT_SERVING")
    reason: str | None = Field(default=None, description="Why not serving, e.g. catching_up")
    streams: dict[str, StreamProgress] | None = Field(default=None, description="While catching up: each stream")
