"""Crash safety of the judged position (metrics README, "Scale"): a metrics process records
late signals into a closed window and judges them round by round — each round recording
durably the signals position it judged — and is killed with SIGKILL right after storing one
more, before any round judged it. The process started next on the store judges it: the closed
window is restated from every signal stored, as a recomputation from the store gives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from accord_kit.testing.fixtures import sqlite_env
from accord_metrics.application import JUDGED, Metrics
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, at, calls, outage

REPO = Path(__file__).resolve().parent.parent
LATE = 4  # late outages stored by the process killed; the last one is never judged by it

CHILD = """
import json, sys, time
from datetime import timedelta
from accord_kit.clock import FakeClock
from accord_metrics.application import Metrics
from tests.suite import AMS, COLLECTOR, at, outage

env, late = json.loads(sys.argv[1]), int(sys.argv[2])
now = at(f"2026-02-10T10:00{AMS}")
m = Metrics(env, clock=FakeClock(now))
for i in range(late):
    m.record(COLLECTOR, [outage(f"late-{i}", f"2026-01-{20 + i}T10:00{AMS}", 15 + i)])
    print(f"stored {i}", flush=True)
    if i == late - 1:
        time.sleep(600)  # killed here: stored, acknowledged, never judged by this process
    m.evaluate(now + timedelta(seconds=5 * (i + 1)))
    print(f"judged {i}", flush=True)
"""


def test_a_signal_stored_just_before_a_kill_is_judged_after_restart(tmp_path: Path) -> None:
    suite = Suite(lambda name: sqlite_env(tmp_path / f"{name}.sqlite"))
    try:
        aid = an_active_agreement(suite)
        suite.metrics.record(
            COLLECTOR, [outage("jan-1", f"2026-01-12T10:00{AMS}", 30), *calls("a", f"2026-01-12T09:00{AMS}", 8, 2)]
        )
        suite.tick(f"2026-02-10T09:00{AMS}")  # January closed
    finally:
        suite.close()
    env = suite.envs["metrics"]

    log = tmp_path / "child.log"
    with open(log, "w") as errors:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(env), str(LATE)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        assert child.stdout is not None
        lines = []
        while not lines or lines[-1] != f"stored {LATE - 1}":
            line = child.stdout.readline()
            assert line, f"the process ended: {log.read_text()[-3000:]}"
            lines.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert lines == [f"{kind} {i}" for i in range(LATE - 1) for kind in ("stored", "judged")] + [f"stored {LATE - 1}"]

    jan = "2025-12-31T23:00:00+00:00"
    again = Metrics(env, clock=suite.clock)
    try:
        # The killed process recorded what its rounds judged, but not the last signal.
        judged_position = again.tracked_position(JUDGED)
        assert 0 < judged_position < again.head_position()
        window = again.window(None, aid, "availability", jan)
        assert len(window.restatements) == LATE - 1
        again.evaluate(at(f"2026-02-10T11:00{AMS}"))
        window = again.window(None, aid, "availability", jan)
        assert len(window.restatements) == LATE
        check = again.recompute(aid, "availability", jan)
        assert check["matches"], check["differences"]
        assert again.tracked_position(JUDGED) > judged_position
    finally:
        again.close()
