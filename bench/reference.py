"""The money soak: the reference-model property tests over many more generated journeys than
`make test` runs, timed — tests/test_reference_model.py (in-process services on SQLite, a
quarter as many on PostgreSQL) and tests/test_reference_kills.py (real processes, metrics and
billing killed with SIGKILL during catch-up). A failure is reported as a figure of 0 journeys
passed with pytest's last lines as notes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "reference"
SUMMARY = "generated journeys through agreements → metrics → billing, each held to the reference model"
REPO = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference-journeys", type=int, default=500, help="journeys the reference soak generates (default 500)"
    )
    parser.add_argument(
        "--reference-kill-journeys",
        type=int,
        default=5,
        help="journeys run as real processes with kills during catch-up (default 5)",
    )


def _pytest(test_file: str, env: dict[str, str]) -> tuple[bool, float, list[str]]:
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=0", test_file]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return done.returncode == 0, time.monotonic() - started, tail


def run(args: argparse.Namespace) -> dict[str, Any]:
    journeys = int(args.reference_journeys)
    kills = int(args.reference_kill_journeys)
    on_postgres = max(1, journeys // 4)
    per_metric = 18 * max(1, journeys // 5)  # test_every_metric_against_the_reference_model
    env = {**os.environ, "ACCORD_REFERENCE_EXAMPLES": str(journeys), "ACCORD_REFERENCE_KILL_EXAMPLES": str(kills)}
    passed, seconds, tail = _pytest("tests/test_reference_model.py", env)
    killed, kill_seconds, kill_tail = _pytest("tests/test_reference_kills.py", env)
    return {
        "figures": [
            {
                "name": "journeys held to the model",
                "value": journeys + per_metric + on_postgres if passed else 0,
                "unit": "journeys",
                "detail": f"{journeys} and {per_metric} (one metric each) on SQLite and {on_postgres} on PostgreSQL:"
                " every closed window and every settled fee period (credits and fee) equal to the model"
                if passed
                else "FAILED: see the notes",
            },
            {
                "name": "time per journey",
                "value": seconds / max(journeys + per_metric + on_postgres, 1),
                "unit": "s",
                "detail": f"{seconds:.0f} s in all",
            },
            {
                "name": "journeys with kills held to the model",
                "value": kills if killed else 0,
                "unit": "journeys",
                "detail": "real processes; metrics and billing killed (SIGKILL) twice each during catch-up"
                if killed
                else "FAILED: see the notes",
            },
            {
                "name": "time per journey with kills",
                "value": kill_seconds / max(kills, 1),
                "unit": "s",
                "detail": f"{kill_seconds:.0f} s in all",
            },
        ],
        "params": {"journeys": journeys, "kill_journeys": kills},
        "notes": ([] if passed else tail) + ([] if killed else kill_tail),
    }
