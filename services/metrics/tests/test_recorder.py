"""Recording in a process of its own (accord_metrics.recorder), on SQLite and PostgreSQL: what the
recording process records is what recording in the service's process records — each batch's
outcome, a refusal in the same words, the signals stored — and the service's rounds judge it the
same, from what it was told rather than from the batches read back; a stream stops at its first
failed batch; a recording process that dies fails the batches it had not answered (UNAVAILABLE)
and the next batch starts another; one whose service died exits."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_kit.context import Principal
from accord_metrics import signal_index
from accord_metrics.application import Metrics
from accord_metrics.recorder import RecordingProcess, RecordingUnavailableError, StreamStoppedError, WouldWaitError
from accord_metrics.signal_index import Recorded
from accord_metrics.signals import InvalidSignalError
from tests.suite import AMS, COLLECTOR, EMAIL, Suite, an_active_agreement, at, calls, outage, spy_lookups, ts

CUSTOMER = Principal("someone", "department", "finance")


def under_way(sid: str, start: str) -> pb.Signal:
    return pb.Signal(signal_id=sid, service_id=EMAIL, outage=pb.Outage(start=ts(at(start))))


def answered(sid: str, start: str, wait_s: int) -> pb.Signal:
    entered = at(start)
    call = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=wait_s)), talk_seconds="30")
    return pb.Signal(signal_id=sid, service_id=EMAIL, call=call)


@contextlib.contextmanager
def _recording(
    make_store_env: Callable[[str], dict[str, str]], **options: float
) -> Iterator[tuple[Suite, RecordingProcess]]:
    """A world whose metrics records through a recording process of its own (started)."""
    suite = Suite(make_store_env)
    process = RecordingProcess(suite.envs["metrics"], **options)
    suite.metrics.record_in(process)
    try:
        process.start()
        yield suite, process
    finally:
        process.stop()
        suite.close()


@pytest.fixture
def two(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[tuple[Suite, Suite]]:
    """Two worlds alike: the first records in its service's process, the second through a
    recording process of its own."""
    here = Suite(make_store_env)
    try:
        with _recording(make_store_env) as (there, _):
            yield here, there
    finally:
        here.close()


@pytest.fixture
def world(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[tuple[Suite, RecordingProcess]]:
    with _recording(make_store_env) as made:
        yield made


def _outcome(m: Metrics, caller: Principal, signals: list[pb.Signal], reason: str) -> Any:
    try:
        r = m.record(caller, [pb.Signal.FromString(s.SerializeToString()) for s in signals], reason)
    except Exception as e:
        return (type(e).__name__, str(e))
    return (r.accepted, r.duplicates, r.corrections)


def _judged(suite: Suite, aid: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {
        (w.objective_id, w.window_start): tuple(w.latest.get(k) for k in ("status", "value", "input_digest", "details"))
        for w in suite.metrics.window_evaluations(aid)
    }


def test_what_the_recording_process_records_is_recorded_and_judged_as_in_the_service_s_process(
    two: tuple[Suite, Suite], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = two
    aids = [an_active_agreement(here), an_active_agreement(there)]
    read_back: list[int] = []  # batches the service with a recording process read back from the log
    noted = signal_index.SignalIndex._noted

    def spy(self: Metrics, position: int, service_id: str, items: list[pb.Signal]) -> None:
        if self is there.metrics:
            read_back.append(position)
        noted(self, position, service_id, items)

    monkeypatch.setattr(signal_index.SignalIndex, "_noted", spy)
    day = f"2026-01-12T{{}}{AMS}"
    steps: list[tuple[Any, ...]] = [
        # The longest outage first (those after it are shorter).
        ("record", COLLECTOR, [*calls("a", day.format("09:00"), 5, 1), outage("long", f"2026-01-05T10:00{AMS}", 90)]),
        ("tick", day.format("12:00")),  # a round: the open window's selection kept
        ("record", COLLECTOR, [outage("o1", day.format("13:00"), 20), under_way("u1", day.format("14:00"))]),
        ("record", COLLECTOR, calls("a", day.format("09:00"), 5, 1)),  # sent again: duplicates
        ("tick", day.format("15:00")),
        ("tick", day.format("15:30")),  # nothing new: the outage under way judged longer by time alone
        ("record", COLLECTOR, [outage("u1", day.format("14:00"), 45), answered("b1", day.format("15:10"), 5)]),
        ("record", COLLECTOR, [outage("o1", day.format("13:00"), 35)], "the probe saw it longer"),
        ("record", COLLECTOR, [answered("o1", day.format("16:00"), 5)]),  # a correction changing its kind
        ("record", CUSTOMER, [outage("o9", day.format("16:00"), 5)]),  # not the provider
        ("record", COLLECTOR, [outage("o9", day.format("16:00"), 5), *calls("c", f"2026-01-13T09:00{AMS}", 30, 10)]),
        ("tick", f"2026-01-13T12:00{AMS}"),
        # Longer than any before, from before the month into it: the window's selection reaches back for it.
        ("record", COLLECTOR, [outage("longer", f"2025-12-31T22:00{AMS}", 240)]),
        ("tick", f"2026-01-13T13:00{AMS}"),
        ("record", COLLECTOR, [answered("a2", day.format("09:02"), 50)], "wait re-read"),  # a correction
        ("tick", f"2026-02-01T02:00{AMS}"),  # January closed
    ]
    kept: dict[Any, Any] = {}  # the open window's selections after the first round
    for step in steps:
        if step[0] == "tick":
            here.tick(step[1])
            there.tick(step[1])
            assert _judged(here, aids[0]) == _judged(there, aids[1])
            selections = there.metrics._services[EMAIL].selections
            if not kept:
                kept = dict(selections)
                assert kept
            elif step[1] == day.format("15:00"):
                # Kept across what the recording process stored meanwhile: brought up to date, not made anew.
                assert all(selections.get(k) is v for k, v in kept.items())
            continue
        caller, signals = step[1], step[2]
        reason = step[3] if len(step) > 3 else ""
        assert _outcome(here.metrics, caller, signals, reason) == _outcome(there.metrics, caller, signals, reason)
    assert [s.SerializeToString() for s in here.metrics.signals(EMAIL)] == [
        s.SerializeToString() for s in there.metrics.signals(EMAIL)
    ]
    refused = _outcome(there.metrics, COLLECTOR, [answered("o1", f"2026-01-12T16:00{AMS}", 5)], "")
    assert refused[0] == "InvalidSignalError" and "'o1' was recorded as a outage signal" in refused[1]
    assert (
        _outcome(there.metrics, CUSTOMER, [outage("o9", f"2026-01-12T16:00{AMS}", 5)], "")[0] == "NotTheProviderError"
    )
    assert not read_back  # every batch noted as the recording process told it, none read back
    _january_matches(there, aids[1])


def _january_matches(suite: Suite, aid: str) -> None:
    """Each objective's January window as judged, recomputed from every stored signal: the same."""
    for objective in ("availability", "service-level"):
        check = suite.metrics.recompute(aid, objective, "2025-12-31T23:00:00+00:00")
        assert check["matches"], check["differences"]


def test_a_round_after_batches_the_recording_process_stored_reads_none_of_their_rows_back(
    world: tuple[Suite, RecordingProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows the recording process wrote come back with its answer: the open window's kept
    selection catches up from them, as from the rows a service writes itself, none read back."""
    suite, _ = world
    m = suite.metrics
    aid = an_active_agreement(suite)
    # The longest outage first (those after it are shorter).
    m.record(COLLECTOR, [outage("long", f"2026-01-05T10:00{AMS}", 180)])
    suite.tick(f"2026-01-12T08:00{AMS}")  # the open window's selection kept
    day = f"2026-01-12T{{}}{AMS}"
    m.record(COLLECTOR, [*calls("a", day.format("09:00"), 20, 5), outage("o1", day.format("10:00"), 20)])
    m.record(COLLECTOR, [under_way("u1", day.format("11:00")), answered("b1", day.format("11:10"), 5)])
    m.record(COLLECTOR, [outage("u1", day.format("11:00"), 15)])  # completed: its row replaced
    looked_up = spy_lookups(monkeypatch)
    suite.tick(f"2026-01-12T12:00{AMS}")
    assert not looked_up
    monkeypatch.undo()
    _january_matches(suite, aid)


def test_rows_told_are_not_kept_when_a_batch_of_another_process_came_between(
    world: tuple[Suite, RecordingProcess],
) -> None:
    """A batch the recording process stored, then another instance's correcting it, both read at
    one look at the log: the told rows are not the store's any more, so the round reads the
    store's (the correction's), not the rows told."""
    suite, _ = world
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("long", f"2026-01-05T10:00{AMS}", 180)])  # the selection kept from here on
    suite.tick(f"2026-01-12T08:00{AMS}")
    day = f"2026-01-12T{{}}{AMS}"
    m.record(COLLECTOR, [outage("o1", day.format("10:00"), 20), *calls("a", day.format("09:00"), 5, 1)])
    other = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        assert other.record(COLLECTOR, [outage("o1", day.format("10:00"), 90)], "the probe saw it longer").corrections
    finally:
        other.close()
    suite.tick(f"2026-01-12T12:00{AMS}")
    _january_matches(suite, aid)
    (held,) = [s for s in m.signals(EMAIL) if s.signal_id == "o1"][-1:]
    assert held.outage.end.ToDatetime() - held.outage.start.ToDatetime() == timedelta(minutes=90)


def test_a_batch_told_after_the_log_was_read_there_is_not_kept(world: tuple[Suite, RecordingProcess]) -> None:
    suite, _ = world
    m = suite.metrics
    an_active_agreement(suite)
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T13:00{AMS}", 20)])
    suite.tick(f"2026-01-12T14:00{AMS}")
    head = m.head_position()
    m.stored_elsewhere(Recorded(1, 0, 0, head, head, (("email", 0, ("outages",)),)), {"email": ["o1"]})
    assert not m._told


def test_a_stream_stops_at_its_first_failed_batch(world: tuple[Suite, RecordingProcess]) -> None:
    suite, process = world
    m = suite.metrics
    an_active_agreement(suite)
    stream = process.new_stream()
    sent: list[Future[Recorded]] = [
        m.submit_record(COLLECTOR, [outage("s1", f"2026-01-12T10:00{AMS}", 5)], stream=stream),
        m.submit_record(COLLECTOR, [answered("s1", f"2026-01-12T10:00{AMS}", 5)], stream=stream),  # refused there
        m.submit_record(COLLECTOR, [outage("s3", f"2026-01-12T11:00{AMS}", 5)], stream=stream),
    ]
    other = m.submit_record(COLLECTOR, [outage("s4", f"2026-01-12T12:00{AMS}", 5)], stream=process.new_stream())
    assert sent[0].result(30).accepted == 1
    with pytest.raises(InvalidSignalError, match="'s1' was recorded as a outage signal"):
        sent[1].result(30)
    with pytest.raises(StreamStoppedError):
        sent[2].result(30)
    assert other.result(30).accepted == 1
    assert sorted(s.signal_id for s in m.signals(EMAIL)) == ["s1", "s4"]
    process.end_stream(stream)
    assert m.record(COLLECTOR, [outage("s3", f"2026-01-12T11:00{AMS}", 5)]).accepted == 1
    # Refused here, before anything is sent: the same words as recording here.
    with pytest.raises(InvalidSignalError, match=r"signals\[0\]\.outage\.end: must be after start"):
        m.submit_record(COLLECTOR, [outage("bad", f"2026-01-12T11:00{AMS}", -5)])


def test_a_recording_process_that_dies_fails_what_it_had_not_answered_and_another_starts(
    world: tuple[Suite, RecordingProcess],
) -> None:
    """Killed while a large batch is under way: that batch is failed UNAVAILABLE (it may or may
    not have been stored); sent again, to the recording process started for it, every signal of it
    is held once — stored then, or counted a duplicate."""
    suite, process = world
    m = suite.metrics
    aid = an_active_agreement(suite)
    big = calls("k", f"2026-01-13T00:00{AMS}", 4000, 1000)
    first = process.pid
    assert first is not None
    under = m.submit_record(COLLECTOR, big)
    os.kill(first, signal.SIGKILL)
    try:
        under.result(30)
    except RecordingUnavailableError as e:
        assert "may or may not be stored; send it again" in str(e)
    again = m.record(COLLECTOR, calls("k", f"2026-01-13T00:00{AMS}", 4000, 1000))
    assert again.accepted + again.duplicates == 5000
    assert process.starts == 2 and process.pid != first
    assert len({s.signal_id for s in m.signals(EMAIL)}) == 5000
    suite.tick(f"2026-02-01T02:00{AMS}")  # January judged and closed, from what it was told and what it read
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, "2025-12-31T23:00:00+00:00")
        assert check["matches"], check["differences"]


def test_a_recording_process_that_does_not_answer_is_stopped_and_another_starts(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """One that sends no answer in time (here: frozen, SIGSTOP) is taken for hung and killed: the
    batch waiting for it fails UNAVAILABLE saying so, and the next batch starts another."""
    with _recording(make_store_env, answer_seconds=1.0) as (suite, process):
        m = suite.metrics
        an_active_agreement(suite)
        frozen = process.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        started = time.monotonic()
        waiting = m.submit_record(COLLECTOR, [outage("h1", f"2026-01-12T10:00{AMS}", 5)])
        with pytest.raises(RecordingUnavailableError, match="did not answer a batch in 1 s and was stopped"):
            waiting.result(30)  # (a TimeoutError when no one stops it)
        assert time.monotonic() - started < 30
        assert not _alive(frozen)
        assert m.record(COLLECTOR, [outage("h1", f"2026-01-12T10:00{AMS}", 5)]).accepted == 1
        assert process.starts == 2


def test_a_told_row_kept_is_forgotten_when_a_later_batch_corrects_its_signal(
    world: tuple[Suite, RecordingProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's rows told with its answer are kept for the kept selections' catch-up when the log
    is read (here by a look at it outside a round); a later batch corrects one of those signals and
    its rows are not told (too many waiting). Noting it forgets the row kept: the round catches up
    with the correction as the store holds it, not with the call as first told."""
    suite, _ = world
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, calls("k", f"2026-01-13T00:00{AMS}", 2, 0))
    suite.tick(f"2026-01-13T06:00{AMS}")  # January judged: its selection kept
    assert m.record(COLLECTOR, [answered("x", f"2026-01-13T07:00{AMS}", 5)]).accepted == 1
    m._refresh_signals()  # (a query's look at the log) the told row kept
    held = m._services[EMAIL]
    assert "x" in held._written
    monkeypatch.setattr(signal_index, "WRITTEN_KEPT", 0)  # the correction's rows not asked for
    assert m.record(COLLECTOR, [answered("x", f"2026-01-13T07:00{AMS}", 50)], "wait misread").corrections == 1
    suite.tick(f"2026-01-13T08:00{AMS}")
    (kept,) = held.selections.values()
    ids, items = kept.lists["calls"][1], kept.lists["calls"][2]
    x = items[ids.index("x")]
    assert (x.answered_at - x.entered_queue).total_seconds() == 50
    check = m.recompute(aid, "service-level", "2025-12-31T23:00:00+00:00")
    assert check["matches"], check["differences"]


def test_a_batch_sent_without_waiting_is_sent_only_when_nothing_would_wait(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """`wait=False` (an event loop sending): refused `WouldWaitError`, nothing sent, while the
    recording process is not running, while another thread holds it, and once its pipe has no room
    for the batch (here: the process frozen, SIGSTOP, so nothing is read) — at once, not after
    waiting; every batch it did send is recorded once the process reads again, and so is a batch
    sent again waiting."""
    suite = Suite(make_store_env)
    process = RecordingProcess(suite.envs["metrics"], answer_seconds=60.0)
    m = suite.metrics
    m.record_in(process)
    try:
        an_active_agreement(suite)
        first = [outage("n0", f"2026-01-12T10:00{AMS}", 5)]
        with pytest.raises(WouldWaitError, match="not running"):
            m.submit_record(COLLECTOR, first, wait=False)
        assert process.starts == 0
        process.start()
        with process._lock, pytest.raises(WouldWaitError, match="another thread"):
            m.submit_record(COLLECTOR, first, wait=False)
        assert m.submit_record(COLLECTOR, first, wait=False).result(30).accepted == 1
        frozen = process.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        sent: list[Future[Recorded]] = []
        try:
            started = time.monotonic()
            with pytest.raises(WouldWaitError, match="may not have room"):
                for n in range(1, 1_000):  # ≈ 90 KiB each
                    sent.append(
                        m.submit_record(COLLECTOR, calls(f"b{n}-", f"2026-01-13T00:00{AMS}", 0, 1000), wait=False)
                    )
            assert time.monotonic() - started < 20
            assert 1 <= len(sent) < 50  # the pipe (1 MiB, else 64 KiB) holds some, not all
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert [f.result(30).accepted for f in sent] == [1000] * len(sent)
        again = m.submit_record(COLLECTOR, calls(f"b{len(sent) + 1}-", f"2026-01-13T00:00{AMS}", 0, 1000))
        assert again.result(30).accepted == 1000
        assert len(m.signals(EMAIL)) == 1 + 1000 * (len(sent) + 1)
    finally:
        process.stop()
        suite.close()


def test_a_recording_process_whose_service_died_exits(tmp_path: Path) -> None:
    """The service's end of the pipe closes when it dies (here: SIGKILL): the recording process
    reads the end of its pipe and exits."""
    script = tmp_path / "service.py"
    script.write_text(
        "import os, sys, signal\n"
        "from accord_kit.testing.fixtures import sqlite_env\n"
        "from accord_metrics.recorder import RecordingProcess\n"
        f"p = RecordingProcess(sqlite_env(__import__('pathlib').Path({str(tmp_path / 'm.sqlite')!r})))\n"
        "from accord_metrics.application import Metrics\n"
        f"Metrics(sqlite_env(__import__('pathlib').Path({str(tmp_path / 'm.sqlite')!r}))).close()\n"
        "p.start()\n"
        "print('PID', p.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    child = int(out.stdout.split("PID ", 1)[1].split()[0])
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, f"recording process {child} still runs after its service died"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_recorder_is_a_setting(tmp_path: Path) -> None:
    """`METRICS_RECORDER`: `process` (the default) records through a recording process of the
    service's own; `in-process` in the service's process; anything else is refused, named."""
    from accord_kit.auth import TokenVerifier
    from accord_kit.settings import ServiceSettings, SettingsError
    from accord_kit.testing.service import make_keys, service_environ
    from accord_metrics.bootstrap import build

    keys = make_keys(tmp_path / "keys")
    verifier = TokenVerifier(keys.public_file.read_bytes())
    for environ, expected in (
        ({}, True),
        ({"METRICS_RECORDER": "process"}, True),
        ({"METRICS_RECORDER": "in-process"}, False),
    ):
        settings = ServiceSettings.from_env(
            "metrics", service_environ("metrics", tmp_path, "nats://127.0.0.1:1", "sqlite", **environ)
        )
        parts = build(settings, verifier=verifier)
        try:
            assert (parts.app.recording_process is not None) is expected
            assert bool(parts.at_stop) is expected
        finally:
            parts.app.close()
    with pytest.raises(SettingsError, match="METRICS_RECORDER must be 'process' or 'in-process', not 'thread'"):
        ServiceSettings.from_env("metrics", {"METRICS_RECORDER": "thread"})
