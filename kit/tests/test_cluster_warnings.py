"""`RunningCluster.warnings`: what a failed cluster run's message says the services warned of,
read from their JSON log lines (no cluster started: the log folder as the runner leaves it)."""

from __future__ import annotations

import json
from pathlib import Path

from accord_kit.testing.cluster import RunningCluster


def _cluster_at(var: Path) -> RunningCluster:
    cluster = RunningCluster.__new__(RunningCluster)  # the log folder only, nothing started
    cluster.var = var
    return cluster


def _line(event: str, level: str, at: str, **fields: str) -> str:
    return json.dumps({**fields, "event": event, "level": level, "timestamp": f"2026-12-06T{at}.000000Z"})


def test_warnings_are_counted_per_process_and_durable_with_their_times(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    (log / "billing-2.log").write_text(
        "\n".join(
            [
                _line("service_ready", "info", "10:00:00"),
                _line("consumer_fetch_failed", "warning", "10:00:01", durable="billing-AGREEMENTS"),
                "not JSON: a line the runner or a library wrote",
                "[1, 2]",
                _line("consumer_fetch_failed", "warning", "10:00:02", durable="billing-AGREEMENTS"),
                _line("consumer_fetch_failed", "warning", "10:00:03", durable="billing-METRICS"),
                _line("consumer_halted", "error", "10:00:04", durable="billing-METRICS"),
            ]
        )
        + "\n"
    )
    (log / "metrics-1.log").write_text(_line("service_ready", "info", "10:00:00") + "\n")
    (log / "nats-1.log").write_text("[WRN] something NATS said\n")

    text = _cluster_at(tmp_path).warnings(last=2)
    lines = text.splitlines()
    assert lines[0] == (
        "billing-2: consumer_fetch_failed billing-AGREEMENTS ×2 10:00:01–10:00:02; "
        "consumer_fetch_failed billing-METRICS ×1 10:00:03–10:00:03; "
        "consumer_halted billing-METRICS ×1 10:00:04–10:00:04"
    )
    assert len(lines) == 3  # the last two lines whole; nothing of metrics-1 (no warning) or NATS
    assert json.loads(lines[1].strip())["timestamp"].startswith("2026-12-06T10:00:03")
    assert json.loads(lines[2].strip())["event"] == "consumer_halted"


def test_no_warnings_is_said(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "agreements-1.log").write_text(_line("service_ready", "info", "10:00:00") + "\n")
    assert _cluster_at(tmp_path).warnings() == "no service warned of anything"
