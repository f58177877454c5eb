"""The metrics-portfolio benchmark on a small portfolio: its three kinds of round judge what
they say (every agreement, those of one service, none) and its figures are per agreement judged;
the agreements of a service share their outcomes unless each has targets of its own; the heap is
settled before the rounds unless Python's collector is asked for alone."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from bench import metrics_portfolio


def run(*args: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    metrics_portfolio.add_arguments(parser)
    return metrics_portfolio.run(parser.parse_args(list(args)))


def test_the_rounds_judge_every_agreement_one_services_and_none() -> None:
    result = run("--portfolio-agreements", "8", "--portfolio-rounds", "2")
    summary = result["summary"]
    # A batch of calls judges each agreement's service-level window (its availability reads no call).
    assert summary["every service"]["agreements"] == 8 and summary["every service"]["windows"] == 8
    assert summary["one service"]["agreements"] == 2  # four services, the agreements spread over them
    assert summary["nothing new"]["agreements"] == 0 and summary["nothing new"]["events"] == 0
    assert summary["every service"]["events"] > 0
    assert summary["every service"]["shared"] == 8 - 4  # two agreements a service: one outcome each
    names = [f["name"] for f in result["figures"]]
    assert names == [
        "round, every service, 8 agreements",
        "round, one service, 8 agreements",
        "round, nothing new, 8 agreements",
        "full collections during the rounds",
        "RSS, 8 agreements",
    ]
    # The heap settled before the rounds (as the service settles its own), and thawed after them.
    assert result["params"]["settled"] is True and gc.get_freeze_count() == 0
    assert "the heap settled before the rounds" in result["figures"][3]["detail"]


def test_pythons_collector_alone_is_an_option() -> None:
    result = run("--portfolio-agreements", "4", "--portfolio-rounds", "1", "--portfolio-python-gc")
    assert result["params"]["settled"] is False
    assert "Python's collector alone" in result["figures"][3]["detail"]


def test_distinct_targets_share_no_outcome() -> None:
    result = run("--portfolio-agreements", "8", "--portfolio-rounds", "1", "--portfolio-distinct")
    summary = result["summary"]
    assert summary["every service"]["agreements"] == 8 and summary["every service"]["windows"] == 8
    assert summary["every service"]["shared"] == 0
    assert result["figures"][0]["name"] == "round, every service, 8 agreements, each its own targets"
