"""The metrics-tallies benchmark at small sizes: it drives both running forms to the formulas'
evaluations and reports what each holds an input and its CPU a batch."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import metrics_tallies


def run(*args: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    metrics_tallies.add_arguments(parser)
    return metrics_tallies.run(parser.parse_args(list(args)))


def test_both_tallies_are_measured_against_their_formulas() -> None:
    result = run("--tallies-fcr-sizes", "2000", "--tallies-count-sizes", "1500")
    figures = {f["name"]: f for f in result["figures"]}
    assert list(figures) == [
        "first-contact resolution held, 2,000",
        "first-contact resolution batch, 2,000",
        "request counts held, 1,500",
        "request counts batch, 1,500",
    ]
    for name, f in figures.items():
        assert f["value"] > 0, name
    # What a tally holds an input is reported in bytes, and within reason (the memory proofs are the
    # running forms' own tests).
    assert figures["first-contact resolution held, 2,000"]["value"] < 1000
    assert figures["request counts held, 1,500"]["value"] < 1000


def test_sizes_smaller_than_a_batch_are_refused() -> None:
    with pytest.raises(SystemExit, match="at least 500"):
        run("--tallies-fcr-sizes", "100")
