"""Domain events of the metrics service → their public messages (protos/accord/metrics/v1/events.proto).

Every event class the application stores is registered here: the relay refuses to publish
an event without a public message."""

from __future__ import annotations

import base64
from typing import Any

from accord.metrics.v1 import events_pb2 as ev
from accord.metrics.v1 import signals_pb2
from accord_kit.envelope import EventCodec
from accord_kit.evaluation import Evaluation
from accord_metrics.domain import (
    AgreementView,
    CalendarView,
    KnownService,
    SignalBatch,
    SignalCorrection,
    WindowEvaluation,
)


def batch_message(encoded: str) -> signals_pb2.SignalBatch:
    return signals_pb2.SignalBatch.FromString(base64.b64decode(encoded))


def _signals_recorded(e: Any) -> ev.SignalsRecorded:
    """The public event of a stored batch: its bytes parsed straight into the message's `batch`
    (not into a batch of their own, copied in)."""
    out = ev.SignalsRecorded(service_id=e.service_id)
    out.batch.MergeFromString(base64.b64decode(e.batch))
    out.batch.SetInParent()  # present even when empty, as when assigned
    return out


def _length_delimited(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field as protobuf writes it: its tag, its length (varint), its bytes."""
    head, n = bytearray(tag), len(data)
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + data


_TAG_SERVICE_ID = bytes((ev.SignalsRecorded.SERVICE_ID_FIELD_NUMBER << 3 | 2,))
_TAG_BATCH = bytes((ev.SignalsRecorded.BATCH_FIELD_NUMBER << 3 | 2,))


def _signals_recorded_bytes(e: Any) -> bytes:
    """`_signals_recorded(e).SerializeToString()` without the message: a stored batch's bytes are
    a `SignalBatch`'s wire format already (as serialising wrote them), carried as the event's
    `batch` field after its `service_id` (omitted when empty, as proto3 omits it). The relay and
    ReadEvents publish a batch of thousands of signals without parsing and writing them again."""
    sid = e.service_id.encode()
    return (_length_delimited(_TAG_SERVICE_ID, sid) if sid else b"") + _length_delimited(
        _TAG_BATCH, base64.b64decode(e.batch)
    )


def evaluation_message(e: dict[str, Any]) -> ev.Evaluation:
    """A recorded evaluation (as `evaluation.judge` builds it) → its public message."""
    return Evaluation.from_record(e).to_message()


def _view(change: str) -> Any:
    def convert(e: Any) -> ev.AgreementViewChanged:
        d = e.__dict__
        return ev.AgreementViewChanged(
            agreement_id=d.get("agreement_id", "") or str(e.originator_id),
            change=change,
            version=int(d.get("version") or 0),
            effective_from=d.get("effective_from", ""),
            at=d.get("at", "") or d.get("new_end", ""),
        )

    return convert


def codec() -> EventCodec:
    c = EventCodec("metrics")
    c.register(
        SignalBatch.Recorded,
        ev.SignalsRecorded,
        _signals_recorded,
        _signals_recorded_bytes,
    )
    c.register(
        SignalCorrection.Corrected,
        ev.SignalsCorrected,
        lambda e: ev.SignalsCorrected(
            service_id=e.service_id, batch=batch_message(e.batch), previous_digests=e.previous_digests,
            changed=e.changed, actor=e.actor, reason=e.reason, agreement_ids=e.agreement_ids,
        ),
    )  # fmt: skip
    c.register(
        KnownService.Known,
        ev.ServiceKnown,
        lambda e: ev.ServiceKnown(service_id=e.service_id, provider_department_id=e.provider_department_id),
    )
    c.register(AgreementView.Seen, ev.AgreementViewChanged, _view("Seen"))
    V = AgreementView  # noqa: N806
    for cls, change in (
        (V.DraftNoted, "DraftNoted"),
        (V.AmendmentNoted, "AmendmentNoted"),
        (V.AmendmentConcluded, "AmendmentConcluded"),
        (V.VersionInForce, "VersionInForce"),
        (V.Ended, "Ended"),
        (V.Renewed, "Renewed"),
        (V.Suspended, "Suspended"),
        (V.Resumed, "Resumed"),
    ):
        c.register(cls, ev.AgreementViewChanged, _view(change))
    c.register(CalendarView.Seen, ev.CalendarViewChanged, lambda e: ev.CalendarViewChanged(calendar_id=e.calendar_id))
    c.register(
        CalendarView.Defined,
        ev.CalendarViewChanged,
        lambda e: ev.CalendarViewChanged(calendar_id=e.calendar_id, version=e.version),
    )
    W = WindowEvaluation  # noqa: N806
    c.register(
        W.Opened,
        ev.WindowOpened,
        lambda e: ev.WindowOpened(
            agreement_id=e.agreement_id,
            objective_id=e.objective_id,
            window_start=e.window_start,
            window_end=e.window_end,
        ),
    )
    c.register(
        W.Evaluated,
        ev.EvaluationUpdated,
        lambda e: ev.EvaluationUpdated(evaluation=evaluation_message(e.evaluation)),
    )
    # `agreements_position`: 0 for an event recorded before it was kept (WindowEvaluation._closed).
    c.register(
        W.Closed,
        ev.WindowClosed,
        lambda e: ev.WindowClosed(
            evaluation=evaluation_message(e.evaluation), agreements_position=getattr(e, "agreements_position", 0)
        ),
    )
    c.register(
        W.Restated,
        ev.EvaluationRestated,
        lambda e: ev.EvaluationRestated(
            old=evaluation_message(e.old),
            new=evaluation_message(e.new),
            agreements_position=getattr(e, "agreements_position", 0),
        ),
    )
    c.register(
        W.Breached,
        ev.BreachDetected,
        lambda e: ev.BreachDetected(
            agreement_id=e.agreement_id,
            objective_id=e.objective_id,
            window_start=e.window_start,
            window_end=e.window_end,
            subject=e.subject,
            value=e.value,
            target=e.target,
            certain_before_close=e.certain_before_close,
        ),
    )
    c.register(
        W.BudgetWarning,
        ev.BudgetWarning,
        lambda e: ev.BudgetWarning(
            agreement_id=e.agreement_id, objective_id=e.objective_id, window_start=e.window_start, level=e.level,
            consumed=e.consumed,
        ),
    )  # fmt: skip
    c.register(
        W.BurnRateAlert,
        ev.BurnRateAlert,
        lambda e: ev.BurnRateAlert(
            agreement_id=e.agreement_id, objective_id=e.objective_id, window_start=e.window_start, name=e.name,
            factor=e.factor, long_rate=e.long_rate, short_rate=e.short_rate,
        ),
    )  # fmt: skip
    c.register(
        W.BurnRateAlertResolved,
        ev.BurnRateAlertResolved,
        lambda e: ev.BurnRateAlertResolved(
            agreement_id=e.agreement_id, objective_id=e.objective_id, window_start=e.window_start, name=e.name,
            reason=e.reason, long_rate=e.long_rate, short_rate=e.short_rate,
        ),
    )  # fmt: skip
    return c
