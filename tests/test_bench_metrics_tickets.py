"""The metrics-tickets benchmark on a small history: its rounds judge the ticket, incident, lead
and call objectives, and a round passes their formulas the items of the window, not of history."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import metrics_tickets


def run(*args: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    metrics_tickets.add_arguments(parser)
    return metrics_tickets.run(parser.parse_args(list(args)))


def test_rounds_pass_the_windows_tickets_not_the_history() -> None:
    result = run("--tickets-sizes", "0,3000", "--tickets-rounds", "2", "--tickets-lists", "tickets")
    empty, history = result["results"]
    assert [f["name"] for f in result["figures"]] == [
        "round after 10 new tickets, 0 tickets of history",
        "round after 10 new tickets, 3,000 tickets of history",
        "peak RSS",
    ]
    # Two years of history at ≈ 125 tickets a month: January's from its start, and the 20 new ones.
    assert empty["passed_per_objective"] == 20
    assert 20 < history["passed_per_objective"] < 20 + 200
    assert all(r["round_cpu_ms"] > 0 for r in (empty, history))


def test_incidents_leads_and_calls_likewise() -> None:
    result = run("--tickets-sizes", "3000", "--tickets-rounds", "2", "--tickets-lists", "incidents,leads,calls")
    incidents, leads, calls = result["results"]
    assert [f["name"] for f in result["figures"][:3]] == [
        "round after 10 new incidents, 3,000 incidents of history",
        "round after 10 new leads, 3,000 leads of history",
        "round after 10 new calls, 3,000 calls of history",
    ]
    # January's few from two years of ≈ 125 a month, and the 20 new ones — not the 3,000.
    for r in (incidents, leads):
        assert 20 < r["passed_per_objective"] < 20 + 200, r["list"]
    # The calls: each round's 10 folded into the open window's running evaluation.
    assert calls["passed_per_objective"] == 10


def test_calls_of_two_services_pass_the_window_not_the_history() -> None:
    """First-contact resolution over e-mail and phone: each round's 10 folded into the open
    window's running evaluation — neither the 3,000 of history read (every call, before) nor the
    window's calls passed to the formula again (a batch on any but the last service, before)."""
    result = run("--tickets-sizes", "3000", "--tickets-rounds", "2", "--tickets-lists", "calls-2")
    (calls,) = result["results"]
    assert result["figures"][0]["name"] == "round after 10 new calls, 3,000 calls of history over 2 services"
    assert calls["passed_per_objective"] == 10


def test_a_correction_in_the_open_window_is_taken_out_and_in() -> None:
    """With `--tickets-corrections`, each round also corrects one call of history in the open
    window: first-contact resolution's running evaluation takes it out and folds it in with the
    10 new ones — the window's calls not passed again."""
    result = run(
        "--tickets-sizes", "30000", "--tickets-rounds", "2", "--tickets-lists", "calls", "--tickets-corrections"
    )  # fmt: skip
    (calls,) = result["results"]
    assert result["params"]["corrections"] is True
    assert result["figures"][0]["name"] == "round after 10 new calls and a correction, 30,000 calls of history"
    assert calls["passed_per_objective"] == 10


def test_refuses_sizes_rounds_and_lists_that_measure_nothing() -> None:
    with pytest.raises(ValueError, match="--tickets-rounds"):
        run("--tickets-rounds", "0")
    with pytest.raises(ValueError, match="not tasks"):
        run("--tickets-lists", "tickets,tasks")
