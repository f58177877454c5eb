"""Signals over HTTP: the gateway's department-facing intake. A SignalBatch in its JSON form
(`POST /v1/signals`) or an Alertmanager webhook notification (`POST /v1/intake/alertmanager`)
becomes one `RecordSignalBatch` call to the metrics service with the caller's own bearer
token, so metrics alone decides what is valid, who may record and what is a duplicate or a
correction; the gateway keeps nothing. Its answer (or refusal) is mapped to an HTTP status
and a JSON body naming the field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from accord.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from accord.metrics.v1 import signals_pb2 as spb

MAX_SIGNALS = 10_000  # as metrics' RecordSignalBatch
HTTP_SOURCE = "http"
ALERTMANAGER_SOURCE = "alertmanager"
SERVICE_LABEL = "accord_service"
CALL_TIMEOUT = 30.0
# gRPC status → HTTP status. Anything else (INTERNAL, DATA_LOSS, …) is a 502: metrics failed.
STATUS_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,  # e.g. a service not registered
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
_FIELD = re.compile(r"^((?:signals|batch|message \d+|correction_reason)[\w\[\]\.]*)\s*:")


@dataclass
class IntakeError(Exception):
    """A refused intake request: its HTTP status, what was wrong and (when known) the field."""

    status: int
    error: str
    field: str = ""

    def body(self) -> dict[str, str]:
        return {"error": self.error, **({"field": self.field} if self.field else {})}


# -- JSON → SignalBatch ---------------------------------------------------------------------------
def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _coerce(value: Any, desc: Descriptor, where: str) -> Any:
    """The JSON value with plain numbers turned into the decimal strings the proto expects
    (`"talk_seconds": 12.5` → `"12.5"`, exactly as written), checked against the message's
    fields on the way so that a refusal names the field."""
    if not isinstance(value, dict):
        raise IntakeError(400, f"{where or 'the body'}: must be a JSON object", where)
    out: dict[str, Any] = {}
    for key, item in value.items():
        f = desc.fields_by_name.get(key) or next((x for x in desc.fields if x.json_name == key), None)
        path = f"{where}.{key}" if where else key
        if f is None:
            raise IntakeError(400, f"{_snake(path)}: no such field in {desc.full_name}", _snake(path))
        path = f"{where}.{f.name}" if where else f.name
        if f.is_repeated:
            if not isinstance(item, list):
                raise IntakeError(400, f"{path}: must be a JSON array", path)
            out[key] = [_one(x, f, f"{path}[{i}]") for i, x in enumerate(item)]
        else:
            out[key] = _one(item, f, path)
    return out


def _message(f: FieldDescriptor) -> Descriptor | None:
    """The field's message type, unless it is none or a Timestamp (a string in JSON)."""
    m = f.message_type if f.type == FieldDescriptor.TYPE_MESSAGE else None
    return None if m is None or m.full_name == Timestamp.DESCRIPTOR.full_name else m


def _one(item: Any, f: FieldDescriptor, path: str) -> Any:
    if item is None:
        return None
    if (m := _message(f)) is not None:
        return _coerce(item, m, path)
    if f.type == FieldDescriptor.TYPE_STRING and isinstance(item, (int, Decimal)) and not isinstance(item, bool):
        return str(item)
    return item


def signal_batch(body: bytes) -> tuple[list[spb.Signal], str]:
    """The signals of a SignalBatch in its JSON form (proto field names or their JSON names;
    decimal strings may be plain numbers) and its `correction_reason` ("" for none; metrics
    checks it). Raises IntakeError naming the field."""
    try:
        doc = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntakeError(400, f"the body is not JSON: {e}") from None
    doc = _coerce(doc, spb.SignalBatch.DESCRIPTOR, "")
    reason = doc.get("correction_reason", doc.get("correctionReason")) or ""
    if not isinstance(reason, str):
        raise IntakeError(400, "correction_reason: must be a JSON string", "correction_reason")
    items = doc.get("signals")
    if not items:
        raise IntakeError(400, "signals: at least one signal is required", "signals")
    if len(items) > MAX_SIGNALS:
        raise IntakeError(413, f"signals: {len(items)} signals; at most {MAX_SIGNALS} per request", "signals")
    out = []
    for i, item in enumerate(items):
        signal = spb.Signal()
        try:
            json_format.ParseDict(item, signal)
        except json_format.ParseError as e:
            found = re.search(r"at \"?Signal\.([\w\[\]\.]+?)\.?\"?\.?$", str(e).splitlines()[0])
            where = f"signals[{i}]" + (f".{_snake(found.group(1))}" if found else "")
            reason = re.sub(r"^(Failed to parse \w+ field: )+", "", str(e).splitlines()[0])
            reason = re.sub(r"\.? at \"?Signal[\w\[\]\.]*\"?\.*$", "", reason).rstrip(".")
            raise IntakeError(400, f"{where}: cannot be read ({reason})", where) from None
        out.append(signal)
    return out, reason


# -- Alertmanager webhook → outages --------------------------------------------------------------
def alertmanager_signals(body: bytes, service: str) -> list[spb.Signal]:
    """Each alert of an Alertmanager webhook notification (version 4) as an outage of its
    service (the alert's `accord_service` label, else `service`): a firing alert is an outage
    under way from `startsAt`, a resolved one the same outage ended at `endsAt`. The signal id
    is the alert's fingerprint and `startsAt`, so the resolved notification completes the
    outage its firing one began, a repeated notification is a duplicate, and the alert firing
    again later is another outage."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntakeError(400, f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise IntakeError(400, "the body: must be a JSON object (Alertmanager's webhook payload)")
    if str(doc.get("version", "")) != "4":
        raise IntakeError(400, f"version: only version 4 of the webhook payload is read, not {doc.get('version')!r}")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise IntakeError(400, "alerts: at least one alert is required", "alerts")
    if len(alerts) > MAX_SIGNALS:
        raise IntakeError(413, f"alerts: {len(alerts)} alerts; at most {MAX_SIGNALS} per notification", "alerts")
    out = []
    for i, a in enumerate(alerts):
        w = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise IntakeError(400, f"{w}: must be a JSON object", w)
        labels: dict[str, Any] = a["labels"] if isinstance(a.get("labels"), dict) else {}
        annotations: dict[str, Any] = a["annotations"] if isinstance(a.get("annotations"), dict) else {}
        service_id = str(labels.get(SERVICE_LABEL) or service)
        if not service_id:
            raise IntakeError(
                400, f"{w}.labels.{SERVICE_LABEL}: which service is down? Set the label or ?service=", f"{w}.labels"
            )
        fingerprint = str(a.get("fingerprint") or "")
        if not fingerprint:
            raise IntakeError(400, f"{w}.fingerprint: is required", f"{w}.fingerprint")
        start = _instant(a.get("startsAt"), f"{w}.startsAt")
        outage = spb.Outage(start=start, cause=str(annotations.get("summary") or labels.get("alertname") or ""))
        status = a.get("status")
        if status == "resolved":
            outage.end.CopyFrom(_instant(a.get("endsAt"), f"{w}.endsAt"))
        elif status != "firing":
            raise IntakeError(400, f"{w}.status: must be firing or resolved, not {status!r}", f"{w}.status")
        out.append(
            spb.Signal(
                signal_id=f"am:{fingerprint}:{start.ToJsonString()}",
                service_id=service_id,
                provenance=spb.Provenance(source=ALERTMANAGER_SOURCE, reference=fingerprint),
                outage=outage,
            )
        )
    return out


def _instant(raw: Any, where: str) -> Timestamp:
    t = Timestamp()
    try:
        t.FromJsonString(str(raw or ""))
    except ValueError as e:
        raise IntakeError(400, f"{where}: not an RFC 3339 instant ({e})", where) from None
    if not (t.seconds or t.nanos) or t.seconds < 0:
        raise IntakeError(400, f"{where}: is required", where)
    return t


def with_source(signals: list[spb.Signal], source: str) -> list[spb.Signal]:
    for s in signals:
        if not s.provenance.source:
            s.provenance.source = source
    return signals


# -- forwarding to metrics ------------------------------------------------------------------------
class MetricsForwarder:
    """One gRPC channel to metrics (opened on first use, in the serving loop) and the mapping
    of its answers to HTTP."""

    def __init__(self, address: str, max_message_bytes: int = 16 * 1024 * 1024) -> None:
        self.address = address
        self.max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> metrics_pb2_grpc.MetricsServiceStub:
        if self._channel is None:
            options = [
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.max_receive_message_length", self.max_message_bytes),
            ]
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        return metrics_pb2_grpc.MetricsServiceStub(self._channel)

    async def record(
        self, authorization: str | None, signals: list[spb.Signal], correction_reason: str = ""
    ) -> dict[str, int]:
        if not authorization:
            raise IntakeError(401, "no bearer token: send Authorization: Bearer <token>")
        try:
            resp = await self._stub().RecordSignalBatch(
                metrics_pb2.RecordSignalBatchRequest(signals=signals, correction_reason=correction_reason),
                metadata=(("authorization", authorization),),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as e:
            status = STATUS_OF.get(e.code(), 502)
            detail = e.details() or e.code().name
            if status == 503:
                detail = f"the metrics service cannot be reached now ({detail}); try again"
            found = _FIELD.match(detail)
            field = found.group(1) if found else ""
            if field.startswith(("batch", "message")):
                field = "signals"
            raise IntakeError(status, detail, field) from None
        return {"accepted": resp.accepted, "duplicates": resp.duplicates, "corrections": resp.corrections}

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


# -- the OpenAPI description of the JSON form ---------------------------------------------------
DECIMAL_FIELDS = {"talk_seconds", "hold_seconds", "after_call_seconds", "revenue"}


def json_schema(desc: Descriptor, defs: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema of a message's JSON form (proto field names), its nested messages in `defs`."""
    props: dict[str, Any] = {}
    for f in desc.fields:
        props[f.name] = _field_schema(f, defs)
    return {"type": "object", "properties": props}


def _field_schema(f: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    one: dict[str, Any]
    if (m := _message(f)) is not None:
        if m.name not in defs:
            defs[m.name] = {}
            defs[m.name] = json_schema(m, defs)
        one = {"$ref": f"#/components/schemas/{m.name}"}
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        one = {"type": "string", "format": "date-time"}
    elif f.type == FieldDescriptor.TYPE_ENUM and f.enum_type is not None:
        one = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
    elif f.type == FieldDescriptor.TYPE_BOOL:
        one = {"type": "boolean"}
    elif f.type == FieldDescriptor.TYPE_STRING:
        one = {"type": "string"}
        if f.name in DECIMAL_FIELDS:
            one = {"oneOf": [{"type": "string"}, {"type": "number"}], "description": "a decimal number"}
    else:
        one = {"type": "integer", "minimum": 0}
    if f.is_repeated:
        return {"type": "array", "items": one}
    return one
