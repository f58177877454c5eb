"""Prometheus /metrics of the runtime over real HTTP, gRPC, NATS and stores: RPCs by method and
status code, relay and consumer lag, events stored, published and applied, health; nothing
listens when no port is set. And a consumer applies each upstream event in that event's
correlation id, with the event as cause."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit.auth import TokenVerifier, generate_keypair, mint_token
from accord_kit.eventlog import register_event_log
from accord_kit.runtime import ServiceParts, ServiceRuntime, Upstream
from accord_kit.settings import ServiceSettings
from accord_kit.testing.counter import COUNTER_POLICY, Counters, Tallies, register_counter
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.streams import eventually

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def settings(service: str, tmp: Path, nats_url: str, token: Path, public: Path, **extra: str) -> ServiceSettings:
    p = service.upper()
    env = {
        "ACCORD_VAR_DIR": str(tmp / "var"),
        "ACCORD_NATS_URL": nats_url,
        "ACCORD_AUTH_PUBLIC_KEY_FILE": str(public),
        "ACCORD_SERVICE_TOKEN_FILE": str(token),
        f"{p}_GRPC_PORT": "0",
        f"{p}_GRACE_SECONDS": "1",
        f"{p}_RELAY_POLL_SECONDS": "0.1",
        f"{p}_SEAL_SECONDS": "0",
        **extra,
    }
    return ServiceSettings.from_env(service, env)


async def test_metrics_report_rpcs_lag_events_and_health(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    pem = private.read_bytes()
    token = tmp_path / "keys" / "service.token"
    token.write_text(mint_token(pem, subject="services", role="service"))
    verifier = TokenVerifier(public.read_bytes())
    # The counter service publishes as "agreements"; a tally service ("billing") consumes it.
    counters = Counters(make_store_env("counters"), service="agreements")
    tallies = Tallies(make_store_env("tallies"), service="billing")
    c_port, c_metrics, t_metrics = free_port(), free_port(), free_port()
    c_settings = settings(
        "agreements", tmp_path, own_nats_server.url, token, public,
        AGREEMENTS_GRPC_PORT=str(c_port), AGREEMENTS_METRICS_PORT=str(c_metrics),
    )  # fmt: skip
    t_settings = settings(
        "billing", tmp_path, own_nats_server.url, token, public,
        BILLING_METRICS_PORT=str(t_metrics), ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{c_port}",
    )  # fmt: skip
    counter_rt = ServiceRuntime(
        ServiceParts(
            settings=c_settings, policy=COUNTER_POLICY, verifier=verifier, app=counters,
            register=[register_counter(counters), register_event_log(counters)],
        )
    )  # fmt: skip
    tally_rt = ServiceRuntime(
        ServiceParts(
            settings=t_settings, policy=COUNTER_POLICY, verifier=verifier, app=tallies,
            register=[register_event_log(tallies)], upstreams=[Upstream("agreements")],
        )
    )  # fmt: skip
    await counter_rt.start()
    await tally_rt.start()
    try:
        assert counter_rt.metrics_port == c_metrics and tally_rt.metrics_port == t_metrics
        dept = (("authorization", f"Bearer {mint_token(pem, subject='d', role='department', department='it')}"),)
        auditor = (("authorization", f"Bearer {mint_token(pem, subject='a', role='auditor')}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{c_port}") as ch:
            stub = counter_pb2_grpc.CounterServiceStub(ch)
            for _ in range(3):
                await stub.Increment(
                    counter_pb2.IncrementRequest(counter_id="c1", amount=2),
                    metadata=(*dept, ("x-correlation-id", "corr-ops-1")),
                )
            try:
                await stub.Increment(counter_pb2.IncrementRequest(counter_id="c1", amount=1), metadata=auditor)
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            try:
                await stub.GetCounter(counter_pb2.GetCounterRequest(counter_id="nothing"), metadata=dept)
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
        head = counters.head_position()
        await eventually(lambda: tallies.tracked_position("agreements") == head, what="the tally caught up")

        c = scrape(c_metrics)
        rpc = "accord_rpc_duration_seconds_count"
        svc = "accord.testing.v1.CounterService"
        assert value(c, rpc, grpc_service=svc, grpc_method="Increment", grpc_code="OK") == 3
        assert value(c, rpc, grpc_service=svc, grpc_method="Increment", grpc_code="PERMISSION_DENIED") == 1
        assert value(c, rpc, grpc_service=svc, grpc_method="GetCounter", grpc_code="NOT_FOUND") == 1
        inf = value(c, "accord_rpc_duration_seconds_bucket", grpc_service=svc, grpc_method="Increment",
                    grpc_code="OK", le="+Inf")  # fmt: skip
        assert inf == 3
        assert value(c, "accord_store_head_position") == head
        assert value(c, "accord_events_stored_total") == head  # every event was stored by this process

        def relay_caught_up() -> bool:
            s = scrape(c_metrics)
            return value(s, "accord_relay_lag_events", stream="AGREEMENTS") == 0

        await eventually(relay_caught_up, what="relay lag 0")
        c = scrape(c_metrics)
        assert value(c, "accord_relay_stream_position", stream="AGREEMENTS") == head
        assert value(c, "accord_relay_published_total", stream="AGREEMENTS") == head
        assert value(c, "accord_health_serving", check="service") == 1
        assert value(c, "accord_service_ready") == 1

        t = scrape(t_metrics)
        durable = "billing-AGREEMENTS"
        assert value(t, "accord_consumer_applied_position", durable=durable) == head
        assert value(t, "accord_consumer_upstream_position", durable=durable) == head
        assert value(t, "accord_consumer_lag_events", durable=durable) == 0
        assert value(t, "accord_consumer_applied_total", durable=durable) == head
        assert value(t, "accord_consumer_halted", durable=durable) == 0
        assert value(t, "accord_health_serving", check=f"accord.consumer.{durable}") == 1
        assert value(t, "accord_relay_stream_position", stream="BILLING") is not None

        # What the tally stored while applying carries each upstream event's correlation id and
        # names it as the cause.
        upstream = {e.event_id: e for e in counters.read_events(0, 100)[0]}
        own, _ = tallies.read_events(0, 100)
        assert own, "the tally stored nothing"
        for e in own:
            assert e.causation_id in upstream, e
            assert e.correlation_id == upstream[e.causation_id].correlation_id == "corr-ops-1"
    finally:
        await tally_rt.stop()
        await counter_rt.stop()


async def test_without_a_metrics_port_nothing_is_served_or_measured(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    token = tmp_path / "keys" / "service.token"
    token.write_text(mint_token(private.read_bytes(), subject="services", role="service"))
    counters = Counters(make_store_env("counters"), service="agreements")
    s = settings("agreements", tmp_path, own_nats_server.url, token, public)
    assert s.metrics_port is None
    rt = ServiceRuntime(
        ServiceParts(
            settings=s, policy=COUNTER_POLICY, verifier=TokenVerifier(public.read_bytes()), app=counters,
            register=[register_counter(counters)],
        )
    )  # fmt: skip
    await rt.start()
    try:
        assert rt.telemetry is None and rt.metrics_port is None
        assert rt.server is not None and rt.server.interceptor is not None
        assert rt.server.interceptor.telemetry is None
    finally:
        await rt.stop()
