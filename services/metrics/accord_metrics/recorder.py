"""Recording in a process of its own: the metrics service's signals are stored by a recording
process beside it — a `Metrics` application on the same store that records batches (dedupe,
corrections, the signal index, one event per batch) and nothing else — so that recording's Python
work has a core of its own, and the service's rounds, queries, relay and gRPC do not take the
interpreter from it (services/metrics/README.md, "Recording in a process of its own").

The service checks and validates each batch itself (the same errors, before anything is sent),
fills in the way its signals came, and sends the batch's serialised signals with what validating
read of them (`signals.Read`), the caller and its "now". The recording process records the batches
one at a time in the order they were sent and answers each in that order: its outcome and what it
stored — its events' log positions, its changes for the next round and, when asked, the index rows
it wrote — which the service notes as it notes its own writes (`SignalIndex.stored_elsewhere`),
without reading the batch or its rows back. A stream of batches (one `RecordSignals` call) has a
number: once one of its batches fails, none after it is recorded. Nothing is acknowledged before
the recording process committed it (its answer comes after the commit); a recording process that
dies fails the batches it had not answered (UNAVAILABLE: the client sends them again, and what was
stored is counted a duplicate) and is started again for the next batch. It stops when told to, or
when the service's end of its pipe closes (the service died): a batch under way is finished first.
It ignores SIGINT and SIGTERM: the service that started it stops it, after its calls are over.

Frames both ways: a 4-byte big-endian length, then `marshal` of a tuple (plain data only)."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import structlog

from accord_kit.context import Principal
from accord_kit.errors import UnavailableError
from accord_kit.logging import get_logger
from accord_metrics.domain import NotTheProviderError, UnknownServiceError
from accord_metrics.signal_index import Recorded
from accord_metrics.signals import InvalidSignalError, Read

log = get_logger("accord.metrics.recorder")

_LENGTH = struct.Struct(">I")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START_SECONDS = 60.0  # how long the recording process may take to open the store and answer "ready"
STOP_SECONDS = 30.0  # how long it may take to finish the batch under way when told to stop
# How long the oldest batch sent may wait for its answer before the recording process is taken for
# hung (stopped, as a process that sends no answers: killed, then started again for the next batch).
ANSWER_SECONDS = 120.0
# The errors a batch is refused with (as `Metrics.record` raises them), rebuilt in the service by name.
REFUSALS: dict[str, type[Exception]] = {
    e.__name__: e for e in (InvalidSignalError, NotTheProviderError, UnknownServiceError)
}


class RecordingUnavailableError(UnavailableError):
    """The recording process is not running: it exited before answering, or could not start."""


class RecordingFailedError(RuntimeError):
    """The recording process met an unexpected error recording a batch (nothing of it stored)."""


class StreamStoppedError(Exception):
    """A batch of a stream after one that failed: not recorded."""


class WouldWaitError(Exception):
    """`RecordingProcess.submit(…, wait=False)` would have waited — for the recording process to be
    started, for another thread sending to it or starting it, or for room in its pipe: nothing sent."""


PIPE_BYTES = 1 << 20  # a pipe's buffer, when the system allows it: a stream's messages ahead fit in it


def _widen(fd: int) -> None:
    """The pipe's buffer made `PIPE_BYTES` (Linux; the system's limit, else as it is): the messages
    sent ahead wait in it rather than the sender waiting for the recording process to read them."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setsize, PIPE_BYTES)


def _frame(item: tuple[Any, ...]) -> bytes:
    data = marshal.dumps(item)
    return _LENGTH.pack(len(data)) + data


def _write_frame(out: IO[bytes], item: tuple[Any, ...]) -> None:
    out.write(_frame(item))
    out.flush()


# What a pipe may hold beyond the frames of the batches not answered yet: the few bytes of the
# stream ends sent meanwhile, and the pages partly filled (a pipe holds whole pages: the one its
# reader is in, the one last written to).
_PIPE_MARGIN = 3 * 4096


def _pipe_size(fd: int) -> int:
    """The bytes this pipe holds at most (Linux tells it), or 0 where that cannot be told."""
    size_of = getattr(fcntl, "F_GETPIPE_SZ", None)
    if size_of is None:
        return 0
    try:
        return int(fcntl.fcntl(fd, size_of))
    except OSError:
        return 0


def _read_exactly(src: IO[bytes], n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = src.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(src: IO[bytes]) -> tuple[Any, ...] | None:
    """The next frame, or None at the end of the pipe."""
    head = _read_exactly(src, _LENGTH.size)
    if head is None:
        return None
    data = _read_exactly(src, _LENGTH.unpack(head)[0])
    return None if data is None else marshal.loads(data)


OnStored = Callable[[Recorded, dict[str, list[str]]], None]
# A batch sent: its future, ids, when (monotonic), and the bytes of its frame.
_Sent = tuple[Future[Recorded], dict[str, list[str]], float, int]


class RecordingProcess:
    """The service's side of its recording process: starts it (`start`, or at the first batch),
    sends it batches (`submit`) and hands each answer to `on_stored` (what it stored, before the
    batch's future is done) and to the batch's future; `stop` ends it."""

    def __init__(
        self, env: Mapping[str, str], *, log_level: str = "info", log_format: str = "json",
        start_seconds: float = START_SECONDS, stop_seconds: float = STOP_SECONDS,
        answer_seconds: float = ANSWER_SECONDS,
    ) -> None:  # fmt: skip
        self._config = ("config", dict(env), log_level, log_format)
        self.start_seconds, self.stop_seconds, self.answer_seconds = start_seconds, stop_seconds, answer_seconds
        self.on_stored: OnStored | None = None
        self._lock = threading.Lock()  # starting and stopping; the sends and the batches awaited
        self._proc: subprocess.Popen[bytes] | None = None
        self._to: IO[bytes] | None = None
        # The batches sent and not answered yet, in the order sent (`_Sent`).
        self._pending: collections.deque[_Sent] = collections.deque()
        self._pipe_bytes = 0  # what the pipe to it holds at most (0: not known, nothing sent without waiting)
        self._streams = itertools.count(1)
        self._stopped = False
        self.pid: int | None = None
        self.starts = 0  # processes started (for tests and the log)

    # -- lifetime ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the recording process unless it runs, and wait until it has opened the store."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._stopped:
            raise RecordingUnavailableError("the recording process was stopped: the service is stopping")
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._to is not None:  # of a process that exited (its answers' reader fails what it had)
            self._to.close()
            self._proc = self._to = None
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        for fd in (to_child_w, from_child_w):
            _widen(fd)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "accord_metrics.recorder", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        to = os.fdopen(to_child_w, "wb")
        back = os.fdopen(from_child_r, "rb")
        _write_frame(to, self._config)
        ready: list[tuple[Any, ...] | None] = []
        waiter = threading.Thread(target=lambda: ready.append(_read_frame(back)), daemon=True)
        waiter.start()
        waiter.join(self.start_seconds)
        if not ready or ready[0] is None or ready[0][0] != "ready":
            proc.kill()
            proc.wait()
            to.close()
            back.close()
            failed = "did not answer in time" if not ready else f"exited with code {proc.returncode}"
            log.error("recording_process_failed_to_start", reason=failed, alert=True)
            raise RecordingUnavailableError(f"the recording process {failed} (see the service's log)")
        self._proc, self._to, self.pid = proc, to, proc.pid
        self._pipe_bytes = _pipe_size(to_child_w)
        pending: collections.deque[_Sent] = collections.deque()  # this process's batches not answered yet
        self._pending = pending
        self.starts += 1
        why: list[str] = []  # why it ended, when the service ended it (its watch)
        threading.Thread(
            target=self._read_answers, args=(proc, back, pending, why), name="recording-answers", daemon=True
        ).start()
        threading.Thread(target=self._watch, args=(proc, pending, why), name="recording-watch", daemon=True).start()
        log.info("recording_process_started", pid=proc.pid)

    def _watch(self, proc: subprocess.Popen[bytes], pending: collections.deque[_Sent], why: list[str]) -> None:
        """While the process runs: one whose oldest batch waits longer than `answer_seconds` for its
        answer is taken for hung and killed (its batches not answered then fail, and the next batch
        starts another)."""
        every = min(1.0, self.answer_seconds / 4)
        while proc.poll() is None:
            time.sleep(every)
            oldest = pending[0] if pending else None
            if oldest is not None and time.monotonic() - oldest[2] > self.answer_seconds:
                why.append(f"it did not answer a batch in {self.answer_seconds:g} s and was stopped")
                log.error("recording_process_hung", pid=proc.pid, seconds=self.answer_seconds, alert=True)
                proc.kill()
                return

    def stop(self) -> None:
        """Tell the recording process to stop (after the batch under way) and wait for it; killed
        when it does not stop in time. Batches sent after it are refused."""
        with self._lock:
            self._stopped = True
            proc, to = self._proc, self._to
            if proc is None or to is None:
                return
            try:
                _write_frame(to, ("stop",))
            except OSError:
                pass  # it is gone already
        try:
            proc.wait(self.stop_seconds)
        except subprocess.TimeoutExpired:
            log.error("recording_process_killed", pid=proc.pid, alert=True)
            proc.kill()
            proc.wait()
        with self._lock:
            if self._to is not None:
                self._to.close()
            self._proc = self._to = None
        log.info("recording_process_stopped", pid=proc.pid, code=proc.returncode)

    # -- batches -------------------------------------------------------------------------------------
    def new_stream(self) -> int:
        """A number for a stream of batches: none of its batches is recorded after one that failed."""
        return next(self._streams)

    def end_stream(self, stream: int) -> None:
        """The stream is over: the recording process forgets it."""
        with self._lock:
            if self._to is not None and self._proc is not None and self._proc.poll() is None:
                try:
                    _write_frame(self._to, ("end", stream))
                except OSError:
                    pass

    def submit(
        self, caller: Principal, data: bytes, reason: str, reads: Sequence[Read | None], now: datetime,
        ids: dict[str, list[str]], stream: int = 0, rows: bool = False, wait: bool = True,
    ) -> Future[Recorded]:  # fmt: skip
        """Send a batch (`data`: a `SignalBatch`'s wire format, checked and validated already; `ids`:
        its signal ids by service; `rows`: the index rows it writes wanted back, in `Recorded.rows`).
        Its future holds the outcome, or the refusal (`REFUSALS`), or `RecordingUnavailableError`,
        `RecordingFailedError`, `StreamStoppedError`. `wait`: false to send only what goes at once —
        the process running, no other thread sending or starting it, room in its pipe for the batch —
        and raise `WouldWaitError` otherwise, nothing sent (for a caller that must not wait: an event
        loop)."""
        future: Future[Recorded] = Future()
        future.set_running_or_notify_cancel()  # sent: only its answer ends it (it cannot be cancelled)
        now_us = (now - _EPOCH) // timedelta(microseconds=1)
        who = (caller.subject, caller.role, caller.department)
        frame = _frame(("record", stream, data, reason, list(reads), who, now_us, rows))
        if not self._lock.acquire(blocking=wait):
            raise WouldWaitError("another thread is sending to the recording process or starting it")
        try:
            if wait:
                self._start_locked()
            elif self._stopped or self._proc is None or self._to is None:
                raise WouldWaitError("the recording process is not running")
            # (No system call to tell, here: each lets go of the interpreter, which a caller that must
            # not wait may then wait for — a round holding it — up to its switch interval.) The pipe
            # holds at most the frames of the batches not answered yet — counted on a copy, made in one
            # step: the answers' reader takes batches off meanwhile, which a loop over the deque itself
            # would meet as "deque mutated during iteration".
            elif sum(sent[3] for sent in tuple(self._pending)) + len(frame) > self._pipe_bytes - _PIPE_MARGIN:
                raise WouldWaitError("the recording process's pipe may not have room for the batch")
            assert self._to is not None
            self._pending.append((future, ids, time.monotonic(), len(frame)))
            try:
                self._to.write(frame)
                self._to.flush()
            except OSError as e:  # the process is gone: its answers' reader fails what it had
                self._pending.pop()
                if not wait:  # nothing of it read: sent again waiting, which starts another
                    raise WouldWaitError(f"the recording process cannot be reached ({e})") from None
                raise RecordingUnavailableError(f"the recording process cannot be reached ({e})") from None
        finally:
            self._lock.release()
        return future

    def _read_answers(
        self, proc: subprocess.Popen[bytes], back: IO[bytes], pending: collections.deque[_Sent], why: list[str]
    ) -> None:  # fmt: skip
        """Each answer of this process to the batch it answers, in the order they were sent; at the
        end of the pipe (the process exited) its batches not answered fail."""
        try:
            while (answer := _read_frame(back)) is not None:
                future, ids, _, _ = pending.popleft()  # appended before its batch was sent (a deque's ends are atomic)
                self._answer(future, ids, answer)
        finally:
            back.close()
            code = proc.wait()
            with self._lock:
                lost = list(pending)
                pending.clear()
                if self._proc is proc:
                    if self._to is not None:
                        self._to.close()
                    self._proc = self._to = None
            if lost or not self._stopped:
                log.error("recording_process_exited", pid=proc.pid, code=code, unanswered=len(lost), alert=True)
            ended = why[0] if why else f"it exited (code {code})"
            for future, _, _, _ in lost:
                future.set_exception(
                    RecordingUnavailableError(
                        f"the recording process ended before answering ({ended}): this batch may or may not be "
                        "stored; send it again (a signal already held is counted a duplicate)"
                    )
                )

    def _answer(self, future: Future[Recorded], ids: dict[str, list[str]], answer: tuple[Any, ...]) -> None:
        kind = answer[0]
        if kind == "ok":
            _, accepted, duplicates, corrections, first, last, changes, rows = answer
            recorded = Recorded(accepted, duplicates, corrections, first, last, tuple(changes), rows)
            if self.on_stored is not None:
                try:
                    self.on_stored(recorded, ids)
                except Exception:  # noted from the log instead, by the next look at it
                    log.exception("recording_not_noted")
            future.set_result(recorded)
        elif kind == "refused":
            future.set_exception(REFUSALS.get(answer[1], RecordingFailedError)(answer[2]))
        elif kind == "skipped":
            future.set_exception(StreamStoppedError("a batch before it in its stream failed: not recorded"))
        else:
            future.set_exception(RecordingFailedError(f"recording the batch failed: {answer[1]}: {answer[2]}"))


# -- the recording process ------------------------------------------------------------------------------
class _GivenClock:
    """ "Now" as the service gave it with the batch being recorded."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


def _recording_app(env: dict[str, str], clock: _GivenClock) -> Any:
    from accord_metrics.application import Metrics

    class RecordingMetrics(Metrics):
        """Records, and notes nothing for rounds: it never judges (the service does), so the log is
        read from the index's position on — what the index does not hold yet is indexed."""

        name = Metrics.name  # the library names a store's tables (PostgreSQL) after it: the service's

        def _open_signal_index(self) -> None:
            super()._open_signal_index()
            self._signals_position = self._signals_read = self._store_position

    return RecordingMetrics(env, clock=clock)


def main(argv: Sequence[str]) -> int:
    """`python -m accord_metrics.recorder IN_FD OUT_FD`: record the batches read from IN_FD, answering
    on OUT_FD, until told to stop or the pipe ends."""
    from accord.metrics.v1 import signals_pb2
    from accord_kit.logging import configure_logging

    if len(argv) != 3 or not all(a.isdigit() for a in argv[1:]):
        print("accord_metrics.recorder is started by the metrics service (METRICS_RECORDER=process)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops it, after its calls are over
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    src = os.fdopen(int(argv[1]), "rb")
    out = os.fdopen(int(argv[2]), "wb")
    config = _read_frame(src)
    if config is None or config[0] != "config":
        return 2
    _, env, level, fmt = config
    configure_logging(level, fmt, service="metrics")
    structlog.contextvars.bind_contextvars(process="recording")  # its lines told from the service's
    clock = _GivenClock()
    t0 = time.perf_counter()
    app = _recording_app(env, clock)
    log.info("recording_process_ready", pid=os.getpid(), seconds=round(time.perf_counter() - t0, 3))
    _write_frame(out, ("ready", os.getpid()))
    failed: set[int] = set()  # streams a batch of which failed: none of their later batches is recorded
    try:
        while (frame := _read_frame(src)) is not None:
            kind = frame[0]
            if kind == "stop":
                break
            if kind == "end":
                failed.discard(frame[1])
                continue
            _, stream, data, reason, reads, who, now_us, rows_wanted = frame
            if stream and stream in failed:
                _write_frame(out, ("skipped",))
                continue
            clock.at = _EPOCH + timedelta(microseconds=now_us)
            try:
                signals = list(signals_pb2.SignalBatch.FromString(data).signals)
                r = app.record(Principal(*who), signals, reason, owned=True, reads=reads)
            except tuple(REFUSALS.values()) as e:
                failed.add(stream)
                _write_frame(out, ("refused", type(e).__name__, str(e)))
            except Exception as e:
                log.exception("recording_failed")
                failed.add(stream)
                _write_frame(out, ("failed", type(e).__name__, str(e)))
            else:
                _write_frame(
                    out,
                    (
                        "ok",
                        r.accepted,
                        r.duplicates,
                        r.corrections,
                        r.first_position,
                        r.last_position,
                        list(r.changes),
                        list(r.rows) if rows_wanted else [],
                    ),
                )
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
