"""The metrics application: owns the metrics service's event store — the raw signals (one
event per recorded batch and service) and the services whose signals it accepts, learned
from the agreements stream. Evaluations, breaches and restatements come next (Metrics issue)."""

from __future__ import annotations

import base64
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.utils import get_topic

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import signals_pb2
from accord_kit.application import AccordApplication
from accord_kit.clock import Clock
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_metrics.codec import batch_message, codec
from accord_metrics.domain import KnownService, NotTheProviderError, SignalBatch, UnknownServiceError
from accord_metrics.signals import validate

BATCH_TOPIC = get_topic(SignalBatch.Recorded)


@dataclass(frozen=True)
class Recorded:
    accepted: int
    duplicates: int


class Metrics(AccordApplication):
    """Raw signals and the services they belong to."""

    name = "Metrics"
    service = "metrics"

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] | None = None  # service id → signal ids held
        self._seen_position = 0

    # -- who may record --------------------------------------------------------------------------
    def provider_of(self, service_id: str) -> str:
        try:
            known: Any = self.repository.get(KnownService.create_id(service_id))
        except AggregateNotFoundError:
            raise UnknownServiceError(
                f"service {service_id!r} is not registered (register it with the agreements service first)"
            ) from None
        assert isinstance(known, KnownService)
        return known.provider_department_id

    def _check_may_record(self, caller: Principal, service_ids: set[str]) -> None:
        for sid in sorted(service_ids):
            provider = self.provider_of(sid)
            if caller.role == "service":
                continue
            if caller.role != "department" or caller.department != provider:
                who = f"department {caller.department}" if caller.role == "department" else f"role {caller.role}"
                raise NotTheProviderError(
                    f"only the provider of service {sid!r} ({provider}) or a service identity may record its signals; "
                    f"{who} may not"
                )

    # -- recording signals -----------------------------------------------------------------------------
    def record(self, caller: Principal, signals: list[signals_pb2.Signal]) -> Recorded:
        """Validate, authorise and store one batch: one event per service, in one
        transaction. Signals the service already holds (or repeated in the batch) are
        counted as duplicates and not stored again."""
        for i, s in enumerate(signals):
            validate(s, i)
        self._check_may_record(caller, {s.service_id for s in signals})
        with self._lock:  # dedupe and save as one step within this process
            seen = self._seen_ids()
            fresh: dict[str, list[signals_pb2.Signal]] = defaultdict(list)
            batch_ids: set[tuple[str, str]] = set()
            duplicates = 0
            for s in signals:
                key = (s.service_id, s.signal_id)
                if s.signal_id in seen.get(s.service_id, ()) or key in batch_ids:
                    duplicates += 1
                    continue
                batch_ids.add(key)
                fresh[s.service_id].append(s)
            batches = [
                SignalBatch(
                    service_id=sid,
                    batch=base64.b64encode(signals_pb2.SignalBatch(signals=items).SerializeToString()).decode(),
                    count=len(items),
                )
                for sid, items in sorted(fresh.items())
            ]
            if batches:
                recordings = self.save(*batches)
                for sid, items in fresh.items():
                    seen.setdefault(sid, set()).update(s.signal_id for s in items)
                ids = sorted(r.notification.id for r in recordings)
                if ids and ids[0] == self._seen_position + 1 and ids[-1] - ids[0] == len(ids) - 1:
                    self._seen_position = ids[-1]  # nothing else was stored in between: no need to re-read

            return Recorded(accepted=sum(len(v) for v in fresh.values()), duplicates=duplicates)

    def _seen_ids(self) -> dict[str, set[str]]:
        """Every signal id held, per service: built once from the store, then kept up to
        date by this process's saves (and by reading what other processes stored)."""
        if self._seen is None:
            self._seen = {}
        position = self._seen_position
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=500, topics=[BATCH_TOPIC], inclusive_of_start=False
            )
            if not notes:
                break
            for n in notes:
                batch = self.mapper.to_domain_event(n)
                decoded = batch_message(batch.batch)  # type: ignore[attr-defined]
                self._seen.setdefault(batch.service_id, set()).update(s.signal_id for s in decoded.signals)  # type: ignore[attr-defined]
            position = notes[-1].id
        self._seen_position = position
        return self._seen

    def signals(self, service_id: str | None = None) -> list[signals_pb2.Signal]:
        """Every stored signal (of one service), in the order stored."""
        out: list[signals_pb2.Signal] = []
        position = 0
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=500, topics=[BATCH_TOPIC], inclusive_of_start=False
            )
            if not notes:
                return out
            for n in notes:
                batch: Any = self.mapper.to_domain_event(n)
                if service_id is None or batch.service_id == service_id:
                    out.extend(batch_message(batch.batch).signals)
            position = notes[-1].id

    # -- upstream: the agreements stream ------------------------------------------------------------------
    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        if envelope.type == agreement_events.ServiceRegistered.DESCRIPTOR.full_name:
            msg = unpack(envelope, agreement_events.ServiceRegistered)
            try:
                self.repository.get(KnownService.create_id(msg.service_id))
            except AggregateNotFoundError:
                processing.collect_events(KnownService(msg.service_id, msg.provider_department_id))
