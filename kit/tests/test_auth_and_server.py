"""The gRPC edge over a real channel: bearer tokens, the deny-by-default policy, error
mapping, health and reflection — and that a rejected call stores nothing."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit import context as accord_context
from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier, generate_keypair, mint_token
from accord_kit.context import Principal
from accord_kit.errors import UnauthenticatedError
from accord_kit.eventlog import register_event_log
from accord_kit.grpc_server import AccordServer, build_server, checks_its_own_requests
from accord_kit.testing.counter import COUNTER_POLICY, Counters, CounterServicer, register_counter


@dataclass
class Edge:
    app: Counters
    server: AccordServer
    channel: grpc.aio.Channel
    private: bytes
    other_private: bytes

    @property
    def counters(self) -> counter_pb2_grpc.CounterServiceStub:
        return counter_pb2_grpc.CounterServiceStub(self.channel)

    def token(self, role: str, department: str = "", **kw: object) -> tuple[tuple[str, str], ...]:
        tok = mint_token(self.private, subject=f"{role}-1", role=role, department=department, **kw)  # type: ignore[arg-type]
        return (("authorization", f"Bearer {tok}"),)


async def make_edge(tmp_path: Path, store_env: dict[str, str], policy: Policy = COUNTER_POLICY) -> Edge:
    private, public = generate_keypair(tmp_path / "keys")
    other_private, _ = generate_keypair(tmp_path / "other-keys")
    app = Counters(store_env, service="counter")
    server = build_server(
        host="127.0.0.1", port=0, policy=policy, verifier=TokenVerifier(public.read_bytes()),
        register=[register_counter(app), register_event_log(app)],
    )  # fmt: skip
    await server.start()
    await server.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Edge(app, server, channel, private.read_bytes(), other_private.read_bytes())


@pytest.fixture
async def edge(tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]) -> AsyncIterator[Edge]:
    e = await make_edge(tmp_path, make_store_env("counters"))
    yield e
    await e.channel.close()
    await e.server.stop(0)
    e.app.close()


async def assert_rejected(edge: Edge, call: object, code: grpc.StatusCode, text: str) -> None:
    before = edge.app.head_position()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == code, err.value.details()
    assert text in (err.value.details() or "")
    assert edge.app.head_position() == before, "a rejected call stored something"


INC = counter_pb2.IncrementRequest(counter_id="c1", amount=5)


async def test_a_department_token_may_increment_and_the_event_records_who_did_it(edge: Edge) -> None:
    md = (*edge.token("department", "it-operations"), ("x-correlation-id", "corr-42"))
    resp = await edge.counters.Increment(INC, metadata=md)
    assert (resp.version, resp.value) == (2, 5)
    envs, _ = edge.app.read_events(0, 10)
    assert envs[-1].actor.department == "it-operations"
    assert envs[-1].actor.role == "department"
    assert envs[-1].correlation_id == "corr-42"


async def test_no_token_is_unauthenticated(edge: Edge) -> None:
    await assert_rejected(edge, edge.counters.Increment(INC), grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")


async def test_a_malformed_authorization_header_is_unauthenticated(edge: Edge) -> None:
    md = (("authorization", "Token abc"),)
    await assert_rejected(edge, edge.counters.Increment(INC, metadata=md), grpc.StatusCode.UNAUTHENTICATED, "Bearer")


async def test_a_token_signed_by_another_key_is_unauthenticated(edge: Edge) -> None:
    tok = mint_token(edge.other_private, subject="mallory", role="admin")
    md = (("authorization", f"Bearer {tok}"),)
    await assert_rejected(
        edge, edge.counters.Increment(INC, metadata=md), grpc.StatusCode.UNAUTHENTICATED, "signature is not valid"
    )


async def test_an_expired_token_is_unauthenticated(edge: Edge) -> None:
    md = edge.token("admin", now=datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(hours=1))
    await assert_rejected(edge, edge.counters.Increment(INC, metadata=md), grpc.StatusCode.UNAUTHENTICATED, "expired")


async def test_a_role_without_permission_is_permission_denied(edge: Edge) -> None:
    await assert_rejected(
        edge,
        edge.counters.Increment(INC, metadata=edge.token("auditor")),
        grpc.StatusCode.PERMISSION_DENIED,
        "role 'auditor' may not call /accord.testing.v1.CounterService/Increment",
    )
    await assert_rejected(
        edge,
        edge.counters.Increment(INC, metadata=edge.token("service")),
        grpc.StatusCode.PERMISSION_DENIED,
        "allowed: admin, department",
    )


async def test_a_method_missing_from_the_policy_is_denied_to_every_role(
    tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    policy = Policy.of(INFRA_POLICY, EVENT_LOG_POLICY, {"/accord.testing.v1.CounterService/GetCounter": {"admin"}})
    e = await make_edge(tmp_path, make_store_env("counters"), policy)
    try:
        for role in ("admin", "department", "service", "auditor"):
            await assert_rejected(
                e,
                e.counters.Increment(INC, metadata=e.token(role, "it" if role == "department" else "")),
                grpc.StatusCode.PERMISSION_DENIED,
                "denied by default",
            )
    finally:
        await e.channel.close()
        await e.server.stop(0)
        e.app.close()


async def test_invalid_arguments_and_missing_things_map_to_their_status_codes(edge: Edge) -> None:
    admin = edge.token("admin")
    await assert_rejected(
        edge,
        edge.counters.Increment(counter_pb2.IncrementRequest(counter_id="c1", amount=0), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount must not be zero",
    )
    await assert_rejected(
        edge,
        edge.counters.GetCounter(counter_pb2.GetCounterRequest(counter_id="nope"), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
        "counter 'nope' does not exist",
    )


async def test_read_events_is_for_services_auditors_and_admins(edge: Edge) -> None:
    await edge.counters.Increment(INC, metadata=edge.token("admin"))
    stub = events_pb2_grpc.EventLogServiceStub(edge.channel)
    for role in ("service", "auditor", "admin"):
        resp = await stub.ReadEvents(events_pb2.ReadEventsRequest(after_position=0), metadata=edge.token(role))
        assert [e.type for e in resp.events] == [
            "accord.testing.v1.CounterCreated",
            "accord.testing.v1.CounterIncremented",
        ]
        assert resp.head_position == resp.events[-1].position
    await assert_rejected(
        edge,
        stub.ReadEvents(events_pb2.ReadEventsRequest(), metadata=edge.token("department", "finance")),
        grpc.StatusCode.PERMISSION_DENIED,
        "may not call",
    )
    await assert_rejected(
        edge,
        stub.ReadEvents(events_pb2.ReadEventsRequest(limit=10_000), metadata=edge.token("auditor")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit must be at most 5000",
    )


async def test_health_and_reflection_need_no_token(edge: Edge) -> None:
    health = health_pb2_grpc.HealthStub(edge.channel)
    resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    resp = await health.Check(health_pb2.HealthCheckRequest(service="accord.testing.v1.CounterService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(edge.channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for r in refl.ServerReflectionInfo(requests()):
        names |= {s.name for s in r.list_services_response.service}
    assert {"accord.testing.v1.CounterService", "accord.events.v1.EventLogService", "grpc.health.v1.Health"} <= names


async def test_concurrent_calls_each_succeed_or_fail_cleanly(edge: Edge) -> None:
    md = edge.token("department", "it")
    results = await asyncio.gather(
        *(
            edge.counters.Increment(counter_pb2.IncrementRequest(counter_id=f"k{i % 4}", amount=1), metadata=md)
            for i in range(40)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) + len(failed) == 40
    assert {f.code() for f in failed} <= {grpc.StatusCode.ABORTED}
    values = sum(edge.app.get_counter(f"k{i}").value for i in range(4))
    assert values == len(ok)


def test_a_reused_token_is_verified_once_and_still_expires_on_time(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    clock = [datetime.now(UTC).timestamp()]
    verifier = TokenVerifier(public.read_bytes(), leeway_seconds=0, now=lambda: clock[0])
    token = mint_token(
        private.read_bytes(), subject="alice", role="department", department="it", ttl=timedelta(minutes=5)
    )
    header = f"Bearer {token}"

    first = verifier.verify(header)
    for _ in range(50):
        assert verifier.verify(header) == first
    assert verifier.signature_checks == 1

    clock[0] += 6 * 60  # past the token's expiry: the remembered token is refused, not served
    with pytest.raises(UnauthenticatedError, match="expired"):
        verifier.verify(header)


def test_the_token_cache_is_bounded_and_a_bad_token_is_never_remembered(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    other, _ = generate_keypair(tmp_path / "other")
    verifier = TokenVerifier(public.read_bytes(), cache_size=3)
    tokens = [mint_token(private.read_bytes(), subject=f"s{i}", role="auditor") for i in range(5)]
    for t in tokens:
        verifier.verify(f"Bearer {t}")
    verifier.verify(f"Bearer {tokens[0]}")  # evicted by the later four: checked again
    assert verifier.signature_checks == 6

    forged = mint_token(other.read_bytes(), subject="mallory", role="admin")
    for _ in range(2):
        with pytest.raises(UnauthenticatedError, match="signature"):
            verifier.verify(f"Bearer {forged}")
    assert verifier.signature_checks == 8


class _CountingHandler(grpc.GenericRpcHandler):
    """The counter service's handler, counting how often the server looks each method up."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner
        self.asked: Counter[str] = Counter()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        self.asked[handler_call_details.method] += 1
        return self.inner.service(handler_call_details)


async def test_a_method_is_looked_up_and_wrapped_once_and_each_call_gets_its_own_correlation_id(
    tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    app = Counters(make_store_env("counters"), service="counter")
    counting: list[_CountingHandler] = []

    def register(server: grpc.aio.Server) -> str:
        class Capture:  # what the generated code adds, taken to be wrapped
            def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
                counting.extend(_CountingHandler(h) for h in handlers)

            def add_registered_method_handlers(self, name: str, handlers: object) -> None:
                pass  # looked up through the generic handler only, so that every lookup is counted

        counter_pb2_grpc.add_CounterServiceServicer_to_server(CounterServicer(app), Capture())
        server.add_generic_rpc_handlers(tuple(counting))
        return "accord.testing.v1.CounterService"

    server = build_server(
        host="127.0.0.1", port=0, policy=COUNTER_POLICY, verifier=TokenVerifier(public.read_bytes()),
        register=[register],
    )  # fmt: skip
    await server.start()
    await server.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = counter_pb2_grpc.CounterServiceStub(channel)
            tok = mint_token(private.read_bytes(), subject="d", role="department", department="it")
            md = (("authorization", f"Bearer {tok}"),)
            for _ in range(5):
                await stub.Increment(INC, metadata=md)
            with pytest.raises(grpc.aio.AioRpcError) as err:  # refused calls use the same handler
                await stub.Increment(INC)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # An unknown method is not remembered: looked up (and UNIMPLEMENTED) each time.
            unknown = channel.unary_unary("/accord.testing.v1.CounterService/Nope")
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unknown(b"", metadata=md)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert counting[0].asked["/accord.testing.v1.CounterService/Increment"] == 1
        assert counting[0].asked["/accord.testing.v1.CounterService/Nope"] == 2
        envs, _ = app.read_events(0, 10)
        ids = [e.correlation_id for e in envs[-5:]]
        assert len(set(ids)) == 5, ids
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids), ids
    finally:
        await server.stop(0)
        app.close()


async def test_what_a_call_binds_to_its_log_and_request_context_ends_with_the_call(tmp_path: Path) -> None:
    """The interceptor binds each call's correlation id and sets its request context without
    restoring either after it: every call runs in a task of its own, so nothing a call binds or
    sets is seen by the next one."""
    private, public = generate_keypair(tmp_path / "keys")
    method = "/accord.testing.v1.Probe/Bound"

    async def bound(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen = structlog.contextvars.get_contextvars()
        seen["caller"] = (accord_context.current_principal() or Principal("", "")).subject
        structlog.contextvars.bind_contextvars(left_behind=request.decode())
        accord_context.enter_request(accord_context.RequestContext(principal=Principal("mallory", "admin")))
        return json.dumps(seen, sort_keys=True).encode()

    def register(server: grpc.aio.Server) -> str:
        handler = grpc.unary_unary_rpc_method_handler(bound)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("accord.testing.v1.Probe", {"Bound": handler}),)
        )
        return "accord.testing.v1.Probe"

    server = build_server(
        host="127.0.0.1", port=0, policy=Policy.of(INFRA_POLICY, {method: {"department"}}),
        verifier=TokenVerifier(public.read_bytes()), register=[register],
    )  # fmt: skip
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            tok = mint_token(private.read_bytes(), subject="d", role="department", department="it")
            call = channel.unary_unary(method)
            seen = [
                json.loads(await call(f"call {i}".encode(), metadata=(("authorization", f"Bearer {tok}"),)))
                for i in range(3)
            ]
        assert [sorted(s) for s in seen] == [["caller", "correlation_id", "rpc"]] * 3, seen
        assert {s["rpc"] for s in seen} == {method}
        assert {s["caller"] for s in seen} == {"d"}  # the token's, never the principal a call before set
        assert len({s["correlation_id"] for s in seen}) == 3
        assert "left_behind" not in structlog.contextvars.get_contextvars()
        assert accord_context.current_principal() is None
    finally:
        await server.stop(0)


def test_debug_enabled_follows_the_configured_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from accord_kit import logging as accord_logging

    monkeypatch.setattr(accord_logging, "_level", accord_logging._level)
    # Configured as it was afterwards: the worker's later tests log as before (at structlog's
    # defaults, debug lines to whatever sys.stdout is then).
    config, bound = structlog.get_config(), structlog.contextvars.get_contextvars()
    try:
        accord_logging.configure_logging("debug", "json")
        assert accord_logging.debug_enabled()
        accord_logging.get_logger("t").debug("seen")
        accord_logging.configure_logging("info", "json")
        assert not accord_logging.debug_enabled()
        accord_logging.get_logger("t").debug("not seen")
        err = capsys.readouterr().err
        assert '"seen"' in err and "not seen" not in err
    finally:
        structlog.configure(**config)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**bound)


async def test_a_method_that_checks_its_own_requests_gets_them_as_decoded_and_only_undecodable_bytes_are_refused(
    tmp_path: Path,
) -> None:
    """A method marked `checks_its_own_requests` is handed each request as decoded, a value the
    kit's check refuses included (its own check decides); the same method unmarked never sees it
    (INVALID_ARGUMENT naming the problem); bytes that do not decode are refused either way."""
    private, public = generate_keypair(tmp_path / "keys")
    seen: list[tuple[str, int]] = []

    def streamed(name: str) -> Callable[..., object]:
        async def behaviour(requests: AsyncIterator[Timestamp], context: grpc.aio.ServicerContext) -> Timestamp:
            async for r in requests:
                seen.append((name, r.seconds))
            return Timestamp(seconds=len(seen))

        return behaviour

    async def unary(request: Timestamp, context: grpc.aio.ServicerContext) -> Timestamp:
        seen.append(("own unary", request.seconds))
        return request

    kw = dict(request_deserializer=Timestamp.FromString, response_serializer=Timestamp.SerializeToString)
    handlers = {
        "Own": grpc.stream_unary_rpc_method_handler(checks_its_own_requests(streamed("own")), **kw),
        "Walked": grpc.stream_unary_rpc_method_handler(streamed("walked"), **kw),
        "OwnUnary": grpc.unary_unary_rpc_method_handler(checks_its_own_requests(unary), **kw),
    }

    def register(server: grpc.aio.Server) -> str:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("accord.testing.v1.Probe", handlers),))
        return "accord.testing.v1.Probe"

    methods = {f"/accord.testing.v1.Probe/{name}": {"department"} for name in handlers}
    server = build_server(
        host="127.0.0.1", port=0, policy=Policy.of(INFRA_POLICY, methods), verifier=TokenVerifier(public.read_bytes()),
        register=[register],
    )  # fmt: skip
    await server.start()
    beyond = Timestamp(seconds=253_402_300_800)  # 10000-01-01: outside what the kit's check accepts
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            tok = mint_token(private.read_bytes(), subject="d", role="department", department="it")
            md = (("authorization", f"Bearer {tok}"),)

            def call(name: str, stream: bool = True) -> Callable[..., object]:
                make = channel.stream_unary if stream else channel.unary_unary
                return make(f"/accord.testing.v1.Probe/{name}")  # bytes in, bytes out

            async def sending(*items: bytes) -> AsyncIterator[bytes]:
                for item in items:
                    yield item

            good = Timestamp(seconds=1).SerializeToString()
            answer = await call("Own")(sending(good, beyond.SerializeToString()), metadata=md)  # type: ignore[operator]
            assert Timestamp.FromString(answer).seconds == 2
            assert await call("OwnUnary", False)(beyond.SerializeToString(), metadata=md) == beyond.SerializeToString()  # type: ignore[operator]
            assert seen == [("own", 1), ("own", 253_402_300_800), ("own unary", 253_402_300_800)]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call("Walked")(sending(good, beyond.SerializeToString()), metadata=md)  # type: ignore[operator]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "seconds 253402300800 is outside the years 0001–9999" in str(err.value.details())
            assert seen[-1] == ("walked", 1)  # the message before it was handed on; the bad one never
            for name, stream in (("Own", True), ("OwnUnary", False), ("Walked", True)):
                request = sending(b"\xff\xff") if stream else b"\xff\xff"
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(name, stream)(request, metadata=md)  # type: ignore[operator]
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
                assert "not a valid google.protobuf.Timestamp message" in str(err.value.details()), name
        assert len(seen) == 4
    finally:
        await server.stop(0)
