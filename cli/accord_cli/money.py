"""The money side (docs/domain.md §5): statements with their lines, adjustments and disputes,
the chargeback ledger and balances; disputes opened and resolved by the window's local date
in the agreement's time zone (`2026-03`, `2026-03-14`) rather than its UTC instant."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from google.protobuf import json_format

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord_cli.core import add_row, app, channel, emit, fail, metadata, out, state, table


def as_dict(m: Any) -> dict[str, Any]:
    return json_format.MessageToDict(m, preserving_proto_field_name=True)


def short(value: bpb.StatementState.ValueType) -> str:
    return bpb.StatementState.Name(value).removeprefix("STATEMENT_STATE_")


def zone_of(agreement_id: str) -> ZoneInfo:
    """The agreement's time zone (its terms'), in which windows and periods are named."""
    with channel("agreements") as ch:
        a = (
            apb_grpc.AgreementsServiceStub(ch)
            .GetAgreement(apb.GetAgreementRequest(agreement_id=agreement_id), metadata=metadata())
            .agreement
        )
    try:
        return ZoneInfo(a.terms.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(instant: str, zone: ZoneInfo) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(zone)


def local_label(instant: str, zone: ZoneInfo) -> str:
    """A window start as its local date (with the time when it is not midnight)."""
    if not instant:
        return ""
    t = local(instant, zone)
    return t.date().isoformat() + ("" if t.time() == datetime.min.time() else t.strftime(" %H:%M"))


def get_statement(statement_id: str) -> bpb.Statement:
    with channel("billing") as ch:
        return (
            bpb_grpc.BillingServiceStub(ch)
            .GetStatement(bpb.GetStatementRequest(statement_id=statement_id), metadata=metadata())
            .statement
        )


# -- windows by their local date ---------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    objective_id: str
    window_start: str  # RFC 3339, as billing holds it


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")


def find_window(
    windows: list[Window], objective_id: str, when: str, zone: ZoneInfo, period_end: str, what: str
) -> Window:
    """The window of `objective_id` that `when` names: its exact start (RFC 3339), or a local
    date — `YYYY-MM-DD` (the window starting that day, else the one holding it) or `YYYY-MM`
    (the one window starting that month, else the one holding its first day). None: exit 3,
    listing the windows there are; several: exit 2, listing them."""
    own = sorted({w for w in windows if w.objective_id == objective_id}, key=lambda w: local(w.window_start, zone))
    listing = "; ".join(f"{local_label(w.window_start, zone)} ({w.window_start})" for w in own) or "none"
    if not own:
        objectives = sorted({w.objective_id for w in windows})
        fail(f"no {what} of objective {objective_id!r} here (objectives: {', '.join(objectives) or 'none'})", 3)
    if "T" in when:
        try:
            instant = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            fail(f"not a date (YYYY-MM or YYYY-MM-DD) or RFC 3339 instant: {when!r}", 2)
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=zone)
        matches = [w for w in own if local(w.window_start, zone) == instant]
    elif _DAY.match(when) or _MONTH.match(when):
        try:
            first_day = date.fromisoformat(when if _DAY.match(when) else when + "-01")
        except ValueError:
            fail(f"not a calendar date: {when!r}", 2)
        matches = [w for w in own if local(w.window_start, zone).date().isoformat().startswith(when)]
        if not matches:
            # The window holding the date: the last one starting on or before it, if the date
            # falls before the next one's start (or before the period's end, for the last).
            midnight = datetime.combine(first_day, datetime.min.time(), zone)
            starts = [local(w.window_start, zone) for w in own]
            for i, (w, start) in enumerate(zip(own, starts, strict=True)):
                end = starts[i + 1] if i + 1 < len(own) else (local(period_end, zone) if period_end else None)
                if start <= midnight and (end is None or midnight < end):
                    matches = [w]
    else:
        fail(f"not a date (YYYY-MM or YYYY-MM-DD) or RFC 3339 instant: {when!r}", 2)
    if not matches:
        fail(f"no {what} of {objective_id} matches {when} ({zone.key}); the {what}s there: {listing}", 3)
    if len(matches) > 1:
        options = "; ".join(f"{local_label(w.window_start, zone)} ({w.window_start})" for w in matches)
        fail(f"{when} matches {len(matches)} {what}s of {objective_id} ({zone.key}): {options}; give the full date", 2)
    return matches[0]


# -- statements ------------------------------------------------------------------------------------
@app.command()
def statements(
    agreement_id: Annotated[str, typer.Argument(help="An agreement; without it, every agreement the caller sees")] = "",
) -> None:
    """Statements, oldest period first: id, agreement, period, state, net and fee."""
    ids = [agreement_id]
    if not agreement_id:
        with channel("agreements") as ch:
            stub = apb_grpc.AgreementsServiceStub(ch)
            request, ids = apb.ListAgreementsRequest(page_size=500), []
            while True:
                r = stub.ListAgreements(request, metadata=metadata())
                ids += [a.agreement_id for a in r.agreements if a.version > 0]
                if not r.next_page_token:
                    break
                request.page_token = r.next_page_token
    rows: list[bpb.Statement] = []
    with channel("billing") as ch:
        stub_b = bpb_grpc.BillingServiceStub(ch)
        for aid in ids:
            rows += stub_b.ListStatements(bpb.ListStatementsRequest(agreement_id=aid), metadata=metadata()).statements
    if state.as_json:
        print(json.dumps({"statements": [as_dict(s) for s in rows]}, sort_keys=True))
        return
    t = table(f"{len(rows)} statement{'s' if len(rows) != 1 else ''}")
    for col in ("id", "agreement", "period", "state", "credits net", "fee", "claim until"):
        t.add_column(col, overflow="fold")
    for s in rows:
        add_row(t, s.statement_id, s.agreement_id, f"{s.period_start} – {s.period_end}", short(s.state),
                  (f"{s.totals.net} {s.currency}" + (" so far" if s.totals.provisional else "")) if s.totals.net
                  else "(open)",
                  s.totals.fee, s.claim_until)  # fmt: skip
    out.print(t)


@app.command()
def statement(statement_id: str) -> None:
    """One statement: every assessment with its lines, the adjustments of earlier periods, the
    disputes and their amounts, and the totals; windows named by their local date."""
    s = get_statement(statement_id)
    if state.as_json:
        emit(bpb.GetStatementResponse(statement=s))
        return
    zone = zone_of(s.agreement_id)
    out.print(f"[bold]statement {s.statement_id}[/bold] of agreement {s.agreement_id}: "
              f"{local_label(s.period_start, zone)} – {local_label(s.period_end, zone)} ({zone.key}), {short(s.state)}"
              + (f", issued {s.issued_at}, disputable until {s.claim_until}" if s.issued_at else ""),
              highlight=False)  # fmt: skip
    t = table("assessments")
    for col in ("objective", "window", "status", "value", "lines", f"net {s.currency}"):
        t.add_column(col, overflow="fold")
    for a in s.assessments:
        lines = "\n".join(
            f"{ln.kind} {ln.amount}{'' if ln.applied else ' (not applied)'}: {ln.derivation}" for ln in a.lines
        )
        add_row(t, a.objective_id, local_label(a.window_start, zone), a.status, a.value, lines, a.net)
    out.print(t)
    if s.adjustments:
        t = table("adjustments of issued periods")
        for col in ("objective", "window", "old", "new", "difference", "reason"):
            t.add_column(col, overflow="fold")
        for j in s.adjustments:
            add_row(t, j.objective_id, local_label(j.window_start, zone), j.old_amount, j.new_amount, j.difference,
                      j.reason)  # fmt: skip
        out.print(t)
    if s.disputes:
        t = table("disputes")
        for col in ("id", "objective", "window", "state", "amount", "reason", "resolution"):
            t.add_column(col, overflow="fold")
        for d in s.disputes:
            add_row(t, d.dispute_id, d.objective_id, local_label(d.window_start, zone), d.state, d.amount, d.reason,
                      d.resolution)  # fmt: skip
        out.print(t)
    if s.HasField("totals"):
        tt = s.totals
        t = table(f"totals ({tt.currency or s.currency})" + (" so far: open, not issued" if tt.provisional else ""))
        for col in ("credits before cap", "cap cut", "minimum cut", "credits issued", "rewards", "adjustments",
                    "disputes", "net", "fee"):  # fmt: skip
            t.add_column(col)
        add_row(t, tt.credits_before_cap, tt.cap_cut, tt.minimum_cut, tt.credits_issued, tt.rewards, tt.adjustments,
                  tt.disputes, tt.net, tt.fee)  # fmt: skip
        out.print(t)


@app.command()
def ledger(department: Annotated[str, typer.Option(help="One department's account (auditors, admins)")] = "") -> None:
    """The chargeback ledger: each posted transaction and its entries (a department sees its own)."""
    with channel("billing") as ch:
        r = bpb_grpc.BillingServiceStub(ch).GetLedgerEntries(
            bpb.GetLedgerEntriesRequest(department_id=department), metadata=metadata()
        )
    t = table(f"{len(r.transactions)} ledger transactions")
    for col in ("transaction", "period", "description", "account", "kind", "amount"):
        t.add_column(col, overflow="fold")
    for tx in r.transactions:
        for i, e in enumerate(tx.entries):
            first = i == 0
            add_row(t, tx.transaction_id if first else "", tx.period if first else "", tx.description if first else "",
                      e.account, e.kind, f"{e.amount} {e.currency}")  # fmt: skip
    emit(r, t)


@app.command()
def balances(
    department: Annotated[str, typer.Option(help="One department (auditors, admins)")] = "",
    period: Annotated[str, typer.Option(help="One billing period: its start, as in the statement")] = "",
) -> None:
    """Each department's balance per currency (positive: credited to it); a department sees its own."""
    with channel("billing") as ch:
        r = bpb_grpc.BillingServiceStub(ch).GetBalances(
            bpb.GetBalancesRequest(department_id=department, period_start=period), metadata=metadata()
        )
    t = table("balances")
    for col in ("department", "currency", "amount"):
        t.add_column(col)
    for b in r.balances:
        add_row(t, b.department_id, b.currency, b.amount)
    emit(r, t)


# -- disputes --------------------------------------------------------------------------------------
When = Annotated[str, typer.Argument(help="The window's local date: 2026-03 or 2026-03-14 (or its RFC 3339 start)")]


@app.command()
def dispute(
    statement_id: str,
    objective_id: str,
    window: When,
    reason: Annotated[str, typer.Option(help="Why")],
) -> None:
    """Dispute an assessment of an issued statement (the customer), the window named by its
    local date in the agreement's time zone."""
    s = get_statement(statement_id)
    zone = zone_of(s.agreement_id)
    windows = [Window(a.objective_id, a.window_start) for a in s.assessments]
    w = find_window(windows, objective_id, window, zone, s.period_end, "assessed window")
    with channel("billing") as ch:
        r = bpb_grpc.BillingServiceStub(ch).DisputeAssessment(
            bpb.DisputeAssessmentRequest(
                statement_id=statement_id, objective_id=objective_id, window_start=w.window_start, reason=reason
            ),
            metadata=metadata(),
        )
    if state.as_json:
        print(json.dumps({"dispute_id": r.dispute_id, "statement_id": statement_id, "objective_id": objective_id,
                          "window_start": w.window_start}, sort_keys=True))  # fmt: skip
    else:
        out.print(f"dispute {r.dispute_id} opened on {objective_id} {local_label(w.window_start, zone)} "
                  f"({w.window_start})", highlight=False)  # fmt: skip


@app.command("resolve-dispute")
def resolve_dispute(
    statement_id: str,
    objective_id: str,
    window: When,
    accept: Annotated[bool, typer.Option("--accept/--reject", help="Accept (with --amount) or reject (with --reason)")],
    amount: Annotated[str, typer.Option(help="With --accept: the assessment's new amount (0 waives it)")] = "",
    reason: Annotated[str, typer.Option(help="Why (required with --reject)")] = "",
) -> None:
    """Resolve the open dispute of a window (the provider), the window named by its local date."""
    if accept and not amount:
        fail("--accept needs --amount: the assessment's new amount (0 waives it)", 2)
    if not accept and not reason:
        fail("--reject needs --reason", 2)
    s = get_statement(statement_id)
    zone = zone_of(s.agreement_id)
    open_disputes = [d for d in s.disputes if d.state == "OPEN"]
    w = find_window([Window(d.objective_id, d.window_start) for d in open_disputes], objective_id, window, zone,
                    s.period_end, "open dispute's window")  # fmt: skip
    d = next(d for d in open_disputes if (d.objective_id, d.window_start) == (w.objective_id, w.window_start))
    with channel("billing") as ch:
        r = bpb_grpc.BillingServiceStub(ch).ResolveDispute(
            bpb.ResolveDisputeRequest(
                statement_id=statement_id, dispute_id=d.dispute_id, accept=accept, amount=amount, reason=reason
            ),
            metadata=metadata(),
        )
    if state.as_json:
        emit(r)
    else:
        out.print(f"dispute {d.dispute_id} ({objective_id} {local_label(w.window_start, zone)}) "
                  f"{'accepted: ' + amount if accept else 'rejected'}", highlight=False)  # fmt: skip
