"""An agreement's life from a terminal: list, show, diff, history; revise a draft; reject or
withdraw an amendment; suspend, resume, terminate; define a business calendar
(docs/domain.md §1–2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.markup import escape
from rich.table import Table

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord_cli.core import (
    add_row,
    agreement_table,
    app,
    channel,
    emit,
    fail,
    metadata,
    out,
    read_message,
    read_terms,
    state,
    table,
    timestamp_of,
)

define_app = typer.Typer(help="Define reference data from a file (admins).", no_args_is_help=True)
app.add_typer(define_app, name="define")

Reason = Annotated[str, typer.Option(help="Why (recorded with the event)")]
Expected = Annotated[int, typer.Option(help="Refuse (exit 6) unless the agreement is still at this revision")]


def as_dict(m: Message) -> dict[str, Any]:
    return json_format.MessageToDict(m, preserving_proto_field_name=True)


def short_state(value: apb.AgreementState.ValueType) -> str:
    return apb.AgreementState.Name(value).removeprefix("AGREEMENT_STATE_")


def get_agreement(agreement_id: str, version: int = 0) -> apb.Agreement:
    request = apb.GetAgreementRequest(agreement_id=agreement_id)
    if version:
        request.version = version
    with channel("agreements") as ch:
        return apb_grpc.AgreementsServiceStub(ch).GetAgreement(request, metadata=metadata()).agreement


# -- reading -----------------------------------------------------------------------------------------
@app.command("list")
def list_agreements(
    agreement_state: Annotated[
        str, typer.Option("--state", help="DRAFT, PROPOSED, ACTIVE, SUSPENDED, TERMINATED, EXPIRED")
    ] = "",
    role: Annotated[str, typer.Option(help="provider or customer: the caller's (or --party's) side")] = "",
    party: Annotated[str, typer.Option(help="A party department (auditors, admins)")] = "",
    service: Annotated[str, typer.Option(help="Agreements covering this service")] = "",
) -> None:
    """The agreements the caller can see: id, title, provider → customer, state, version."""
    request = apb.ListAgreementsRequest(party_department_id=party, service_id=service, page_size=500)
    if agreement_state:
        name = f"AGREEMENT_STATE_{agreement_state.upper()}"
        if name not in set(apb.AgreementState.keys()) or name.endswith("UNSPECIFIED"):
            fail(f"--state: one of DRAFT, PROPOSED, ACTIVE, SUSPENDED, TERMINATED, EXPIRED, not {agreement_state!r}", 2)
        request.state = apb.AgreementState.Value(name)
    if role:
        if role.lower() not in ("provider", "customer"):
            fail(f"--role: provider or customer, not {role!r}", 2)
        request.role = apb.PartyRole.Value(f"PARTY_ROLE_{role.upper()}")
    rows: list[apb.AgreementSummary] = []
    with channel("agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        while True:
            r = stub.ListAgreements(request, metadata=metadata())
            rows += r.agreements
            if not r.next_page_token:
                break
            request.page_token = r.next_page_token
    if state.as_json:
        print(json.dumps({"agreements": [as_dict(a) for a in rows]}, sort_keys=True))
        return
    t = table(f"{len(rows)} agreement{'s' if len(rows) != 1 else ''}")
    for col in ("id", "title", "provider → customer", "state", "version"):
        t.add_column(col, overflow="fold")
    for a in rows:
        add_row(t, a.agreement_id, a.title, f"{a.provider_department_id} → {a.customer_department_id}",
                  short_state(a.state), str(a.version) if a.version else "–")  # fmt: skip
    out.print(t)


@app.command()
def show(
    agreement_id: str,
    version: Annotated[int, typer.Option(help="The terms of version N (default: the current terms)")] = 0,
) -> None:
    """An agreement's full current terms (or version N's) and its pending amendment, so that a
    party reads what it accepts."""
    a = get_agreement(agreement_id, version)
    if state.as_json:
        emit(apb.GetAgreementResponse(agreement=a))
        return
    out.print(agreement_table(a))
    which = f"version {a.terms_version}" if a.terms_version else "not accepted yet"
    since = f", in force from {a.terms_effective_from.ToJsonString()}" if a.HasField("terms_effective_from") else ""
    out.print(f"[bold]terms[/bold] ({which}{since}):")
    out.print(yaml.safe_dump(as_dict(a.terms), sort_keys=False, allow_unicode=True), markup=False, highlight=False)
    for label, text in (("last rejection", a.last_rejection_reason), ("suspended", a.suspension_reason)):
        if text:
            out.print(f"[bold]{label}:[/bold] {escape(text)}", highlight=False)
    if a.HasField("termination"):
        t = a.termination
        out.print(f"[bold]termination[/bold] {'scheduled for' if t.scheduled else 'at'} {t.effective_at.ToJsonString()}"
                  f" by {t.by_department_id}: {escape(t.reason)}", highlight=False)  # fmt: skip
    if a.pending_amendment.amendment_id:
        p = a.pending_amendment
        out.print(
            f"[bold]pending amendment[/bold] {p.amendment_id} by {p.proposed_by_department_id}, effective from "
            f"{p.effective_from.ToJsonString()}: {escape(p.reason)}",
            highlight=False,
        )
        out.print(changes_table(terms_changes(a.terms, p.terms), "what the amendment changes"))
        out.print(f"accept: accord accept-amendment {a.agreement_id} {p.amendment_id}", markup=False)


def terms_changes(old: terms_pb2.AgreementTerms, new: terms_pb2.AgreementTerms) -> list[dict[str, str]]:
    """What changes from `old` to `new`, in DiffVersions' form: objective by objective, then
    every other component (one level down in a component)."""
    a, b = as_dict(old), as_dict(new)
    changes: list[dict[str, str]] = []

    def add(path: str, x: Any, y: Any) -> None:
        kind = "ADDED" if x is None else "REMOVED" if y is None else "CHANGED"
        changes.append({"path": path, "kind": kind, "old_json": "" if x is None else json.dumps(x, sort_keys=True),
                        "new_json": "" if y is None else json.dumps(y, sort_keys=True)})  # fmt: skip

    objs_a = {o.get("objective_id", ""): o for o in a.pop("objectives", [])}
    objs_b = {o.get("objective_id", ""): o for o in b.pop("objectives", [])}
    for oid in sorted(objs_a.keys() | objs_b.keys()):
        x, y = objs_a.get(oid), objs_b.get(oid)
        if x is None or y is None:
            add(f"objectives[{oid}]", x, y)
            continue
        for field in sorted(x.keys() | y.keys()):
            if x.get(field) != y.get(field):
                add(f"objectives[{oid}].{field}", x.get(field), y.get(field))
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            for sub in sorted(x.keys() | y.keys()):
                if x.get(sub) != y.get(sub):
                    add(f"{key}.{sub}", x.get(sub), y.get(sub))
        else:
            add(key, x, y)
    return changes


def changes_table(changes: list[dict[str, str]], title: str) -> Table:
    t = table(f"{title}: {len(changes)} change{'s' if len(changes) != 1 else ''}")
    for col in ("path", "change", "old", "new"):
        t.add_column(col, overflow="fold")
    for c in changes:
        add_row(t, c["path"], c["kind"], c["old_json"], c["new_json"])
    return t


@app.command()
def diff(
    agreement_id: str,
    from_version: Annotated[int, typer.Option("--from", help="Version to compare from (default: --to minus 1)")] = 0,
    to_version: Annotated[int, typer.Option("--to", help="Version to compare to (default: the latest)")] = 0,
    amendment: Annotated[str, typer.Option(help="The pending amendment against the current terms")] = "",
) -> None:
    """The terms diff between two versions, or between the current terms and the pending
    amendment (the default when one is pending and no version is given)."""
    if amendment and (from_version or to_version):
        fail("give either --from/--to or --amendment, not both", 2)
    a = get_agreement(agreement_id)
    pending = a.pending_amendment
    if amendment or (not from_version and not to_version and pending.amendment_id):
        if not pending.amendment_id:
            fail(f"agreement {agreement_id} has no pending amendment", 3)
        if amendment and amendment != pending.amendment_id:
            fail(f"amendment {amendment!r} is not pending on {agreement_id} (pending: {pending.amendment_id})", 3)
        changes = terms_changes(a.terms, pending.terms)
        title = f"version {a.version} → amendment {pending.amendment_id}"
    else:
        to_v = to_version or a.version
        from_v = from_version or to_v - 1
        if to_v < 1 or from_v < 1:
            fail(f"agreement {agreement_id} has {a.version} version(s): nothing to compare (use --from and --to)", 5)
        with channel("agreements") as ch:
            r = apb_grpc.AgreementsServiceStub(ch).DiffVersions(
                apb.DiffVersionsRequest(agreement_id=agreement_id, from_version=from_v, to_version=to_v),
                metadata=metadata(),
            )
        changes = [{k: getattr(c, k) for k in ("path", "kind", "old_json", "new_json")} for c in r.changes]
        title = f"version {from_v} → version {to_v}"
    if state.as_json:
        print(json.dumps({"agreement_id": agreement_id, "compared": title, "changes": changes}, sort_keys=True))
    else:
        out.print(changes_table(changes, title))


@app.command()
def history(agreement_id: str) -> None:
    """An agreement's accepted versions and every lifecycle event, oldest first."""
    a = get_agreement(agreement_id)
    with channel("agreements") as ch:
        events = list(
            apb_grpc.AgreementsServiceStub(ch).StreamHistory(
                apb.StreamHistoryRequest(agreement_id=agreement_id), metadata=metadata()
            )
        )
    if state.as_json:
        print(json.dumps({"agreement_id": agreement_id, "versions": [as_dict(v) for v in a.versions],
                          "events": [as_dict(e) for e in events]}, sort_keys=True))  # fmt: skip
        return
    v = table(f"versions of {a.terms.title} ({agreement_id})")
    for col in ("version", "effective from", "accepted at", "amendment"):
        v.add_column(col)
    for ver in a.versions:
        add_row(v, str(ver.version), ver.effective_from.ToJsonString(), ver.accepted_at.ToJsonString(),
                  ver.amendment_id or "–")  # fmt: skip
    out.print(v)
    t = table(f"{len(events)} events")
    for col in ("recorded at", "event", "by", "detail"):
        t.add_column(col, overflow="fold")
    for e in events:
        payload = as_dict(e).get("payload", {})
        detail = "; ".join(f"{k}: {payload[k]}" for k in ("reason", "version", "amendment_id", "effective_from",
                                                          "effective_at") if payload.get(k))  # fmt: skip
        who = e.actor.department or e.actor.role or "(derived)"
        add_row(t, e.recorded_at.ToJsonString(), e.type.rsplit(".", 1)[-1], who, detail)
    out.print(t)


# -- changing --------------------------------------------------------------------------------------
def _agreement_result(r: Any) -> None:
    emit(r, agreement_table(r.agreement))


@app.command()
def revise(agreement_id: str, terms_file: Path, expected_revision: Expected = 0) -> None:
    """Revise a draft with new terms from a YAML file (the provider; a proposal goes back to
    draft only when the customer rejects it)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).ReviseDraft(
            apb.ReviseDraftRequest(
                agreement_id=agreement_id, terms=read_terms(terms_file), expected_revision=expected_revision
            ),
            metadata=metadata(),
        )
    _agreement_result(r)


def _pending(agreement_id: str, amendment_id: str) -> str:
    if amendment_id:
        return amendment_id
    pending = get_agreement(agreement_id).pending_amendment.amendment_id
    if not pending:
        fail(f"agreement {agreement_id} has no pending amendment", 3)
    return pending


@app.command("reject-amendment")
def reject_amendment(
    agreement_id: str,
    reason: Reason,
    amendment_id: Annotated[str, typer.Argument(help="Default: the pending one")] = "",
    expected_revision: Expected = 0,
) -> None:
    """Reject the pending amendment with a reason (the counterparty)."""
    aid = _pending(agreement_id, amendment_id)
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).RejectAmendment(
            apb.RejectAmendmentRequest(
                agreement_id=agreement_id, amendment_id=aid, reason=reason, expected_revision=expected_revision
            ),
            metadata=metadata(),
        )
    _agreement_result(r)


@app.command("withdraw-amendment")
def withdraw_amendment(
    agreement_id: str,
    amendment_id: Annotated[str, typer.Argument(help="Default: the pending one")] = "",
    reason: Annotated[str, typer.Option(help="Why")] = "",
    expected_revision: Expected = 0,
) -> None:
    """Withdraw one's own pending amendment (the proposer)."""
    aid = _pending(agreement_id, amendment_id)
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).WithdrawAmendment(
            apb.WithdrawAmendmentRequest(
                agreement_id=agreement_id, amendment_id=aid, reason=reason, expected_revision=expected_revision
            ),
            metadata=metadata(),
        )
    _agreement_result(r)


@app.command()
def suspend(agreement_id: str, reason: Reason, expected_revision: Expected = 0) -> None:
    """Suspend an active agreement (the provider, always with a reason: when both parties
    agree, the reason names the customer's request; the customer alone cannot)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).SuspendAgreement(
            apb.SuspendAgreementRequest(agreement_id=agreement_id, reason=reason, expected_revision=expected_revision),
            metadata=metadata(),
        )
    _agreement_result(r)


@app.command()
def resume(
    agreement_id: str, reason: Annotated[str, typer.Option(help="Why")] = "", expected_revision: Expected = 0
) -> None:
    """Resume a suspended agreement (the provider)."""
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).ResumeAgreement(
            apb.ResumeAgreementRequest(agreement_id=agreement_id, reason=reason, expected_revision=expected_revision),
            metadata=metadata(),
        )
    _agreement_result(r)


@app.command()
def terminate(
    agreement_id: str,
    reason: Reason,
    at: Annotated[str, typer.Option(help="When it ends (default: as soon as the notice period allows)")] = "",
    immediate: Annotated[bool, typer.Option(help="At once, using a termination right (the customer)")] = False,
    expected_revision: Expected = 0,
    tz: Annotated[str, typer.Option("--tz", help="IANA zone for an --at without an offset")] = "",
) -> None:
    """Terminate with notice (either party), or at once with a termination right (the customer)."""
    request = apb.TerminateAgreementRequest(
        agreement_id=agreement_id, reason=reason, immediate=immediate, expected_revision=expected_revision
    )
    if at:
        request.effective_at.CopyFrom(timestamp_of(at, tz, "--at"))
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).TerminateAgreement(request, metadata=metadata())
    _agreement_result(r)


@define_app.command("calendar")
def define_calendar(calendar_file: Path) -> None:
    """Define (or redefine: a new version) a business calendar from a YAML file: calendar_id,
    time_zone, hours (weekday 1–7, opens, closes "HH:MM"), holidays (ISO dates). Admins."""
    calendar = read_message(calendar_file, apb.Calendar(), "a business calendar")
    with channel("agreements") as ch:
        r = apb_grpc.AgreementsServiceStub(ch).DefineCalendar(
            apb.DefineCalendarRequest(calendar=calendar), metadata=metadata()
        )
    c = r.calendar
    t = table(f"calendar {c.calendar_id} version {c.version} ({c.time_zone})")
    for col in ("weekday", "opens", "closes"):
        t.add_column(col)
    for h in c.hours:
        add_row(t, str(h.weekday), h.opens, h.closes)
    emit(r, t)
    if not state.as_json and c.holidays:
        out.print("holidays: " + ", ".join(c.holidays), highlight=False)
