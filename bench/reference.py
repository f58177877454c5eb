"""The money soak: the reference-model property test (tests/test_reference_model.py) over many
more generated journeys than `make test` runs, timed. A failure is reported as a figure of 0
journeys passed with pytest's last lines as notes."""

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    journeys = int(args.reference_journeys)
    env = {**os.environ, "ACCORD_REFERENCE_EXAMPLES": str(journeys)}
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=0"]
    done = subprocess.run(
        [*command, "tests/test_reference_model.py"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - started
    passed = done.returncode == 0
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {
        "figures": [
            {
                "name": "journeys held to the model",
                "value": journeys if passed else 0,
                "unit": "journeys",
                "detail": "every closed window and every settled fee period equal to the model"
                if passed
                else "FAILED: see the notes",
            },
            {"name": "time per journey", "value": seconds / max(journeys, 1), "unit": "s", "detail": "SQLite stores"},
        ],
        "params": {"journeys": journeys},
        "notes": [] if passed else tail,
    }
