"""The billing application: owns the billing service's event store — what it knows of each
agreement (from the agreements stream), statements with their assessments, adjustments and
disputes (from the metrics stream's closed and restated evaluations), the chargeback
ledger, and the termination rights it grants (docs/domain.md §5)."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from typing import Any

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import IntegrityError

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
from accord_billing import audit, periods
from accord_billing.assessment import Money
from accord_billing.codec import codec
from accord_billing.domain import (
    FINAL,
    ISSUED,
    OPEN,
    BilledAgreement,
    InvalidRequestError,
    LedgerTransaction,
    NotAPartyError,
    NotFoundError,
    Statement,
    TerminationWatch,
)
from accord_kit.agreement_terms import effective_terms, state_change_at
from accord_kit.application import AccordApplication, topic_pages
from accord_kit.clock import Clock
from accord_kit.consumer import NotYetError
from accord_kit.context import Principal
from accord_kit.envelope import payload_of
from accord_kit.evaluation import Evaluation, Status

STATEMENT_TOPIC = Statement.Opened.TOPIC
FINALIZED_TOPIC: str = Statement.Finalized.TOPIC  # type: ignore[attr-defined]
AGREEMENT_TOPIC = BilledAgreement.Seen.TOPIC
LEDGER_TOPIC = LedgerTransaction.Posted.TOPIC
ADJUSTED: type = Statement.Adjusted
# The name under which billing's consumer of the agreements stream tracks its position (the
# agreements service's log position; bootstrap: Upstream("agreements")) — metrics' name for its own.
AGREEMENTS_SOURCE = "agreements"
ISSUE_DELAY = timedelta(hours=1)  # windows close on metrics' clock a little after the period ends
_parse = periods.parse_instant


class Billing(AccordApplication):
    """Statements, disputes, the chargeback ledger and termination rights."""

    name = "Billing"
    service = "billing"

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
        self._lock = threading.RLock()
        self._aggregate_agreements: dict[str, str] = {}
        # Statements indexed from the log by position (opened or finalised by any process),
        # from their Opened and Finalized notifications alone, so the clock and the queries
        # load only the statements they need, not every statement ever.
        self._statements_position = 0
        self._statement_ids: dict[uuid.UUID, str] = {}  # statement id → agreement id, in log order
        self._statements_of: dict[str, list[uuid.UUID]] = defaultdict(list)  # agreement id → ids, log order
        self._period_end: dict[uuid.UUID, datetime] = {}  # statement id → its period's end
        self._unsettled: dict[uuid.UUID, None] = {}  # not FINAL (FINAL never changes), log order
        self._finalized: set[uuid.UUID] = set()  # FINAL before their Opened was indexed (none, in log order)
        # The ledger indexed from its Posted notifications (a transaction is that one event):
        # balances are summed from the index, a department's ledger loads only its postings.
        self._ledger_position = 0
        self._ledger_txs: dict[uuid.UUID, tuple[datetime, list[dict[str, str]]]] = {}  # id → (period, entries)
        self._ledger_of: dict[str, list[uuid.UUID]] = defaultdict(list)  # account → transaction ids, log order
        self._agreements_position = 0
        self._agreement_ids: dict[uuid.UUID, None] = {}  # every BilledAgreement, log order
        self._opened_until: dict[uuid.UUID, datetime] = {}  # BilledAgreement id → when to look again
        # Aggregates changed by the event a policy is processing, not saved yet: read in their
        # place (this thread only) while it works out what the change does to open statements.
        self._pending = threading.local()

    # -- audit: which agreement an event concerns ------------------------------------------
    def agreement_ids_of(self, envelope: events_pb2.EventEnvelope) -> set[str]:
        """Besides events naming their agreement: every event of an aggregate kept for one
        agreement (its statements, its versions and end as billing knows them, its breach
        history) and the ledger postings of a statement concern that agreement."""
        found = super().agreement_ids_of(envelope)
        found.add(self._agreement_of(envelope.aggregate_id))
        payload = payload_of(envelope, self.codec)
        source = str(getattr(payload, "source", "") or "")
        if source.startswith("statement:"):
            found.add(self._agreement_of(source.removeprefix("statement:")))
        found.discard("")
        return found

    def _agreement_of(self, aggregate_id: str) -> str:
        """The agreement an aggregate of this store is kept for ("" for none, e.g. a ledger
        transaction). An aggregate's agreement never changes: remembered once loaded."""
        cached = self._aggregate_agreements.get(aggregate_id)
        if cached is None:
            try:
                aggregate: Any = self.repository.get(uuid.UUID(aggregate_id))
            except (ValueError, AggregateNotFoundError):
                return ""
            cached = str(getattr(aggregate, "agreement_id", "") or "")
            self._aggregate_agreements[aggregate_id] = cached
        return cached

    # -- helpers ----------------------------------------------------------------------------
    def _get_or(self, aggregate_id: Any, create: Any) -> Any:
        pending = getattr(self._pending, "aggregates", None)
        if pending and aggregate_id in pending:
            return pending[aggregate_id]
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return create()

    def _all(self, topic: str) -> list[Any]:
        out: list[Any] = []
        seen: set[Any] = set()
        position = 0
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=1000, topics=[topic], inclusive_of_start=False
            )
            if not notes:
                return out
            for n in notes:
                if n.originator_id not in seen:
                    seen.add(n.originator_id)
                    out.append(self.repository.get(n.originator_id))
            position = notes[-1].id

    def _refresh_statements(self) -> None:
        """Index the statements opened or finalised since we last looked (by any process)."""
        with self._lock:
            for notes, read_to in topic_pages(
                self.recorder, self._statements_position, [STATEMENT_TOPIC, FINALIZED_TOPIC]
            ):
                for n in notes:
                    sid = uuid.UUID(str(n.originator_id))
                    if n.topic == FINALIZED_TOPIC:
                        if sid not in self._statement_ids:
                            self._finalized.add(sid)
                        self._unsettled.pop(sid, None)
                    elif sid not in self._statement_ids:
                        opened: Any = self.mapper.to_domain_event(n)
                        self._statement_ids[sid] = opened.agreement_id
                        self._statements_of[opened.agreement_id].append(sid)
                        self._period_end[sid] = _parse(opened.period_end)
                        if sid not in self._finalized:
                            self._unsettled[sid] = None
                self._statements_position = read_to

    def _refresh_ledger(self) -> None:
        """Index the ledger transactions posted since we last looked (by any process)."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._ledger_position, [LEDGER_TOPIC]):
                for n in notes:
                    tid = uuid.UUID(str(n.originator_id))
                    if tid not in self._ledger_txs:
                        posted: Any = self.mapper.to_domain_event(n)
                        entries = [dict(e) for e in posted.entries]
                        self._ledger_txs[tid] = (_parse(posted.period), entries)
                        for account in dict.fromkeys(e["account"] for e in entries):
                            self._ledger_of[account].append(tid)
                self._ledger_position = read_to

    def _statement_ids_of(self, agreement_id: str | None, ending_after: datetime | None = None) -> list[uuid.UUID]:
        """The ids of an agreement's statements (None: of every agreement's), in log order;
        with `ending_after`, only those whose period ends after it."""
        with self._lock:
            self._refresh_statements()
            ids = list(self._statement_ids if agreement_id is None else self._statements_of.get(agreement_id, ()))
            if ending_after is not None:
                ids = [i for i in ids if self._period_end[i] > ending_after]
            return ids

    def _unsettled_statements(self) -> list[Statement]:
        """The statements not FINAL (OPEN or ISSUED), in log order; those found FINAL are
        dropped from the index for good."""
        with self._lock:
            self._refresh_statements()
            loaded: list[Statement] = [self.repository.get(i) for i in self._unsettled]
            for s in loaded:
                if s.state == FINAL:
                    self._unsettled.pop(s.id, None)
            return [s for s in loaded if s.state != FINAL]

    def agreement(self, agreement_id: str) -> BilledAgreement:
        agg = self._get_or(BilledAgreement.create_id(agreement_id), lambda: None)
        if agg is None or not agg.versions:
            raise NotFoundError(f"agreement {agreement_id!r} is not known to billing (not accepted yet?)")
        return agg

    @staticmethod
    def _version(agreement: BilledAgreement, number: int) -> dict[str, Any]:
        for v in agreement.versions:
            if v["version"] == number:
                return v
        return agreement.versions[-1]

    # -- terms as metrics judges them: effective (parent-merged), by the version in force ------
    def _effective(self, terms: dict[str, Any], when: datetime, depth: int = 0) -> dict[str, Any]:
        """`terms` merged with their parent chain as in force at `when` (docs/domain.md §1), by the
        kit's rule — what metrics measures, so what billing bills."""
        parent_id = terms.get("parent_agreement_id") or ""
        if not parent_id or depth > 8:
            return terms
        parent = self._get_or(BilledAgreement.create_id(parent_id), lambda: None)
        if parent is None or not parent.versions:
            return terms
        parent_terms = self._effective(dict(periods.version_at(parent.versions, when)["terms"]), when, depth + 1)
        return effective_terms(parent_terms, terms)

    def _version_starts(self, agreement: BilledAgreement, depth: int = 0) -> set[datetime]:
        """Every instant the agreement's effective terms may change: its own versions' effective
        starts and those of every parent its versions name, up the chain (a parent amended
        while its child inherits changes the child's effective terms then)."""
        starts = {_parse(v["effective_from"]) for v in agreement.versions}
        if depth > 8:
            return starts
        for parent_id in {v["terms"].get("parent_agreement_id") or "" for v in agreement.versions} - {""}:
            parent = self._get_or(BilledAgreement.create_id(parent_id), lambda: None)
            if parent is not None and parent.versions:
                starts |= self._version_starts(parent, depth + 1)
        return starts

    @staticmethod
    def _started(agreement: BilledAgreement) -> datetime:
        return _parse(agreement.versions[0]["effective_from"])

    @staticmethod
    def _ended(agreement: BilledAgreement) -> datetime | None:
        """When the agreement ends, for billing — the metrics service's rule, so that both stop
        at the same instant: when it was terminated or expired, else the end of the latest
        version's term unless it renews itself (then its expiry or renewal will say)."""
        if agreement.ended_at:
            return _parse(agreement.ended_at)
        term = (agreement.versions[-1]["terms"].get("term") or {}) if agreement.versions else {}
        if term.get("effective_to") and not term.get("auto_renew"):
            return _parse(term["effective_to"])
        return None

    def terms_in_force(self, agreement: BilledAgreement, when: datetime) -> dict[str, Any]:
        """The effective terms of the version in force at `when` (the first version's before it)."""
        return self._effective(dict(periods.version_at(agreement.versions, when)["terms"]), when)

    def latest_terms(self, agreement: BilledAgreement) -> dict[str, Any]:
        """The latest version's effective terms (as metrics reads them: parents as in force now,
        or when the agreement ended)."""
        now = self.clock.now()
        ended = self._ended(agreement)
        return self._effective(agreement.versions[-1]["terms"], min(now, ended) if ended else now)

    def _judging_terms(self, agreement: BilledAgreement, number: int, window_start: str) -> dict[str, Any]:
        """The effective terms of version `number` (the one that judged the window), with the
        parents in force at the window's measured start — as metrics judged it."""
        when = max(_parse(window_start), self._started(agreement))
        return self._effective(self._version(agreement, number)["terms"], when)

    def _billed_instant(self, agreement: BilledAgreement, window_start: str, window_end: str) -> datetime | None:
        return periods.billed_instant(window_start, window_end, self._started(agreement), self._ended(agreement))

    def _period(self, agreement: BilledAgreement, instant: datetime) -> tuple[str, str]:
        return periods.fee_period(self.terms_in_force(agreement, instant), instant)

    def _statement(
        self, agreement: BilledAgreement, instant: datetime, processing: ProcessingEvent[Any] | None = None
    ) -> Statement:
        """The statement of the fee period holding `instant`. Opening it also opens every
        earlier period's statement since the agreement's start that is still missing, so each
        fee period of the term has its statement (its fee is charged even when no window
        closed in it); a period before the start, or from the end on, is never opened so
        (only a settlement statement, see `_adjustment_target`)."""
        start, end = self._period(agreement, instant)
        existing = self._get_or(Statement.create_id(agreement.agreement_id, start), lambda: None)
        if existing is not None:
            return existing
        started, ended = self._started(agreement), self._ended(agreement)
        earlier: list[Statement] = []
        cursor = _parse(start)
        for _ in range(5000):
            if cursor <= started:
                break
            p_start, p_end = self._period(agreement, max(cursor - periods.EPSILON, started))
            if self._get_or(Statement.create_id(agreement.agreement_id, p_start), lambda: None) is not None:
                break
            if ended is None or _parse(p_start) < ended:  # never a period from the end on
                earlier.append(self._open(agreement, p_start, p_end))
            cursor = _parse(p_start)
        if processing is not None and earlier:
            processing.collect_events(*earlier)
        return self._open(agreement, start, end)

    def _open(self, agreement: BilledAgreement, start: str, end: str) -> Statement:
        terms = self.terms_in_force(agreement, max(_parse(start), self._started(agreement)))
        currency = (terms.get("fee") or {}).get("currency") or "EUR"
        return Statement(agreement.agreement_id, start, end, currency, fee_basis=periods.FEE_BASIS)

    def _assess(
        self, agreement: BilledAgreement, evaluation: Evaluation, share: Fraction | None = None
    ) -> dict[str, Any] | None:
        # None for an objective the effective terms do not name, or no fee: nothing to bill.
        number = evaluation.agreement_version
        terms = self._judging_terms(agreement, number, evaluation.window_start)
        return periods.assessed_record(terms, self._version(agreement, number)["version"], evaluation, share)

    @staticmethod
    def _suspensions(agreement: BilledAgreement) -> list[tuple[datetime, datetime | None]]:
        return [(_parse(a), _parse(b) if b else None) for a, b in getattr(agreement, "suspensions", [])]

    def charged_share(self, agreement: BilledAgreement, statement: Statement) -> Fraction | None:
        """The share of the statement's period its fee is charged for — in the agreement's term
        and not suspended (`periods.charged_share`) — that its percentage credits and cap are
        computed on; None for a statement computed by rule 1 (on the terms' fee)."""
        if statement.fee_basis < 2:
            return None
        period = (_parse(statement.period_start), _parse(statement.period_end))
        return periods.charged_share(
            period, self._started(agreement), self._ended(agreement), self._suspensions(agreement)
        )

    def _reassessed(self, agreement: BilledAgreement, statement: Statement) -> dict[str, dict[str, Any]]:
        """The statement's assessments whose charged share is no longer the period's (the
        agreement was suspended, resumed or ended after the window was assessed), each
        assessed again on the period's share now; rule-1 statements: none."""
        share = self.charged_share(agreement, statement)
        if share is None:
            return {}
        return {
            key: periods.on_share(record, share)
            for key, record in statement.assessments.items()
            if periods.record_share(record) != share
        }

    # -- upstream: agreements and metrics ---------------------------------------------------------------
    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        t = envelope.type
        if t in (
            agreement_events.AgreementAccepted.DESCRIPTOR.full_name,
            agreement_events.AmendmentAccepted.DESCRIPTOR.full_name,
        ):
            msg: Any = (
                agreement_events.AgreementAccepted()
                if t.endswith("AgreementAccepted")
                else agreement_events.AmendmentAccepted()
            )
            envelope.payload.Unpack(msg)
            agg = self._get_or(BilledAgreement.create_id(msg.agreement_id), lambda: BilledAgreement(msg.agreement_id))
            terms = periods.terms_dict(msg.terms)
            agg.version_in_force(msg.version, msg.effective_from.ToDatetime(tzinfo=UTC).isoformat(), terms)
            processing.collect_events(agg)
            self._state_changed_fees(agg, f"version {msg.version} in force", processing)
        elif t in (
            agreement_events.AgreementTerminated.DESCRIPTOR.full_name,
            agreement_events.AgreementExpired.DESCRIPTOR.full_name,
        ):
            end_msg: Any = (
                agreement_events.AgreementTerminated()
                if t.endswith("Terminated")
                else agreement_events.AgreementExpired()
            )
            envelope.payload.Unpack(end_msg)
            agg = self._get_or(BilledAgreement.create_id(end_msg.agreement_id), lambda: None)
            if agg is not None:
                at = end_msg.effective_at if t.endswith("Terminated") else end_msg.at
                agg.end(at.ToDatetime(tzinfo=UTC).isoformat())
                processing.collect_events(agg)
                self._state_changed_fees(agg, f"ended at {agg.ended_at}", processing)
        elif t in (
            agreement_events.AgreementSuspended.DESCRIPTOR.full_name,
            agreement_events.AgreementResumed.DESCRIPTOR.full_name,
        ):
            change: Any = (
                agreement_events.AgreementSuspended()
                if t.endswith("Suspended")
                else agreement_events.AgreementResumed()
            )
            envelope.payload.Unpack(change)
            agg = self._get_or(BilledAgreement.create_id(change.agreement_id), lambda: None)
            if agg is not None:
                # The instant the event carries, as metrics dates it (`state_change_at`).
                when = state_change_at(envelope, change).isoformat()
                if t.endswith("Suspended"):
                    agg.suspend(when)
                else:
                    agg.resume(when)
                processing.collect_events(agg)
                self._state_changed_fees(agg, f"{'suspended' if t.endswith('Suspended') else 'resumed'} at {when}",
                                         processing)  # fmt: skip
        elif t == metric_events.WindowClosed.DESCRIPTOR.full_name:
            closed = metric_events.WindowClosed()
            envelope.payload.Unpack(closed)
            self._on_closed(closed.evaluation, closed.agreements_position, processing)
        elif t == metric_events.EvaluationRestated.DESCRIPTOR.full_name:
            restated = metric_events.EvaluationRestated()
            envelope.payload.Unpack(restated)
            self._on_restated(restated.old, restated.new, restated.agreements_position, processing, envelope.event_id)

    def _state_changed_fees(self, agreement: BilledAgreement, reason: str, processing: ProcessingEvent[Any]) -> None:
        """Each open statement of the agreement whose period's fee the change just made to it
        (not saved yet) alters: its totals so far, with the new fee, stated on the statement
        (`Statement.TotalsStated`, public StatementTotalsStated), so a reader of billing's events
        shows the fee as billing knows it now, not once the next amount lands. The fee of an
        agreement that inherits its parent's is stated when its own events change it (see the
        README, "Totals as soon as an amount is known")."""
        if not agreement.versions:
            return
        with self._lock:
            self._refresh_statements()
            ids = [i for i in self._statements_of.get(agreement.agreement_id, ()) if i in self._unsettled]
        for statement_id in ids:
            statement: Statement = self.repository.get(statement_id)
            if statement.state != OPEN:
                continue
            before = self.period_fee(statement)
            self._pending.aggregates = {agreement.id: agreement}
            try:
                totals = self.totals(statement)
            finally:
                self._pending.aggregates = None
            if Money.of(totals["fee"], statement.currency) != before:
                statement.state_totals(totals, reason)
                processing.collect_events(statement)

    def _judged_agreement(self, msg: metric_events.Evaluation, agreements_position: int) -> BilledAgreement:
        """The agreement a window was judged for, as metrics knew it when it judged. Billing
        consumes the agreements and metrics streams independently, so metrics' judgement of an
        agreement can arrive before what it was judged by does — the acceptance, an amendment's
        version, a suspension, a resumption, an end, a parent's amendment — after a failover
        billing's agreements consumer may be seconds behind its metrics consumer. Such a window
        waits (NotYetError: tried again, never dropped, never skipped) until billing's consumer of
        the agreements stream has applied at least `agreements_position`, the agreements log's
        position metrics had applied when it judged (0 — recorded before metrics kept it — no
        such wait), and the judging version is known (the only rule for those older events).
        Dropping it would leave its period waiting for a window that never comes; assessing it
        by what billing knew then would make the money depend on which consumer ran first. The
        agreements consumer never waits on metrics, so the wait always ends."""
        applied = self.tracked_position(AGREEMENTS_SOURCE) if agreements_position else 0
        if applied < agreements_position:
            raise NotYetError(
                f"metrics judged the window {msg.objective_id} {msg.window_start} of agreement {msg.agreement_id}"
                f" with the agreements stream applied up to position {agreements_position}; billing has applied"
                f" it up to {applied}"
            )
        agreement = self._get_or(BilledAgreement.create_id(msg.agreement_id), lambda: None)
        known = int(agreement.versions[-1]["version"]) if agreement is not None and agreement.versions else 0
        if known == 0 or msg.agreement_version > known:
            raise NotYetError(
                f"agreement {msg.agreement_id} version {msg.agreement_version or 1} judged the window "
                f"{msg.objective_id} {msg.window_start}; billing has applied "
                + (f"up to version {known}" if known else "no version of it")
                + " from the agreements stream yet"
            )
        return agreement

    def _on_closed(
        self, msg: metric_events.Evaluation, agreements_position: int, processing: ProcessingEvent[Any]
    ) -> None:
        self._on_window(self._judged_agreement(msg, agreements_position), msg, None, processing)

    def _on_restated(
        self,
        old: metric_events.Evaluation,
        new: metric_events.Evaluation,
        agreements_position: int,
        processing: ProcessingEvent[Any],
        source: str,
    ) -> None:
        self._on_window(self._judged_agreement(new, agreements_position), new, source, processing)

    def _on_window(
        self,
        agreement: BilledAgreement,
        msg: metric_events.Evaluation,
        restated_by: str | None,
        processing: ProcessingEvent[Any],
    ) -> None:
        """A closed (or restated) window: assessed on the statement of the fee period it is
        billed in while that statement is open, else an adjustment. A window outside the
        agreement's term (before its start, from its end on) is not billed."""
        instant = self._billed_instant(agreement, msg.window_start, msg.window_end)
        if instant is None:
            return
        evaluation = Evaluation.from_message(msg)
        assessed = self._assess(agreement, evaluation)
        if assessed is not None:
            statement = self._statement(agreement, instant, processing)
            share = self.charged_share(agreement, statement)
            if share is not None:  # rule 2: its percentages are of the fee the period charges
                assessed = self._assess(agreement, evaluation, share) or assessed
            key = f"{msg.objective_id}|{msg.window_start}"
            if statement.state == OPEN:
                if statement.assessments.get(key) != assessed:
                    after = self.totals(statement, assessments={**statement.assessments, key: assessed})
                    statement.record_assessment(key, assessed, after)
                processing.collect_events(statement)
            else:  # the period's statement was issued: an adjustment on a later statement
                source = restated_by or f"late:{key}"
                self._adjust(agreement, statement, key, assessed, source, processing)
        self._watch(agreement, msg.objective_id, msg.window_start, evaluation.status is Status.BREACHED, processing)

    def _period_records(self, agreement: BilledAgreement, period: Statement) -> dict[str, dict[str, Any]]:
        """A period's windows as the ledger holds them now: its statement's assessments, each
        replaced by its latest adjustment (adjustments keep the whole new assessment)."""
        records = dict(period.assessments)
        for s in self.statements(None, agreement.agreement_id):
            for adj in s.adjustments:
                if adj.get("period_start") == period.period_start and adj.get("assessment"):
                    records[adj["key"]] = adj["assessment"]
        return records

    def _adjust(
        self, agreement: BilledAgreement, period: Statement, key: str, new: dict[str, Any], source: str,
        processing: ProcessingEvent[Any],
    ) -> None:  # fmt: skip
        """A change to an issued period: an adjustment on a later open statement (the issued
        one is never changed). Its `difference` is what the change does to the PERIOD's
        money: the period's totals (worst window per objective, cap, minimum, rewards) with
        the window's new assessment, minus the same totals as the ledger held them (the
        issued assessments with every earlier adjustment of the period) — so the period's
        cap and minimum hold over adjustments too, and the same windows give the same money
        whichever were late. `old`/`new` are the window's own nets (for the audit); the
        adjustment keeps the new assessment whole, for the re-derivation."""
        statements = self.statements(None, agreement.agreement_id)
        if any(a["source"] == source for s in statements for a in s.adjustments):
            return  # already recorded (a redelivery)
        target = self._adjustment_target(agreement, processing)
        records = self._period_records(agreement, period)
        old = records.get(key)
        before = periods.period_totals(records, period.currency).net
        after = periods.period_totals({**records, key: new}, period.currency).net
        old_net = Decimal(old["net"]) if old else Decimal(0)
        reason = "restated evaluation" if old else "window closed after its period's statement was issued"
        adjustment = {
            "source": source, "key": key, "old": str(old_net), "new": str(new["net"]),
            "difference": str((after - before).amount), "reason": reason, "assessment": new,
            "period_start": period.period_start, "period_before": str(before.amount),
            "period_after": str(after.amount),
        }  # fmt: skip
        target.record_adjustment(adjustment, self.totals(target, adjustments=[*target.adjustments, adjustment]))
        processing.collect_events(target)

    def _adjustment_target(self, agreement: BilledAgreement, processing: ProcessingEvent[Any]) -> Statement:
        """The open statement an adjustment lands on: the current period's; for an ended
        agreement, its last period's while that is open, else the current period's (a
        settlement statement: no fee, no window)."""
        now = self.clock.now()
        ended = self._ended(agreement)
        if ended is not None and now >= ended:
            last = self._statement(agreement, max(ended - periods.EPSILON, self._started(agreement)), processing)
            if last.state == OPEN:
                return last
        target = self._statement(agreement, now, processing)
        if target.state != OPEN:  # the current period is already issued: the next one
            _, end = self._period(agreement, now)
            target = self._statement(agreement, _parse(end), processing)
        return target

    def _watch(
        self,
        agreement: BilledAgreement,
        objective_id: str,
        window_start: str,
        breached: bool,
        processing: ProcessingEvent[Any],
    ) -> None:
        watch = self._get_or(
            TerminationWatch.create_id(agreement.agreement_id, objective_id),
            lambda: TerminationWatch(agreement.agreement_id, objective_id),
        )
        watch.note(window_start, breached)
        terms = self.latest_terms(agreement)
        rule = (terms.get("consequences") or {}).get("termination") or {}
        reason, windows = termination_rule_met(self.breached_periods(agreement, objective_id, watch.periods), rule)
        if reason:
            watch.grant(reason, windows)
        processing.collect_events(watch)

    def breached_periods(
        self, agreement: BilledAgreement, objective_id: str, windows: dict[str, bool]
    ) -> dict[str, bool]:
        """Fee period start → whether the objective was breached in it (any window billed in
        the period breached): termination rules count fee periods, not windows."""
        terms = self.latest_terms(agreement)
        objective: dict[str, Any] = next(
            (o for o in terms.get("objectives") or [] if o.get("objective_id") == objective_id), {}
        )
        tz = terms.get("time_zone") or "UTC"
        in_force: dict[int, dict[str, Any]] = {}  # version → its effective terms (loaded once per call)
        out: dict[str, bool] = {}
        for window_start, breached in windows.items():
            instant = self._billed_instant(agreement, window_start, periods.window_end_of(objective, window_start, tz))
            if instant is None:
                continue
            number = int(periods.version_at(agreement.versions, instant)["version"])
            if number not in in_force:
                in_force[number] = self.terms_in_force(agreement, instant)
            period = periods.fee_period(in_force[number], instant)[0]
            out[period] = out.get(period, False) or breached
        return out

    # -- the clock: issue, finalise, post ------------------------------------------------------------
    def process_due(self, now: datetime | None = None) -> int:
        """Issue statements whose period ended (plus a settling delay) once every window of the
        period is known, finalise those whose claim window passed with no open dispute, and
        post final amounts (the fee, the credits) to the ledger."""
        now = now or self.clock.now()
        changed = 0
        with self._lock:
            changed += self._open_current_periods(now)
            for statement in self._unsettled_statements():  # a FINAL statement has nothing due
                if statement.state == OPEN and self._ready_to_issue(statement, now):
                    agreement = self.agreement(statement.agreement_id)
                    # Issued on the period's charged share as it now stands (a suspension or
                    # end after a window was assessed changes it).
                    for key, again in self._reassessed(agreement, statement).items():
                        after = self.totals(statement, assessments={**statement.assessments, key: again})
                        statement.record_assessment(key, again, after)
                    claim_days = int(
                        (self.latest_terms(agreement).get("consequences") or {}).get("claim_window_days") or 0
                    )
                    statement.issue(
                        self.totals(statement), now.isoformat(), (now + timedelta(days=claim_days)).isoformat()
                    )
                    try:
                        self.save(statement)
                    except IntegrityError:
                        continue  # a window landed on it meanwhile: the next round looks again
                    changed += 1
                elif (
                    statement.state == ISSUED
                    and now.isoformat() > statement.claim_until
                    and not statement.open_disputes
                ):
                    totals = self.totals(statement)
                    statement.finalize(totals)
                    records: list[Any] = [statement]
                    posting = self._posting(statement, totals)
                    if posting is not None:
                        records.append(posting)
                    try:
                        self.save(*records)
                    except IntegrityError:
                        continue  # disputed meanwhile: the next round looks again
                    self._unsettled.pop(statement.id, None)
                    changed += 1
        return changed

    def _open_current_periods(self, now: datetime) -> int:
        """Open the statement of each agreement's latest fee period that has ended (its last
        period once the agreement has ended), and so every earlier period's still missing:
        every period of the term is charged its fee even when no window closes in it — an
        agreement with a fee and no objectives, or objectives whose windows are longer than
        the fee period. Each agreement is looked at again only once its current period has
        ended."""
        opened = 0
        self._refresh_statements()
        for aggregate_id in self._billed_agreement_ids():
            until = self._opened_until.get(aggregate_id)
            if until is not None and now < until:
                continue  # not loaded: nothing can be due before its current period ends
            agreement: BilledAgreement = self.repository.get(aggregate_id)
            if not agreement.versions:
                continue
            started, ended = self._started(agreement), self._ended(agreement)
            if ended is not None and ended <= now:
                target, next_look = max(ended - periods.EPSILON, started), datetime.max.replace(tzinfo=UTC)
            else:
                current_start, current_end = self._period(agreement, max(now, started))
                target, next_look = _parse(current_start) - periods.EPSILON, _parse(current_end)
                if target < started:  # no period of the term has ended yet
                    self._opened_until[aggregate_id] = next_look
                    continue
            if Statement.create_id(agreement.agreement_id, self._period(agreement, target)[0]) in self._statement_ids:
                self._opened_until[aggregate_id] = next_look  # opened already: nothing to load
                continue
            collected = _Collected()
            statement = self._statement(agreement, target, collected)  # type: ignore[arg-type]
            new = [*collected.items, *([statement] if statement.pending_events else [])]
            if new:
                try:
                    self.save(*new)
                except IntegrityError:
                    continue  # a consumer opened one meanwhile: the next round looks again
                opened += len(new)
            self._opened_until[aggregate_id] = next_look
        return opened

    def _billed_agreement_ids(self) -> list[uuid.UUID]:
        """The ids of every agreement billing knows (from the log by position, by any process)."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._agreements_position, [AGREEMENT_TOPIC]):
                for n in notes:
                    self._agreement_ids[uuid.UUID(str(n.originator_id))] = None
                self._agreements_position = read_to
            return list(self._agreement_ids)

    def received_through(
        self, agreement: BilledAgreement, as_loaded: Statement | None = None, since: datetime | None = None
    ) -> dict[str, datetime]:
        """Objective → the latest end of its closed windows billing has received (assessed or
        adjusted). Metrics closes an objective's windows in order, and the stream keeps that
        order, so every window ending by then has been received. `as_loaded`: a statement to
        take as given (the one about to be issued), not as the store has it now. `since`:
        look only at statements whose period ends after it — every window ending after
        `since` is recorded on one (its own period's, or an adjustment's target, which holds
        a later instant), so the answer is the same for any objective received past `since`."""
        out: dict[str, datetime] = {}
        ids = self._statement_ids_of(agreement.agreement_id, since)
        statements: list[Statement] = sorted((self.repository.get(i) for i in ids), key=lambda s: s.period_start)
        if as_loaded is not None:
            statements = [as_loaded, *(s for s in statements if s.id != as_loaded.id)]
        for s in statements:
            records = [*s.assessments.items(), *((a["key"], a.get("assessment")) for a in s.adjustments)]
            for key, record in records:
                end = ((record or {}).get("evaluation") or {}).get("window_end")
                if end:
                    oid = key.split("|", 1)[0]
                    out[oid] = max(out.get(oid, _parse(end)), _parse(end))
        return out

    def _ready_to_issue(self, statement: Statement, now: datetime) -> bool:
        """The period has ended (plus a settling delay) and every window billed in it is known:
        for each objective the effective terms measure, a closed window ending at or after
        the last one the period holds has been received (`periods.required_window`). There is
        no time limit: a period whose windows have not all arrived waits (money never
        depends on when billing's consumer catches up)."""
        end = _parse(statement.period_end)
        if now < end + ISSUE_DELAY:
            return False
        agreement = self.agreement(statement.agreement_id)
        started, ended = self._started(agreement), self._ended(agreement)
        if ended is not None and ended <= _parse(statement.period_start):
            return True  # a settlement statement after the end: adjustments only
        latest = self.latest_terms(agreement)
        tz = latest.get("time_zone") or "UTC"
        through: dict[str, datetime] | None = None
        for objective in latest.get("objectives") or []:
            period = (statement.period_start, statement.period_end)
            need = periods.required_window(objective, tz, period, started, ended)
            if need is None:
                continue
            required, judged_at = need
            judging = self.terms_in_force(agreement, judged_at)
            if not any(o.get("objective_id") == objective["objective_id"] for o in judging.get("objectives") or []):
                continue  # no version in force then measured it: metrics closes no such window
            if through is None:
                # `required` is after the period's start (`periods.required_window`), so only
                # statements of periods ending after that start can hold such a window.
                through = self.received_through(agreement, statement, since=_parse(statement.period_start))
            got = through.get(objective["objective_id"])
            if got is None or got < required:
                return False
        return True

    def period_fee(self, statement: Statement) -> Money:
        """The fee charged for a statement's period: each version's share — the fee of the
        effective terms in force over each part of the period (to the next effective start of
        a version of the agreement or of a parent it inherits from) × that part's charged time
        (`periods.charged_parts`: in the agreement's term and not suspended; rule 1, a
        statement opened before rule 2: not suspended, from the period's start) ÷ the
        period's time — summed and rounded once, half-even; the whole fee when one version is
        in force throughout and all of it is charged; nothing for a period from the
        agreement's end on (a settlement statement)."""
        agreement = self.agreement(statement.agreement_id)
        started, ended = self._started(agreement), self._ended(agreement)
        start, end = _parse(statement.period_start), _parse(statement.period_end)
        if ended is not None and ended <= start:
            return Money.zero(statement.currency)
        parts: list[tuple[Decimal, timedelta, timedelta]] = []  # (monthly fee, charged, whole part)
        for a, b, charged in periods.charged_parts(
            (start, end), self._version_starts(agreement), started, ended, self._suspensions(agreement),
            statement.fee_basis,
        ):  # fmt: skip
            terms = self.terms_in_force(agreement, max(a, started))
            fee = terms.get("fee") or {}
            amount = (
                Money.of(fee["amount"], statement.currency).amount
                if fee.get("currency") == statement.currency and fee.get("amount")
                else Decimal(0)
            )
            parts.append((amount, charged, b - a))
        if len(parts) == 1 and parts[0][1] == parts[0][2]:
            return Money(parts[0][0], statement.currency)
        with localcontext(Context(prec=60, rounding=ROUND_HALF_EVEN)):
            whole = _seconds(end - start)
            return Money(sum((fee * _seconds(kept) / whole for fee, kept, _ in parts), Decimal(0)), statement.currency)

    def totals(
        self,
        statement: Statement,
        *,
        assessments: dict[str, dict[str, Any]] | None = None,
        adjustments: list[dict[str, Any]] | None = None,
        disputes: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The statement's totals: the period's assessments (one per objective: the worst
        window, `periods.period_assessments`) capped and thresholded (assessment.py), then
        adjustments from earlier periods, then accepted disputes; and the period's fee. Computed
        from what the statement holds now (an open one's: so far), or with `assessments`,
        `adjustments` or `disputes` in place of its own (the totals a change would make, stated
        on the change's event)."""
        currency = statement.currency
        held = statement.assessments if assessments is None else assessments
        t = periods.period_totals(held, currency)
        total_adjustments = Money.total(
            (
                Money.of(a["difference"], currency)
                for a in (statement.adjustments if adjustments is None else adjustments)
            ),
            currency,
        )
        # An accepted dispute sets its assessment's amount; the period's totals are taken again
        # with it (cap and minimum included) and `disputes` is the difference that makes.
        settled = {
            d["key"]: Money.of(d["amount"], currency)
            for d in (statement.disputes if disputes is None else disputes).values()
            if d["state"] == "ACCEPTED"
        }
        total_disputes = (
            (periods.period_totals(held, currency, settled).net - t.net) if settled else Money.zero(currency)
        )
        net = t.net + total_adjustments + total_disputes
        return {
            "currency": currency,
            "credits_before_cap": str(t.credits_before_cap.amount),
            "cap_cut": str(t.cap_cut.amount),
            "minimum_cut": str(t.minimum_cut.amount),
            "credits_issued": str(t.credits_issued.amount),
            "rewards": str(t.rewards.amount),
            "adjustments": str(total_adjustments.amount),
            "disputes": str(total_disputes.amount),
            "net": str(net.amount),
            "fee": str(self.period_fee(statement).amount),
        }

    def current_totals(self, statement: Statement) -> dict[str, Any]:
        """The totals as they stand, as the statement answers give them: a final statement's
        as finalised; an issued one's taken now (every dispute accepted so far counted); an open
        one's so far (its assessments recorded so far and the adjustments on it, as if issued
        now — provisional until it is issued)."""
        return statement.totals if statement.state == FINAL else self.totals(statement)

    def _posting(self, statement: Statement, totals: dict[str, Any]) -> LedgerTransaction | None:
        """A final statement's double-entry posting: the period's fee charged (the customer
        pays the provider: customer −fee, provider +fee) and the statement's net against it
        (provider −net, customer +net; a negative net is a further charge). Each pair sums to
        zero, so the ledger balances; nothing when both are zero."""
        net = Decimal(totals["net"])
        fee = Decimal(totals.get("fee") or 0)
        if net == 0 and fee == 0:
            return None
        parties = self.agreement(statement.agreement_id).parties
        provider, customer = parties.get("provider_department_id", ""), parties.get("customer_department_id", "")
        currency = statement.currency
        entries: list[dict[str, str]] = []
        if fee:
            entries += [
                {"account": customer, "amount": str(-fee), "currency": currency, "kind": "FEE"},
                {"account": provider, "amount": str(fee), "currency": currency, "kind": "FEE"},
            ]
        if net:
            entries += [
                {"account": provider, "amount": str(-net), "currency": currency, "kind": "CREDITS"},
                {"account": customer, "amount": str(net), "currency": currency, "kind": "CREDITS"},
            ]
        what = [f"fee {fee} {currency} charged"] if fee else []
        if net:
            what.append(f"{'credits' if net > 0 else 'charges'} {abs(net)} {currency} to the customer")
        return LedgerTransaction(
            source=f"statement:{statement.id}",
            entries=entries,
            period=statement.period_start,
            description=f"agreement {statement.agreement_id}, period from {statement.period_start}: " + "; ".join(what),
        )

    # -- commands ------------------------------------------------------------------------------------------
    def dispute(self, caller: Principal, statement_id: str, objective_id: str, window_start: str, reason: str) -> str:
        with self._lock:
            statement = self.statement(caller, statement_id)
            agreement = self.agreement(statement.agreement_id)
            customer = agreement.parties.get("customer_department_id")
            if caller.role != "department" or caller.department != customer:
                raise NotAPartyError(f"only the customer ({customer}) may dispute an assessment")
            key = f"{objective_id}|{window_start}"
            counted = {f"{a['objective']['objective_id']}|{a['evaluation']['window_start']}"
                       for a in periods.period_assessments(statement.assessments)}  # fmt: skip
            if key in statement.assessments and key not in counted:
                worst = next(k for k in counted if k.startswith(objective_id + "|")).split("|", 1)[1]
                raise InvalidRequestError(
                    f"the window of {objective_id!r} from {window_start} does not count for the period: the"
                    f" objective's worst window of the period, from {worst}, does; dispute that one"
                )
            dispute_id = uuid.uuid4().hex[:12]
            statement.dispute(
                dispute_id, f"{objective_id}|{window_start}", caller.department, reason, self.clock.now().isoformat()
            )
            self.save(statement)
            return dispute_id

    def resolve(
        self, caller: Principal, statement_id: str, dispute_id: str, accept: bool, amount: str, reason: str
    ) -> Statement:
        with self._lock:
            statement = self.statement(caller, statement_id)
            provider = self.agreement(statement.agreement_id).parties.get("provider_department_id")
            if caller.role != "department" or caller.department != provider:
                raise NotAPartyError(f"only the provider ({provider}) may resolve a dispute")
            if accept:
                try:
                    value = Money.of(amount, statement.currency)
                except Exception:
                    raise InvalidRequestError(
                        f"amount must be a decimal in {statement.currency}, not {amount!r}"
                    ) from None
                amount = str(value.amount)
            kept = amount if accept else ""
            after = statement.resolution(dispute_id, accept, kept, reason)
            statement.resolve(dispute_id, accept, kept, reason, self.totals(statement, disputes=after))
            self.save(statement)
            return statement

    # -- queries ----------------------------------------------------------------------------------------------
    def statement(self, caller: Principal | None, statement_id: str) -> Statement:
        try:
            agg: Any = self.repository.get(uuid.UUID(statement_id))
        except (AggregateNotFoundError, ValueError):
            raise NotFoundError(f"statement {statement_id!r} does not exist") from None
        if not isinstance(agg, Statement):
            raise NotFoundError(f"statement {statement_id!r} does not exist")
        self._check_party(caller, agg.agreement_id)
        return agg

    def _check_party(self, caller: Principal | None, agreement_id: str) -> None:
        if caller is not None and caller.role == "department":
            parties = self.agreement(agreement_id).parties.values()
            if caller.department not in parties:
                raise NotAPartyError(f"department {caller.department} is not a party to agreement {agreement_id}")

    def statements(self, caller: Principal | None, agreement_id: str) -> list[Statement]:
        self._check_party(caller, agreement_id)
        rows: list[Statement] = [self.repository.get(i) for i in self._statement_ids_of(agreement_id)]
        return sorted(rows, key=lambda s: s.period_start)

    def ledger(self, caller: Principal | None, department: str = "") -> list[LedgerTransaction]:
        """The ledger's transactions in log order (a department's: those with an entry of its
        account; only those are loaded)."""
        if caller is not None and caller.role == "department":
            department = caller.department  # a department sees its own account
        with self._lock:
            self._refresh_ledger()
            ids = list(self._ledger_of.get(department, ()) if department else self._ledger_txs)
        return [self.repository.get(i) for i in ids]

    def balances(
        self, caller: Principal | None, department: str = "", period: str = ""
    ) -> dict[tuple[str, str], Decimal]:
        """(account, currency) → balance, over all periods or one (its start, RFC 3339); the
        ledger balances: the sum of all is zero per currency. Summed from the ledger's index
        (a department's: over its own postings only); no transaction is loaded."""
        if caller is not None and caller.role == "department":
            department = caller.department
        wanted = _parse(period) if period else None
        out: dict[tuple[str, str], Decimal] = {}
        with self._lock:
            self._refresh_ledger()
            ids = self._ledger_of.get(department, []) if department else list(self._ledger_txs)
            rows = [self._ledger_txs[i] for i in ids]
        for tx_period, entries in rows:
            if wanted is not None and tx_period != wanted:
                continue
            for e in entries:
                if department and e["account"] != department:
                    continue
                key = (e["account"], e["currency"])
                out[key] = out.get(key, Decimal(0)) + Decimal(e["amount"])
        return out

    # -- audit (docs/domain.md §6) ---------------------------------------------------------------------
    def rederive(
        self,
        metrics: list[events_pb2.EventEnvelope],
        agreements: list[events_pb2.EventEnvelope],
        agreement_id: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> audit.Rederivation:
        """Re-derive every assessment from the metrics and agreements logs (as read from those
        services) and compare with billing's statements (`audit.rederive`). Stores nothing."""
        statements: list[Statement] = [self.repository.get(i) for i in self._statement_ids_of(agreement_id or None)]
        if agreement_id and not statements and agreement_id not in audit.agreement_versions(agreements):
            raise NotFoundError(f"agreement {agreement_id!r} is in neither the agreements log nor billing's statements")
        return audit.rederive(metrics, agreements, statements, agreement_id, progress)

    def price_evaluations(
        self,
        caller: Principal | None,
        agreement_id: str,
        terms: dict[str, Any] | None,
        evaluations: list[metric_events.Evaluation],
    ) -> audit.Pricing:
        """What-if: closed evaluations priced under `terms` (None: the latest version's; a fee
        or time zone they leave out comes from it). Stores nothing."""
        agreement = self.agreement(_required(agreement_id))
        self._check_party(caller, agreement_id)
        latest = self.latest_terms(agreement)
        chosen = dict(terms) if terms else dict(latest)
        chosen["fee"] = chosen.get("fee") or latest.get("fee") or {}
        chosen["time_zone"] = chosen.get("time_zone") or latest.get("time_zone") or "UTC"
        if not chosen["fee"]:
            raise InvalidRequestError(f"neither the terms nor agreement {agreement_id}'s latest version set a fee")
        currency = (latest.get("fee") or {}).get("currency") or chosen["fee"].get("currency") or ""
        for i, e in enumerate(evaluations):
            if e.agreement_id not in ("", agreement_id):
                raise InvalidRequestError(f"evaluations[{i}] is of agreement {e.agreement_id}, not {agreement_id}")
        typed = []
        for i, e in enumerate(evaluations):
            try:
                typed.append(Evaluation.from_message(e))
            except ValueError as err:
                raise InvalidRequestError(f"evaluations[{i}]: {err}") from None
        started, ended, suspensions = self._started(agreement), self._ended(agreement), self._suspensions(agreement)

        def share_of(start: str, end: str) -> Fraction | None:
            # The rule of the period's statement if it has one (a period issued by rule 1 is
            # priced by rule 1), else the current rule: the share of it the agreement is charged.
            known = self._get_or(Statement.create_id(agreement_id, start), lambda: None)
            if known is not None and known.fee_basis < 2:
                return None
            return periods.charged_share((_parse(start), _parse(end)), started, ended, suspensions)

        return audit.price(chosen, typed, currency, share_of)

    def statements_at(self, caller: Principal | None, agreement_id: str, at: datetime) -> list[audit.PeriodAtBothTimes]:
        """Every fee period started by `at`: its statement as known at `at` and now, with the
        adjustments of its windows recorded on later statements (`audit.both_axes`)."""
        self.agreement(_required(agreement_id))
        self._check_party(caller, agreement_id)
        statements = self.statements(None, agreement_id)
        periods = [(s, self.get_as_known_at(s.id, at)) for s in statements if _parse(s.period_start) <= at]
        placed = [p for s in statements for p in self._placed_adjustments(s)]
        return audit.both_axes(at, periods, placed)

    def _placed_adjustments(self, statement: Statement) -> list[audit.PlacedAdjustment]:
        """The statement's adjustments with the time each was recorded."""
        out: list[audit.PlacedAdjustment] = []
        for stored in self.recorder.select_events(statement.id):
            event, meta = self.accord_mapper.to_domain_event_with_meta(stored)
            if isinstance(event, ADJUSTED):
                recorded = meta.get("recorded_at")
                when = recorded if isinstance(recorded, datetime) else getattr(event, "timestamp", None)
                assert isinstance(when, datetime)
                adjusted: Any = event
                out.append(audit.PlacedAdjustment(statement, adjusted.adjustment, when))
        return out


class _Collected:
    """Collects what `_statement` opens when no upstream event is being processed."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def collect_events(self, *items: Any) -> None:
        self.items.extend(items)


def _seconds(t: timedelta) -> Decimal:
    """A duration in seconds, exactly."""
    return Decimal(t.days * 86400 + t.seconds) + Decimal(t.microseconds).scaleb(-6)


def _required(agreement_id: str) -> str:
    if not agreement_id:
        raise InvalidRequestError("agreement_id is required")
    return agreement_id


def termination_rule_met(periods: dict[str, bool], rule: dict[str, Any]) -> tuple[str, list[str]]:
    """docs/domain.md §5: breached in `consecutive_periods` consecutive periods, or `breaches`
    times within `within_months` months. Returns the reason and the breached windows, or ("", [])."""
    ordered = sorted(periods.items())
    consecutive = int(rule.get("consecutive_periods") or 0)
    if consecutive:
        run: list[str] = []
        for start, breached in ordered:
            run = [*run, start] if breached else []
            if len(run) >= consecutive:
                return f"breached in {consecutive} consecutive periods", run[-consecutive:]
    breaches, within = int(rule.get("breaches") or 0), int(rule.get("within_months") or 0)
    if breaches and within:
        hits = [s for s, b in ordered if b]
        for i in range(len(hits) - breaches + 1):
            first, last = _parse(hits[i]), _parse(hits[i + breaches - 1])
            if last < _add_months(first, within):
                return f"breached {breaches} times within {within} months", hits[i : i + breaches]
    return "", []


def _add_months(t: datetime, months: int) -> datetime:
    m0 = t.month - 1 + months
    year, month = t.year + m0 // 12, m0 % 12 + 1
    for day in (t.day, 30, 29, 28):
        try:
            return t.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")
