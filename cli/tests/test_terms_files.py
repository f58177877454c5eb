"""Terms files offline: the committed schema is the generated one, every example is valid
and every metric has an example, and `accord validate` names each kind of problem on one
line with the valid values, with the exit codes scripts rely on (0 valid, 5 invalid,
2 unreadable)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from typer.testing import CliRunner

from accord.agreements.v1 import terms_pb2
from accord_cli import termsfile
from accord_cli.__main__ import app
from accord_cli.terms_schema import DECIMAL_FIELDS, build

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "terms").glob("*.yaml"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "schemas" / "terms.schema.json").read_text())
    assert committed == build(), "schemas/terms.schema.json is stale: run tools/make_terms_schema.py"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "make_terms_schema.py"), "--check"], check=False)
    assert p.returncode == 0


def test_the_decimal_fields_are_string_fields_of_the_proto() -> None:
    by_name = {d.name: d for d in terms_pb2.DESCRIPTOR.message_types_by_name.values()}
    for key in DECIMAL_FIELDS:
        message, field = key.split(".")
        assert by_name[message].fields_by_name[field].type == FieldDescriptor.TYPE_STRING, key


def test_every_example_is_valid_and_every_metric_has_one() -> None:
    assert len(EXAMPLES) >= 10
    code, output = run("validate", *map(str, EXAMPLES))
    assert code == 0, output
    metrics = {o["metric"] for path in EXAMPLES for o in termsfile.load(path).get("objectives") or []}
    declared = {v.name for v in terms_pb2.Metric.DESCRIPTOR.values if not v.name.endswith("UNSPECIFIED")}
    assert metrics == declared
    kinds = {termsfile.load(path)["kind"] for path in EXAMPLES}
    levels = {termsfile.load(path)["level"] for path in EXAMPLES}
    assert kinds == {"AGREEMENT_KIND_SLA", "AGREEMENT_KIND_OLA", "AGREEMENT_KIND_UNDERPINNING_CONTRACT"}
    assert levels == {"SCOPE_LEVEL_CORPORATE", "SCOPE_LEVEL_CUSTOMER", "SCOPE_LEVEL_SERVICE"}


def test_numbers_are_read_exactly_and_become_the_proto_s_strings() -> None:
    doc = termsfile.load_text("objectives:\n- target: 99.90\n  parameters: {threshold_seconds: 20}\n")
    message = termsfile.to_message(doc)
    assert message.objectives[0].target == "99.90"  # never 99.9000000001
    assert message.objectives[0].parameters["threshold_seconds"] == "20"


@pytest.fixture
def terms(tmp_path: Path) -> Any:
    base = termsfile.load(ROOT / "examples" / "terms" / "contact-centre.yaml")

    def write(change: Any = None, text: str | None = None, name: str = "t.yaml") -> str:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        else:
            doc = copy.deepcopy(base)
            if change is not None:
                change(doc)
            path.write_text(termsfile.dump_yaml(doc))
        return str(path)

    return write


def lines_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line]


CASES: list[tuple[str, Any, str]] = [
    # (what, change to the valid contact-centre example, the one line expected)
    (
        "unknown metric",
        lambda d: d["objectives"][1].update(metric="METRIC_AVERAGE_SPEED"),
        'objectives[1].metric: "METRIC_AVERAGE_SPEED" is not one of METRIC_AVAILABILITY_TIME, '
        "METRIC_AVAILABILITY_REQUESTS, METRIC_MTTR",
    ),
    (
        "unknown enum of a parameter",
        lambda d: d["objectives"][0]["parameters"].update(variant="ANSWERED"),
        'objectives[0].parameters.variant: "ANSWERED" is not one of ANSWERED_OVER_OFFERED, ANSWERED_OVER_ANSWERED',
    ),
    (
        "a parameter the metric does not take",
        lambda d: d["objectives"][1].update(parameters={"threshold_seconds": 20}),
        "objectives[1].parameters.threshold_seconds: is not a parameter of METRIC_ASA (valid parameters: none)",
    ),
    (
        "a required parameter missing",
        lambda d: d["objectives"][0]["parameters"].pop("threshold_seconds"),
        "objectives[0].parameters.threshold_seconds: is required",
    ),
    (
        "a parameter out of its range",
        lambda d: d["objectives"][3]["parameters"].update(repeat_window_days=400),
        "objectives[3].parameters.repeat_window_days: must be at most 366 (got 400)",
    ),
    (
        "an unknown field",
        lambda d: d["objectives"][2].update(treshold=5),
        "objectives[2].treshold: is not a field here (valid fields: budgeting, calendar_id, comparator",
    ),
    (
        "a decimal that is not one",
        lambda d: d["objectives"][2].update(target="5%"),
        'objectives[2].target: must be a decimal number (plain digits, e.g. 12.5), not "5%"',
    ),
    (
        "a wrong type",
        lambda d: d["objectives"][2].update(window="monthly"),
        "objectives[2].window: must be a mapping, not text",
    ),
    (
        "an instant without an offset",
        lambda d: d["term"].update(effective_from="2026-01-01"),
        'term.effective_from: must be an instant with an offset (e.g. 2026-01-01T00:00:00+01:00), not "2026-01-01"',
    ),
    (
        "a service rule: a percent target above 100",
        lambda d: d["objectives"][0].update(target=120),
        "objectives[0].target: must be at most 100 (got 120) (objective 'service-level')",
    ),
    (
        "a service rule: the same party twice",
        lambda d: d["parties"].update(customer_department_id="customer-service"),
        "parties: provider and customer must differ (both are 'customer-service')",
    ),
    (
        "a service rule: short abandons required by the variant",
        lambda d: d["objectives"][0]["parameters"].pop("short_abandon_seconds"),
        "objectives[0].parameters.short_abandon_seconds: is required",
    ),
    (
        "a service rule: terms that already ended",
        lambda d: d["term"].update(effective_to="2026-01-02T00:00:00Z"),
        "term.effective_to: 2026-01-02T00:00:00+00:00 is before now",
    ),
    (
        "a service rule: overlapping credit bands",
        lambda d: d["objectives"][0].update(
            credit_tiers=[{"upper": 80, "credit_percent": 5}, {"upper": 70, "credit_percent": 10}]
        ),
        "objectives[0].credit_tiers[1]: overlaps objectives[0].credit_tiers[0]",
    ),
]


@pytest.mark.parametrize(("what", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_problem_is_one_line_naming_the_path(terms: Any, what: str, change: Any, expected: str) -> None:
    path = terms(change)
    code, output = run("validate", path)
    assert code == 5, output
    lines = lines_of(output)
    assert len(lines) == 1, output
    assert lines[0].startswith(f"{path}: {expected}"), lines[0]


def test_every_problem_of_a_file_is_listed(terms: Any) -> None:
    def two(d: Any) -> None:
        d["objectives"][1]["metric"] = "METRIC_ASAP"
        d["fee"]["currency"] = "EURO"

    code, output = run("validate", terms(two))
    assert code == 5
    assert [line.split(": ")[1] for line in lines_of(output)] == ["fee.currency", "objectives[1].metric"]


def test_empty_malformed_and_missing_files_get_one_clear_line(terms: Any, tmp_path: Path) -> None:
    cases = [
        (terms(text="", name="empty.yaml"), 5, "the file is empty"),
        (terms(text="# only a comment\n", name="comment.yaml"), 5, "the file is empty"),
        (terms(text="- a\n- b\n", name="list.yaml"), 5, "must be a mapping of the AgreementTerms fields, not a list"),
        (terms(text="title: [unclosed\n", name="broken.yaml"), 2, "not valid YAML:"),
        (terms(text='{"title": ', name="broken.json"), 2, "not valid JSON:"),
        (str(tmp_path / "missing.yaml"), 2, "cannot read"),
    ]
    for path, exit_code, text in cases:
        code, output = run("validate", path)
        assert code == exit_code, (path, output)
        assert len(lines_of(output)) == 1 and text in output and "Traceback" not in output, output
    # Several files: the worst outcome decides the exit code.
    code, _ = run("validate", str(EXAMPLES[0]), cases[0][0], cases[3][0])
    assert code == 2


def test_json_terms_and_json_output(terms: Any, tmp_path: Path) -> None:
    doc = termsfile.load(ROOT / "examples" / "terms" / "work-tasks.yaml")
    path = tmp_path / "work-tasks.json"
    path.write_text(json.dumps(doc, default=str))
    bad = terms(lambda d: d.update(time_zone="Mars/Olympus"))
    code, output = run("--json", "validate", str(path), bad)
    assert code == 5
    report = json.loads(output)
    assert report["files"][0] == {"file": str(path), "valid": True, "errors": []}
    assert report["files"][1]["errors"] == ["time_zone: unknown IANA time zone 'Mars/Olympus'"]


def test_the_real_command_exits_with_the_codes(terms: Any) -> None:
    for path, expected in ((str(EXAMPLES[0]), 0), (terms(lambda d: d.pop("title")), 5)):
        p = subprocess.run(
            [sys.executable, "-m", "accord_cli", "validate", path], capture_output=True, text=True, check=False
        )
        assert p.returncode == expected, p.stdout + p.stderr


def test_validate_reads_now_from_the_clock_file_as_the_services_do(
    terms: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A demo's clock in 2025: terms ending in 2025-06 have not ended there, and have by now.
    path = terms(lambda d: d["term"].update(effective_from="2025-01-01T00:00:00Z", effective_to="2025-06-01T00:00:00Z"))
    code, output = run("validate", path)
    assert code == 5 and "is before now" in output, output
    clock = tmp_path / "clock"
    clock.write_text("2025-03-01T00:00:00+00:00")
    monkeypatch.setenv("ACCORD_CLOCK_FILE", str(clock))
    code, output = run("validate", path)
    assert code == 0, output
    clock.write_text("not an instant")
    code, output = run("validate", path)
    assert code == 2 and "ACCORD_CLOCK_FILE" in output, output
