"""Signals from a terminal (docs/domain.md §4): an outage, request counts, a call or a ticket
typed as options, or a whole CSV / JSON Lines file imported in batches — recorded with
metrics' RecordSignalBatch by the service's provider department.

Every signal carries its provenance: source "cli", manual for typed ones, the file and line
for imported ones. A signal id not given is a stable hash of what identifies the signal, so
running the same command (or import) again is a duplicate, not a second outage:

- outage: its service and start (adding or correcting the end later is a correction of the
  same outage, not a new one);
- requests: its service and interval (a recount of the interval is a correction);
- ticket: its service, priority and opening (first response, pause, resume, resolution and
  reopening re-send the same ticket, which metrics records as a correction);
- anything else: its whole content.

Times are RFC 3339 with an offset, or local times read in --tz (an IANA zone).

Import files — CSV with a header row, or JSON Lines — hold one signal a record, either in
the flat form (`kind` = outage, requests, call, ticket, probe, incident, task, lead, deal,
maintenance; `id`/`signal_id`; `service`/`service_id`; then the fields of that kind's
message in accord/metrics/v1/signals.proto by name: `start,end,cause,planned` …; repeated
pauses as `START/END;START/`, repeated instants `;`-separated) or, in JSON Lines, the
Signal message's own JSON form (`{"signal_id": …, "outage": {"start": …}}`)."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_cli.core import address, app, err, fail, metadata, out, rpc_failed, state

signal_app = typer.Typer(
    help="Record signals, typed by hand or imported from a file. Without --id a signal's id is a stable hash of what "
    "identifies it (an outage: service and start; requests: the interval; a ticket: priority and opening; anything "
    "else: its content), so a re-run is a duplicate. Times: RFC 3339 with an offset, or local with --tz.",
    no_args_is_help=True,
)
app.add_typer(signal_app, name="signal")

KINDS = tuple(f.name for f in spb.Signal.DESCRIPTOR.oneofs_by_name["kind"].fields)
ALIASES = {"calls": "call", "tickets": "ticket", "request": "requests", "outages": "outage", "probes": "probe"}


class BadSignalError(ValueError):
    """A record that is not a signal: the reason, for its line."""


# -- building signals ------------------------------------------------------------------------------
def _timestamp(value: Any, tz: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadSignalError(f"{name}: an instant is required, not {value!r}")
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadSignalError(f"{name}: not an RFC 3339 instant: {value!r}") from None
    if dt.tzinfo is None:
        if not tz:
            raise BadSignalError(f"{name}: {value!r} has no offset (add one, or give --tz)")
        try:
            dt = dt.replace(tzinfo=ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise BadSignalError(f"--tz: not an IANA time zone: {tz!r}") from None
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _split(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [v.strip() for v in str(value).split(";") if v.strip()]


def _typed(value: Any, f: FieldDescriptor, tz: str, name: str) -> Any:
    """One flat value as the proto JSON form of field `f` wants it."""
    if f.message_type is not None:
        if f.message_type.full_name == "google.protobuf.Timestamp":
            return _timestamp(value, tz, name)
        if f.message_type.name == "Pause":
            if isinstance(value, dict):
                return {k: _timestamp(v, tz, f"{name}.{k}") for k, v in value.items() if v}
            start, _, end = str(value).partition("/")
            pause = {"start": _timestamp(start, tz, f"{name}.start")}
            if end.strip():
                pause["end"] = _timestamp(end, tz, f"{name}.end")
            return pause
        raise BadSignalError(f"{name}: cannot be given in the flat form")
    if f.type == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise BadSignalError(f"{name}: true or false, not {value!r}")
        return text in ("true", "1", "yes")
    if f.type == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        names = [v.name for v in f.enum_type.values]
        prefix = names[0].removesuffix("UNSPECIFIED")
        text = str(value).strip().upper().replace("-", "_")
        for candidate in (text, prefix + text):
            if candidate in names:
                return candidate
        valid = ", ".join(n.removeprefix(prefix).lower() for n in names[1:])
        raise BadSignalError(f"{name}: one of {valid}, not {value!r}")
    if f.type == FieldDescriptor.TYPE_STRING:
        return str(value).strip() if not isinstance(value, str) else value
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadSignalError(f"{name}: a whole number, not {value!r}") from None
    if number < 0:
        raise BadSignalError(f"{name}: must not be negative ({number})")
    return number


def flat_signal(record: dict[str, Any], service: str, tz: str) -> spb.Signal:
    """A signal from the flat form: kind, id, service and the kind's fields by name."""
    rec = {k.strip(): v for k, v in record.items() if k and v not in (None, "", [])}
    kind = str(rec.pop("kind", "")).strip().lower()
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise BadSignalError(f"kind: one of {', '.join(KINDS)}, not {kind!r}" if kind else "kind: is required")
    signal_id = str(rec.pop("signal_id", "") or rec.pop("id", "")).strip()
    rec.pop("id", None)
    sid = str(rec.pop("service_id", "") or rec.pop("service", "") or service).strip()
    rec.pop("service", None)
    descriptor = spb.Signal.DESCRIPTOR.fields_by_name[kind].message_type
    assert descriptor is not None
    body: dict[str, Any] = {}
    for name, value in rec.items():
        f = descriptor.fields_by_name.get(name)
        if f is None:
            raise BadSignalError(f"{name}: not a field of {kind} (fields: {', '.join(descriptor.fields_by_name)})")
        if f.is_repeated:
            body[name] = [_typed(v, f, tz, f"{name}[{i}]") for i, v in enumerate(_split(value))]
        else:
            body[name] = _typed(value, f, tz, name)
    return _parse({"signal_id": signal_id, "service_id": sid, kind: body})


def _localise(data: Any, descriptor: Any, tz: str, path: str) -> Any:
    """The proto JSON form with local times (no offset) read in `tz`."""
    if not isinstance(data, dict):
        return data
    result = {}
    for key, value in data.items():
        f = descriptor.fields_by_name.get(key) or next((x for x in descriptor.fields if x.json_name == key), None)
        if f is not None and f.message_type is not None:
            name = f"{path}{key}"
            if f.message_type.full_name == "google.protobuf.Timestamp":
                if f.is_repeated and isinstance(value, list):
                    value = [_timestamp(v, tz, f"{name}[{i}]") for i, v in enumerate(value)]
                elif isinstance(value, str):
                    value = _timestamp(value, tz, name)
            elif f.is_repeated and isinstance(value, list):
                value = [_localise(v, f.message_type, tz, f"{name}[{i}].") for i, v in enumerate(value)]
            else:
                value = _localise(value, f.message_type, tz, f"{name}.")
        result[key] = value
    return result


def _parse(doc: dict[str, Any]) -> spb.Signal:
    try:
        return json_format.ParseDict(doc, spb.Signal())
    except json_format.ParseError as e:
        raise BadSignalError(str(e)) from None


def record_signal(record: dict[str, Any], service: str, tz: str) -> spb.Signal:
    """A signal from one file record: the Signal's own JSON form, or the flat form."""
    if any(k in record for k in KINDS) and "kind" not in record:
        doc = _localise(dict(record), spb.Signal.DESCRIPTOR, tz, "")
        doc.setdefault("service_id", doc.pop("serviceId", "") or service)
        return _parse(doc)
    return flat_signal(record, service, tz)


def default_id(s: spb.Signal) -> str:
    """A stable id from what identifies the signal (see the module's docstring)."""
    kind = s.WhichOneof("kind") or ""
    identity = spb.Signal(service_id=s.service_id)
    body = getattr(s, kind) if kind else None
    if kind == "outage":
        identity.outage.start.CopyFrom(s.outage.start)
    elif kind == "requests":
        identity.requests.start.CopyFrom(s.requests.start)
        identity.requests.end.CopyFrom(s.requests.end)
    elif kind == "ticket":
        identity.ticket.priority = s.ticket.priority
        identity.ticket.opened.CopyFrom(s.ticket.opened)
    elif body is not None:
        getattr(identity, kind).CopyFrom(body)
    digest = hashlib.sha256(identity.SerializeToString(deterministic=True)).hexdigest()
    return f"cli-{kind or 'signal'}-{digest[:32]}"


def finish(s: spb.Signal, manual: bool, reference: str = "") -> spb.Signal:
    if not s.service_id:
        raise BadSignalError("service_id: is required (a column, or --service)")
    if not s.signal_id:
        s.signal_id = default_id(s)
    s.provenance.CopyFrom(spb.Provenance(source="cli", manual=manual, reference=reference))
    return s


# -- typed commands --------------------------------------------------------------------------------
Tz = Annotated[str, typer.Option("--tz", help="IANA zone for times given without an offset")]
SignalId = Annotated[str, typer.Option("--id", help="The signal id (default: a stable hash, see `accord signal`)")]
# `--reason` is a call's and a maintenance's own field: the why of a correction has its own name.
CorrectionReason = Annotated[
    str,
    typer.Option(
        "--correction-reason",
        help="Why, when this re-sends a signal held with another content (a correction): kept with the correction "
        "(who, when, why) in the agreement's history; at most 500 printable characters",
    ),
]


def record_one(record: dict[str, Any], service: str, tz: str, correction_reason: str = "") -> None:
    try:
        s = finish(flat_signal(record, service, tz), manual=True)
    except BadSignalError as e:
        fail(f"{record['kind']}: {e}", 2)
    with grpc.insecure_channel(address("metrics")) as ch:
        try:
            r = mpb_grpc.MetricsServiceStub(ch).RecordSignalBatch(
                mpb.RecordSignalBatchRequest(signals=[s], correction_reason=correction_reason), metadata=metadata()
            )
        except grpc.RpcError as e:
            rpc_failed("metrics", e)
    outcome = "recorded" if r.accepted else "a correction of the signal held" if r.corrections else "already held"
    if state.as_json:
        doc = {"signal_id": s.signal_id, "service_id": s.service_id, "accepted": r.accepted,
               "duplicates": r.duplicates, "corrections": r.corrections}  # fmt: skip
        print(json.dumps(doc, sort_keys=True))
    else:
        out.print(f"{s.WhichOneof('kind')} {s.signal_id} of {s.service_id}: {outcome}", highlight=False)


@signal_app.command("outage")
def outage(
    service: str,
    start: Annotated[str, typer.Option(help="When it began")],
    end: Annotated[str, typer.Option(help="When it ended (leave out while under way)")] = "",
    cause: Annotated[str, typer.Option(help="What happened")] = "",
    planned: Annotated[bool, typer.Option(help="Planned work (excluded only when announced as maintenance)")] = False,
    signal_id: SignalId = "",
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """An outage of a service (its provider). Re-run with --end once it is over."""
    record_one({"kind": "outage", "id": signal_id, "start": start, "end": end, "cause": cause,
                "planned": planned or None}, service, tz, correction_reason)  # fmt: skip


@signal_app.command("requests")
def requests(
    service: str,
    start: Annotated[str, typer.Option(help="Start of the interval")],
    end: Annotated[str, typer.Option(help="End of the interval (exclusive)")],
    good: Annotated[int, typer.Option(help="Good requests")],
    total: Annotated[int, typer.Option(help="All requests")],
    signal_id: SignalId = "",
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """Good and total requests over [start, end)."""
    record_one({"kind": "requests", "id": signal_id, "start": start, "end": end, "good": str(good),
                "total": str(total)}, service, tz, correction_reason)  # fmt: skip


@signal_app.command("probe")
def probe(
    service: str,
    at: Annotated[str, typer.Option(help="When the check ran")],
    failed: Annotated[bool, typer.Option("--failed", help="The check failed (default: it succeeded)")] = False,
    latency_ms: Annotated[int, typer.Option(help="How long it took, in milliseconds")] = 0,
    signal_id: SignalId = "",
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """One synthetic check: a request of one in request-based availability, good unless --failed."""
    record_one({"kind": "probe", "id": signal_id, "at": at, "success": "false" if failed else "true",
                "latency_ms": str(latency_ms) if latency_ms else ""}, service, tz, correction_reason)  # fmt: skip


@signal_app.command("maintenance")
def maintenance(
    service: str,
    start: Annotated[str, typer.Option(help="When the maintenance begins")],
    end: Annotated[str, typer.Option(help="When it ends")],
    announced: Annotated[str, typer.Option(help="When it was announced (default: now)")] = "",
    reason: Annotated[str, typer.Option(help="What is done")] = "",
    signal_id: SignalId = "",
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """A maintenance window announced by the provider: excluded from measurement when announced
    at least the objective's maintenance_notice_hours (default 24) ahead."""
    when = announced or datetime.now(UTC).isoformat()
    record_one({"kind": "maintenance", "id": signal_id, "start": start, "end": end, "announced_at": when,
                "reason": reason}, service, tz, correction_reason)  # fmt: skip


@signal_app.command("calls")
def calls(
    service: str,
    entered: Annotated[str, typer.Option(help="When the call entered the queue")],
    answered: Annotated[str, typer.Option(help="When it was answered")] = "",
    abandoned: Annotated[str, typer.Option(help="When the caller hung up unanswered")] = "",
    talk: Annotated[str, typer.Option(help="Talk seconds")] = "",
    hold: Annotated[str, typer.Option(help="Hold seconds")] = "",
    after_call: Annotated[str, typer.Option(help="After-call work seconds")] = "",
    customer: Annotated[str, typer.Option(help="The caller (repeat contacts are counted per customer)")] = "",
    reason: Annotated[str, typer.Option(help="What the call was about")] = "",
    first_contact: Annotated[str, typer.Option(help="resolved or not-resolved")] = "",
    signal_id: SignalId = "",
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """One contact-centre call."""
    record_one({"kind": "call", "id": signal_id, "entered_queue": entered, "answered_at": answered,
                "abandoned_at": abandoned, "talk_seconds": talk, "hold_seconds": hold,
                "after_call_seconds": after_call, "customer_id": customer, "reason": reason,
                "first_contact": first_contact}, service, tz, correction_reason)  # fmt: skip


@signal_app.command("tickets")
def tickets(
    service: str,
    priority: Annotated[str, typer.Option(help="P1 … P4")],
    opened: Annotated[str, typer.Option(help="When it was opened")],
    first_response: Annotated[str, typer.Option(help="The first response")] = "",
    resolved: Annotated[str, typer.Option(help="The resolution (leave out while open, or after a reopening)")] = "",
    paused: Annotated[
        list[str] | None, typer.Option(help="A pause START/END (START/ while paused); repeat for each")
    ] = None,
    reopened: Annotated[list[str] | None, typer.Option(help="When it was reopened; repeat for each")] = None,
    signal_id: SignalId = "",
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """One ticket, as it stands now: send it again with the first response, a pause, the
    resume (the pause's end), the resolution or a reopening — the whole ticket each time, same
    id — and metrics records the change as a correction."""
    record_one({"kind": "ticket", "id": signal_id, "priority": priority, "opened": opened,
                "first_response": first_response, "resolved": resolved, "paused": list(paused or []),
                "reopened": list(reopened or [])}, service, tz, correction_reason)  # fmt: skip


# -- import ----------------------------------------------------------------------------------------
@dataclass
class Line:
    number: int
    signal: spb.Signal


@dataclass
class Tally:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    corrections: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def read_records(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, record or the reason it is not one) for every record of the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {path}: {e}", 2)
    records: list[tuple[int, dict[str, Any] | str]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        if not reader.fieldnames:
            fail(f"{path} is empty: a header row (kind,id,service,…) and a row per signal are expected", 2)
        line = 1
        for row in reader:
            if None in row:
                records.append((line + 1, f"more cells than the header's {len(reader.fieldnames)} columns"))
            else:
                records.append((line + 1, {k: v for k, v in row.items() if k is not None}))
            line = reader.line_num
    elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as e:
                records.append((number, f"not JSON: {e.msg} at column {e.colno}"))
                continue
            records.append((number, doc if isinstance(doc, dict) else f"a JSON object is expected, not {doc!r}"))
    else:
        fail(f"{path}: .csv or .jsonl files are imported, not {path.suffix or 'a file without extension'!r}", 2)
    return records


def batches(lines: list[Line], size: int) -> list[list[Line]]:
    """Batches of `size` at most; a signal id met again with other content (a ticket's update
    further down the file) starts a new batch, so that it lands as a correction."""
    result: list[list[Line]] = [[]]
    seen: dict[tuple[str, str], bytes] = {}
    for line in lines:
        key = (line.signal.service_id, line.signal.signal_id)
        content = line.signal.SerializeToString(deterministic=True)
        if len(result[-1]) >= size or (key in seen and seen[key] != content):
            result.append([])
            seen = {}
        seen[key] = content
        result[-1].append(line)
    return [b for b in result if b]


def _index_of(message: str) -> int | None:
    """`signals[3].outage.end: …` → 3."""
    if message.startswith("signals["):
        head = message[len("signals[") : message.find("]")]
        if head.isdigit():
            return int(head)
    return None


def send(stub: mpb_grpc.MetricsServiceStub, batch: list[Line], tally: Tally, correction_reason: str = "") -> None:
    """Record one batch; a line metrics refuses is set aside with its reason and the rest sent again."""
    pending = list(batch)
    while pending:
        try:
            r = stub.RecordSignalBatch(
                mpb.RecordSignalBatchRequest(signals=[x.signal for x in pending], correction_reason=correction_reason),
                metadata=metadata(),
            )
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            if details.startswith("correction_reason"):  # the whole import's, not a line's
                raise
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
                i = _index_of(details)
                if i is not None and i < len(pending):
                    reason = details.split(":", 1)[1].strip() if ":" in details else details
                    field_path = details.split(":", 1)[0].split(".", 1)[1] if "." in details.split(":", 1)[0] else ""
                    tally.rejected.append((pending[i].number, f"{field_path}: {reason}" if field_path else reason))
                    del pending[i]
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT and len(pending) > 1:  # not said which: one at a time
                    for line in pending:
                        send(stub, [line], tally, correction_reason)
                    return
                if len(pending) == 1 or len({x.signal.service_id for x in pending}) == 1:
                    # Refused for its one service (not its provider, unknown): every line of it.
                    tally.rejected += [(x.number, f"{code.name}: {details}") for x in pending]
                    return
                by_service: dict[str, list[Line]] = {}
                for x in pending:  # not said which: service by service
                    by_service.setdefault(x.signal.service_id, []).append(x)
                for group in by_service.values():
                    send(stub, group, tally, correction_reason)
                return
            raise
        tally.accepted += r.accepted
        tally.duplicates += r.duplicates
        tally.corrections += r.corrections
        return


class Progress:
    """One progress line on stderr: done/total and rate; redrawn in place on a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.started = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and not self.tty and now - self.shown < 2:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-6)
        pct = 100 * done // max(self.total, 1)
        text = f"{done}/{self.total} signals ({pct} %), {rate:,.0f} signals/s"
        if self.tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


@signal_app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(help="A .csv (header row) or .jsonl file, a signal per record")],
    service: Annotated[str, typer.Option(help="The service of records that name none")] = "",
    batch: Annotated[int, typer.Option(help="Signals per RecordSignalBatch call", min=1, max=5000)] = 500,
    tz: Tz = "",
    correction_reason: CorrectionReason = "",
) -> None:
    """Import signals from a file in batches, with a progress line and a summary: accepted,
    duplicates (already held: a re-run stores nothing twice), corrections (known ids with new
    content), and every rejected line with its reason. Exit 5 when a line was rejected (the
    rest is recorded); 4 when the caller may record none of them."""
    tally = Tally()
    lines: list[Line] = []
    for number, rec in read_records(path):
        tally.lines += 1
        if isinstance(rec, str):
            tally.rejected.append((number, rec))
            continue
        try:
            lines.append(Line(number, finish(record_signal(rec, service, tz), manual=False,
                                             reference=f"{path.name}:{number}")))  # fmt: skip
        except BadSignalError as e:
            tally.rejected.append((number, str(e)))
    if tally.lines == 0:
        fail(f"{path} holds no signals", 2)
    progress = Progress(len(lines), enabled=True)
    done = 0
    with grpc.insecure_channel(address("metrics")) as ch:
        stub = mpb_grpc.MetricsServiceStub(ch)
        for b in batches(lines, batch):
            try:
                send(stub, b, tally, correction_reason)
            except grpc.RpcError as e:
                progress.update(done, final=True)
                _summary(path, tally)
                err.print(f"stopped after {done} of {len(lines)} signals; what was recorded is held, and an import "
                          "again records it as duplicates", markup=False, highlight=False)  # fmt: skip
                rpc_failed("metrics", e)
            done += len(b)
            progress.update(done)
    progress.update(done, final=True)
    _summary(path, tally)
    if tally.rejected:
        stored = tally.accepted + tally.duplicates + tally.corrections
        denied = any(reason.startswith("PERMISSION_DENIED") for _, reason in tally.rejected)
        raise typer.Exit(4 if denied and not stored else 5)


def _summary(path: Path, tally: Tally) -> None:
    rejected = sorted(tally.rejected)
    if state.as_json:
        print(json.dumps({"file": str(path), "records": tally.lines, "accepted": tally.accepted,
                          "duplicates": tally.duplicates, "corrections": tally.corrections,
                          "rejected": [{"line": n, "reason": r} for n, r in rejected]}, sort_keys=True))  # fmt: skip
        return
    out.print(f"{path}: {tally.lines} records — accepted {tally.accepted}, duplicates {tally.duplicates}, "
              f"corrections {tally.corrections}, rejected {len(rejected)}", highlight=False)  # fmt: skip
    for n, reason in rejected:
        out.print(f"  {path.name}:{n}: {reason}", markup=False, highlight=False)
