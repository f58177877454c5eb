"""Relay throughput beside raw pipelined JetStream publishing, in the same run.

Set-up (not timed): a SQLite event store of N counter events (`Counters`, service
"benchcounter", 500 events per save) and a real nats-server with JetStream on a temp dir.

Timed, on the same server, rounds interleaved:
* decode-only: `select_notifications` in batches + `to_envelope` + serialise + headers, no
  publishing (this process alone, no server);
* raw: the same envelope bytes, pipelined with `publish_async` (Nats-Msg-Id only) to a
  second file stream (RAWBENCH), all acks awaited: the ceiling for one nats-py connection;
* raw + relay headers: the same with every header the relay sends, incl. the fencing
  Nats-Expected-Last-Msg-Id (stream RAWBENCHHDR): the relay's messages published and
  acknowledged through nats-py's publish_async, without reading and encoding (the relay
  itself writes each batch's pre-rendered bytes at once and counts acks on its own inbox);
* relay: `Relay(...).run()` from start until its head is the store's head.

The notes set the relay's µs/event beside raw + relay headers and decode-only: the relay
reads and encodes the next batch in a worker thread while the previous batch's acks are
awaited, so its time lies between the larger of those two (full overlap) and their sum
(none), unless something else costs more; and they give the CPU this process used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.errors import NotFoundError

from accord_kit.envelope import to_envelope
from accord_kit.nats_util import (
    HDR_EXPECTED_LAST_MSG_ID,
    HDR_MSG_ID,
    HDR_POSITION,
    HDR_PREVIOUS,
    HDR_TYPE,
    connect,
)
from accord_kit.relay import Relay
from accord_kit.testing.counter import Counters
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer

NAME = "relay"
SUMMARY = "relay throughput beside raw pipelined JetStream publishing, in the same run"

SERVICE = "benchcounter"
RELAY_STREAM = "BENCHCOUNTER"
RAW_STREAM, RAW_PREFIX = "RAWBENCH", "rawbench."
RAW_HDR_STREAM, RAW_HDR_PREFIX = "RAWBENCHHDR", "rawbenchhdr."
SAVE_CHUNK = 500  # events per save while filling the store
READ_BATCH = 1000  # the relay's default batch_size
WINDOW = 2 * READ_BATCH  # the relay's publish_async_max_pending
TIMEOUT = 300.0  # seconds any one timed phase may take before the run is abandoned


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("relay benchmark")
    group.add_argument("--events", type=int, default=20_000, help="events in the store (default 20,000)")
    group.add_argument(
        "--rounds", type=int, default=3, help="timed rounds of each phase; figures are medians (default 3)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    events: int = args.events
    rounds: int = args.rounds
    if events < 1 or rounds < 1:
        raise ValueError("--events and --rounds must be at least 1")
    return asyncio.run(_run(events, rounds))


# -- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One message as the relay would publish it."""

    subject: str
    data: bytes
    msg_id: str
    headers: dict[str, str]


@dataclass
class Sample:
    seconds: float
    client_cpu: float  # this process (all threads), seconds
    server_cpu: float | None  # nats-server, seconds (Linux only)


class CpuMeter:
    """Wall and CPU time of this process and of the nats-server process."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _server(self) -> float | None:
        if self.server_pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def start(self) -> tuple[float, float, float | None]:
        return time.perf_counter(), time.process_time(), self._server()

    def stop(self, began: tuple[float, float, float | None]) -> Sample:
        wall, cpu, server = began
        now_server = self._server()
        return Sample(
            seconds=time.perf_counter() - wall,
            client_cpu=time.process_time() - cpu,
            server_cpu=(now_server - server) if (server is not None and now_server is not None) else None,
        )


def _fill_store(app: Counters, events: int) -> None:
    """Exactly `events` events: each save creates one counter and increments it."""
    made, i = 0, 0
    while made < events:
        k = min(SAVE_CHUNK, events - made)
        app.increment_many(f"c{i:05d}", [(made + j) % 997 + 1 for j in range(k - 1)])  # Created + k-1
        made += k
        i += 1
    head = app.head_position()
    if head != events:
        raise RuntimeError(f"store holds {head} events, expected {events}")


def _decode_all(app: Counters) -> tuple[list[Outgoing], float, float]:
    """What the relay does before publishing: read in batches, envelope, serialise, headers.
    Returns the messages, SQLite read seconds and decode+envelope seconds."""
    out: list[Outgoing] = []
    read_s = decode_s = 0.0
    after, prev, last_id = 0, 0, ""
    while True:
        t0 = time.perf_counter()
        notes = app.select_notifications(after, READ_BATCH)
        t1 = time.perf_counter()
        read_s += t1 - t0
        if not notes:
            break
        for n in notes:
            env, subject = to_envelope(app.service, n, prev, app.accord_mapper, app.codec)
            headers = {HDR_MSG_ID: env.event_id, HDR_POSITION: str(n.id), HDR_PREVIOUS: str(prev), HDR_TYPE: env.type}
            if last_id:
                headers[HDR_EXPECTED_LAST_MSG_ID] = last_id
            out.append(Outgoing(subject, env.SerializeToString(), env.event_id, headers))
            prev, last_id = n.id, env.event_id
        decode_s += time.perf_counter() - t1
        after = notes[-1].id
    return out, read_s, decode_s


async def _delete_stream(nc: NatsClient, stream: str) -> None:
    try:
        await nc.jetstream().delete_stream(stream)
    except NotFoundError:
        pass


async def _fresh_raw_stream(nc: NatsClient, stream: str, prefix: str) -> None:
    await _delete_stream(nc, stream)
    await nc.jetstream().add_stream(
        api.StreamConfig(
            name=stream,
            subjects=[f"{prefix}>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            num_replicas=1,
            duplicate_window=120.0,  # as the relay's stream: dedupe is part of the cost
            allow_direct=True,
        )
    )


@dataclass(frozen=True)
class RawVariant:
    key: str
    stream: str
    prefix: str
    relay_headers: bool  # all five relay headers, or Nats-Msg-Id only


RAW = RawVariant("raw", RAW_STREAM, RAW_PREFIX, relay_headers=False)
RAW_HDR = RawVariant("raw_relay_headers", RAW_HDR_STREAM, RAW_HDR_PREFIX, relay_headers=True)
RAW_VARIANTS = (RAW, RAW_HDR)


async def _quiet() -> None:
    """Instead of the kit's warning on every disconnect, which a deliberate close also fires."""


async def _raw_round(url: str, meter: CpuMeter, msgs: list[Outgoing], v: RawVariant) -> Sample:
    nc = await connect(url, name="bench-raw", disconnected_cb=_quiet)
    try:
        await _fresh_raw_stream(nc, v.stream, v.prefix)
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        subjects = [v.prefix + m.subject for m in msgs]
        headers = [m.headers if v.relay_headers else {HDR_MSG_ID: m.msg_id} for m in msgs]
        futures: list[asyncio.Future[api.PubAck]] = []
        began = meter.start()
        for m, subject, hdrs in zip(msgs, subjects, headers, strict=True):
            futures.append(await js.publish_async(subject, m.data, headers=hdrs))
        await asyncio.wait_for(js.publish_async_completed(), timeout=TIMEOUT)
        sample = meter.stop(began)
        acks = [f.result() for f in futures]  # raises if any publish failed
        duplicates = sum(1 for a in acks if a.duplicate)
        info = await js.stream_info(v.stream)
        if duplicates or info.state.messages != len(msgs):
            raise RuntimeError(f"{v.stream}: {info.state.messages} stored, {duplicates} duplicates, sent {len(msgs)}")
        return sample
    finally:
        await nc.close()


async def _relay_round(url: str, meter: CpuMeter, app: Counters) -> tuple[Sample, dict[str, int]]:
    nc = await connect(url, name="bench", disconnected_cb=_quiet)
    try:
        await _delete_stream(nc, RELAY_STREAM)  # so every round publishes the whole log
        target = app.head_position()
        relay = Relay(app, nc, stream=RELAY_STREAM, poll_seconds=0.2)
        began = meter.start()
        task = asyncio.create_task(relay.run())
        try:
            while relay.stats.head_position != target:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("the relay stopped before reaching the store's head")
                if time.perf_counter() - began[0] > TIMEOUT:
                    raise TimeoutError(f"relay reached {relay.stats.head_position} of {target} in {TIMEOUT} s")
                await asyncio.sleep(0.002)
            sample = meter.stop(began)
        finally:
            relay.stop()
            await asyncio.wait_for(task, timeout=30)
        info = await nc.jetstream().stream_info(RELAY_STREAM)
        stats = {
            "published": relay.stats.published,
            "duplicates": relay.stats.duplicates,
            "resyncs": relay.stats.resyncs,
            "stream_messages": info.state.messages,
        }
        if relay.stats.published != target or info.state.messages != target:
            raise RuntimeError(
                f"relay published {relay.stats.published}, stream holds {info.state.messages}, "
                f"store head {target}: {stats}"
            )
        return sample, stats
    finally:
        await nc.close()


# -- the run --------------------------------------------------------------------------------------


def _median(samples: list[Sample]) -> Sample:
    ordered = sorted(samples, key=lambda s: s.seconds)
    return ordered[len(ordered) // 2]


def _cpu_detail(s: Sample) -> str:
    server = f", nats-server CPU {s.server_cpu / s.seconds:.0%}" if s.server_cpu is not None else ""
    return f"bench CPU {s.client_cpu / s.seconds:.0%}{server}"


def _nats_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


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


def _attribution(
    *, relay_us: float, headers_us: float, decode_us: float, read_us: float, envelope_us: float
) -> list[str]:
    """The relay's µs/event beside its two parts measured alone, and where it falls between
    full overlap of the two (the larger) and none (their sum)."""
    larger, smaller, both = max(headers_us, decode_us), min(headers_us, decode_us), headers_us + decode_us
    parts = (
        f"per event: relay {relay_us:.0f} µs; raw + relay headers {headers_us:.0f} µs (its messages through "
        f"publish_async and their acks, nothing read); decode-only {decode_us:.0f} µs (SQLite read {read_us:.0f} + "
        f"envelope/serialise/headers {envelope_us:.0f}, nothing published)."
    )
    overlap = (
        "the relay reads and encodes the next batch in a worker thread while the previous batch's acks are "
        f"awaited, so with the two fully overlapped it would take about the larger, {larger:.0f} µs/event, plus "
        f"overheads, and with no overlap their sum, {both:.0f} µs/event. Measured: {relay_us:.0f} µs/event, "
    )
    if relay_us > both:
        overlap += (
            f"{relay_us - both:.0f} µs above the sum: this run shows no gain from the overlap, and these figures "
            f"do not say where the extra {relay_us - both:.0f} µs go."
        )
    elif relay_us >= larger:
        hidden = both - relay_us
        overlap += (
            f"so the overlap hid {hidden:.0f} µs of the smaller part's {smaller:.0f} µs ({hidden / smaller:.0%}); "
            "the figures do not separate the remainder into un-overlapped work and overheads."
        )
    else:
        overlap += "below even the larger of the two parts measured alone."
    return [parts, overlap]


def _cpu_note(relay: Sample, headers: Sample) -> str:
    """How much CPU this process (event loop + worker thread) and nats-server used during the relay."""
    share = relay.client_cpu / relay.seconds
    note = f"bench CPU during the relay: {share:.0%} of its wall time (all threads; {_usable_cpus()} CPUs usable): "
    if share < 1.1:
        note += (
            "the event loop and the worker thread together kept no more than about one core busy, so they ran "
            "by turns rather than side by side (both need the GIL for their Python work)."
        )
    else:
        note += "the event loop and the worker thread used more than one core between them."
    if relay.server_cpu is not None and headers.server_cpu is not None:
        note += (
            f" nats-server CPU: {relay.server_cpu / relay.seconds:.0%} during the relay, "
            f"{headers.server_cpu / headers.seconds:.0%} during raw + relay headers."
        )
    return note


async def _run(events: int, rounds: int) -> dict[str, Any]:
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="accord-bench-relay-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        app = Counters(sqlite_env(tmpdir / "benchcounter.sqlite"), service=SERVICE)
        try:
            _fill_store(app, events)
            setup_s = time.perf_counter() - t0
            print(f"   store filled: {events:,} events in {setup_s:.1f} s", flush=True)

            decode_samples: list[tuple[float, float]] = []
            msgs: list[Outgoing] = []
            for _ in range(rounds):
                msgs, read_s, decode_s = _decode_all(app)
                decode_samples.append((read_s, decode_s))
            if len(msgs) != events:
                raise RuntimeError(f"decoded {len(msgs)} events, expected {events}")

            server = NatsServer(tmpdir / "nats").start()
            try:
                meter = CpuMeter(server.proc.pid if server.proc is not None else None)
                raw: dict[str, list[Sample]] = {v.key: [] for v in RAW_VARIANTS}
                relay: list[Sample] = []
                relay_stats: list[dict[str, int]] = []
                for r in range(rounds):  # interleaved, so drift in the machine's load hits all alike
                    for v in RAW_VARIANTS:
                        raw[v.key].append(await _raw_round(server.url, meter, msgs, v))
                    sample, stats = await _relay_round(server.url, meter, app)
                    relay.append(sample)
                    relay_stats.append(stats)
                    print(
                        f"   round {r + 1}/{rounds}: relay {events / sample.seconds:,.0f}/s, "
                        + ", ".join(f"{v.key} {events / raw[v.key][-1].seconds:,.0f}/s" for v in RAW_VARIANTS),
                        flush=True,
                    )
                nats_version = _nats_version(server.binary)
            finally:
                server.stop()
        finally:
            app.close()

    payload = [len(m.data) for m in msgs]
    relay_m = _median(relay)
    raw_m, hdr_m = (_median(raw[v.key]) for v in RAW_VARIANTS)
    # the median round by total, so that its read and envelope parts add up to the total shown
    read_s, dec_s = sorted(decode_samples, key=sum)[len(decode_samples) // 2]
    decode_total = read_s + dec_s

    def rate(seconds: float) -> float:
        return events / seconds

    def us(seconds: float) -> float:
        return seconds / events * 1e6

    def timing(s: Sample) -> str:
        return f"{s.seconds:.2f} s, {us(s.seconds):.0f} µs/event; {_cpu_detail(s)}"

    figures = [
        {"name": "relay", "value": rate(relay_m.seconds), "unit": "events/s", "detail": timing(relay_m)},
        {
            "name": "raw publish_async",
            "value": rate(raw_m.seconds),
            "unit": "msgs/s",
            "detail": f"{timing(raw_m)}; Nats-Msg-Id only, ≤{WINDOW} in flight",
        },
        {
            "name": "ratio relay/raw",
            "value": rate(relay_m.seconds) / rate(raw_m.seconds),
            "unit": "×",
            "detail": "the relay's share of what one nats-py connection can publish",
        },
        {
            "name": "decode-only",
            "value": rate(decode_total),
            "unit": "events/s",
            "detail": f"{decode_total:.2f} s = SQLite read {read_s:.2f} s ({us(read_s):.0f} µs/event) "
            f"+ envelope/serialise/headers {dec_s:.2f} s ({us(dec_s):.0f} µs/event); no publishing",
        },
        {
            "name": "raw + relay headers",
            "value": rate(hdr_m.seconds),
            "unit": "msgs/s",
            "detail": f"{timing(hdr_m)}; all 5 relay headers incl. expected-last-msg-id",
        },
    ]
    notes = [
        *_attribution(
            relay_us=us(relay_m.seconds),
            headers_us=us(hdr_m.seconds),
            decode_us=us(decode_total),
            read_us=us(read_s),
            envelope_us=us(dec_s),
        ),
        _cpu_note(relay_m, hdr_m),
        f"load average before {load_before}, after {_loadavg()} (the figures are only comparable within one run).",
    ]
    return {
        "figures": figures,
        "notes": notes,
        "params": {
            "events": events,
            "rounds": rounds,
            "save_chunk": SAVE_CHUNK,
            "relay_batch_size": READ_BATCH,
            "publish_window": WINDOW,
            "payload_bytes_mean": round(sum(payload) / len(payload), 1),
            "payload_bytes_min": min(payload),
            "payload_bytes_max": max(payload),
            "setup_seconds": round(setup_s, 2),
            "nats_server": nats_version,
            "load_average_before": load_before,
        },
        "samples": {
            "relay_seconds": [round(s.seconds, 4) for s in relay],
            **{f"{k}_seconds": [round(s.seconds, 4) for s in v] for k, v in raw.items()},
            "decode_read_seconds": [round(s[0], 4) for s in decode_samples],
            "decode_envelope_seconds": [round(s[1], 4) for s in decode_samples],
            "relay_bench_cpu_seconds": [round(s.client_cpu, 4) for s in relay],
            "relay_server_cpu_seconds": [None if s.server_cpu is None else round(s.server_cpu, 4) for s in relay],
            "relay_stats": relay_stats,
        },
    }
