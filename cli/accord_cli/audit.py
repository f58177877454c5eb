"""What an auditor does: replay an agreement across services, reconstruct it as known and as
effective at an instant, verify the services' hash-chained logs, re-derive evaluations and
assessments from the raw inputs, price a proposed amendment over past periods, export
everything for an offline check."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from rich.progress import Progress
from rich.table import Table

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.audit.v1 import audit_pb2
from accord.audit.v1 import audit_pb2_grpc as audit_grpc
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.metrics.v1 import events_pb2 as mpb_events
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord_cli.core import audit_app, channel, emit, err, metadata, out, read_terms, state, timestamp_of
from accord_cli.history import (
    EVALUATION_COLUMNS,
    EXPORT_FORMAT,
    HISTORY_COLUMNS,
    Entry,
    causal_order,
    chain_page_lines,
    evaluation_rows,
    history_rows,
    read_chain_file,
    sha256_file,
    short_type,
    write_csv,
)

AUDITED = ("agreements", "metrics", "billing")


# -- replay ------------------------------------------------------------------------------------------
def fetch_history(agreement_id: str, progress: Progress | None = None) -> list[Entry]:
    """The agreement's events from every service (AuditService.AgreementHistory), merged in
    causal order."""
    per_service: dict[str, list[Entry]] = {}
    for service in AUDITED:
        task = progress.add_task(f"{service}: events of {agreement_id}", total=None) if progress else None
        with channel(service) as ch:
            stub = audit_grpc.AuditServiceStub(ch)
            found: list[Entry] = []
            for e in stub.AgreementHistory(audit_pb2.AgreementHistoryRequest(agreement_id=agreement_id),
                                           metadata=metadata()):  # fmt: skip
                found.append(Entry(e.envelope, e.chain_hash))
                if progress is not None and task is not None and len(found) % 100 == 0:
                    progress.update(task, completed=len(found))
        if progress is not None and task is not None:
            progress.update(task, total=len(found), completed=len(found))
        per_service[service] = found
    return causal_order(per_service)


@audit_app.command("replay")
def replay(agreement_id: str) -> None:
    """An agreement's whole history across services in one causal order: terms and versions,
    evaluations (with their input digests and counts), breaches, restatements, assessments,
    disputes, ledger entries — each with its source service, log position and chain hash
    (auditors, admins). Exit 3 when no service knows the agreement."""
    with Progress(console=err, transient=True, disable=state.as_json) as progress:
        entries = fetch_history(agreement_id, progress)
    if not entries:
        err.print(f"[red]no service knows agreement {agreement_id!r}[/red]")
        raise typer.Exit(3)
    if state.as_json:
        for e in entries:
            print(json.dumps(e.as_dict(), sort_keys=True))
        return
    t = Table(title=f"history of agreement {agreement_id}: {len(entries)} events")
    for col in ("recorded at", "service", "position", "event", "actor", "chain hash"):
        t.add_column(col)
    for e in entries:
        env = e.envelope
        t.add_row(env.recorded_at.ToJsonString(), e.service, str(env.position), short_type(env),
                  env.actor.department or env.actor.role or "(derived)", e.chain_hash.hex()[:16])  # fmt: skip
    out.print(t)


# -- verify ------------------------------------------------------------------------------------------
def _trusted_keys(service: str, given: dict[str, list[Path]], progress: Progress) -> tuple[str, list[Any]]:
    """The public keys to trust for a service: the files given with --key, else the keys the
    service itself names (then only integrity against those keys is shown: say so)."""
    from accord_kit.chain import load_public_key  # here: a heavy import

    if service in given:
        return "given", [load_public_key(p) for p in given[service]]
    with channel(service) as ch:
        r = audit_grpc.AuditServiceStub(ch).GetChainKeys(audit_pb2.GetChainKeysRequest(), metadata=metadata())
    pems = ([r.current.public_key_pem] if r.current.public_key_pem else []) + [k.public_key_pem for k in r.previous]
    return "from the service", [load_public_key(pem.encode()) for pem in pems]


def _read_chain(service: str, progress: Progress, sink: Any = None) -> list[audit_pb2.ReadChainResponse]:
    pages: list[audit_pb2.ReadChainResponse] = []
    with channel(service) as ch:
        stub = audit_grpc.AuditServiceStub(ch)
        first = stub.ReadChain(audit_pb2.ReadChainRequest(limit=1), metadata=metadata())
        end = max(first.log_head_position, first.chain_head_position)
        task = progress.add_task(f"{service}: reading the log", total=max(end, 1))
        after = 0
        while True:
            page = stub.ReadChain(
                audit_pb2.ReadChainRequest(after_position=after, limit=5000, stop_position=end),
                metadata=metadata(),
            )
            if sink is not None:
                sink(page)
            else:
                pages.append(page)
            after = page.through_position
            progress.update(task, completed=after)
            if not page.more or end == 0:
                break
        progress.update(task, completed=max(end, 1))
    return pages


def _parse_keys(keys: list[str]) -> dict[str, list[Path]]:
    given: dict[str, list[Path]] = {}
    for item in keys:
        service, sep, path = item.partition("=")
        if not sep or service not in AUDITED:
            err.print(
                f"[red]--key wants SERVICE=PUBLIC_KEY.pem with SERVICE one of {', '.join(AUDITED)}: {item!r}[/red]"
            )
            raise typer.Exit(2)
        if not Path(path).is_file():
            err.print(f"[red]--key {item!r}: no such file[/red]")
            raise typer.Exit(2)
        given.setdefault(service, []).append(Path(path))
    return given


def _report_row(service: str, report: Any, trust: str) -> dict[str, Any]:
    problem = report.problem
    return {
        "service": service,
        "ok": report.ok,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "sealed_through": report.sealed_through,
        "keys": trust,
        "problem": None if problem is None else
        {"kind": str(problem.kind), "position": problem.position, "detail": problem.detail},
    }  # fmt: skip


def _print_reports(rows: list[dict[str, Any]]) -> None:
    if state.as_json:
        print(json.dumps({"services": rows}, sort_keys=True))
        return
    t = Table(title="verification of the services' logs")
    for col in ("service", "result", "records", "checkpoints", "sealed through", "keys", "first problem"):
        t.add_column(col)
    for r in rows:
        p = r["problem"]
        first = "" if p is None else f"{p['kind']} at {p['position']}: {p['detail']}"
        result = "[green]intact[/green]" if r["ok"] else "[red]TAMPERED[/red]"
        sealed = str(r.get("sealed_through", ""))
        t.add_row(r["service"], result, str(r["records"]), str(r["checkpoints"]), sealed, r["keys"], first)
    out.print(t)


@audit_app.command("verify")
def verify(
    service: Annotated[list[str], typer.Option(help="Only this service (repeatable)")] = [],  # noqa: B006
    key: Annotated[list[str], typer.Option(help="SERVICE=PUBLIC_KEY.pem: trust this key (repeatable)")] = [],  # noqa: B006
    offline: Annotated[Path | None, typer.Option(help="Verify an export directory instead of the services")] = None,
) -> None:
    """Verify each service's hash-chained log and signed checkpoints, here, from the raw
    records: report the first altered, missing, inserted, reordered or truncated record
    (auditors, admins). Without --key the keys the services name are used, which proves
    integrity against those keys only. Exit 5 when anything was tampered with."""
    from accord_kit.audit import verify_pages  # here: a heavy import

    given = _parse_keys(key)
    if offline is not None:
        rows = _verify_export(offline, given)
    else:
        chosen = service or list(AUDITED)
        for s in chosen:
            if s not in AUDITED:
                err.print(f"[red]--service must be one of {', '.join(AUDITED)}: {s!r}[/red]")
                raise typer.Exit(2)
        rows = []
        with Progress(console=err, transient=True, disable=state.as_json) as progress:
            for s in chosen:
                trust, keys = _trusted_keys(s, given, progress)
                pages = _read_chain(s, progress)
                report = verify_pages(pages, keys, service=s)
                rows.append(_report_row(s, report, trust))
    _print_reports(rows)
    if not all(r["ok"] for r in rows):
        raise typer.Exit(5)


# -- export ------------------------------------------------------------------------------------------
@audit_app.command("export")
def export(
    agreement_id: str,
    directory: Annotated[Path, typer.Option("--out", help="Directory to write (created; must be empty)")],
) -> None:
    """Export an agreement's whole history for an offline audit: history.jsonl (every event
    in causal order with its chain hash), history.csv and evaluations.csv (the tabular
    parts), each service's raw log with its chain (logs/<service>.jsonl), the services' public
    chain keys (keys.json) and a manifest of sha256 digests. `accord audit verify --offline DIR`
    checks it without the services (auditors, admins)."""
    if directory.exists() and any(directory.iterdir()):
        err.print(f"[red]{directory} is not empty[/red]")
        raise typer.Exit(2)
    keys_doc: dict[str, Any] = {}
    heads: dict[str, int] = {}
    with Progress(console=err, transient=True, disable=state.as_json) as progress:
        entries = fetch_history(agreement_id, progress)
        if not entries:
            err.print(f"[red]no service knows agreement {agreement_id!r}[/red]")
            raise typer.Exit(3)
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        for s in AUDITED:
            with channel(s) as ch:
                r = audit_grpc.AuditServiceStub(ch).GetChainKeys(audit_pb2.GetChainKeysRequest(), metadata=metadata())
            keys_doc[s] = json_format.MessageToDict(r, preserving_proto_field_name=True)
            with (directory / "logs" / f"{s}.jsonl").open("w") as f:

                def sink(page: audit_pb2.ReadChainResponse, f: Any = f, s: str = s) -> None:
                    heads[s] = max(heads.get(s, 0), page.through_position)
                    for line in chain_page_lines(page):
                        f.write(line + "\n")

                _read_chain(s, progress, sink)
    with (directory / "history.jsonl").open("w") as f:
        for e in entries:
            f.write(json.dumps(e.as_dict(), sort_keys=True) + "\n")
    write_csv(directory / "history.csv", HISTORY_COLUMNS, history_rows(entries))
    write_csv(directory / "evaluations.csv", EVALUATION_COLUMNS, evaluation_rows(entries))
    (directory / "keys.json").write_text(json.dumps(keys_doc, indent=2, sort_keys=True) + "\n")
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    manifest = {
        "format": EXPORT_FORMAT,
        "agreement_id": agreement_id,
        "events": len(entries),
        "log_positions": heads,
        "files": {str(p.relative_to(directory)): sha256_file(p) for p in files},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    emit({"directory": str(directory), "events": len(entries), "files": len(files) + 1})


def _failed(what: str, kind: str, detail: str) -> dict[str, Any]:
    return {"service": what, "ok": False, "records": 0, "checkpoints": 0, "keys": "",
            "problem": {"kind": kind, "position": 0, "detail": detail}}  # fmt: skip


def _verify_export(directory: Path, given: dict[str, list[Path]]) -> list[dict[str, Any]]:
    """Check an export: the manifest's digests, each log's chain and checkpoints, and that
    every history event sits at its position in its verified log with the same chain hash."""
    from accord_kit.audit import verify_pages  # here: a heavy import
    from accord_kit.chain import load_public_key  # here: a heavy import

    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        keys_doc = json.loads((directory / "keys.json").read_text())
    except (OSError, ValueError) as e:
        err.print(f"[red]{directory} is not an export: {e}[/red]")
        raise typer.Exit(2) from None
    if manifest.get("format") != EXPORT_FORMAT:
        err.print(f"[red]{directory}: unknown export format {manifest.get('format')!r}[/red]")
        raise typer.Exit(2)
    rows: list[dict[str, Any]] = []
    for name, digest in sorted(manifest["files"].items()):
        path = directory / name
        if not path.is_file() or sha256_file(path) != digest:
            rows.append(_failed(name, "FILE", "missing or changed since the export"))
    hashes: dict[str, dict[int, bytes]] = {}
    for s in AUDITED:
        if s in given:
            trust, keys = "given", [load_public_key(p) for p in given[s]]
        else:
            doc = keys_doc.get(s) or {}
            pems = [k["public_key_pem"] for k in [doc.get("current") or {}, *(doc.get("previous") or [])] if k]
            trust, keys = "from the export", [load_public_key(p.encode()) for p in pems]
        try:
            page = read_chain_file(directory / "logs" / f"{s}.jsonl")
        except (OSError, ValueError, KeyError) as e:
            rows.append(_failed(s, "FILE", f"logs/{s}.jsonl cannot be read: {e}"))
            continue
        report = verify_pages([page], keys, service=s)
        rows.append(_report_row(s, report, trust))
        hashes[s] = {c.position: c.hash for c in page.chain}
    bad = []
    try:
        with (directory / "history.jsonl").open() as f:
            for n, line in enumerate(f, 1):
                doc = json.loads(line)
                s, pos = doc["source_service"], int(doc["position"])
                if hashes.get(s, {}).get(pos, b"").hex() != doc.get("chain_hash"):
                    bad.append(f"history line {n}: {s} position {pos} is not in its log with that chain hash")
    except (OSError, ValueError, KeyError) as e:
        bad.append(f"history.jsonl cannot be read: {e}")
    if bad:
        rows.append(_failed("history.jsonl", "HISTORY", bad[0] + f" ({len(bad)} in all)"))
    return rows


# -- as known at / as effective at ----------------------------------------------------------------
def _ev(e: Any) -> str:
    """An evaluation in a few words: status and value."""
    if e is None or not e.ByteSize():
        return "–"
    status = mpb_events.EvaluationStatus.Name(e.status).removeprefix("EVALUATION_STATUS_")
    return f"{status} {e.value}".strip()


def _state_name(value: Any) -> str:
    return apb.AgreementState.Name(value).removeprefix("AGREEMENT_STATE_")


@audit_app.command("as-of")
def as_of(
    agreement_id: str,
    at: Annotated[str, typer.Option(help="The instant T, ISO 8601 with a time zone")],
    objective: Annotated[str, typer.Option(help="Only this objective's windows")] = "",
) -> None:
    """The agreement, its compliance and its statements as the ledger knew them at T, beside
    what is correct now about T, and the difference for restated periods (parties, auditors,
    admins). Exit 0 whether or not they differ; --json gives every field."""
    when = timestamp_of(at)
    with Progress(console=err, transient=True, disable=state.as_json) as progress:
        task = progress.add_task("reconstructing", total=3)
        with channel("agreements") as ch:
            agreement = apb_grpc.AgreementsServiceStub(ch).GetAgreementAt(
                apb.GetAgreementAtRequest(agreement_id=agreement_id, at=when), metadata=metadata()
            )
        progress.advance(task)
        with channel("metrics") as ch:
            compliance = mpb_grpc.MetricsServiceStub(ch).ComplianceAt(
                mpb.ComplianceAtRequest(agreement_id=agreement_id, at=when, objective_id=objective),
                metadata=metadata(),
            )
        progress.advance(task)
        with channel("billing") as ch:
            statements = bpb_grpc.BillingServiceStub(ch).StatementsAt(
                bpb.StatementsAtRequest(agreement_id=agreement_id, at=when), metadata=metadata()
            )
        progress.advance(task)
    if state.as_json:
        doc = {
            name: json_format.MessageToDict(m, preserving_proto_field_name=True)
            for name, m in (("agreement", agreement), ("compliance", compliance), ("statements", statements))
        }
        print(json.dumps(doc, sort_keys=True))
        return
    t = Table(title=f"agreement {agreement_id} at {at}")
    for col in ("axis", "state", "version in force", "effective from"):
        t.add_column(col)
    if agreement.known:
        t.add_row(
            "as known then (recorded)", _state_name(agreement.as_known.state), str(agreement.as_known.version), ""
        )
    else:
        t.add_row("as known then", "not yet recorded", "", "")
    for label, f in (
        ("in force, as known then", agreement.in_force_as_known),
        ("in force, as known now", agreement.as_effective),
    ):
        t.add_row(label, _state_name(f.state), str(f.version or "–"),
                  f.effective_from.ToJsonString() if f.HasField("effective_from") else "")  # fmt: skip
    out.print(t)
    for d in agreement.differences:
        out.print(f"  [yellow]{d.field}[/yellow]: as known {d.as_known} → as effective {d.as_effective}")
    t = Table(title="compliance: each window as known at T and as correct now")
    for col in ("objective", "window", "as known", "as effective", "restated after T", "differs in"):
        t.add_column(col)
    for w in compliance.windows:
        t.add_row(w.objective_id, w.window_start, _ev(w.as_known if w.HasField("as_known") else None),
                  _ev(w.as_effective), "yes" if w.restated else "", ", ".join(w.differences))  # fmt: skip
    out.print(t)
    t = Table(title="statements: each fee period as known at T and as correct now")
    for col in ("period", "as known", "known total", "effective total", "difference"):
        t.add_column(col)
    for p in statements.periods:
        known_state = (
            bpb.StatementState.Name(p.as_known.state).removeprefix("STATEMENT_STATE_")
            if p.HasField("as_known") else "not yet"
        )  # fmt: skip
        t.add_row(p.period_start, known_state, f"{p.known_total} {p.currency}",
                  f"{p.as_effective.total} {p.currency}", p.total_difference)  # fmt: skip
    out.print(t)
    for p in statements.periods:
        for w in p.windows:
            if w.difference and Decimal(w.difference) != 0:
                out.print(f"  [yellow]{w.objective_id} {w.window_start}[/yellow]: known {w.known_net or '–'} → "
                          f"effective {w.effective_net} (difference {w.difference} {p.currency})")  # fmt: skip


# -- re-derivation -----------------------------------------------------------------------------------
@audit_app.command("rederive")
def rederive(
    agreement_id: Annotated[str, typer.Argument(help="One agreement; without it, every agreement")] = "",
) -> None:
    """Re-derive every closed window's evaluation from the raw signals in the metrics store,
    and every assessment from the evaluations and the terms in force, and compare with what
    was recorded (auditors, admins). Exit 5 when anything differs."""
    with Progress(console=err, transient=True, disable=state.as_json) as progress:
        task = progress.add_task("metrics: re-deriving evaluations", total=None)
        final_m: Any = None
        with channel("metrics") as ch:
            for m in mpb_grpc.MetricsServiceStub(ch).RederiveEvaluations(
                mpb.RederiveEvaluationsRequest(agreement_id=agreement_id), metadata=metadata()
            ):
                what = None
                if m.passes > 1:  # a store too large for one pass is read once a span of time
                    what = f"metrics: re-deriving evaluations (pass {m.pass_number} of {m.passes})"
                progress.update(task, total=m.total or None, completed=m.processed, description=what)
                if m.done:
                    final_m = m
        task = progress.add_task("billing: re-deriving assessments", total=None)
        final_b: Any = None
        with channel("billing") as ch:
            for b in bpb_grpc.BillingServiceStub(ch).RederiveAssessments(
                bpb.RederiveAssessmentsRequest(agreement_id=agreement_id), metadata=metadata()
            ):
                progress.update(task, description=f"billing: {b.phase}", completed=b.windows_checked)
                if b.done:
                    final_b = b
    if final_m is None or final_b is None:
        err.print("[red]a re-derivation ended without its result[/red]")
        raise typer.Exit(1)
    problems = len(final_m.mismatches) + len(final_b.mismatches) + len(final_b.missing) + len(final_b.unexplained)
    if state.as_json:
        print(json.dumps({
            "evaluations": json_format.MessageToDict(final_m, preserving_proto_field_name=True),
            "assessments": json_format.MessageToDict(final_b, preserving_proto_field_name=True),
            "mismatches": problems,
        }, sort_keys=True))  # fmt: skip
    else:
        t = Table(title=f"re-derivation of {agreement_id or 'every agreement'}")
        for col in ("what", "checked", "mismatches", "notes"):
            t.add_column(col)
        t.add_row("evaluations (from raw signals)", str(final_m.checked), str(len(final_m.mismatches)),
                  f"{final_m.skipped_open} open windows skipped; {final_m.signals_read} signals read"
                  + (f" in {final_m.passes} passes" if final_m.passes > 1 else ""))  # fmt: skip
        t.add_row("assessments (from evaluations + terms)", str(final_b.checked), str(len(final_b.mismatches)),
                  f"{len(final_b.missing)} never assessed; {len(final_b.unexplained)} unexplained")  # fmt: skip
        out.print(t)
        for mm in final_m.mismatches:
            what = f"recorded {_ev(mm.recorded)}, re-derived {_ev(mm.recomputed)} ({', '.join(mm.differences)})"
            out.print(f"  [red]evaluation[/red] {mm.agreement_id} {mm.objective_id} {mm.window_start}: {what}")
        for kind, items in (("assessment", final_b.mismatches), ("never assessed", final_b.missing),
                            ("unexplained", final_b.unexplained)):  # fmt: skip
            for f in items:
                what = "; ".join(f.differences) or f"recorded {f.recorded_net!r}, re-derived {f.rederived_net!r}"
                out.print(f"  [red]{kind}[/red] {f.agreement_id} {f.objective_id} {f.window_start}: {what}")
    if problems:
        raise typer.Exit(5)


# -- what-if -----------------------------------------------------------------------------------------
@audit_app.command("what-if")
def what_if(
    agreement_id: str,
    amendment: Annotated[str, typer.Option(help="A pending amendment's id")] = "",
    terms_file: Annotated[Path | None, typer.Option("--terms", help="Draft terms of an amendment (YAML)")] = None,
    periods: Annotated[int, typer.Option(help="The last N closed windows per objective", min=1, max=24)] = 3,
) -> None:
    """Replay the last N periods' signals under a pending amendment (or a draft of one) and show,
    per window, the breaches and credits it would have produced beside the actual ones.
    Nothing is stored (the agreement's parties, auditors, admins)."""
    if bool(amendment) == (terms_file is not None):
        err.print("[red]give exactly one of --amendment ID and --terms FILE[/red]")
        raise typer.Exit(2)
    request = mpb.WhatIfRequest(agreement_id=agreement_id, amendment_id=amendment, periods=periods)
    if terms_file is not None:
        request.terms.CopyFrom(read_terms(terms_file))
    with Progress(console=err, transient=True, disable=state.as_json) as progress:
        task = progress.add_task("replaying the signals under the proposal", total=3)
        with channel("metrics") as ch:
            r = mpb_grpc.MetricsServiceStub(ch).WhatIf(request, metadata=metadata())
        progress.advance(task)
        proposed = [w.proposed for o in r.objectives for w in o.windows if w.HasField("proposed") and w.proposed.closed]
        priced: dict[tuple[str, str], str] = {}
        currency = ""
        with channel("billing") as ch:
            stub = bpb_grpc.BillingServiceStub(ch)
            if proposed:
                p = stub.PriceEvaluations(
                    bpb.PriceEvaluationsRequest(
                        agreement_id=agreement_id, terms=r.proposed_terms, evaluations=proposed
                    ),
                    metadata=metadata(),
                )
                priced = {(e.objective_id, e.window_start): e.net.amount for e in p.evaluations}
                currency = p.total.currency
            progress.advance(task)
            now = Timestamp()
            now.GetCurrentTime()
            actual_at = stub.StatementsAt(
                bpb.StatementsAtRequest(agreement_id=agreement_id, at=now), metadata=metadata()
            )
            progress.advance(task)
    actual = {(w.objective_id, w.window_start): w.effective_net for p in actual_at.periods for w in p.windows}
    currency = currency or next((p.currency for p in actual_at.periods), "")
    rows = []
    for o in r.objectives:
        for w in o.windows:
            key = (o.objective_id, w.window_start)
            rows.append({
                "objective_id": o.objective_id, "window_start": w.window_start, "window_end": w.window_end,
                "actual": _ev(w.actual if w.HasField("actual") else None),
                "proposed": _ev(w.proposed if w.HasField("proposed") else None),
                "breached_actual": w.breached_actual, "breached_proposed": w.breached_proposed,
                "credit_actual": actual.get(key, ""), "credit_proposed": priced.get(key, ""), "note": o.note,
            })  # fmt: skip
    totals = {
        "breaches_actual": sum(1 for x in rows if x["breached_actual"]),
        "breaches_proposed": sum(1 for x in rows if x["breached_proposed"]),
        "credits_actual": str(sum((Decimal(x["credit_actual"]) for x in rows if x["credit_actual"]), Decimal(0))),
        "credits_proposed": str(sum((Decimal(x["credit_proposed"]) for x in rows if x["credit_proposed"]), Decimal(0))),
        "currency": currency,
    }
    if state.as_json:
        print(json.dumps({"agreement_id": agreement_id, "amendment_id": r.amendment_id, "periods": r.periods,
                          "windows": rows, "totals": totals}, sort_keys=True))  # fmt: skip
        return
    t = Table(title=f"what-if for {agreement_id}: last {r.periods} closed windows per objective (nothing stored)")
    for col in ("objective", "window", "actual", "proposed", "credit actual", "credit proposed", "note"):
        t.add_column(col)
    for x in rows:
        t.add_row(x["objective_id"], x["window_start"], x["actual"], x["proposed"], x["credit_actual"],
                  x["credit_proposed"], x["note"])  # fmt: skip
    out.print(t)
    out.print(f"breaches: {totals['breaches_actual']} actual, {totals['breaches_proposed']} proposed; credits: "
              f"{totals['credits_actual']} actual, {totals['credits_proposed']} proposed {currency}")  # fmt: skip


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
