"""Injected clocks: business logic takes "now" from one of these, never from the wall."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


class FileClock:
    """The instant written in a file (RFC 3339 with an offset), for end-to-end tests and
    demos with real processes: every process reading the same file shares one fake "now",
    and rewriting the file moves it. The file is re-read when it changes; a file being
    rewritten (empty or half-written) keeps the last instant read. Refused at start when
    missing or malformed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] = (-1, -1)
        now = self._read()
        if now is None:
            raise ValueError(f"clock file {path} must hold an RFC 3339 instant with an offset")
        self._now = now

    def _read(self) -> datetime | None:
        try:
            text = self.path.read_text().strip()
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (OSError, ValueError):
            return None
        return when.astimezone(UTC) if when.tzinfo is not None else None

    def now(self) -> datetime:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError:
                return self._now
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                when = self._read()
                if when is not None:
                    self._now, self._stamp = when, stamp
            return self._now

    @staticmethod
    def write(path: Path, when: datetime) -> None:
        """Move every reader of `path` to `when` (atomically: write, then rename)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(when.isoformat())
        os.replace(tmp, path)
