"""Agreements commands over gRPC beside a trivial gRPC echo, in the same run.

Set-up (not timed): a nats-server with JetStream; the agreements service as its own OS
process (`python -m accord_agreements`: SQLite with its production durability in a temp
dir, keys from `accord_kit.keys`, production log level); departments it-operations and
finance and service e-mail registered as admin; and for each client its own agreement,
drafted, proposed and accepted, plus one warm-up amendment, so no two clients ever touch
the same aggregate.

Timed: N clients (default 16) in this process, each looping ProposeAmendment (as the
provider, effective in 8 days, with `expected_revision`) then AcceptAmendment (as the
customer, with `expected_revision`); one pair = two commands; one grpc.aio channel per
client (with --agreements-shared-service, again over one shared channel, on fresh
agreements). The ceiling: the same clients making the same number of calls, with a payload the
size of a ProposeAmendment request, to a bytes-in/bytes-out echo in a process of its own —
on a bare grpc.aio server ("echo") and behind the services' own `build_server` with its
auth interceptor and a Policy letting role "department" call it ("echo + auth") — with one
channel per client and with one channel shared by all clients. Echo rounds are repeated
and reported as medians. Every server runs in its own process, so the clients never take
the event loop or the GIL from a server; all the processes (and nats-server) share the
machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.errors import NotFoundError as StreamNotFoundError

from accord.agreements.v1 import agreements_pb2 as pb
from accord.agreements.v1 import agreements_pb2_grpc as pb_grpc
from accord.agreements.v1 import terms_pb2
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_kit.auth import INFRA_POLICY, Policy, TokenVerifier, mint_token
from accord_kit.keys import PRIVATE, PUBLIC, TOKEN, chain_key_files, write_keys
from accord_kit.nats_util import connect
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from accord_kit.testing.nats import NatsServer, free_port

NAME = "agreements"
SUMMARY = "agreements commands (propose/accept amendment pairs over gRPC, SQLite) beside a gRPC echo, in the same run"

REPO = Path(__file__).resolve().parent.parent
ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
ECHO_POLICY = Policy.of(INFRA_POLICY, {ECHO_METHOD: {"department"}})
STREAM = "AGREEMENTS"
REFERENCE_EVENTS = 3  # two departments and one service
SETUP_EVENTS_PER_CLIENT = 5  # drafted, proposed, accepted, and the warm-up pair
AMENDMENT_DELAY = timedelta(days=8)  # the sample terms' amendment notice is 7 days
CALL_TIMEOUT = 60.0  # seconds any one call may take before the run is abandoned
START_TIMEOUT = 60.0  # seconds a server process may take to come up
RELAY_TIMEOUT = 60.0  # seconds the relay may take after a phase to publish everything
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the services' default (AGREEMENTS_MAX_MESSAGE_BYTES)
SERVER_LOG_LEVEL = "info"  # the services' production default (ACCORD_LOG_LEVEL)
EDGE = 0.1  # "first" and "last": this share of each client's pairs, or of a phase's time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("agreements benchmark")
    group.add_argument(
        "--agreements-pairs",
        "--pairs",
        dest="agreements_pairs",
        type=int,
        default=60,
        help="timed propose/accept pairs per client (default 60; an agreement's commands get slower as its "
        "history grows, so the figures depend on this)",
    )
    group.add_argument(
        "--agreements-clients", type=int, default=16, help="concurrent clients, one agreement each (default 16)"
    )
    group.add_argument(
        "--agreements-echo-rounds",
        type=int,
        default=5,
        help="rounds of each echo variant; echo figures are medians (default 5)",
    )
    group.add_argument(
        "--agreements-postgres",
        action="store_true",
        help="the agreements service on a fresh PostgreSQL database of the suite's server (ACCORD_POSTGRES_*, "
        "dropped afterwards) instead of SQLite",
    )
    group.add_argument(
        "--agreements-shared-service",
        action="store_true",
        help="also time the commands with one channel shared by all clients, on fresh agreements (doubles the time)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    pairs: int = args.agreements_pairs
    clients: int = args.agreements_clients
    echo_rounds: int = args.agreements_echo_rounds
    if pairs < 1 or clients < 1 or echo_rounds < 1:
        raise ValueError("--agreements-pairs, --agreements-clients and --agreements-echo-rounds must be at least 1")
    postgres: bool = getattr(args, "agreements_postgres", False)
    return asyncio.run(_run(pairs, clients, echo_rounds, args.agreements_shared_service, postgres))


# -- processes -------------------------------------------------------------------------------------------


def _proc_cpu(pid: int | None) -> float | None:
    """utime + stime of a process, all its threads, in seconds (Linux only)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def supervised(nats_dir: Path) -> Iterator[tuple[NatsServer, list[Child]]]:
    """A nats-server and the child processes the caller starts into the yielded list. On the
    way out every child is checked (a server that died says so, with its log's last lines)
    and everything is stopped, last started first."""
    nats = NatsServer(nats_dir).start()
    children: list[Child] = []
    try:
        yield nats, children
        for child in children:
            child.check_alive()
    except Exception:
        for child in children:
            child.check_alive()
        raise
    finally:
        for child in reversed(children):
            child.stop()
        nats.stop()


class Child:
    """A server process of this benchmark: started, waited for, stopped in a `finally`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_file: Path, read_stdout: bool) -> None:
        self.name = name
        self.log_file = log_file
        with open(log_file, "ab") as log:
            stdout = subprocess.PIPE if read_stdout else log
            self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=stdout, stderr=log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log ends:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Accord setting, plus `extra`."""
    prefixes = ("ACCORD_", "AGREEMENTS_", "METRICS_", "BILLING_", "GATEWAY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


async def _wait_serving(child: Child, address: str, timeout: float = START_TIMEOUT) -> None:
    """Until the gRPC health check of `address` says SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            child.check_alive()
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{child.name} at {address} was not SERVING within {timeout} s:\n{child.log_tail()}")


async def _start_service(service: str, tmp: Path, nats_url: str, keys: Path, **settings: str) -> tuple[Child, str]:
    """One event-sourced service as its own process (`python -m accord_<service>`) on a free
    port, its store under tmp/var, keys from `keys`; returns once it is SERVING."""
    port = free_port()
    p = service.upper()
    defaults = {
        "ACCORD_VAR_DIR": str(tmp / "var"),
        "ACCORD_NATS_URL": nats_url,
        "ACCORD_PERSISTENCE": "sqlite",
        "ACCORD_AUTH_PUBLIC_KEY_FILE": str(keys / PUBLIC),
        "ACCORD_SERVICE_TOKEN_FILE": str(keys / TOKEN),
        "ACCORD_LOG_LEVEL": SERVER_LOG_LEVEL,
        "ACCORD_LOG_FORMAT": "json",
        f"{p}_CHAIN_KEY_FILE": str(chain_key_files(keys, service)[0]),
        f"{p}_GRPC_PORT": str(port),
        f"{p}_GRACE_SECONDS": "2",
    }
    env = _clean_env(**(defaults | settings))  # what the caller gives wins (e.g. ACCORD_PERSISTENCE)
    argv = [sys.executable, "-m", f"accord_{service}"]
    child = Child(service, argv, env, tmp / f"{service}.log", read_stdout=False)
    address = f"127.0.0.1:{port}"
    try:
        await _wait_serving(child, address)
    except BaseException:
        child.stop()
        raise
    return child, address


async def _start_agreements(tmp: Path, nats_url: str, keys: Path, postgres_db: str = "") -> tuple[Child, str]:
    # Billing is not running: the agreements service's billing consumer waits for its stream.
    settings = {"ACCORD_BILLING_ADDR": f"127.0.0.1:{free_port()}"}
    if postgres_db:
        settings |= {
            "ACCORD_PERSISTENCE": "postgres",
            "ACCORD_POSTGRES_HOST": PG_HOST,
            "ACCORD_POSTGRES_PORT": str(PG_PORT),
            "ACCORD_POSTGRES_USER": PG_USER,
            "ACCORD_POSTGRES_PASSWORD": PG_PASSWORD,
            "AGREEMENTS_POSTGRES_DBNAME": postgres_db,
        }
    return await _start_service("agreements", tmp, nats_url, keys, **settings)


def _drop_postgres(dbname: str) -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


async def _start_echo(tmp: Path, keys: Path, auth: bool) -> tuple[Child, str]:
    name = "echo-auth" if auth else "echo"
    argv = [sys.executable, "-m", "bench.agreements", "echo-server", "--public-key", str(keys / PUBLIC)]
    if auth:
        argv.append("--auth")
    child = Child(name, argv, _clean_env(), tmp / f"{name}.log", read_stdout=True)  # it prints its port
    try:
        assert child.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.proc.stdout.readline), timeout=START_TIMEOUT)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"{name} did not report its port (got {line!r}):\n{child.log_tail()}")
        address = f"127.0.0.1:{int(line.split()[1])}"
        await _wait_serving(child, address)
    except BaseException:
        child.stop()
        raise
    return child, address


def _log_summary(log_file: Path) -> dict[str, int]:
    """How many lines of each (level, event) a server logged at warning or above."""
    counts: Counter[str] = Counter()
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            counts["(not json)"] += 1
            continue
        if isinstance(entry, dict) and entry.get("level") not in ("debug", "info"):
            counts[f"{entry.get('level')}: {entry.get('event')}"] += 1
    return dict(counts)


# -- the echo server (runs as `python -m bench.agreements echo-server [--auth]`) --------------------------


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _register_echo(server: grpc.aio.Server) -> str:
    handler = grpc.unary_unary_rpc_method_handler(_echo)  # no (de)serialisers: bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": handler}),))
    return ECHO_SERVICE


async def _serve_echo(auth: bool, public_key: Path) -> int:
    from grpc_health.v1 import health

    from accord_kit.grpc_server import build_server
    from accord_kit.logging import configure_logging

    configure_logging(SERVER_LOG_LEVEL, "json", service="bench-echo")  # as the service: the interceptor logs
    server: grpc.aio.Server
    if auth:
        built = build_server(
            host="127.0.0.1",
            port=0,
            policy=ECHO_POLICY,
            verifier=TokenVerifier(public_key.read_bytes()),
            register=[_register_echo],
            max_message_bytes=MAX_MESSAGE_BYTES,
        )
        server, port = built.server, built.port
        await server.start()
        await built.set_serving(True)
    else:  # the same server options, no interceptor
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        _register_echo(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {port}", flush=True)
    await stop.wait()
    await server.stop(1)
    return 0


def _echo_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agreements", description="the agreements benchmark's echo")
    parser.add_argument("mode", choices=["echo-server"])
    parser.add_argument("--auth", action="store_true", help="behind accord_kit.grpc_server.build_server")
    parser.add_argument("--public-key", type=Path, required=True, help="verifies the bearer tokens (with --auth)")
    args = parser.parse_args(argv)
    return asyncio.run(_serve_echo(args.auth, args.public_key))


# -- measuring ---------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One timed phase: wall time, every call's latency by kind, the CPU of each process."""

    key: str
    seconds: float
    latencies: dict[str, list[list[float]]]  # kind → per client, in the order it made them (seconds)
    bench_cpu: float  # this process (the clients), seconds
    server_cpu: float | None  # the server process under test
    nats_cpu: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(len(c) for per_client in self.latencies.values() for c in per_client)

    def flat(self, kind: str) -> list[float]:
        return [x for c in self.latencies[kind] for x in c]

    def edge(self, kind: str, last: bool) -> list[float]:
        """Latencies of each client's first (or last) EDGE share of its calls."""
        out: list[float] = []
        for c in self.latencies[kind]:
            k = max(1, round(len(c) * EDGE))
            out += c[-k:] if last else c[:k]
        return out


Began = tuple[float, float, float | None, float | None]


class Meter:
    """Wall time, this process's CPU, and the CPU of the server under test and of nats-server."""

    def __init__(self, server_pid: int, nats_pid: int | None) -> None:
        self.server_pid, self.nats_pid = server_pid, nats_pid

    def start(self) -> Began:
        return time.perf_counter(), time.process_time(), _proc_cpu(self.server_pid), _proc_cpu(self.nats_pid)

    def stop(self, began: Began) -> Began:
        wall, cpu, server, nats = began
        now_server, now_nats = _proc_cpu(self.server_pid), _proc_cpu(self.nats_pid)
        return (
            time.perf_counter() - wall,
            time.process_time() - cpu,
            None if server is None or now_server is None else now_server - server,
            None if nats is None or now_nats is None else now_nats - nats,
        )


def _channels(address: str, clients: int, shared: bool) -> list[grpc.aio.Channel]:
    if shared:
        return [grpc.aio.insecure_channel(address)] * clients
    return [grpc.aio.insecure_channel(address) for _ in range(clients)]


async def _ready(channels: list[grpc.aio.Channel]) -> None:
    for ch in {id(c): c for c in channels}.values():
        await asyncio.wait_for(ch.channel_ready(), timeout=START_TIMEOUT)


async def _close(channels: list[grpc.aio.Channel]) -> None:
    for ch in {id(c): c for c in channels}.values():
        await ch.close()


class Progress:
    """Commands completed and the server's CPU, sampled through a phase, to compare its start
    with its end."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.done = 0
        self.samples: list[tuple[float, int, float | None]] = []  # (perf_counter, commands done, server CPU)

    async def run(self, stop: asyncio.Event, every: float = 0.25) -> None:
        while True:
            self.samples.append((time.perf_counter(), self.done, _proc_cpu(self.server_pid)))
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass

    def window(self, last: bool) -> tuple[float, float | None]:
        """Commands/s and server CPU seconds per command over the first (or last) EDGE share
        of the phase's wall time."""
        t0, t_end = self.samples[0][0], self.samples[-1][0]
        span = (t_end - t0) * EDGE
        if last:
            a = max((s for s in self.samples if s[0] <= t_end - span), key=lambda s: s[0])
            b = self.samples[-1]
        else:
            a = self.samples[0]
            b = min((s for s in self.samples if s[0] >= t0 + span), key=lambda s: s[0])
        commands = b[1] - a[1]
        rate = commands / (b[0] - a[0]) if b[0] > a[0] else 0.0
        cpu = None if a[2] is None or b[2] is None or commands == 0 else (b[2] - a[2]) / commands
        return rate, cpu


async def _timed(
    key: str, meter: Meter, clients: int, body: Callable[[int], Awaitable[dict[str, list[float]]]]
) -> Phase:
    began = meter.start()
    per_client = await asyncio.gather(*(body(i) for i in range(clients)))
    seconds, bench_cpu, server_cpu, nats_cpu = meter.stop(began)
    latencies: dict[str, list[list[float]]] = {}
    for got in per_client:
        for kind, values in got.items():
            latencies.setdefault(kind, []).append(values)
    return Phase(key, seconds, latencies, bench_cpu, server_cpu, nats_cpu)


# -- the agreements service: set-up and the timed loop -----------------------------------------------------


def _terms_pb(terms: dict[str, Any]) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(terms, terms_pb2.AgreementTerms())


def _stamp(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


Metadata = tuple[tuple[str, str], ...]


class Tokens:
    def __init__(self, keys: Path) -> None:
        self._private = (keys / PRIVATE).read_bytes()

    def md(self, role: str, department: str = "") -> Metadata:
        subject = f"bench-{department or role}"
        token = mint_token(self._private, subject=subject, role=role, department=department, ttl=timedelta(hours=2))
        return (("authorization", f"Bearer {token}"),)


@dataclass
class Party:
    """One client's agreement and what it needs to amend it."""

    agreement_id: str
    revision: int
    version: int
    provider: Metadata
    customer: Metadata
    terms: tuple[terms_pb2.AgreementTerms, terms_pb2.AgreementTerms]  # alternated: every amendment changes a target
    response_bytes: list[tuple[int, int]] = field(default_factory=list)  # (propose, accept) of each pair


async def _register_reference(stub: pb_grpc.AgreementsServiceStub, tokens: Tokens) -> None:
    admin = tokens.md("admin")
    for dept in (IT, FINANCE):
        await stub.RegisterDepartment(pb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
    await stub.RegisterService(
        pb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=admin
    )


def _propose_request(party: Party, i: int) -> pb.ProposeAmendmentRequest:
    return pb.ProposeAmendmentRequest(
        agreement_id=party.agreement_id,
        terms=party.terms[i % 2],
        effective_from=_stamp(datetime.now(UTC) + AMENDMENT_DELAY),
        reason="benchmark amendment",
        expected_revision=party.revision,
    )


async def _pair(stub: pb_grpc.AgreementsServiceStub, party: Party, i: int) -> tuple[float, float]:
    """One propose/accept pair on the party's agreement; returns the two calls' latencies."""
    request = _propose_request(party, i)
    t0 = time.perf_counter()
    proposed = await stub.ProposeAmendment(request, metadata=party.provider, timeout=CALL_TIMEOUT)
    t1 = time.perf_counter()
    accept = pb.AcceptAmendmentRequest(
        agreement_id=party.agreement_id,
        amendment_id=proposed.amendment_id,
        expected_revision=proposed.agreement.revision,
    )
    t2 = time.perf_counter()
    accepted = await stub.AcceptAmendment(accept, metadata=party.customer, timeout=CALL_TIMEOUT)
    t3 = time.perf_counter()
    got = accepted.agreement
    if got.version != party.version + 1 or got.revision != party.revision + 2 or got.HasField("pending_amendment"):
        raise RuntimeError(
            f"agreement {party.agreement_id}: after a pair expected version {party.version + 1}, revision "
            f"{party.revision + 2}, nothing pending; got {got.version}, {got.revision}, "
            f"pending {got.HasField('pending_amendment')}"
        )
    party.version, party.revision = got.version, got.revision
    party.response_bytes.append((proposed.ByteSize(), accepted.ByteSize()))
    return t1 - t0, t3 - t2


async def _set_up_parties(stub: pb_grpc.AgreementsServiceStub, tokens: Tokens, clients: int) -> list[Party]:
    """For each client its own agreement, drafted, proposed and accepted, then one warm-up pair."""
    provider, customer = tokens.md("department", IT), tokens.md("department", FINANCE)
    base = sla_terms()
    variants = (
        _terms_pb(with_target(base, "service-level", "81")),
        _terms_pb(with_target(base, "service-level", "82")),
    )

    async def one() -> Party:
        d = await stub.DraftAgreement(pb.DraftAgreementRequest(terms=_terms_pb(base)), metadata=provider)
        aid = d.agreement.agreement_id
        await stub.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid), metadata=provider)
        a = await stub.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=aid), metadata=customer)
        party = Party(aid, a.agreement.revision, a.agreement.version, provider, customer, variants)
        await _pair(stub, party, 0)  # warm-up, not timed
        return party

    parties = list(await asyncio.gather(*(one() for _ in range(clients))))
    for p in parties:
        p.response_bytes.clear()
    return parties


async def _service_phase(
    key: str, address: str, nats_url: str, tokens: Tokens, meter: Meter, clients: int, pairs: int, shared: bool
) -> Phase:
    channels = _channels(address, clients, shared)
    try:
        await _ready(channels)
        stubs = [pb_grpc.AgreementsServiceStub(ch) for ch in channels]
        parties = await _set_up_parties(stubs[0], tokens, clients)
        start_versions = [p.version for p in parties]
        request_bytes = _propose_request(parties[0], 0).ByteSize()

        progress = Progress(meter.server_pid)

        async def body(i: int) -> dict[str, list[float]]:
            propose: list[float] = []
            accept: list[float] = []
            for n in range(pairs):
                p, a = await _pair(stubs[i], parties[i], n + 1)
                propose.append(p)
                accept.append(a)
                progress.done += 2
            return {"propose": propose, "accept": accept}

        stop = asyncio.Event()
        sampler = asyncio.create_task(progress.run(stop))
        try:
            phase = await _timed(key, meter, clients, body)
        finally:
            stop.set()
            await sampler
        published_at_end = await _stream_messages(nats_url)
        # Read every agreement back: each pair of each client made exactly one version.
        auditor = tokens.md("auditor")
        for party, start in zip(parties, start_versions, strict=True):
            got = (
                await stubs[0].GetAgreement(pb.GetAgreementRequest(agreement_id=party.agreement_id), metadata=auditor)
            ).agreement
            if got.version != start + pairs or len(got.versions) != got.version or got.revision != party.revision:
                raise RuntimeError(
                    f"agreement {party.agreement_id}: version {got.version} ({len(got.versions)} listed), revision "
                    f"{got.revision}; expected version {start + pairs}, revision {party.revision}"
                )
        sizes = parties[0].response_bytes
        phase.extra.update(
            propose_request_bytes=request_bytes,
            response_bytes_first={"propose": sizes[0][0], "accept": sizes[0][1]},
            response_bytes_last={"propose": sizes[-1][0], "accept": sizes[-1][1]},
            versions_at_start=start_versions[0],
            versions_at_end=parties[0].version,
            published_at_end=published_at_end,
            first_window=progress.window(last=False),
            last_window=progress.window(last=True),
        )
        return phase
    finally:
        await _close(channels)


async def _stream_messages(nats_url: str) -> int:
    nc = await connect(nats_url, name="bench-check")
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.messages)
    except StreamNotFoundError:
        return 0
    finally:
        await nc.close()


async def _relay_check(nats_url: str, expected: int, published_at_end: int) -> tuple[int, float]:
    """How many events the relay had still to publish when a phase ended, and how long it
    took from the check on to publish them; raises unless the stream ends up with exactly
    `expected`."""
    lag = expected - published_at_end
    t0 = time.perf_counter()
    while True:
        got = await _stream_messages(nats_url)
        if got == expected:
            return lag, time.perf_counter() - t0
        if got > expected or time.perf_counter() - t0 > RELAY_TIMEOUT:
            raise RuntimeError(f"stream {STREAM} holds {got} events, the store {expected}")
        await asyncio.sleep(0.1)


# -- the echo: the same clients, the same number of calls -------------------------------------------------


async def _echo_phase(
    key: str,
    address: str,
    meter: Meter,
    clients: int,
    calls: int,
    payload: bytes,
    metadata: Metadata | None,
    shared: bool,
) -> Phase:
    channels = _channels(address, clients, shared)
    try:
        await _ready(channels)
        methods = [ch.unary_unary(ECHO_METHOD) for ch in channels]  # no (de)serialisers: bytes in, bytes out
        await asyncio.gather(*(m(payload, metadata=metadata, timeout=CALL_TIMEOUT) for m in methods))  # warm-up

        async def body(i: int) -> dict[str, list[float]]:
            out: list[float] = []
            call = methods[i]
            for _ in range(calls):
                t0 = time.perf_counter()
                got = await call(payload, metadata=metadata, timeout=CALL_TIMEOUT)
                out.append(time.perf_counter() - t0)
                if got != payload:
                    raise RuntimeError(f"echo returned {len(got)} other bytes for {len(payload)}")
            return {"echo": out}

        return await _timed(key, meter, clients, body)
    finally:
        await _close(channels)


@dataclass(frozen=True)
class EchoVariant:
    key: str
    auth: bool
    shared: bool


ECHO_VARIANTS = (
    EchoVariant("echo", auth=False, shared=False),
    EchoVariant("echo + auth", auth=True, shared=False),
    EchoVariant("echo, shared channel", auth=False, shared=True),
    EchoVariant("echo + auth, shared channel", auth=True, shared=True),
)


# -- the run ------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _median_phase(phases: list[Phase]) -> Phase:
    return sorted(phases, key=lambda p: p.seconds)[len(phases) // 2]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _fsync_ms(directory: Path, rounds: int = 50) -> float:
    """Median ms to append 4 KiB to a file and fdatasync it, in the store's directory: about
    what each commit of SQLite in WAL mode with synchronous=FULL waits for the disk."""
    path = directory / "fsync-probe"
    samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * 4096
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return statistics.median(samples) * 1000


def _cpu(phase: Phase) -> str:
    parts = [f"clients {phase.bench_cpu / phase.seconds:.0%}"]
    if phase.server_cpu is not None:
        parts.append(f"server {phase.server_cpu / phase.seconds:.0%}")
    if phase.nats_cpu is not None:
        parts.append(f"nats {phase.nats_cpu / phase.seconds:.0%}")
    return "CPU " + ", ".join(parts)


def _server_us(phase: Phase) -> float | None:
    return None if phase.server_cpu is None else phase.server_cpu / phase.calls * 1e6


async def _run(
    pairs: int, clients: int, echo_rounds: int, shared_service: bool, postgres: bool = False
) -> dict[str, Any]:
    postgres_db = f"accord_bench_agreements_{os.getpid()}" if postgres else ""
    try:
        return await _run_on(pairs, clients, echo_rounds, shared_service, postgres_db)
    finally:
        if postgres_db:
            _drop_postgres(postgres_db)


async def _run_on(pairs: int, clients: int, echo_rounds: int, shared_service: bool, postgres_db: str) -> dict[str, Any]:
    load_before = _loadavg()
    service_phases: list[Phase] = []
    echo_phases: dict[str, list[Phase]] = {v.key: [] for v in ECHO_VARIANTS}
    relay: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="accord-bench-agreements-") as tmp_name:
        tmp = Path(tmp_name)
        keys = tmp / "keys"
        write_keys(keys)
        tokens = Tokens(keys)
        (tmp / "var").mkdir()
        fsync_ms = _fsync_ms(tmp / "var")
        with supervised(tmp / "nats") as (nats, children):
            nats_pid = nats.proc.pid if nats.proc is not None else None
            service, address = await _start_agreements(tmp, nats.url, keys, postgres_db)
            children.append(service)
            async with grpc.aio.insecure_channel(address) as channel:
                await _register_reference(pb_grpc.AgreementsServiceStub(channel), tokens)
            echo, echo_address = await _start_echo(tmp, keys, auth=False)
            children.append(echo)
            echo_auth, echo_auth_address = await _start_echo(tmp, keys, auth=True)
            children.append(echo_auth)
            up = f"agreements {address}, echo {echo_address}, echo + auth {echo_auth_address}"
            print(f"   servers up: {up}", flush=True)

            stored = REFERENCE_EVENTS
            for shared in [False, True] if shared_service else [False]:
                key = "commands, shared channel" if shared else "commands"
                meter = Meter(service.pid, nats_pid)
                phase = await _service_phase(key, address, nats.url, tokens, meter, clients, pairs, shared)
                stored += clients * (SETUP_EVENTS_PER_CLIENT + 2 * pairs)
                lag, catch_up = await _relay_check(nats.url, stored, int(phase.extra["published_at_end"]))
                relay.append({"lag_events": lag, "catch_up_seconds": round(catch_up, 3)})
                service_phases.append(phase)
                print(
                    f"   {key}: {phase.calls / phase.seconds:,.1f} commands/s over {phase.seconds:.1f} s "
                    f"({_cpu(phase)}); relay {lag} events behind at the end",
                    flush=True,
                )

            payload = os.urandom(int(service_phases[0].extra["propose_request_bytes"]))
            department = tokens.md("department", IT)
            servers = {False: (echo, echo_address, None), True: (echo_auth, echo_auth_address, department)}
            for r in range(echo_rounds):
                line = []
                for v in ECHO_VARIANTS:
                    child, addr, md = servers[v.auth]
                    e = await _echo_phase(
                        v.key, addr, Meter(child.pid, nats_pid), clients, 2 * pairs, payload, md, v.shared
                    )
                    echo_phases[v.key].append(e)
                    line.append(f"{v.key} {e.calls / e.seconds:,.0f}/s")
                print(f"   echo round {r + 1}/{echo_rounds}: " + ", ".join(line), flush=True)
        logs = {c.name: _log_summary(c.log_file) for c in children}
    return _report(
        service_phases,
        {k: _median_phase(v) for k, v in echo_phases.items()},
        echo_phases,
        relay=relay,
        logs=logs,
        pairs=pairs,
        clients=clients,
        echo_rounds=echo_rounds,
        fsync_ms=fsync_ms,
        load_before=load_before,
    )


def _window(ph: Phase, last: bool) -> str:
    rate, cpu = ph.extra["last_window" if last else "first_window"]
    server = "" if cpu is None else f" at {cpu * 1000:.1f} ms server CPU each"
    return f"{'last' if last else 'first'} {EDGE:.0%} of the time {rate:,.0f}/s{server}"


def _command_figures(ph: Phase, relay: dict[str, float]) -> list[dict[str, Any]]:
    rate = ph.calls / ph.seconds
    server = _server_us(ph)
    per_call = f"server {server / 1000:.1f} ms CPU/command, " if server is not None else ""
    figures: list[dict[str, Any]] = [
        {
            "name": ph.key,
            "value": rate,
            "unit": "cmds/s",
            "detail": f"{ph.calls:,} commands in {ph.seconds:.2f} s; {_window(ph, last=False)}, "
            f"{_window(ph, last=True)}; {_cpu(ph)}; {per_call}clients {ph.bench_cpu / ph.calls * 1e6:.0f} µs "
            f"CPU/command; relay {relay['lag_events']:.0f} events behind at the end",
        }
    ]
    suffix = ph.key.removeprefix("commands")  # "" or ", shared channel"
    figures.append(
        {"name": "pairs" + suffix, "value": rate / 2, "unit": "pairs/s", "detail": "propose + accept: 2 commands each"}
    )
    for kind in ("propose", "accept"):
        v = ph.flat(kind)
        first, last = ph.edge(kind, last=False), ph.edge(kind, last=True)
        figures.append(
            {
                "name": f"{kind} p50{suffix}",
                "value": _pct(v, 0.5) * 1000,
                "unit": "ms",
                "detail": f"mean {_ms(statistics.fmean(v))} ms, max {_ms(max(v))} ms; p50 over each client's first "
                f"{EDGE:.0%} of pairs {_ms(_pct(first, 0.5))} ms, last {EDGE:.0%} {_ms(_pct(last, 0.5))} ms",
            }
        )
        figures.append({"name": f"{kind} p99{suffix}", "value": _pct(v, 0.99) * 1000, "unit": "ms", "detail": ""})
    return figures


def _echo_figure(ph: Phase, rounds: list[Phase]) -> dict[str, Any]:
    v = ph.flat("echo")
    server = _server_us(ph)
    per_call = f"server {server:.0f} µs CPU/call, " if server is not None else ""
    return {
        "name": ph.key,
        "value": ph.calls / ph.seconds,
        "unit": "calls/s",
        "detail": f"p50 {_ms(_pct(v, 0.5))} ms, p99 {_ms(_pct(v, 0.99))} ms; median of {len(rounds)} rounds "
        f"({', '.join(f'{p.calls / p.seconds:,.0f}' for p in rounds)}/s) of {ph.calls:,} calls; {_cpu(ph)}; "
        f"{per_call}clients {ph.bench_cpu / ph.calls * 1e6:.0f} µs CPU/call",
    }


def _report(
    service_phases: list[Phase],
    echo: dict[str, Phase],
    echo_rounds_phases: dict[str, list[Phase]],
    *,
    relay: list[dict[str, float]],
    logs: dict[str, dict[str, int]],
    pairs: int,
    clients: int,
    echo_rounds: int,
    fsync_ms: float,
    load_before: str,
) -> dict[str, Any]:
    main = service_phases[0]
    cmd_rate = main.calls / main.seconds
    plain, auth = echo["echo"], echo["echo + auth"]
    plain_rate, auth_rate = plain.calls / plain.seconds, auth.calls / auth.seconds
    figures = _command_figures(main, relay[0])
    figures += [_echo_figure(echo[v.key], echo_rounds_phases[v.key]) for v in ECHO_VARIANTS]
    figures += [
        {
            "name": "ratio commands/echo",
            "value": cmd_rate / plain_rate,
            "unit": "×",
            "detail": "agreements commands/s ÷ echo calls/s (one channel per client in both)",
        },
        {
            "name": "ratio commands/echo+auth",
            "value": cmd_rate / auth_rate,
            "unit": "×",
            "detail": "÷ the echo behind the services' own server and auth interceptor",
        },
        {
            "name": "ratio echo+auth/echo",
            "value": auth_rate / plain_rate,
            "unit": "×",
            "detail": "what build_server's interceptor (token check, policy, context, logging) leaves of a bare echo",
        },
        {
            "name": "fsync",
            "value": fsync_ms,
            "unit": "ms",
            "detail": "median append 4 KiB + fdatasync in the store's directory: what one durable commit waits for",
        },
    ]
    for ph, rl in zip(service_phases[1:], relay[1:], strict=True):
        figures += _command_figures(ph, rl)

    notes: list[str] = []
    n_cpu = _usable_cpus()
    notes.append(
        f"processes: the {clients} clients share one asyncio loop in this process; the agreements service, the echo "
        f"and the echo + auth each run in a process of their own, as does nats-server; all share {n_cpu} CPUs. "
        f"During the commands: {_cpu(main)} of one CPU each."
    )
    s_us, p_us, a_us = _server_us(main), _server_us(plain), _server_us(auth)
    if s_us is not None and p_us is not None and a_us is not None:
        notes.append(
            f"server CPU per call: agreements {s_us / 1000:.2f} ms per command; echo + auth {a_us:.0f} µs; echo "
            f"{p_us:.0f} µs. So the interceptor costs about {a_us - p_us:.0f} µs per call and the service's own work "
            f"(servicer, application, SQLite, relay) about {(s_us - a_us) / 1000:.2f} ms per command. A server CPU "
            f"near 100% means one process's Python work, serialised by the GIL, is the limit, not the "
            f"{n_cpu} CPUs."
        )
    first_p, last_p = _pct(main.edge("propose", False), 0.5), _pct(main.edge("propose", True), 0.5)
    first_a, last_a = _pct(main.edge("accept", False), 0.5), _pct(main.edge("accept", True), 0.5)
    rb0, rb1 = main.extra["response_bytes_first"], main.extra["response_bytes_last"]
    (rate0, cpu0), (rate1, cpu1) = main.extra["first_window"], main.extra["last_window"]
    cpu_change = ""
    if cpu0 is not None and cpu1 is not None:
        cpu_change = f", server CPU per command {cpu0 * 1000:.1f} → {cpu1 * 1000:.1f} ms"
    notes.append(
        f"history: each agreement went from version {main.extra['versions_at_start']} to "
        f"{main.extra['versions_at_end']} during the timed run. First vs last {EDGE:.0%} of the run's time: "
        f"{rate0:,.0f} → {rate1:,.0f} commands/s{cpu_change}. p50 over each client's first vs last {EDGE:.0%} of "
        f"pairs: propose {_ms(first_p)} → {_ms(last_p)} ms, accept {_ms(first_a)} → {_ms(last_a)} ms. Response bytes, "
        f"first → last pair: propose {rb0['propose']:,} → {rb1['propose']:,}, accept {rb0['accept']:,} → "
        f"{rb1['accept']:,}. Commands on an agreement with a longer history cost more, so the figures hold for "
        f"--pairs {pairs} (and the versions above) only."
    )
    notes.append(
        f"fsync: {fsync_ms:.2f} ms per durable append here; with commits one after another that alone would allow "
        f"about {1000 / fsync_ms:,.0f} commits/s; commands that arrive during a commit share the next one "
        "(group commit), so it does not bound commands/s."
    )
    if len(service_phases) > 1:
        sh = service_phases[1]
        sh_us = _server_us(sh)
        cpus = (
            f" (server CPU per command {s_us / 1000:.1f} and {sh_us / 1000:.1f} ms)"
            if s_us is not None and sh_us is not None
            else ""
        )
        notes.append(
            f"channels: commands with one channel per client {cmd_rate:,.1f}/s, with one shared channel "
            f"{sh.calls / sh.seconds:,.1f}/s{cpus}, each on fresh agreements. The two phases ran one after the other, "
            "not interleaved, so a change in the machine's load between them is not cancelled out; the channels "
            "should not change the server's CPU per command."
        )
    for name, counts in logs.items():
        if counts:
            listed = ", ".join(f"{k} ×{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            notes.append(f"{name} logged at warning or above: {listed}.")
    notes.append(f"load average before {load_before}, after {_loadavg()} (figures are comparable within one run).")

    def latency(ph: Phase) -> dict[str, dict[str, float]]:
        return {
            kind: {
                "p50_ms": round(_pct(ph.flat(kind), 0.5) * 1000, 3),
                "p99_ms": round(_pct(ph.flat(kind), 0.99) * 1000, 3),
                "first_p50_ms": round(_pct(ph.edge(kind, False), 0.5) * 1000, 3),
                "last_p50_ms": round(_pct(ph.edge(kind, True), 0.5) * 1000, 3),
            }
            for kind in ph.latencies
        }

    def phase_json(ph: Phase) -> dict[str, Any]:
        return {
            "seconds": round(ph.seconds, 4),
            "calls": ph.calls,
            "bench_cpu_seconds": round(ph.bench_cpu, 3),
            "server_cpu_seconds": ph.server_cpu,
            "nats_cpu_seconds": ph.nats_cpu,
            "latency": latency(ph),
            **ph.extra,
        }

    return {
        "figures": figures,
        "notes": notes,
        "params": {
            "pairs_per_client": pairs,
            "clients": clients,
            "echo_rounds": echo_rounds,
            "echo_calls_per_client": 2 * pairs,
            "payload_bytes": main.extra["propose_request_bytes"],
            "store": "sqlite (WAL, synchronous=FULL), temp dir",
            "server_log_level": SERVER_LOG_LEVEL,
            "usable_cpus": _usable_cpus(),
            "fsync_ms": round(fsync_ms, 3),
            "load_average_before": load_before,
        },
        "samples": {
            "service": {ph.key: phase_json(ph) for ph in service_phases},
            "echo": {k: [phase_json(p) for p in v] for k, v in echo_rounds_phases.items()},
            "relay": relay,
            "server_logs": logs,
        },
    }


if __name__ == "__main__":
    sys.exit(_echo_main(sys.argv[1:]))
