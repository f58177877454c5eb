"""Running the installed `accord` command (`.venv/bin/accord`, beside the test's Python) as a
real process, with a clean environment: no ACCORD_* variable of the machine leaks in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ACCORD = Path(sys.executable).parent / "accord"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env["ACCORD_CONFIG"] = str(tmp_path / "no-config.toml")
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None) -> Run:
    p = subprocess.run([str(ACCORD), *args], env=env, capture_output=True, text=True, timeout=120, input=stdin, cwd=cwd)
    return Run(p.returncode, p.stdout, p.stderr)


async def arun(env: dict[str, str], *args: str, cwd: Path | None = None) -> Run:
    """In a thread: the services under test answer from the test's event loop."""
    return await asyncio.to_thread(run, env, *args, cwd=cwd)


def one_line_error(r: Run) -> str:
    """The run failed with exactly one line on stderr and no traceback; that line."""
    assert "Traceback" not in r.err, r.err
    assert len(r.error_lines) == 1, r.err
    return r.error_lines[0]
