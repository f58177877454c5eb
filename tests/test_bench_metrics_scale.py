"""The metrics-scale benchmark's sizes, its grown store, its time budget and its timed rounds:
sizes given explicitly; a store grown from one size to the next holding exactly each size's
signals (every one recorded through `Metrics.record`, none twice), its history going on where the
previous size's stopped; a run out of time measuring the size it reached; the first round after
judging all reported apart from the idle rounds and rounds after one batch, which are several,
summarised by their median, minimum and maximum."""

from __future__ import annotations

import argparse

import pytest

from bench import metrics_scale


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    metrics_scale.add_arguments(parser)
    parser.add_argument("--signals", dest="metrics_signals", type=int, default=0)
    return parser.parse_args(list(argv))


def test_sizes_are_given_explicitly_increasing() -> None:
    assert _args("--scale-sizes", "1000000,5_000_000,20000000").scale_sizes == [1_000_000, 5_000_000, 20_000_000]
    assert _args().scale_sizes is None  # the default run keeps N/4, N/2, N
    for bad in ("5000,2000", "2000,2000", "500", "1e6", ""):
        with pytest.raises(SystemExit):
            _args("--scale-sizes", bad)


def test_a_grown_store_holds_each_size_and_goes_on_in_time() -> None:
    result = metrics_scale.run(
        _args(
            "--scale-sizes", "2000,74000", "--per-month", "1000", "--scale-grow", "--scale-batch", "1500",
            "--scale-rounds", "2",
        )
    )  # fmt: skip
    first, second = result["points"]
    # The signals each size's figures add: 2 batches timed late, 30 + 2 live, 2 with an outage under way
    # (it and a long one), 2 with corrections, 10 ingested.
    extra = metrics_scale.measured(2)
    assert extra == 48_002
    # … and the restart under a stream another process's 20 batches of 1,000, noted by the round
    # after the restarted process's first without folding any window again.
    streamed = metrics_scale.STREAM_BATCHES * metrics_scale.BATCH
    assert [(p["streamed_stored"], p["streamed_refolded"]) for p in (first, second)] == [(streamed, 0)] * 2
    # Each size's store holds exactly its history and the signals its figures recorded: the second
    # recorded only what brings the first's store to its size, none of it a duplicate of the first's.
    assert (first["built"], first["held_signals"]) == (2000, 2000 + extra)
    late = metrics_scale.LATE_BATCHES * metrics_scale.BATCH  # and the batches late for the month closed last
    assert (second["built"], second["held_signals"]) == (74000 - 2000 - extra - streamed - late, 74000 + extra)
    # The history went on from where the first size stopped: more windows known.
    assert second["windows_known"] > first["windows_known"]
    assert result["params"]["grow"] is True and result["params"]["build_batch"] == 1500
    assert second["store_mb"] > first["store_mb"] > 0
    names = [f["name"] for f in result["figures"]]
    assert "build, 74,000 signals" in names and "store on disk, 74,000 signals" in names
    assert "round after a restart under a stream, 74,000 signals" in names
    assert "round closing the month, 74,000 signals" in names and second["closing_windows"] >= 2
    assert "round after a batch late for the closed month, 74,000 signals" in names
    assert len(second["late_closed_cpu_ms"]) == metrics_scale.LATE_BATCHES
    # The restart's first round runs as the service runs it (the collector paused, then the heap
    # settled: a full collection at least), and says what the collector took.
    assert second["restart_gc_full"] >= 1 and 0 < second["restart_gc_s"] < second["restart_cpu_s"]
    restart = next(f for f in result["figures"] if f["name"] == "restart to first round done, 74,000 signals")
    assert "the collector" in restart["detail"]


def test_a_size_the_grown_store_already_holds_is_refused() -> None:
    # 2,000 then 12,000 signals: the first size's figures (5 rounds after a late batch, 30 + 5 after a
    # live one, 5 with an outage under way, it and a long one, 5 with corrections, 10 batches
    # ingested) leave 62,002 stored, nothing left to record.
    with pytest.raises(ValueError, match="holds 62,002"):
        metrics_scale.run(_args("--scale-sizes", "2000,12000", "--per-month", "500", "--scale-grow"))
    with pytest.raises(ValueError, match="same month"):
        metrics_scale.run(_args("--scale-sizes", "2000,64000", "--per-month", "1000000", "--scale-grow"))
    with pytest.raises(ValueError, match="scale-batch"):
        metrics_scale.run(_args("--scale-sizes", "2000", "--scale-batch", "10001"))


def test_a_history_ends_on_the_day_of_its_last_month_asked() -> None:
    # The middle of the month by default (the open window half full); the 28th, as at a month's end.
    assert metrics_scale._now(2000, 1000).isoformat() == "2026-03-15T12:00:00+00:00"
    assert metrics_scale._now(2000, 1000, 28).isoformat() == "2026-03-28T12:00:00+00:00"
    assert _args().scale_day == 15 and _args("--scale-day", "28").scale_day == 28
    for bad in ("0", "29"):
        with pytest.raises(ValueError, match="scale-day"):
            metrics_scale.run(_args("--scale-sizes", "2000", "--scale-day", bad))


def test_a_run_out_of_time_measures_the_size_reached_and_builds_no_larger() -> None:
    result = metrics_scale.run(
        _args("--scale-sizes", "3000,20000", "--per-month", "1000", "--scale-batch", "1000", "--scale-budget", "1e-6")
    )
    (point,) = result["points"]  # the larger size is not built
    # The build stopped after its first batch: the figures are of the 1,000 signals recorded.
    assert point["cut"] and point["signals"] == point["built"] == 1000
    assert point["held_signals"] == 1000 + metrics_scale.measured()
    # "now" follows the last signal recorded: the open window is that month's, part of what was recorded.
    assert 0 < point["open_signals"] < 1000
    assert result["figures"][0]["name"] == "idle round, 1,000 signals"


def test_the_rounds_timed_are_several_and_summarised() -> None:
    result = metrics_scale.run(_args("--scale-sizes", "2000", "--per-month", "1000", "--scale-rounds", "3"))
    (point,) = result["points"]
    assert result["params"]["rounds"] == 3
    # A batch recorded before each round after one batch, every one stored.
    assert point["held_signals"] == 2000 + metrics_scale.measured(3) == 2000 + 52_002
    # The first round after judging all, apart: one sample.
    assert point["first_idle_ms"] > 0 and point["first_idle_cpu_ms"] >= 0 and point["first_idle_windows"] >= 0
    for name in ("idle", "batch", "live", "under_way", "corrected"):
        samples = point[f"{name}_rounds"]
        assert len(samples) == 3
        assert all(r["ms"] > 0 and r["cpu_ms"] >= 0 and r["windows"] >= 0 for r in samples)
        for key, field in ((f"{name}_ms", "ms"), (f"{name}_cpu_ms", "cpu_ms")):
            values = sorted(r[field] for r in samples)
            assert (point[f"{key}_min"], point[key], point[f"{key}_max"]) == (values[0], values[1], values[2])
    # A round after one batch judges the open windows the batch reached.
    assert all(r["windows"] >= 1 for name in ("batch", "live") for r in point[f"{name}_rounds"])
    figures = {f["name"]: f for f in result["figures"]}
    for name in ("idle round", "first round after judging all", "round after one batch", "round after one live batch"):
        assert figures[f"{name}, 2,000 signals"]["value"] > 0
    assert figures["idle round, 2,000 signals"]["value"] == point["idle_ms"]
    assert "median of 3 rounds" in figures["round after one batch, 2,000 signals"]["detail"]
    with pytest.raises(ValueError, match="scale-rounds"):
        metrics_scale.run(_args("--scale-sizes", "2000", "--scale-rounds", "0"))


def test_an_agreement_of_several_services_takes_each_batch_from_one_in_turn() -> None:
    """`--scale-services 2`: the agreement measures e-mail and a second service, the batches of
    the history and of the timed rounds alternate between them; every one stored."""
    result = metrics_scale.run(
        _args("--scale-sizes", "4000", "--per-month", "1000", "--scale-rounds", "2", "--scale-services", "2")
    )
    (point,) = result["points"]
    assert result["params"]["services"] == 2
    assert point["held_signals"] == 4000 + metrics_scale.measured(2)
    held = point["held_by_service"]  # every batch one service's, in turn: each holds about half
    assert set(held) == {"email", "email-2"} and abs(held["email"] - held["email-2"]) <= 2 * 1000 + 2
    assert all(r["windows"] >= 1 for name in ("batch", "live") for r in point[f"{name}_rounds"])
    assert metrics_scale.service_names(2) == ["email", "email-2"]
    with pytest.raises(ValueError, match="scale-services"):
        metrics_scale.run(_args("--scale-sizes", "2000", "--scale-services", "0"))


def test_the_instant_a_long_history_has_reached() -> None:
    # 20,000,000 signals at 20,000 a month: 83 years of history, a round every 1,000,000 recorded.
    start = metrics_scale.MONTH_START
    span = metrics_scale._now(20_000_000, 20_000) - start
    assert metrics_scale._reached(start, span, 15_000_000, 20_000_000) == start + span * 0.75
    assert metrics_scale._reached(start, span, 20_000_000, 20_000_000) == start + span
