"""The metrics-backfill benchmark at a small size: it records months with no round between,
judges them in one round and reports that round's CPU and the process's memory, then a what-if and
a re-derivation in one pass and a span of time at a time."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import metrics_backfill


def run(*args: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    metrics_backfill.add_arguments(parser)
    parser.add_argument("--per-month", type=int, default=1_000)
    return metrics_backfill.run(parser.parse_args(list(args)))


def test_the_round_after_a_backfill_is_measured() -> None:
    result = run("--backfill-sizes", "6000", "--backfill-held", "500", "--rederive-held", "1500")
    figures = {f["name"]: f for f in result["figures"]}
    assert list(figures) == [
        "round after a backfill, 6,000 signals over 6 months",
        "peak RSS in that round, 6,000 signals over 6 months",
        "RSS after it, 6,000 signals over 6 months",
        "what-if of the last month after it, 6,000 signals over 6 months",
        "re-derivation in one pass, 6,000 signals over 6 months",
        "re-derivation a span of time at a time, 6,000 signals over 6 months",
    ]
    for name, f in figures.items():
        assert f["value"] > 0, name
    assert "inputs held at once 500" in figures["round after a backfill, 6,000 signals over 6 months"]["detail"]
    assert (
        "1 pass(es) of at most 6,001 signals; 12 windows checked, 0 amiss"
        in (figures["re-derivation in one pass, 6,000 signals over 6 months"]["detail"])
    )
    # 1,000 signals a month (and the outages reaching into it) against 1,500: a month a pass.
    spans = figures["re-derivation a span of time at a time, 6,000 signals over 6 months"]["detail"]
    assert "6 pass(es) of at most 1,500 signals; 12 windows checked, 0 amiss" in spans
    assert result["params"] == {"sizes": [6000], "per_month": 1000, "held": 500, "rederive_held": 1500}


def test_a_negative_pass_is_refused() -> None:
    with pytest.raises(ValueError, match="--rederive-held -1: not negative"):
        run("--backfill-sizes", "6000", "--rederive-held", "-1")


def test_sizes_smaller_than_a_batch_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1,000"):
        run("--backfill-sizes", "100")
