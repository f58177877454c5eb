"""ACCORD_CLOCK_FILE: one fake "now" shared by real processes in end-to-end tests and demos,
moved by rewriting a file; refused at start when missing or malformed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accord_kit.clock import FileClock, SystemClock
from accord_kit.settings import ServiceSettings, SettingsError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_clock_reads_the_file_and_follows_each_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    FileClock.write(path, T0)
    clock = FileClock(path)
    assert clock.now() == T0
    FileClock.write(path, T0 + timedelta(days=31))
    assert clock.now() == T0 + timedelta(days=31)
    # An offset other than UTC is the same instant.
    path.write_text("2026-04-01T14:00:00+02:00")
    assert clock.now() == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def test_a_file_being_rewritten_keeps_the_last_instant(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    FileClock.write(path, T0)
    clock = FileClock(path)
    assert clock.now() == T0
    path.write_text("")  # truncated, not yet written
    assert clock.now() == T0
    path.write_text("2026-03-0")  # half written
    assert clock.now() == T0
    path.unlink()  # between writes
    assert clock.now() == T0
    FileClock.write(path, T0 + timedelta(hours=1))
    assert clock.now() == T0 + timedelta(hours=1)


@pytest.mark.parametrize("content", [None, "", "yesterday", "2026-03-01T12:00:00"])
def test_a_missing_or_malformed_file_is_refused_by_the_settings(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "clock"
    if content is not None:
        path.write_text(content)
    settings = ServiceSettings.from_env("metrics", {"ACCORD_CLOCK_FILE": str(path)})
    with pytest.raises(SettingsError, match=r"ACCORD_CLOCK_FILE: clock file .* must hold an RFC 3339 instant"):
        settings.clock()


def test_without_the_setting_the_system_clock_and_the_services_own_tick(tmp_path: Path) -> None:
    plain = ServiceSettings.from_env("billing", {})
    assert isinstance(plain.clock(), SystemClock) and plain.tick_seconds == 0
    path = tmp_path / "clock"
    FileClock.write(path, T0)
    s = ServiceSettings.from_env("billing", {"ACCORD_CLOCK_FILE": str(path), "BILLING_TICK_SECONDS": "0.5"})
    assert s.clock().now() == T0 and s.tick_seconds == 0.5
    with pytest.raises(SettingsError, match="BILLING_TICK_SECONDS must be a number"):
        ServiceSettings.from_env("billing", {"BILLING_TICK_SECONDS": "soon"})


def test_a_service_process_refuses_to_start_on_a_malformed_clock_file(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    path.write_text("not a time")
    env = {
        **os.environ,
        "ACCORD_VAR_DIR": str(tmp_path),
        "ACCORD_CLOCK_FILE": str(path),
        "AGREEMENTS_SEAL_SECONDS": "0",
        "AGREEMENTS_GRPC_PORT": "0",
    }
    r = subprocess.run([sys.executable, "-m", "accord_agreements"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "ACCORD_CLOCK_FILE" in r.stderr and "Traceback" not in r.stderr


def test_a_service_built_with_the_setting_takes_now_from_the_file(tmp_path: Path) -> None:
    from accord_agreements.bootstrap import build

    path = tmp_path / "clock"
    FileClock.write(path, T0)
    settings = ServiceSettings.from_env(
        "agreements",
        {"ACCORD_VAR_DIR": str(tmp_path), "ACCORD_CLOCK_FILE": str(path), "AGREEMENTS_TICK_SECONDS": "0.25"},
    )
    parts = build(settings)
    try:
        assert parts.app.clock.now() == T0
        FileClock.write(path, T0 + timedelta(days=1))
        assert parts.app.clock.now() == T0 + timedelta(days=1)
    finally:
        parts.app.close()
