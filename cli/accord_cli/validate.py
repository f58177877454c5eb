"""`accord validate FILE...`: terms files checked offline, without any service — against
`schemas/terms.schema.json`, then with the agreements service's own draft-time rules."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from accord_cli import termsfile
from accord_cli.core import app, fail, state
from accord_kit.clock import FileClock

VALID, INVALID, UNREADABLE = 0, 5, 2


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Terms files (YAML or JSON)")]) -> None:
    """Check terms files offline: every problem on one line, `FILE: PATH: what is wrong`.

    Exit 0 all valid, 5 some invalid, 2 some unreadable. What needs the services' records
    (registered departments, services and calendars; parent and underpinning agreements) is
    checked when the terms are drafted. "Now" (a term that has already ended is refused) is
    the instant in ACCORD_CLOCK_FILE when it is set, as for the services, else the system's."""
    now = _now()
    worst = VALID
    report: dict[str, list[str]] = {}
    for path in files:
        try:
            problems = termsfile.check(termsfile.load(path), now)
        except termsfile.UnreadableError as e:
            problems, worst = [str(e)], UNREADABLE
        else:
            if problems and worst == VALID:
                worst = INVALID
        report[str(path)] = problems
        if not state.as_json:
            for line in problems:
                print(f"{path}: {line}")
            if not problems:
                print(f"{path}: valid")
    if state.as_json:
        print(json.dumps({"files": [{"file": f, "valid": not p, "errors": p} for f, p in report.items()]}))
    raise typer.Exit(worst)


def _now() -> datetime:
    """The services' "now": ACCORD_CLOCK_FILE's instant when set (demos, end-to-end runs)."""
    path = os.environ.get("ACCORD_CLOCK_FILE", "")
    if not path:
        return datetime.now(UTC)
    try:
        return FileClock(Path(path)).now()
    except ValueError as e:
        fail(f"ACCORD_CLOCK_FILE: {e}", UNREADABLE)
