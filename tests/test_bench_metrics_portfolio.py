"""The metrics-portfolio benchmark on a small portfolio: its three kinds of round judge what
they say (every agreement, those of one service, none) and its figures are per agreement judged;
the agreements of a service share their outcomes unless each has targets of its own."""

from __future__ import annotations

import argparse

from bench import metrics_portfolio


def test_the_rounds_judge_every_agreement_one_services_and_none() -> None:
    parser = argparse.ArgumentParser()
    metrics_portfolio.add_arguments(parser)
    result = metrics_portfolio.run(parser.parse_args(["--portfolio-agreements", "8", "--portfolio-rounds", "2"]))
    summary = result["summary"]
    assert summary["every service"]["agreements"] == 8 and summary["every service"]["windows"] == 16
    assert summary["one service"]["agreements"] == 2  # four services, the agreements spread over them
    assert summary["nothing new"]["agreements"] == 0 and summary["nothing new"]["events"] == 0
    assert summary["every service"]["events"] > 0
    assert summary["every service"]["shared"] == 16 - 8  # two agreements a service: one outcome each
    names = [f["name"] for f in result["figures"]]
    assert names == [
        "round, every service, 8 agreements",
        "round, one service, 8 agreements",
        "round, nothing new, 8 agreements",
        "RSS, 8 agreements",
    ]


def test_distinct_targets_share_no_outcome() -> None:
    parser = argparse.ArgumentParser()
    metrics_portfolio.add_arguments(parser)
    args = ["--portfolio-agreements", "8", "--portfolio-rounds", "1", "--portfolio-distinct"]
    result = metrics_portfolio.run(parser.parse_args(args))
    summary = result["summary"]
    assert summary["every service"]["agreements"] == 8 and summary["every service"]["windows"] == 16
    assert summary["every service"]["shared"] == 0
    assert result["figures"][0]["name"] == "round, every service, 8 agreements, each its own targets"
