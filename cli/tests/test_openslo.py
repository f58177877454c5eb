"""OpenSLO v1 export and import against the specification's own example documents
(cli/tests/openslo_examples/, see its README): what imports, what is refused and why, and the
round trips — import → export → import gives the same objectives; export → import gives
back the same objectives of every example terms file (those with an OpenSLO meaning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from accord_cli import openslo, termsfile
from accord_cli.__main__ import app

HERE = Path(__file__).resolve().parent
SPEC = HERE / "openslo_examples"
TERMS = HERE.parents[1] / "examples" / "terms"
PARTIES = ["--provider", "it-operations", "--customer", "finance"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def docs_of(path: Path) -> list[Any]:
    return [d for d in yaml.load_all(path.read_text(), Loader=termsfile._Loader) if d is not None]


def import_files(tmp_path: Path, *files: Path, extra: tuple[str, ...] = ()) -> tuple[int, str, str, Any]:
    out = tmp_path / "imported.yaml"
    out.unlink(missing_ok=True)
    code, stdout, stderr = run("openslo", "import", *map(str, files), "--out", str(out), *PARTIES, *extra)
    return code, stdout, stderr, (termsfile.load(out) if out.exists() else None)


def export_dir(tmp_path: Path, source: Path | str, name: str = "exported") -> list[Path]:
    """The files `accord openslo export --out` wrote, in the order it names them (the objectives')."""
    out = tmp_path / name
    code, stdout, stderr = run("openslo", "export", str(source), "--out", str(out))
    assert code == 0, stdout + stderr
    return [Path(line) for line in stdout.splitlines()]


def canonical_objectives(terms: Any) -> list[dict[str, Any]]:
    """Objectives as the agreements service stores them (decimals as written, in plain notation).
    Unset budgeting reads as OCCURRENCES (accord_agreements.terms.validate); import writes it out."""
    return [{"budgeting": "BUDGETING_OCCURRENCES", **o} for o in openslo.canonical_terms(terms)["objectives"]]


def with_changes(tmp_path: Path, source: Path, change: Any) -> Path:
    docs = docs_of(source)
    change(docs)
    path = tmp_path / f"changed-{source.name}"
    path.write_text(termsfile.dump_yaml_all(docs))
    return path


def test_the_spec_examples_are_openslo_v1_by_the_schema_but_one() -> None:
    for path in sorted(SPEC.glob("*.yaml")):
        problems = [p for d in docs_of(path) for p in openslo.schema_problems(d)]
        if path.name == "readme-slo-inline-sli.yaml":  # a fragment: the spec requires budgetingMethod
            assert problems == ["spec: 'budgetingMethod' is a required property"]
        else:
            assert problems == [], path.name


def test_a_ratio_slo_with_ratio_timeslices_imports(tmp_path: Path) -> None:
    code, stdout, stderr, terms = import_files(tmp_path, SPEC / "ratio-timeslices.yaml")
    assert code == 0, stdout + stderr
    assert terms["service"] == {"service_ids": ["web-shop"]} and terms["level"] == "SCOPE_LEVEL_SERVICE"
    assert terms["objectives"] == [
        {
            "objective_id": "main-page",
            "name": "Good",
            "metric": "METRIC_AVAILABILITY_REQUESTS",  # good/total from an outside source: requests
            "comparator": "COMPARATOR_AT_LEAST",
            "target": number("99"),  # target 0.99
            "window": {"kind": "WINDOW_KIND_ROLLING", "rolling_days": 14},  # 2w, rolling
            "calendar_id": "24x7",
            "budgeting": "BUDGETING_RATIO_TIMESLICES",  # RatioTimeslices
            "slice_minutes": 1,  # timeSliceWindow 1m
        }
    ]
    assert termsfile.check(terms) == []


def number(text: str) -> Any:
    """The value a terms file holds for a number written as `text`."""
    return termsfile.load_text(f"x: {text}")["x"]


REFUSED = [
    (
        "occurences-slo.yaml",
        "SLO search-slo: spec.indicator.spec.thresholdMetric: a threshold on Any values has no Accord meaning",
    ),
    (
        "timeslices-slo.yaml",
        "SLO service-availability: spec.timeWindow[0].duration: a calendar-aligned window of 1m (m is minutes; "
        "a month is 1M) has no Accord meaning",
    ),
    (
        "treat-low-traffic-timeslices-slo.yaml",
        "SLO service-availability: spec.timeWindow[0].calendar.startTime: 2022-01-01 12:00:00 is not the start "
        "of a week: Accord's calendar windows begin at midnight on a Monday",
    ),
    ("readme-slo-inline-sli.yaml", "SLO foo-slo: spec: 'budgetingMethod' is a required property"),
]


@pytest.mark.parametrize(("name", "expected"), REFUSED, ids=[r[0] for r in REFUSED])
def test_what_has_no_accord_meaning_is_refused_in_one_line(tmp_path: Path, name: str, expected: str) -> None:
    code, stdout, stderr, terms = import_files(tmp_path, SPEC / name)
    assert code == 5 and terms is None, stdout + stderr  # nothing written
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{SPEC / name}: {expected}"), lines


def test_alerting_documents_are_skipped_with_a_note(tmp_path: Path) -> None:
    alerting = sorted(SPEC.glob("readme-[adn]*.yaml"))
    assert len(alerting) == 6
    code, stdout, stderr, terms = import_files(tmp_path, SPEC / "ratio-timeslices.yaml", *alerting)
    assert code == 0, stdout + stderr
    assert len(terms["objectives"]) == 1
    assert stderr.count("skipped") == 6 and "AlertPolicy AlertPolicy: skipped: Accord's alerts" in stderr
    # Alone, they hold no SLO.
    code, stdout, _, _ = import_files(tmp_path, *alerting)
    assert code == 5 and "no SLO among the documents" in stdout


def fixed_spec_examples(tmp_path: Path) -> list[Path]:
    """The spec's examples that import, and the refused ones with the one thing Accord refused
    changed: the week anchored at Monday midnight, the window a month (1M) rather than 1m."""

    def monday(docs: list[Any]) -> None:
        docs[0]["spec"]["timeWindow"][0]["calendar"]["startTime"] = "2022-01-03 00:00:00"

    def month(docs: list[Any]) -> None:
        window = docs[0]["spec"]["timeWindow"][0]
        window["duration"] = "1M"
        window["calendar"]["startTime"] = "2022-01-01 00:00:00"

    return [
        SPEC / "ratio-timeslices.yaml",
        with_changes(tmp_path, SPEC / "treat-low-traffic-timeslices-slo.yaml", monday),
        with_changes(tmp_path, SPEC / "timeslices-slo.yaml", month),
    ]


def test_the_fixed_timeslices_examples_import_as_documented(tmp_path: Path) -> None:
    week, month = fixed_spec_examples(tmp_path)[1:]
    _, _, _, terms = import_files(tmp_path, week)
    [o] = terms["objectives"]
    assert terms["time_zone"] == "America/New_York"
    assert (o["window"], o["budgeting"], o["target"], o["slice_target"], o["slice_minutes"]) == (
        {"kind": "WINDOW_KIND_WEEK"}, "BUDGETING_TIMESLICES", number("99.95"), number("95"), 1,
    )  # fmt: skip
    _, _, _, terms = import_files(tmp_path, month)
    assert [(o["objective_id"], o["name"], o["target"]) for o in terms["objectives"]] == [
        ("service-availability-1", "Internal objective", number("99.5")),
        ("service-availability-2", "SLA", number("99")),
    ]
    assert {o["window"]["kind"] for o in terms["objectives"]} == {"WINDOW_KIND_MONTH"}


def test_import_export_import_gives_the_same_objectives(tmp_path: Path) -> None:
    for i, source in enumerate(fixed_spec_examples(tmp_path)):
        code, stdout, stderr, first = import_files(tmp_path, source)
        assert code == 0, stdout + stderr
        first_file = tmp_path / f"first-{i}.yaml"
        first_file.write_text(termsfile.dump_yaml(first))
        exported = export_dir(tmp_path, first_file, f"exported-{i}")
        for path in exported:
            for d in docs_of(path):
                assert openslo.schema_problems(d) == []
        code, stdout, stderr, second = import_files(tmp_path, *exported)
        assert code == 0, stdout + stderr
        assert canonical_objectives(second) == canonical_objectives(first), source.name
        assert second["time_zone"] == first["time_zone"]


@pytest.mark.parametrize("example", sorted(p.name for p in TERMS.glob("*.yaml")))
def test_export_import_gives_back_the_objectives_of_every_example(tmp_path: Path, example: str) -> None:
    original = termsfile.load(TERMS / example)
    exportable = [o for o in original["objectives"] if not openslo.exportable(o)]
    skipped = [o["objective_id"] for o in original["objectives"] if openslo.exportable(o)]
    out = tmp_path / "exported"
    code, stdout, stderr = run("openslo", "export", str(TERMS / example), "--out", str(out))
    if not exportable:
        assert code == 5 and "nothing to export" in stderr
        return
    assert code == 0, stdout + stderr
    assert [line.split("'")[1] for line in stderr.splitlines()] == skipped
    exported = [Path(line) for line in stdout.splitlines()]  # the files, in the order of the objectives
    assert sorted(exported) == sorted(out.glob("*.yaml"))
    services = (original.get("service") or {}).get("service_ids") or [original["parties"]["provider_department_id"]]
    extra = (
        "--time-zone", original["time_zone"], "--service", services[0],
        "--kind", original["kind"].removeprefix("AGREEMENT_KIND_"),
    )  # fmt: skip
    code, stdout, stderr, back = import_files(tmp_path, *exported, extra=extra)
    assert code == 0, stdout + stderr
    assert canonical_objectives(back) == canonical_objectives({**original, "objectives": exportable})


def test_burn_rate_alert_policies_for_availability(tmp_path: Path) -> None:
    exported = export_dir(tmp_path, TERMS / "availability-requests.yaml")
    names = [p.stem for p in exported]
    assert names == ["requests-ok", "good-minutes", "mean-slice", "accord-ledger"]
    docs = docs_of(tmp_path / "exported" / "good-minutes.yaml")
    assert [d["kind"] for d in docs] == ["SLI", "SLO", "AlertPolicy", "AlertPolicy", "AlertPolicy", "AlertPolicy"]
    slo = docs[1]
    assert slo["spec"]["budgetingMethod"] == "Timeslices"
    assert slo["spec"]["objectives"] == [
        {"displayName": "Good 5-minute slices", "target": number("0.995"), "timeSliceTarget": number("0.95"),
         "timeSliceWindow": "5m"}
    ]  # fmt: skip
    conditions = [d["spec"]["conditions"][0]["spec"]["condition"] for d in docs[2:]]
    # docs/domain.md §3: 14.4 over 1 h and 5 min, 6 over 6 h and 30 min, 3 over 1 d and 2 h, 1 over 3 d and 6 h.
    assert [(c["threshold"], c["lookbackWindow"]) for c in conditions] == [
        (number("14.4"), "1h"), (number("6"), "6h"), (number("3"), "1d"), (number("1"), "3d"),
    ]  # fmt: skip
    assert [d["metadata"]["annotations"]["accord/short-window"] for d in docs[2:]] == ["5m", "30m", "2h", "6h"]
    assert slo["spec"]["alertPolicies"] == [{"alertPolicyRef": d["metadata"]["name"]} for d in docs[2:]]
    # A 28-day rolling window scales the pairs: 14.4 over 56 min and 4 min 40 s (written as 5m).
    rolling = docs_of(tmp_path / "exported" / "requests-ok.yaml")
    assert rolling[2]["spec"]["conditions"][0]["spec"]["condition"]["lookbackWindow"] == "56m"


def test_export_to_stdout_and_refusals(tmp_path: Path) -> None:
    code, stdout, _ = run("openslo", "export", str(TERMS / "work-tasks.yaml"))
    assert code == 0
    [sli, slo] = list(yaml.safe_load_all(stdout))
    assert sli["spec"]["thresholdMetric"]["metricSource"]["spec"]["metric"] == "METRIC_TASK_TURNAROUND"
    assert slo["spec"]["objectives"][0]["op"] == "lte" and slo["spec"]["objectives"][0]["value"] == 4320
    # Invalid terms are not exported: the validation lines, exit 5.
    bad = tmp_path / "bad.yaml"
    doc = termsfile.load(TERMS / "work-tasks.yaml")
    doc["objectives"][0]["metric"] = "METRIC_TASKS"
    bad.write_text(termsfile.dump_yaml(doc))
    code, _, stderr = run("openslo", "export", str(bad))
    assert code == 5 and 'objectives[0].metric: "METRIC_TASKS" is not one of' in stderr
    # An unreadable OpenSLO file: exit 2.
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [SLO\n")
    code, _, stderr, _ = import_files(tmp_path, broken)
    assert code == 2 and "not valid YAML" in stderr


def test_terms_that_import_but_break_accord_rules_are_refused(tmp_path: Path) -> None:
    # The same party on both sides: the terms validation's line, nothing written.
    out = tmp_path / "t.yaml"
    code, stdout, _ = run(
        "openslo", "import", str(SPEC / "ratio-timeslices.yaml"), "--out", str(out),
        "--provider", "it", "--customer", "it",
    )  # fmt: skip
    assert code == 5 and not out.exists()
    assert "parties: provider and customer must differ" in stdout


def test_annotations_must_be_json_where_json_is_expected(tmp_path: Path) -> None:
    exported = export_dir(tmp_path, TERMS / "sla-corporate.yaml")
    slo_file = next(p for p in exported if p.stem == "availability")

    def spoil(docs: list[Any]) -> None:
        docs[1]["metadata"]["annotations"]["accord/credit-tiers"] = "[{"

    code, stdout, _, _ = import_files(tmp_path, with_changes(tmp_path, slo_file, spoil))
    assert code == 5 and "metadata.annotations.accord/credit-tiers: not JSON" in stdout


def slo(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "service": "web",
        "budgetingMethod": "Occurrences",
        "timeWindow": [{"duration": "28d", "isRolling": True}],
        "indicatorRef": "requests",
        "objectives": [{"target": 0.99}],
    }
    return {"apiVersion": "openslo/v1", "kind": "SLO", "metadata": {"name": name}, "spec": {**base, **spec}}


def accord_sli(name: str, metric: str, kind: str = "thresholdMetric") -> dict[str, Any]:
    source = {"metricSource": {"type": "Accord", "spec": {"metric": metric}}}
    spec = {kind: source} if kind == "thresholdMetric" else {kind: {"good": source, "total": source}}
    return {"apiVersion": "openslo/v1", "kind": "SLI", "metadata": {"name": name}, "spec": spec}


REQUESTS_SLI = {
    "apiVersion": "openslo/v1",
    "kind": "SLI",
    "metadata": {"name": "requests"},
    "spec": {"ratioMetric": {"good": {"metricSource": {"type": "Prometheus", "spec": {"query": "ok"}}},
                             "total": {"metricSource": {"type": "Prometheus", "spec": {"query": "all"}}}}},
}  # fmt: skip
REFUSED_DOCS = [
    (
        "composite",
        [slo("c", objectives=[{"target": 0.99, "indicatorRef": "requests"}]), REQUESTS_SLI],
        "spec.objectives[0]: a composite SLO has no Accord meaning",
    ),
    (
        "raw ratio",
        [
            slo(
                "r",
                indicatorRef=None,
                indicator={
                    "metadata": {"name": "raw"},
                    "spec": {
                        "ratioMetric": {
                            "rawType": "success",
                            "raw": {"metricSource": {"type": "Prometheus", "spec": {"query": "q"}}},
                        }
                    },
                },
            )
        ],
        "spec.indicator.spec.ratioMetric.raw: a precomputed ratio has no Accord meaning",
    ),
    ("missing SLI", [slo("m", indicatorRef="nowhere")], "spec.indicatorRef: no SLI named 'nowhere'"),
    ("no window", [slo("w", timeWindow=None), REQUESTS_SLI], "spec.timeWindow: is required"),
    (
        "rolling month",
        [slo("w", timeWindow=[{"duration": "1M", "isRolling": True}]), REQUESTS_SLI],
        "spec.timeWindow[0]: a rolling window of 1M has no Accord meaning",
    ),
    (
        "slice of seconds",
        [
            slo("s", budgetingMethod="RatioTimeslices", objectives=[{"target": 0.9, "timeSliceWindow": 0.5}]),
            REQUESTS_SLI,
        ],
        "spec.objectives[0].timeSliceWindow: a time slice of 0.5 has no Accord meaning",
    ),
    (
        "timeslices on tickets",
        [
            slo(
                "t",
                budgetingMethod="Timeslices",
                indicatorRef="tickets",
                objectives=[{"target": 0.9, "op": "lte", "value": 15, "timeSliceTarget": 0.9, "timeSliceWindow": "1h"}],
            ),
            accord_sli("tickets", "METRIC_TICKET_RESPONSE"),
        ],
        "spec.budgetingMethod: Timeslices has no Accord meaning for METRIC_TICKET_RESPONSE",
    ),
    (
        "strict threshold",
        [
            slo("t", indicatorRef="tasks", objectives=[{"target": 0.9, "op": "lt", "value": 60}]),
            accord_sli("tasks", "METRIC_TASK_TURNAROUND"),
        ],
        "spec.objectives[0].op: 'lt' has no Accord meaning for METRIC_TASK_TURNAROUND",
    ),
    (
        "a per-window value as a ratio",
        [slo("x", indicatorRef="mttr"), accord_sli("mttr", "METRIC_MTTR", "ratioMetric")],
        "(SLI mttr) spec: metricSource.spec.metric 'METRIC_MTTR' is not one of",
    ),
]


@pytest.mark.parametrize(("what", "docs", "expected"), REFUSED_DOCS, ids=[r[0] for r in REFUSED_DOCS])
def test_each_refusal_names_the_field_and_the_reason(tmp_path: Path, what: str, docs: list[Any], expected: str) -> None:
    for d in docs:
        d["spec"] = {k: v for k, v in d["spec"].items() if v is not None}
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    code, stdout, stderr, terms = import_files(tmp_path, path)
    assert code == 5 and terms is None, stdout + stderr
    [line] = stdout.splitlines()
    assert expected in line, line


def test_one_time_zone_per_agreement(tmp_path: Path) -> None:
    def calendar(tz: str) -> list[dict[str, Any]]:
        return [{"duration": "1M", "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": tz}}]

    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all(
        [slo("a", timeWindow=calendar("Europe/Paris")), slo("b", timeWindow=calendar("Asia/Tokyo")), REQUESTS_SLI]
    ))  # fmt: skip
    code, stdout, _, _ = import_files(tmp_path, path)
    assert code == 5 and "different time zones (Asia/Tokyo, Europe/Paris)" in stdout
    code, stdout, stderr, terms = import_files(tmp_path, path, extra=("--time-zone", "Europe/Paris"))
    assert code == 0, stdout + stderr
    assert terms["time_zone"] == "Europe/Paris" and [o["objective_id"] for o in terms["objectives"]] == ["a", "b"]


def test_export_import_gives_the_same_terms_when_openslo_carries_them_all(tmp_path: Path) -> None:
    """Terms that hold nothing OpenSLO has no place for (no fee, support, consequences …)
    come back whole: the objectives from the documents, the rest from the options."""
    original = termsfile.load(TERMS / "availability-requests.yaml")
    del original["service"]["delivered"]
    for o in original["objectives"]:
        o["budgeting"] = o.get("budgeting") or "BUDGETING_OCCURRENCES"
    source = tmp_path / "original.yaml"
    source.write_text(termsfile.dump_yaml(original))
    exported = export_dir(tmp_path, source)
    options = (
        "--title", original["title"], "--level", "SERVICE", "--service", "payments-api",
        "--time-zone", original["time_zone"], "--effective-from", original["term"]["effective_from"],
    )  # fmt: skip
    code, stdout, stderr, back = import_files(tmp_path, *exported, extra=options)
    assert code == 0, stdout + stderr
    assert openslo.canonical_terms(back) == openslo.canonical_terms(original)


def test_objective_ids_that_differ_in_case_get_their_own_documents(tmp_path: Path) -> None:
    doc = termsfile.load(TERMS / "ola.yaml")
    second = {**doc["objectives"][0], "objective_id": "Network_Availability", "target": 99.99}
    doc["objectives"].append(second)
    source = tmp_path / "two.yaml"
    source.write_text(termsfile.dump_yaml(doc))
    exported = export_dir(tmp_path, source)
    assert [p.stem for p in exported] == ["network-availability", "network-availability-2", "accord-ledger"]
    names = [d["metadata"]["name"] for p in exported for d in docs_of(p)]
    assert len(names) == len(set(names))
    code, stdout, stderr, back = import_files(tmp_path, *exported, extra=("--time-zone", "Europe/Amsterdam"))
    assert code == 0, stdout + stderr
    assert [o["objective_id"] for o in back["objectives"]] == ["network-availability", "Network_Availability"]
