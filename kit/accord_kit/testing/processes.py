"""Test processes: the backbone's parts run as real OS processes, so tests can SIGKILL and
SIGTERM them. `python -m accord_kit.testing.processes MODE --store … --nats …`

Modes:
  relay          run the counter store's relay until killed
  serve-counter  the counter test service (gRPC + relay + sealing) through the service runtime
  consume        the tally consumer; `--die-after-commit-at P` exits hard right after the
                 transaction that applied position P commits, before its ack (once);
                 `--ack-wait S` how long JetStream waits for an ack before redelivering
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from accord.events.v1 import events_pb2
from accord_kit.consumer import Consumer, ConsumerConfig
from accord_kit.eventlog import EventLogClient, register_event_log
from accord_kit.logging import configure_logging
from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.runtime import ServiceParts, serve
from accord_kit.settings import ServiceSettings
from accord_kit.testing.counter import COUNTER_POLICY, Counters, Tallies, register_counter
from accord_kit.testing.service import ensure_chain_key


def _store_env(raw: str) -> dict[str, str]:
    env = json.loads(raw)
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


async def run_relay(args: argparse.Namespace) -> int:
    app = Counters(_store_env(args.store), service=args.service)
    nc = await connect(args.nats, name="test-relay")
    relay = Relay(app, nc, stream=args.service.upper(), poll_seconds=0.1, batch_size=args.batch)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, relay.stop)
    await relay.run()
    await nc.close()
    app.close()
    return 0


class DyingTallies(Tallies):
    """Exits the process right after committing position `die_at` (once: a marker file)."""

    name = "Tallies"  # same tables as the Tallies it stands in for (PostgreSQL names them after the app)
    die_at = 0
    marker: Path | None = None

    def apply_upstream(self, source: str, envelope: events_pb2.EventEnvelope) -> bool:
        applied = super().apply_upstream(source, envelope)
        if envelope.position == self.die_at and self.marker is not None and not self.marker.exists():
            self.marker.write_text("died")
            os._exit(9)
        return applied


async def run_consumer(args: argparse.Namespace) -> int:
    app = DyingTallies(_store_env(args.store), service=f"tally{args.service}")
    app.die_at = args.die_after_commit_at
    app.marker = Path(args.marker) if args.marker else None
    nc = await connect(args.nats, name="test-consumer")
    token = os.environ.get("ACCORD_TEST_SERVICE_TOKEN", "")
    client = EventLogClient(args.source_addr, token=lambda: token) if args.source_addr else None
    consumer = Consumer(
        app,
        nc,
        ConsumerConfig(
            consumer="tally",
            source=args.service,
            stream=args.service.upper(),
            batch_size=args.batch,
            ack_wait=args.ack_wait,
        ),
        read_events=client.read_events if client else None,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, consumer.stop)
    await consumer.run()
    await nc.close()
    app.close()
    return 0


async def run_counter_service(args: argparse.Namespace) -> int:
    settings = ServiceSettings.from_env("counter")
    with tempfile.TemporaryDirectory(prefix="accord-counter-keys-") as keys:
        if not settings.chain_key_file.exists():
            # Sign checkpoints with a key of this process's own unless the environment names one.
            settings = replace(settings, chain_key_file=Path(keys) / "counter_chain_private.pem")
            ensure_chain_key(settings)
        app = Counters(_store_env(args.store), service=args.service)
        parts = ServiceParts(
            settings=settings, policy=COUNTER_POLICY, register=[register_counter(app), register_event_log(app)], app=app
        )

        def ready(runtime: Any) -> None:
            print(f"PORT {runtime.port}", flush=True)

        return await serve(parts, ready=ready)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m accord_kit.testing.processes")
    p.add_argument("mode", choices=["relay", "consume", "serve-counter"])
    p.add_argument("--store", required=True, help="eventsourcing env of the store, as JSON")
    p.add_argument("--nats", default="")
    p.add_argument("--service", default="counter")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--die-after-commit-at", type=int, default=0)
    p.add_argument("--marker", default="")
    p.add_argument("--ack-wait", type=float, default=ConsumerConfig.ack_wait)
    p.add_argument("--source-addr", default="")
    args = p.parse_args(argv)
    configure_logging(os.environ.get("ACCORD_LOG_LEVEL", "warning"), "json", service=f"test-{args.mode}")
    if args.mode == "relay":
        return asyncio.run(run_relay(args))
    if args.mode == "consume":
        return asyncio.run(run_consumer(args))
    return asyncio.run(run_counter_service(args))


if __name__ == "__main__":
    sys.exit(main())
