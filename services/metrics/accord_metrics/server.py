"""The MetricsService gRPC servicer: protobuf in, the application's outcome out; errors
become status codes through ERROR_MAP."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

import grpc
from google.protobuf import json_format

from accord.agreements.v1 import terms_pb2
from accord.metrics.v1 import events_pb2 as ev
from accord.metrics.v1 import metrics_pb2 as pb
from accord.metrics.v1 import metrics_pb2_grpc as pb_grpc
from accord_kit.context import Principal, current_principal
from accord_kit.errors import InvalidArgumentError
from accord_kit.grpc_server import checks_its_own_requests
from accord_kit.inputs import required_instant, time_zone
from accord_kit.logging import get_logger
from accord_kit.threads import finish_in_thread, outlasting_cancellation
from accord_metrics.application import Metrics, WindowCheck
from accord_metrics.audit import MetricsAudit, Progress, Rederivation
from accord_metrics.codec import evaluation_message
from accord_metrics.domain import (
    AmendmentNotPendingError,
    InvalidRequestError,
    NotAPartyError,
    NotFoundError,
    NotTheProviderError,
    UnknownServiceError,
)
from accord_metrics.evaluation import burn_rates
from accord_metrics.recorder import WouldWaitError
from accord_metrics.signal_index import Recorded
from accord_metrics.signals import InvalidSignalError, Read, fill_source, validate

log = get_logger("accord.metrics")
MAX_SIGNALS_PER_MESSAGE = 10_000
# A stream's messages sent to the recording process before the oldest of them is answered, at most
# (each waits there, parsed: ≈ 100 KiB for 1,000 signals).
AHEAD = 4
# A message of at most this many signals (a stream's, or a RecordSignalBatch request) is validated and
# sent to the recording process in the event loop itself (a few ms of it), a larger one from a worker
# thread: while a round holds the interpreter, handing a message to a thread and its outcome back
# waits twice for the interpreter, each time up to its switch interval (5 ms) — the stream's pace,
# not the work (`MetricsServicer._send`).
IN_LOOP = 2_000
# A message of signals as `MetricsServicer._submit` sends it: both have a SignalBatch's two fields.
_Batch = pb.RecordSignalsRequest | pb.RecordSignalBatchRequest

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {
    InvalidSignalError: grpc.StatusCode.INVALID_ARGUMENT,
    NotTheProviderError: grpc.StatusCode.PERMISSION_DENIED,
    UnknownServiceError: grpc.StatusCode.FAILED_PRECONDITION,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotAPartyError: grpc.StatusCode.PERMISSION_DENIED,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    AmendmentNotPendingError: grpc.StatusCode.FAILED_PRECONDITION,
}


def _prepare(signals: list[Any]) -> list[Read | None]:
    """A parsed message's signals as `record(…, owned=True, reads=…)` takes them: validated
    (what validating each read of it returned), and the way they came ("grpc") filled in where
    they name no source."""
    reads = [validate(s, i) for i, s in enumerate(signals)]
    fill_source(signals, "grpc")
    return reads


async def _answer_of(sent: Future[Recorded]) -> Recorded:
    """The recording process's answer to a message sent to it, waited for even when the call is
    cancelled meanwhile (as `finish_in_thread` waits for its thread): a call ends only after what
    it sent is recorded or has failed."""
    return await outlasting_cancellation(asyncio.wrap_future(sent))


def _check_size(n: int, where: str) -> None:
    if n == 0:
        raise InvalidArgumentError(f"{where}: no signals")
    if n > MAX_SIGNALS_PER_MESSAGE:
        raise InvalidArgumentError(f"{where}: {n} signals; at most {MAX_SIGNALS_PER_MESSAGE} per message")


class MetricsServicer(pb_grpc.MetricsServiceServicer):
    def __init__(self, app: Metrics) -> None:
        self.app = app
        self.audit = MetricsAudit(app)

    @checks_its_own_requests  # each signal's `validate` checks what the kit's request check would
    async def RecordSignals(
        self, request_iterator: AsyncIterator[pb.RecordSignalsRequest], context: Any
    ) -> pb.RecordSignalsResponse:
        """Each message is recorded (stored durably) in order, one after the other; the next one
        is read, checked and validated meanwhile. In this process, a pipeline of two: its Python
        work runs while the message before it waits for SQLite and its fsync, which release the
        GIL. With a recording process (accord_metrics.recorder), each message is sent to it as soon
        as it is validated, up to `AHEAD` before the oldest is answered: it records a stream's
        messages in order, none after one that failed, and is not left waiting for this loop. A
        message of at most `IN_LOOP` signals is validated and sent in this loop itself when sending
        need not wait (`_send`), a larger one from a worker thread. A
        message is recorded only once every message before it is; whatever fails, the call answers
        only after the messages under way are recorded or have failed, so "earlier messages were
        stored" stays true."""
        caller = current_principal()
        assert caller is not None
        accepted = duplicates = corrections = messages = 0
        process = self.app.recording_process
        stream = process.new_stream() if process is not None else 0
        pending: collections.deque[asyncio.Future[Recorded]] = collections.deque()  # being recorded, in order

        async def settle(keep: int = 0) -> None:
            """Wait for the oldest messages under way until at most `keep` are."""
            nonlocal accepted, duplicates, corrections, messages
            while len(pending) > keep:
                try:
                    outcome = await pending[0]
                except InvalidSignalError as e:  # decided when recorded (e.g. a correction changing a kind)
                    raise InvalidSignalError(
                        f"message {messages} (earlier messages were stored: {accepted} accepted): {e}"
                    ) from None
                finally:
                    pending.popleft()
                accepted += outcome.accepted
                duplicates += outcome.duplicates
                corrections += outcome.corrections
                messages += 1

        try:
            async for message in request_iterator:
                index = messages + len(pending)  # this message's number in the stream
                _check_size(len(message.signals), f"message {index}")
                signals = list(message.signals)
                reason = message.correction_reason
                try:
                    if process is not None:
                        submitted = await self._send(caller, message, signals, stream)
                    else:
                        reads = await finish_in_thread(_prepare, signals)
                except InvalidSignalError as e:
                    await settle()
                    raise InvalidSignalError(
                        f"message {index} (earlier messages were stored: {accepted} accepted): {e}"
                    ) from None
                if process is not None:
                    pending.append(asyncio.ensure_future(_answer_of(submitted)))
                    await settle(AHEAD)
                else:
                    await settle()
                    pending.append(
                        asyncio.ensure_future(
                            finish_in_thread(self.app.record, caller, signals, reason, owned=True, reads=reads)
                        )
                    )
            await settle()
        finally:
            # The call failed or was cancelled: the messages under way end first.
            for under_way in pending:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(under_way)
            if process is not None:
                process.end_stream(stream)
        log.info(
            "signals_recorded", accepted=accepted, duplicates=duplicates, corrections=corrections, messages=messages
        )
        return pb.RecordSignalsResponse(
            accepted=accepted, duplicates=duplicates, corrections=corrections, messages=messages
        )

    def _submit(
        self, caller: Principal, message: _Batch, signals: list[Any], stream: int,
        reads: list[Read | None] | None = None, wait: bool = True,
    ) -> Future[Recorded]:  # fmt: skip
        """A message validated (`_prepare`, unless `reads` says what it read) and sent to the recording
        process as part of `stream` (`wait`: as `SignalIndex.submit_record`'s): its signals, filled in
        in place, are the message's own, so its wire format (a `SignalBatch`'s: the same two fields)
        is the batch's, serialised once rather than a signal at a time."""
        if reads is None:
            reads = _prepare(signals)
        return self.app.submit_record(
            caller, signals, message.correction_reason, owned=True, reads=reads, stream=stream, wait=wait,
            data=message.SerializeToString(),
        )  # fmt: skip

    async def _send(self, caller: Principal, message: _Batch, signals: list[Any], stream: int) -> Future[Recorded]:
        """`_submit`: a message of more than `IN_LOOP` signals from a worker thread; a smaller one in the
        event loop — validated here, and sent when sending need not wait, else (the recording process to
        be started, its pipe full, another thread sending) from a worker thread too, so that the loop
        never waits on the recording process."""
        if len(signals) > IN_LOOP:
            return await finish_in_thread(self._submit, caller, message, signals, stream)
        reads = _prepare(signals)
        try:
            return self._submit(caller, message, signals, stream, reads, wait=False)
        except WouldWaitError:
            return await finish_in_thread(self._submit, caller, message, signals, stream, reads)

    @checks_its_own_requests  # each signal validated (`signals.validate`) before anything is stored
    async def RecordSignalBatch(
        self, request: pb.RecordSignalBatchRequest, context: Any
    ) -> pb.RecordSignalBatchResponse:
        caller = current_principal()
        assert caller is not None
        _check_size(len(request.signals), "batch")
        if self.app.recording_process is not None:  # sent as a stream's message is (`_send`), then awaited
            outcome = await _answer_of(await self._send(caller, request, list(request.signals), 0))
        else:
            outcome = await finish_in_thread(
                self.app.record, caller, list(request.signals), request.correction_reason, via="grpc", owned=True
            )
        return pb.RecordSignalBatchResponse(
            accepted=outcome.accepted, duplicates=outcome.duplicates, corrections=outcome.corrections
        )

    async def GetCompliance(self, request: pb.GetComplianceRequest, context: Any) -> pb.GetComplianceResponse:
        caller = current_principal()
        rows = await finish_in_thread(self.app.compliance, caller, request.agreement_id)
        out = pb.GetComplianceResponse(agreement_id=request.agreement_id)
        for row in rows:
            o = row["objective"]
            item = pb.ObjectiveCompliance(objective_id=o["objective_id"], name=o.get("name", ""), metric=o["metric"])
            if row["current"]:
                item.current.CopyFrom(evaluation_message(row["current"]))
            item.burn_rate = await finish_in_thread(self._burn_rate, request.agreement_id, o, row["current"])
            out.objectives.append(item)
        return out

    def _burn_rate(self, agreement_id: str, objective: dict[str, Any], current: dict[str, Any] | None) -> str:
        """The burn rate over the last hour (scaled to the window), for availability objectives."""
        if not current or current.get("closed") or objective["metric"] not in ("METRIC_AVAILABILITY_TIME",):
            return ""
        from datetime import datetime

        from accord_kit.timeline import Interval
        from accord_metrics.formulas.reliability import burn_windows

        view = self.app.agreement_view(None, agreement_id)
        now = self.app.clock.now()
        window = Interval(
            datetime.fromisoformat(current["window_start"]), datetime.fromisoformat(current["window_end"])
        )
        # The services of the version judging the window (docs/domain.md §2 "Effective dating").
        services = self.app.window_services(view, window.start)
        calendar = self.app.calendar(objective.get("calendar_id") or "24x7")
        tz = view.versions[-1]["terms"].get("time_zone") or "UTC"
        # The signals of the look-backs ending now (not all history).
        look_backs = Interval(now - max(p.long for p in burn_windows(window.duration)), now)
        signals = self.app.signal_set(services, span=look_backs)
        rates = burn_rates(objective, calendar, [], signals, now, window.duration, tz)
        return str(rates[burn_windows(window.duration)[0].long])

    async def GetEvaluation(self, request: pb.GetEvaluationRequest, context: Any) -> pb.GetEvaluationResponse:
        agg = await finish_in_thread(
            self.app.window, current_principal(), request.agreement_id, request.objective_id, request.window_start
        )
        out = pb.GetEvaluationResponse(evaluation=evaluation_message(agg.latest))
        if agg.closed:
            out.closing.CopyFrom(evaluation_message(agg.closed))
        for r in agg.restatements:
            out.restatements.append(
                ev.EvaluationRestated(
                    old=evaluation_message(r["old"]),
                    new=evaluation_message(r["new"]),
                    agreements_position=int(r.get("agreements_position") or 0),
                )
            )
        return out

    async def ListBreaches(self, request: pb.ListBreachesRequest, context: Any) -> pb.ListBreachesResponse:
        rows = await finish_in_thread(
            self.app.breaches, current_principal(), request.agreement_id, request.objective_id
        )
        return pb.ListBreachesResponse(breaches=[ev.BreachDetected(**row) for row in rows])

    async def RecomputeWindow(self, request: pb.RecomputeWindowRequest, context: Any) -> pb.RecomputeWindowResponse:
        result = await finish_in_thread(
            self.app.recompute, request.agreement_id, request.objective_id, request.window_start
        )
        return pb.RecomputeWindowResponse(
            recorded=evaluation_message(result["recorded"]),
            recomputed=evaluation_message({**result["recomputed"], **{
                k: result["recorded"].get(k, "") for k in ("agreement_id", "objective_id", "window_start", "window_end")
            }}),
            matches=result["matches"],
            differences=result["differences"],
        )  # fmt: skip

    async def RederiveEvaluations(
        self, request: pb.RederiveEvaluationsRequest, context: Any
    ) -> AsyncIterator[pb.RederiveEvaluationsProgress]:
        # The replay runs in a worker thread; its progress reaches this stream through a queue,
        # so the event loop keeps serving other calls meanwhile.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()
        cancelled = threading.Event()

        def report(p: Progress) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, p)

        def work() -> Rederivation:
            try:
                return self.audit.rederive(request.agreement_id, report, cancelled)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = asyncio.ensure_future(finish_in_thread(work))
        # A client that leaves early never awaits the worker: its outcome is dropped, not logged as lost.
        worker.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            while (p := await queue.get()) is not None:
                yield pb.RederiveEvaluationsProgress(
                    processed=p.processed, total=p.total, agreement_id=p.agreement_id, agreements=p.agreements,
                    signals_read=p.signals_read, passes=p.passes, pass_number=p.pass_number,
                )  # fmt: skip
            result = await worker
        finally:
            cancelled.set()  # the client left (or we are done): the worker stops at its next window
        log.info("evaluations_rederived", agreement_id=request.agreement_id, checked=result.checked,
                 skipped_open=result.skipped_open, mismatches=len(result.mismatches))  # fmt: skip
        yield pb.RederiveEvaluationsProgress(
            processed=result.checked + result.skipped_open, total=result.total, agreements=result.agreements,
            signals_read=result.signals_read, done=True, checked=result.checked, skipped_open=result.skipped_open,
            mismatches=[_mismatch(m) for m in result.mismatches], passes=result.passes, pass_number=result.passes,
        )  # fmt: skip

    async def WhatIf(self, request: pb.WhatIfRequest, context: Any) -> pb.WhatIfResponse:
        terms = None
        if request.HasField("terms"):
            if request.terms.time_zone:
                time_zone(request.terms.time_zone, "terms.time_zone")
            terms = json_format.MessageToDict(request.terms, preserving_proto_field_name=True)
        result = await finish_in_thread(
            self.audit.what_if, current_principal(), request.agreement_id, amendment_id=request.amendment_id,
            terms=terms, periods=request.periods,
        )  # fmt: skip
        out = pb.WhatIfResponse(
            agreement_id=result.agreement_id,
            amendment_id=result.amendment_id,
            proposed_terms=json_format.ParseDict(result.terms, terms_pb2.AgreementTerms(), ignore_unknown_fields=True),
            periods=result.periods,
        )
        for o in result.objectives:
            item = pb.WhatIfObjective(objective_id=o.objective_id, name=o.name, metric=o.metric, note=o.note)
            for w in o.windows:
                row = pb.WhatIfWindow(
                    window_start=w.start.isoformat(), window_end=w.end.isoformat(),
                    breached_actual=w.breached_actual, breached_proposed=w.breached_proposed,
                )  # fmt: skip
                if w.actual:
                    row.actual.CopyFrom(evaluation_message(w.actual))
                if w.proposed:
                    row.proposed.CopyFrom(evaluation_message(w.proposed))
                item.windows.append(row)
            item.breached_actual = sum(w.breached_actual for w in o.windows)
            item.breached_proposed = sum(w.breached_proposed for w in o.windows)
            out.objectives.append(item)
        return out

    async def ComplianceAt(self, request: pb.ComplianceAtRequest, context: Any) -> pb.ComplianceAtResponse:
        if not request.HasField("at"):
            raise InvalidRequestError("at: is required (the instant to reconstruct what was known)")
        at = required_instant(request.at, "at")
        rows = await finish_in_thread(
            self.audit.compliance_at, current_principal(), request.agreement_id, at, request.objective_id
        )
        out = pb.ComplianceAtResponse(agreement_id=request.agreement_id, at=request.at)
        for r in rows:
            item = pb.ComplianceAtWindow(
                objective_id=r.objective_id, window_start=r.window_start, window_end=r.window_end,
                as_effective=evaluation_message(r.as_effective), restated=r.restated, differences=r.differences,
            )  # fmt: skip
            if r.as_known:
                item.as_known.CopyFrom(evaluation_message(r.as_known))
            out.windows.append(item)
        return out

    async def ListWindowSignals(
        self, request: pb.ListWindowSignalsRequest, context: Any
    ) -> pb.ListWindowSignalsResponse:
        agg, signals, truncated = await finish_in_thread(
            self.app.window_signals,
            current_principal(),
            request.agreement_id,
            request.objective_id,
            request.window_start,
        )
        return pb.ListWindowSignalsResponse(
            window_start=agg.window_start, window_end=agg.window_end, signals=signals, truncated=truncated
        )


def _mismatch(m: WindowCheck) -> pb.EvaluationMismatch:
    out = pb.EvaluationMismatch(
        agreement_id=m.agreement_id, objective_id=m.objective_id, window_start=m.window_start,
        window_end=m.window_end, recorded=evaluation_message(m.recorded), differences=m.differences,
        recorded_breaches=m.recorded_breaches, expected_breaches=m.expected_breaches,
    )  # fmt: skip
    if m.recomputed is not None:
        out.recomputed.CopyFrom(evaluation_message(m.recomputed))
    return out


def register_metrics(app: Metrics) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_MetricsServiceServicer_to_server(MetricsServicer(app), server)
        return str(pb.DESCRIPTOR.services_by_name["MetricsService"].full_name)

    return register
