"""Each input the fuzz test found answering INTERNAL or UNKNOWN, by name: over a real gRPC
channel to the running suite, every one is INVALID_ARGUMENT, the message names the field,
and the service's log head is unchanged (nothing stored)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.samples import EMAIL, IT, sla_terms
from accord_kit.testing.nats import NatsServer
from tests.test_fuzz_grpc import Running, running_suite

pytestmark = pytest.mark.asyncio(loop_scope="module")

BEYOND_9999 = Timestamp(seconds=253_402_300_800)  # 10000-01-01T00:00:00Z
BEFORE_0001 = Timestamp(seconds=-62_135_596_801)
BAD_NANOS = Timestamp(seconds=1_767_225_600, nanos=-1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """One running suite for the module (each test stores nothing, which it checks)."""
    nats = NatsServer(tmp_path_factory.mktemp("nats")).start()
    try:
        async with running_suite(nats.url, tmp_path_factory.mktemp("suite")) as running:
            yield running
    finally:
        nats.stop()


def channel(suite: Running, service: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{suite.runtimes[service].port}")


async def assert_invalid(suite: Running, service: str, call: Callable[[], Awaitable[Any]], field: str) -> str:
    """The call answers INVALID_ARGUMENT naming `field` and the service stored nothing."""
    app = suite.runtimes[service].parts.app
    assert app is not None
    before = app.head_position()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call()
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.value.code()}: {details}"
    assert field in details, details
    assert app.head_position() == before
    return details


def terms_with(**term: Any) -> terms_pb2.AgreementTerms:
    terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
    for name, value in term.items():
        getattr(terms.term, name).CopyFrom(value)
    return terms


# -- instants outside 0001–9999 or with nanos out of range ---------------------------------------------


async def test_get_agreement_at_beyond_year_9999_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        request = apb.GetAgreementAtRequest(agreement_id=suite.agreement_id, at=BEYOND_9999)
        details = await assert_invalid(
            suite, "agreements", lambda: stub.GetAgreementAt(request, metadata=suite.keys.metadata("admin")), "at"
        )
        assert "0001–9999" in details


async def test_get_agreement_in_force_at_before_year_1_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        request = apb.GetAgreementRequest(agreement_id=suite.agreement_id, in_force_at=BEFORE_0001)
        md = suite.keys.metadata("admin")
        await assert_invalid(suite, "agreements", lambda: stub.GetAgreement(request, metadata=md), "in_force_at")


async def test_terminate_agreement_with_negative_nanos_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        request = apb.TerminateAgreementRequest(agreement_id=suite.agreement_id, reason="x", effective_at=BAD_NANOS)
        md = suite.keys.metadata("department", IT)
        await assert_invalid(suite, "agreements", lambda: stub.TerminateAgreement(request, metadata=md), "effective_at")


async def test_propose_amendment_beyond_year_9999_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        request = apb.ProposeAmendmentRequest(
            agreement_id=suite.agreement_id, terms=terms_with(), effective_from=BEYOND_9999, reason="x"
        )
        md = suite.keys.metadata("department", IT)
        await assert_invalid(suite, "agreements", lambda: stub.ProposeAmendment(request, metadata=md), "effective_from")


async def test_draft_and_revise_with_effective_to_beyond_year_9999_are_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        md = suite.keys.metadata("department", IT)
        terms = terms_with(effective_to=BEYOND_9999)
        draft = apb.DraftAgreementRequest(terms=terms)
        await assert_invalid(suite, "agreements", lambda: stub.DraftAgreement(draft, metadata=md), "term.effective_to")
        revise = apb.ReviseDraftRequest(agreement_id=suite.agreement_id, terms=terms)
        await assert_invalid(suite, "agreements", lambda: stub.ReviseDraft(revise, metadata=md), "term.effective_to")


async def test_price_evaluations_with_effective_to_beyond_year_9999_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "billing") as ch:
        stub = bpb_grpc.BillingServiceStub(ch)
        request = bpb.PriceEvaluationsRequest(
            agreement_id=suite.agreement_id, terms=terms_with(effective_to=BEYOND_9999)
        )
        md = suite.keys.metadata("admin")
        await assert_invalid(suite, "billing", lambda: stub.PriceEvaluations(request, metadata=md), "effective_to")


async def test_compliance_at_with_nanos_of_a_billion_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "metrics") as ch:
        stub = mpb_grpc.MetricsServiceStub(ch)
        request = mpb.ComplianceAtRequest(
            agreement_id=suite.agreement_id, at=Timestamp(seconds=1_767_225_600, nanos=1_000_000_000)
        )
        md = suite.keys.metadata("admin")
        await assert_invalid(suite, "metrics", lambda: stub.ComplianceAt(request, metadata=md), "at")


async def test_statements_at_beyond_year_9999_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "billing") as ch:
        stub = bpb_grpc.BillingServiceStub(ch)
        request = bpb.StatementsAtRequest(agreement_id=suite.agreement_id, at=BEYOND_9999)
        md = suite.keys.metadata("admin")
        await assert_invalid(suite, "billing", lambda: stub.StatementsAt(request, metadata=md), "at")


# -- positions, enums, decimals in strings, time zones ----------------------------------------------


async def test_read_events_after_position_2_to_the_63_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = events_pb2_grpc.EventLogServiceStub(ch)
        request = events_pb2.ReadEventsRequest(after_position=2**63, limit=10)
        md = suite.keys.metadata("auditor")
        await assert_invalid(suite, "agreements", lambda: stub.ReadEvents(request, metadata=md), "after_position")


async def test_list_agreements_with_an_unknown_kind_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        stub = apb_grpc.AgreementsServiceStub(ch)
        request = apb.ListAgreementsRequest(kind=999)  # type: ignore[arg-type]
        md = suite.keys.metadata("admin")
        details = await assert_invalid(suite, "agreements", lambda: stub.ListAgreements(request, metadata=md), "kind")
        assert "999" in details


async def test_get_balances_with_period_start_nan_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "billing") as ch:
        stub = bpb_grpc.BillingServiceStub(ch)
        request = bpb.GetBalancesRequest(period_start="NaN")
        md = suite.keys.metadata("admin")
        await assert_invalid(suite, "billing", lambda: stub.GetBalances(request, metadata=md), "period_start")


async def test_what_if_with_an_unknown_time_zone_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "metrics") as ch:
        stub = mpb_grpc.MetricsServiceStub(ch)
        terms = terms_with()
        terms.time_zone = "Mars/Olympus_Mons"
        request = mpb.WhatIfRequest(agreement_id=suite.agreement_id, terms=terms, periods=1)
        md = suite.keys.metadata("admin")
        await assert_invalid(suite, "metrics", lambda: stub.WhatIf(request, metadata=md), "terms.time_zone")


# -- bytes that are not a request message ------------------------------------------------------------


def raw(ch: grpc.aio.Channel, path: str) -> Any:
    return ch.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


async def test_undecodable_request_bytes_are_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        call = raw(ch, "/accord.agreements.v1.AgreementsService/GetAgreement")
        md = suite.keys.metadata("admin")
        details = await assert_invalid(suite, "agreements", lambda: call(b"\x0a\x05ab", metadata=md), "GetAgreement")
        assert "not a valid accord.agreements.v1.GetAgreementRequest message" in details


async def test_record_signals_with_an_undecodable_message_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "metrics") as ch:
        call = ch.stream_unary(
            "/accord.metrics.v1.MetricsService/RecordSignals",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )

        async def messages() -> AsyncIterator[bytes]:
            yield b"\x0a\x05ab"

        md = suite.keys.metadata("service")
        await assert_invalid(suite, "metrics", lambda: call(messages(), metadata=md), "RecordSignalsRequest")


async def test_record_signals_with_an_instant_beyond_year_9999_is_invalid_argument(suite: Running) -> None:
    async with channel(suite, "metrics") as ch:
        stub = mpb_grpc.MetricsServiceStub(ch)
        signal = spb.Signal(signal_id="late", service_id=EMAIL, outage=spb.Outage(start=BEYOND_9999, end=BEYOND_9999))

        async def messages() -> AsyncIterator[mpb.RecordSignalsRequest]:
            yield mpb.RecordSignalsRequest(signals=[signal])

        md = suite.keys.metadata("service")
        await assert_invalid(suite, "metrics", lambda: stub.RecordSignals(messages(), metadata=md), "outage.start")


async def test_a_signal_batch_with_an_instant_out_of_range_or_an_unknown_flag_is_invalid_argument(
    suite: Running,
) -> None:
    """`RecordSignalBatch` (as `RecordSignals`) checks its own requests: an instant beyond 9999 or
    a first-contact flag no value defines anywhere in its signals is refused naming it, as the
    kit's request check words it; bytes that do not decode are still refused."""
    async with channel(suite, "metrics") as ch:
        stub = mpb_grpc.MetricsServiceStub(ch)
        md = suite.keys.metadata("service")
        fine = spb.Call(entered_queue=Timestamp(seconds=1_767_225_600), customer_id="c1")
        late = spb.Call(entered_queue=fine.entered_queue, answered_at=BEYOND_9999, customer_id="c1")
        unknown = spb.Call(entered_queue=fine.entered_queue, customer_id="c1", first_contact=7)  # type: ignore[arg-type]
        for bad, field in (
            (late, "signals[1].call.answered_at: seconds 253402300800"),
            (unknown, "signals[1].call.first_contact: 7 is not a value"),
        ):
            request = mpb.RecordSignalBatchRequest(
                signals=[
                    spb.Signal(signal_id="ok", service_id=EMAIL, call=fine),
                    spb.Signal(signal_id="bad", service_id=EMAIL, call=bad),
                ]
            )
            await assert_invalid(suite, "metrics", lambda r=request: stub.RecordSignalBatch(r, metadata=md), field)  # type: ignore[misc]
        call = raw(ch, "/accord.metrics.v1.MetricsService/RecordSignalBatch")
        await assert_invalid(suite, "metrics", lambda: call(b"\x0a\x05ab", metadata=md), "RecordSignalBatchRequest")


async def test_undecodable_bytes_to_the_public_health_check_are_invalid_argument(suite: Running) -> None:
    async with channel(suite, "agreements") as ch:
        call = raw(ch, "/grpc.health.v1.Health/Check")
        details = await assert_invalid(suite, "agreements", lambda: call(b"\x0a\x02\xff\xfe"), "HealthCheckRequest")
        assert "not a valid grpc.health.v1.HealthCheckRequest message" in details
