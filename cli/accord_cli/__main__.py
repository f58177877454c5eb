"""The `accord` command (see accord_cli.core for the options, tokens and exit codes)."""

from __future__ import annotations

import sys

from accord_cli import audit, department, openslo, validate  # noqa: F401  (they register their commands)
from accord_cli.core import app


def main() -> int:
    try:
        app()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
