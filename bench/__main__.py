"""`python -m bench [--only NAME] [--json PATH]`: run the registered benchmarks, print a
table of their figures and the machine they ran on, and write everything as JSON
(by default to bench-results/latest.json, which git ignores).

A benchmark is a module of this package listed in BENCHMARKS. It defines:

    NAME: str                      # what --only selects, e.g. "relay"
    SUMMARY: str                   # one line for the table's heading
    def add_arguments(parser: argparse.ArgumentParser) -> None   # its own options
    def run(args: argparse.Namespace) -> dict[str, Any]

and `run` returns plain JSON-able data:

    {"figures": [{"name": str, "value": float, "unit": str, "detail": str}, ...],
     "params": {...},      # what it was run with (sizes, versions)
     "notes": [str, ...]}  # optional observations worth printing
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# Module names inside the `bench` package, in the order they run. Add new benchmarks here.
BENCHMARKS: tuple[str, ...] = (
    "relay",
    "agreements",
    "metrics",
    "metrics_scale",
    "metrics_backfill",
    "metrics_portfolio",
    "metrics_tickets",
    "metrics_tallies",
    "gateway",
    "audit",
    "reference",
    "ops",
    "cluster",
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "bench-results" / "latest.json"


def load_benchmarks() -> dict[str, ModuleType]:
    out: dict[str, ModuleType] = {}
    for module_name in BENCHMARKS:
        module = importlib.import_module(f"bench.{module_name}")
        for attr in ("NAME", "SUMMARY", "add_arguments", "run"):
            if not hasattr(module, attr):
                raise SystemExit(f"bench.{module_name} is registered but defines no {attr}")
        out[str(module.NAME)] = module
    return out


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": commit,
    }


def _format_value(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def print_table(results: dict[str, dict[str, Any]], summaries: dict[str, str]) -> None:
    rows: list[tuple[str, str, str, str, str]] = []
    for name, result in results.items():
        for fig in result.get("figures", []):
            rows.append((name, str(fig["name"]), _format_value(float(fig["value"])), str(fig["unit"]), fig["detail"]))
    headers = ("benchmark", "figure", "value", "unit", "detail")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:4])]

    def line(cells: tuple[str, str, str, str, str]) -> str:
        name, figure, value, unit, detail = cells
        padded = (name.ljust(widths[0]), figure.ljust(widths[1]), value.rjust(widths[2]), unit.ljust(widths[3]))
        return "  ".join((*padded, detail)).rstrip()

    print()
    for name in results:
        print(f"{name}: {summaries[name]}")
    print()
    print(line(headers))
    print(line(("-" * widths[0], "-" * widths[1], "-" * widths[2], "-" * widths[3], "-" * 6)))
    for row in rows:
        print(line(row))
    for name, result in results.items():
        for note in result.get("notes", []):
            print(f"note ({name}): {note}")


def main(argv: list[str] | None = None) -> int:
    benchmarks = load_benchmarks()
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run Accord's benchmarks.")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(benchmarks),
        metavar="NAME",
        help=f"run only this benchmark (repeatable); one of: {', '.join(benchmarks)}",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    for module in benchmarks.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)

    if args.list:
        for name, module in benchmarks.items():
            print(f"{name}: {module.SUMMARY}")
        return 0

    from accord_kit.logging import configure_logging

    configure_logging("warning")  # keep the kit's info/debug lines out of the figures

    selected = args.only or list(benchmarks)
    info = machine()
    print(
        f"machine: nproc {info['nproc']}, {info['cpu_model'] or 'cpu ?'}, Python {info['python']}, {info['platform']}"
    )
    started = dt.datetime.now(dt.UTC)
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for name in selected:
        print(f"\n== {name}: {benchmarks[name].SUMMARY}", flush=True)
        t0 = time.perf_counter()
        try:
            result = dict(benchmarks[name].run(args))
        except Exception as e:
            print(f"!! {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
            results[name] = {"error": f"{type(e).__name__}: {e}", "figures": []}
            continue
        result["wall_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"   done in {result['wall_seconds']} s", flush=True)
        results[name] = result

    print_table(results, {n: benchmarks[n].SUMMARY for n in results})
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": info,
        "results": results,
    }
    path: Path = args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    print(f"\nmachine: nproc {info['nproc']}, Python {info['python']}; results written to {path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
