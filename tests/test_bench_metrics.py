"""The metrics benchmark on a few signals: ingestion over RecordSignals into a real metrics
process (NATS, agreements), and the in-process evaluation of a month of signals."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import metrics

pytestmark = pytest.mark.slow


def run(*args: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    metrics.add_arguments(parser)
    return metrics.run(parser.parse_args(list(args)))


def test_a_live_run_streams_into_the_open_window_and_evaluates_a_month_of_signals() -> None:
    """`--metrics-live`: the signals of the last 20 hours stream in while the service judges the
    agreed sample SLA; the evaluation then judges a month of signals — January's, not the live
    run's (their rounds look at the month the live signals are not in: every call recorded is
    judged)."""
    result = run("--metrics-live", "--signals", "4000")
    names = [f["name"] for f in result["figures"]]
    assert "ingest" in names and "evaluate, first" in names and "evaluate, second" in names
    ingest = next(f for f in result["figures"] if f["name"] == "ingest")
    assert "judged every 5 s meanwhile" in ingest["detail"]
