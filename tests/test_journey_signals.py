"""Across services: the agreements service registers a service; the metrics service learns
its provider from the AGREEMENTS stream (exactly once); the provider streams signals to
metrics over gRPC; the signals are stored once and published on METRICS exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.metrics.v1 import events_pb2 as metric_events
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.settings import load as load_agreements
from accord_kit.auth import mint_token
from accord_kit.nats_util import connect
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def outages(first: int, n: int) -> mpb.RecordSignalsRequest:
    return mpb.RecordSignalsRequest(
        signals=[
            spb.Signal(
                signal_id=f"o{i}",
                service_id="email",
                outage=spb.Outage(start=ts(T0 + timedelta(hours=i)), end=ts(T0 + timedelta(hours=i, minutes=3))),
            )
            for i in range(first, first + n)
        ]
    )


async def test_signals_recorded_by_the_provider_that_agreements_registered(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    token_file = tmp_path / "keys" / "service.token"
    token_file.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    common = {"ACCORD_SERVICE_TOKEN_FILE": str(token_file)}
    a_settings = load_agreements(service_environ("agreements", tmp_path / "a", own_nats_server.url, "sqlite", **common))
    async with running_service(build_agreements, a_settings, keys) as agreements:
        m_env = service_environ(
            "metrics", tmp_path / "m", own_nats_server.url, "sqlite",
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}", **common,
        )  # fmt: skip
        async with (
            running_service(build_metrics, load_metrics(m_env), keys) as metrics,
            grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
            grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
        ):
            a = apb_grpc.AgreementsServiceStub(a_ch)
            admin = keys.metadata("admin")
            for dept in ("it-operations", "finance"):
                await a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
            await a.RegisterService(
                apb.RegisterServiceRequest(service_id="email", name="E-mail", provider_department_id="it-operations"),
                metadata=admin,
            )
            m = mpb_grpc.MetricsServiceStub(m_ch)
            provider = keys.metadata("department", "it-operations")
            metrics_app = metrics.parts.app
            assert metrics_app is not None

            def learned() -> bool:
                try:
                    return metrics_app.provider_of("email") == "it-operations"  # type: ignore[attr-defined,no-any-return]
                except Exception:
                    return False

            await eventually(learned, timeout=20, what="metrics learned the provider of email")

            async def stream() -> object:
                yield outages(0, 100)
                yield outages(100, 100)
                yield outages(150, 100)  # half of it re-sent (o150–o199)

            resp = await m.RecordSignals(stream(), metadata=provider)
            assert (resp.accepted, resp.duplicates, resp.messages) == (250, 50, 3)
            # The customer may not record the provider's signals.
            customer = keys.metadata("department", "finance")
            try:
                await m.RecordSignalBatch(
                    mpb.RecordSignalBatchRequest(signals=outages(900, 1).signals), metadata=customer
                )
                raise AssertionError("the customer recorded the provider's signals")
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED

            nc = await connect(own_nats_server.url, name="check")
            try:
                relay = metrics.relay
                assert relay is not None
                await eventually(lambda: relay.stats.head_position == metrics_app.head_position())
                messages = await read_stream(nc, "METRICS")
            finally:
                await nc.close()
            assert_exactly_once_in_order(messages, [n.id for n in metrics_app.select_notifications(0, 10_000)])
            recorded = []
            for _, env in messages:
                if env.type == "accord.metrics.v1.SignalsRecorded":
                    msg = metric_events.SignalsRecorded()
                    env.payload.Unpack(msg)
                    recorded += [s.signal_id for s in msg.batch.signals]
            assert sorted(recorded) == sorted(f"o{i}" for i in range(250))
