"""What operators get: the Prometheus rules pass promtool (syntax and their unit tests); a real
Prometheus scrapes every service's /metrics (`make run`'s runner, real processes) and finds the
series the rules and the Grafana dashboard use; and a command on agreements that flows over
NATS to metrics, billing and the gateway is one OpenTelemetry trace, exported over OTLP to a
collector endpoint the test runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord_agreements.samples import sla_terms
from accord_kit.testing.devrun import start_devrun, stop_devrun, what_happened
from accord_kit.testing.nats import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "accord.json"
SERVICES = ["agreements", "metrics", "billing", "gateway"]


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert path, f"{name} is missing: install Debian's prometheus package (tools/test_deps.sh does)"
    return path


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_dashboard_is_grafana_json_over_accord_series() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs, "no queries"
    used = set(re.findall(r"\b(accord_[a-z_]+|accord:[a-z_0-9:]+)", " ".join(exprs)))
    for needed in (
        "accord_rpc_duration_seconds_bucket",
        "accord_rpc_duration_seconds_count",
        "accord_consumer_lag_events",
        "accord_relay_lag_events",
        "accord_slo_error_budget_remaining_ratio",
        "accord_slo_burn_rate",
    ):
        assert needed in used, f"the dashboard does not chart {needed}"


# -- the suite as real processes, with metrics and traces on ------------------------------------
@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector: keeps every span it is sent, with its resource's service."""

    spans: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        with self.lock:
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "?")
                for ss in rs.scope_spans:
                    self.spans.extend((service, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> list[tuple[str, Any]]:
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id == trace_id]


@dataclass
class Suite:
    var: Path
    grpc_ports: dict[str, int]
    metrics_ports: dict[str, int]
    tokens: dict[str, str]
    collector: Collector
    output: str
    proc: subprocess.Popen[str]

    def what_happened(self) -> str:
        return what_happened(self.proc, self.var)


def _eventually(check: Any, what: str, timeout: float = 60.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    var = tmp_path_factory.mktemp("ops") / "var"
    collector = Collector()
    otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    otlp_port = otlp.add_insecure_port("127.0.0.1:0")
    otlp.start()
    grpc_ports = {s: free_port() for s in SERVICES}
    metrics_ports = {s: free_port() for s in SERVICES}
    extra = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # the SDK's batch delay (ms): spans reach the collector soon
        **{f"{s.upper()}_METRICS_PORT": str(p) for s, p in metrics_ports.items()},
    }
    try:
        proc, lines = start_devrun(var, grpc_ports, free_port(), free_port(), extra=extra, timeout=120)
    except AssertionError:
        otlp.stop(0)
        raise
    raw = (var / "keys" / "dev-tokens.env").read_text().splitlines()
    tokens = {k.removeprefix("ACCORD_TOKEN_").lower(): v for k, v in (line.split("=", 1) for line in raw if line)}
    try:
        yield Suite(var, grpc_ports, metrics_ports, tokens, collector, "".join(lines), proc)
    finally:
        try:
            stop_devrun(proc, timeout=60)
        finally:
            otlp.stop(0)


def _md(token: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), *extra)


def _an_accepted_agreement(suite: Suite, *extra: tuple[str, str]) -> str:
    """Departments, the e-mail service and the sample SLA, drafted, proposed and accepted; the
    acceptance carries `extra` metadata. Returns the agreement id."""
    admin, it, fin = suite.tokens["admin"], suite.tokens["it_operations"], suite.tokens["finance"]
    with grpc.insecure_channel(f"127.0.0.1:{suite.grpc_ports['agreements']}") as ch:
        a = apb_grpc.AgreementsServiceStub(ch)
        for dept in ("it-operations", "finance"):
            try:
                a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=_md(admin))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.ALREADY_EXISTS, f"{e}\n{suite.what_happened()}"
        try:
            a.RegisterService(
                apb.RegisterServiceRequest(service_id="email", name="E-mail", provider_department_id="it-operations"),
                metadata=_md(admin),
            )
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS, f"{e}\n{suite.what_happened()}"
        terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
        aid = a.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=_md(it)).agreement.agreement_id
        a.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=_md(it))
        a.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=_md(fin, *extra))
    return str(aid)


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


@pytest.mark.slow
def test_a_real_prometheus_scrapes_every_service(suite: Suite, tmp_path: Path) -> None:
    assert all(f"http://127.0.0.1:{p}/metrics" in suite.output for p in suite.metrics_ports.values())
    aid = _an_accepted_agreement(suite)
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "accord",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{p}"], "labels": {"component": s}} for s, p in suite.metrics_ports.items()
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115 (the process owns it)
    )
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _eventually(ready, "Prometheus ready")

        def up() -> set[str]:
            return {r["metric"]["component"] for r in _query(port, 'up{job="accord"} == 1')}

        _eventually(lambda: up() == set(SERVICES), "every service's /metrics scraped")

        def series(promql: str) -> list[dict[str, Any]]:
            return _query(port, promql)

        # RPC latency and counts by method and code, from the interceptor.
        accepted = _eventually(
            lambda: series('accord_rpc_duration_seconds_count{grpc_method="AcceptAgreement", grpc_code="OK"}'),
            "the AcceptAgreement call counted",
        )
        assert accepted[0]["metric"]["component"] == "agreements" and float(accepted[0]["value"][1]) >= 1
        assert series('accord_rpc_duration_seconds_bucket{grpc_method="DraftAgreement", le="+Inf"}')
        # Relay lag per stream, consumer lag per durable; both reach zero once the events flowed.
        relays = _eventually(
            lambda: (
                {r["metric"]["stream"] for r in series("accord_relay_lag_events == 0")}
                >= {"AGREEMENTS", "METRICS", "BILLING"}
            ),
            "every relay caught up",
        )
        assert relays
        durables = {
            "agreements-BILLING", "metrics-AGREEMENTS", "billing-AGREEMENTS", "billing-METRICS",
            "gateway-AGREEMENTS", "gateway-METRICS", "gateway-BILLING",
        }  # fmt: skip
        _eventually(
            lambda: {r["metric"]["durable"] for r in series("accord_consumer_lag_events == 0")} >= durables,
            "every consumer's lag reported, and at 0",
        )
        assert {r["metric"]["durable"] for r in series("accord_consumer_pending_messages")} >= durables
        applied = series('accord_consumer_applied_total{durable="gateway-AGREEMENTS"}')
        assert applied and float(applied[0]["value"][1]) >= 1
        stored = series('accord_events_stored_total{component="agreements"}')
        assert stored and float(stored[0]["value"][1]) >= 4
        assert series('accord_relay_published_total{stream="AGREEMENTS"} > 0')
        serving = series('accord_health_serving{check="service"} == 1')
        assert {r["metric"]["component"] for r in serving} == set(SERVICES)
        # The gateway's SLO gauges: the accepted agreement's objectives, each with one status.
        statuses = _eventually(
            lambda: series(f'accord_slo_status{{agreement="{aid}"}} == 1'), "the agreement's SLO status exported"
        )
        assert {r["metric"]["component"] for r in statuses} == {"gateway"}
        assert {r["metric"]["service"] for r in statuses} == {"email"}
        assert all(r["metric"]["objective"] for r in statuses)
        assert series("accord_slo_objectives_dropped == 0")
        # The recording rules evaluate over the real series.
        _eventually(lambda: series("accord:consumer_lag_events:max"), "recording rules evaluated")
        # Every query of the dashboard is PromQL this Prometheus accepts.
        dash = json.loads(DASHBOARD.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                expr = (
                    target["expr"].replace("$__rate_interval", "1m").replace("$job", ".*").replace("$agreement", ".*")
                )
                series(expr)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


@pytest.mark.slow
def test_a_command_is_one_trace_across_services(suite: Suite) -> None:
    trace_id = os.urandom(16)
    traceparent = f"00-{trace_id.hex()}-{os.urandom(8).hex()}-01"
    aid = _an_accepted_agreement(suite, ("traceparent", traceparent))

    root = bytes.fromhex(traceparent.split("-")[2])

    def complete() -> bool:
        """Every service in the trace, and every span's parent there (spans arrive in batches)."""
        spans = suite.collector.of_trace(trace_id)
        ids = {s.span_id for _, s in spans} | {root}
        names = {(svc, s.name) for svc, s in spans}
        consumed = {(svc, "AGREEMENTS process") for svc in ("metrics", "billing", "gateway")}
        return names >= consumed and all(s.parent_span_id in ids for _, s in spans)

    # agreements serves the call and publishes; metrics, billing and the gateway consume the
    # acceptance; metrics' and billing's own events are published again in the same trace.
    _eventually(complete, "one trace across the services, whole")
    spans = suite.collector.of_trace(trace_id)
    names = {(svc, s.name) for svc, s in spans}
    assert ("agreements", "accord.agreements.v1.AgreementsService/AcceptAgreement") in names
    assert ("agreements", "AGREEMENTS publish") in names
    for consumer in ("metrics", "billing", "gateway"):
        assert (consumer, "AGREEMENTS process") in names, consumer
    # The caller's traceparent is the server span's parent.
    server = next(s for svc, s in spans if s.name.endswith("/AcceptAgreement"))
    assert server.parent_span_id == root

    # The correlation id is the trace's: the acceptance's event records it, the spans carry it.
    token = suite.tokens["auditor"]
    with grpc.insecure_channel(f"127.0.0.1:{suite.grpc_ports['agreements']}") as ch:
        log = events_pb2_grpc.EventLogServiceStub(ch)
        events = log.ReadEvents(events_pb2.ReadEventsRequest(limit=1000), metadata=_md(token)).events
    accepted = [e for e in events if e.type.endswith("AgreementAccepted") and e.aggregate_id == aid]
    assert accepted and accepted[0].correlation_id == trace_id.hex()
    for _, s in spans:
        attrs = {a.key: a.value.string_value for a in s.attributes}
        if "accord.correlation_id" in attrs:
            assert attrs["accord.correlation_id"] == trace_id.hex(), s.name
