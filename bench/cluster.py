"""The cluster topology beside a single node, in one run: what three NATS nodes at R=3, the
lease and the standbys cost.

Set-up (not timed): a SQLite store of N counter events; one nats-server (R=1); `make
run-cluster`'s topology (accord_kit.clusterrun: three NATS nodes, every stream at R=3,
PostgreSQL, active + standby services, two gateways) on free ports and databases of its own;
`make run`'s topology (accord_kit.devrun: one NATS node, one instance of each service) on
PostgreSQL databases of its own.

Timed:
* relay: `Relay.run()` from start until its head is the store's head, to a stream at R=1 on
  the single node and at R=3 on the cluster (as the NATS admin user);
* consumer: a durable pull consumer taking that stream's N events in order and acknowledging
  them (an applier that only tracks the position: the consumer and the stream, not a store),
  from each;
* commands: agreements drafted, proposed and accepted over gRPC by concurrent clients — on
  `make run`'s topology on PostgreSQL, and on the cluster through the failover address (the
  active instance) — each with every other service consuming what the commands publish.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from accord.agreements.v1 import agreements_pb2 as pb
from accord.agreements.v1 import agreements_pb2_grpc as pb_grpc
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_kit.consumer import Consumer, ConsumerConfig
from accord_kit.eventlog import failover_options
from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.testing.cluster import RunningCluster
from accord_kit.testing.counter import Counters
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, sqlite_env
from accord_kit.testing.nats import NatsServer, free_port
from bench.relay import _fill_store

NAME = "cluster"
SUMMARY = "three NATS nodes at R=3 with active+standby services beside one node at R=1, in the same run"
STREAM, SERVICE = "BENCHCLUSTER", "benchcluster"
TIMEOUT = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cluster")
    g.add_argument("--cluster-events", type=int, default=5000, help="events relayed and consumed (default 5000)")
    g.add_argument("--cluster-agreements", type=int, default=60, help="agreements drafted+proposed+accepted (60)")
    g.add_argument("--cluster-clients", type=int, default=8, help="concurrent gRPC clients (default 8)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args.cluster_events, args.cluster_agreements, args.cluster_clients))


async def _relay_and_consume(
    url: str, replicas: int, app: Counters, tmp: Path, label: str, **auth: str
) -> dict[str, float]:
    nc = await connect(url, name=f"bench-{label}", **auth)
    try:
        js = nc.jetstream()
        try:
            await js.delete_stream(STREAM)
        except Exception:
            pass
        target = app.head_position()
        relay = Relay(app, nc, stream=STREAM, replicas=replicas, poll_seconds=0.2)
        began = time.perf_counter()
        task = asyncio.create_task(relay.run())
        while relay.stats.head_position != target:
            if task.done():
                task.result()
                raise RuntimeError("the relay stopped before the store's head")
            if time.perf_counter() - began > TIMEOUT:
                raise TimeoutError(f"{label}: relay reached {relay.stats.head_position} of {target}")
            await asyncio.sleep(0.005)
        relay_s = time.perf_counter() - began
        relay.stop()
        await asyncio.wait_for(task, timeout=30)

        consumer = Consumer(Applied(), nc, ConsumerConfig(consumer=f"bench{label}", source=SERVICE, stream=STREAM))
        began = time.perf_counter()
        ctask = asyncio.create_task(consumer.run())
        while consumer.tracked != target:
            if ctask.done():
                ctask.result()
                raise RuntimeError("the consumer stopped before the stream's end")
            if time.perf_counter() - began > TIMEOUT:
                raise TimeoutError(f"{label}: consumer reached {consumer.tracked} of {target}")
            await asyncio.sleep(0.005)
        consumer_s = time.perf_counter() - began
        consumer.stop()
        await asyncio.wait_for(ctask, timeout=30)
        await js.delete_stream(STREAM)
        return {"relay": target / relay_s, "consumer": target / consumer_s}
    finally:
        await nc.close()


class Applied:
    """An applier that only tracks positions (in memory): what is timed is the consumer itself —
    fetching, ordering, acknowledging — on each topology, not a store."""

    def __init__(self) -> None:
        self.position = 0

    def tracked_position(self, source: str) -> int:
        return self.position

    def apply_upstream(self, source: str, envelope: events_pb2.EventEnvelope) -> bool:
        self.position = envelope.position
        return True


def _terms(i: int) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(sla_terms(title=f"bench cluster {i}"), terms_pb2.AgreementTerms())


async def _commands(address: str, tokens: dict[str, Any], agreements: int, clients: int, prefix: str) -> float:
    """Commands/s: each agreement drafted, proposed, accepted (three commands)."""
    async with grpc.aio.insecure_channel(address, options=failover_options()) as ch:
        stub = pb_grpc.AgreementsServiceStub(ch)
        for dept in (IT, FINANCE):
            await stub.RegisterDepartment(
                pb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=tokens["admin"]
            )
        await stub.RegisterService(
            pb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT),
            metadata=tokens["admin"],
        )
        queue = list(range(agreements))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                d = await stub.DraftAgreement(
                    pb.DraftAgreementRequest(terms=_terms(i)), metadata=tokens[IT], timeout=60
                )
                aid = d.agreement.agreement_id
                await stub.ProposeAgreement(
                    pb.ProposeAgreementRequest(agreement_id=aid), metadata=tokens[IT], timeout=60
                )
                await stub.AcceptAgreement(
                    pb.AcceptAgreementRequest(agreement_id=aid), metadata=tokens[FINANCE], timeout=60
                )

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return 3 * agreements / (time.perf_counter() - began)


def _single_commands(var: Path, agreements: int, clients: int) -> float:
    """`make run`'s topology (accord_kit.devrun: one NATS node, one instance of each service) on
    PostgreSQL databases of its own: commands/s with everything else consuming as it would."""
    prefix = f"accord_bench_single_{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCORD_", "AGREEMENTS_", "METRICS_", "BILLING_"))}
    env = {k: v for k, v in env.items() if not k.startswith("GATEWAY_")}
    ports = {s: free_port() for s in ("agreements", "metrics", "billing", "gateway")}
    env.update(
        ACCORD_VAR_DIR=str(var), ACCORD_NATS_PORT=str(free_port()), ACCORD_RUN_QUIET="1", ACCORD_LOG_LEVEL="warning",
        ACCORD_PERSISTENCE="postgres", ACCORD_POSTGRES_HOST=PG_HOST, ACCORD_POSTGRES_PORT=str(PG_PORT),
        ACCORD_POSTGRES_USER=PG_USER, ACCORD_POSTGRES_PASSWORD=PG_PASSWORD, GATEWAY_HTTP_PORT=str(free_port()),
        **{f"{s.upper()}_GRPC_PORT": str(p) for s, p in ports.items()},
        **{f"{s.upper()}_POSTGRES_DBNAME": f"{prefix}_{s}" for s in ("agreements", "metrics", "billing")},
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "accord_kit.devrun"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        else:
            raise RuntimeError("make run did not come up:\n" + "".join(lines[-30:]))
        tokens = dict(
            line.split("=", 1) for line in (var / "keys" / "dev-tokens.env").read_text().splitlines() if "=" in line
        )
        md = {
            "admin": (("authorization", f"Bearer {tokens['ACCORD_TOKEN_ADMIN']}"),),
            IT: (("authorization", f"Bearer {tokens['ACCORD_TOKEN_IT_OPERATIONS']}"),),
            FINANCE: (("authorization", f"Bearer {tokens['ACCORD_TOKEN_FINANCE']}"),),
        }
        return asyncio.run(_commands(f"127.0.0.1:{ports['agreements']}", md, agreements, clients, "single"))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for s in ("agreements", "metrics", "billing"):
            _drop(f"{prefix}_{s}")


def _drop(dbname: str) -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


async def _run(events: int, agreements: int, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-cluster-") as d:
        tmp = Path(d)
        app = Counters(sqlite_env(tmp / "counter.sqlite"), service=SERVICE)
        _fill_store(app, events)
        single = NatsServer(tmp / "nats").start()
        try:
            one = await _relay_and_consume(single.url, 1, app, tmp, "single")
        finally:
            single.stop()
        one["commands"] = await asyncio.to_thread(_single_commands, tmp / "single", agreements, clients)

        cluster = await asyncio.to_thread(RunningCluster, tmp / "cluster", 2.0, "warning")
        try:
            three = await _relay_and_consume(
                cluster.nats_url, 3, app, tmp, "cluster", user="admin", password=cluster.nats_password("admin")
            )
            ctokens = {
                "admin": (("authorization", f"Bearer {cluster.token('admin')}"),),
                IT: (("authorization", f"Bearer {cluster.token(IT)}"),),
                FINANCE: (("authorization", f"Bearer {cluster.token(FINANCE)}"),),
            }
            three["commands"] = await _commands(
                cluster.addresses["agreements"], ctokens, agreements, clients, "cluster"
            )
        finally:
            await asyncio.to_thread(cluster.stop)
        app.close()

    figures = []
    for key, unit, what in (
        ("commands", "commands/s", f"agreements draft+propose+accept, {clients} clients, {agreements} agreements"),
        ("relay", "events/s", f"relay SQLite → JetStream, {events} events"),
        ("consumer", "events/s", f"durable pull consumer, {events} events in order, acknowledged (no store)"),
    ):
        figures.append({"name": f"{key} single node (R=1)", "value": one[key], "unit": unit, "detail": what})
        figures.append(
            {
                "name": f"{key} cluster (3 nodes, R=3)",
                "value": three[key],
                "unit": unit,
                "detail": f"{what}; {three[key] / one[key]:.2f} × single node",
            }
        )
    return {
        "figures": figures,
        "params": {"events": events, "agreements": agreements, "clients": clients},
        "notes": [f"load average {os.getloadavg()[0]:.1f} at the end"],
    }
