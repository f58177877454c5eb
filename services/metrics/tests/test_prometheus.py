"""Request counts pulled from a real Prometheus (Debian's, started by the test) scraping a
real exporter (prometheus_client) with known counters: each ended interval is recorded once
as a RequestCount with the queried good and total, provenance "prometheus" and the queries
as reference; a restart resumes after the last interval recorded — no interval lost, none
repeated. And a sources file that does not say what is needed stops the start."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.application import Agreements
from accord_agreements.samples import EMAIL, IT
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.monitoring import http_json, running_prometheus
from accord_kit.testing.nats import free_port
from accord_kit.testing.service import service_environ
from accord_kit.testing.streams import eventually
from accord_metrics.application import Metrics
from accord_metrics.bootstrap import build
from accord_metrics.prometheus import SOURCE, PrometheusSource, SourcesError, load_sources
from accord_metrics.settings import load
from tests.suite import feed

GOOD = 'sum(test_requests_total{code!~"5.."})'
TOTAL = "sum(test_requests_total)"


def sources_file(tmp_path: Path, prometheus_url: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(
        f"url: {prometheus_url}\n"
        "poll_seconds: 0.3\n"
        "sources:\n"
        f"  - service_id: {EMAIL}\n"
        "    name: email-http\n"
        f"    good: '{GOOD}'\n"
        f"    total: '{TOTAL}'\n"
        "    step: 2s\n"
        "    lag: 1s\n"
    )
    return path


def metrics_with_email(db: Path, tmp_path: Path) -> None:
    agreements = Agreements(sqlite_env(tmp_path / "a.db"))
    agreements.register_department(IT, "IT")
    agreements.register_service(EMAIL, "E-mail", IT)
    learned = Metrics(sqlite_env(db))
    feed("agreements", agreements, learned)
    learned.close()
    agreements.close()


def counts(app: Metrics) -> list[spb.Signal]:
    return [s for s in app.signals(EMAIL) if s.WhichOneof("kind") == "requests"]


@pytest.mark.slow
async def test_intervals_pulled_from_a_real_prometheus_are_recorded_once_across_a_restart(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    requests = Counter("test_requests", "requests served", ["code"], registry=registry)
    requests.labels(code="200").inc(97)
    requests.labels(code="500").inc(3)
    exporter_port = free_port()
    exporter, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "app", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}],
    }
    db = tmp_path / "m.db"
    metrics_with_email(db, tmp_path)
    try:
        async with running_prometheus(config, tmp_path / "prom") as prom:

            def scraped() -> bool:
                doc = http_json(f"{prom.url}/api/v1/query?query={TOTAL.replace(' ', '%20')}")
                return bool(doc["data"]["result"]) and doc["data"]["result"][0]["value"][1] == "100"

            await eventually(lambda: asyncio.to_thread(scraped), timeout=30, what="prometheus scraped the exporter")
            sources = load_sources(sources_file(tmp_path, prom.url))

            async def run_until(app: Metrics, n: int) -> None:
                source = PrometheusSource(app, sources)
                stop = asyncio.Event()
                task = asyncio.create_task(source.run(stop))
                try:
                    await eventually(lambda: len(counts(app)) >= n, timeout=30, what=f"{n} intervals recorded")
                finally:
                    stop.set()
                    await task

            first = Metrics(sqlite_env(db))
            await run_until(first, 3)
            before = counts(first)
            first.close()
            # Stopped for a few intervals; then a new process on the same store resumes.
            stopped_at = datetime.now(UTC)
            await eventually(lambda: datetime.now(UTC) > stopped_at + timedelta(seconds=5), timeout=10)
            second = Metrics(sqlite_env(db))
            try:
                await run_until(second, len(before) + 4)
                recorded = counts(second)
            finally:
                second.close()
    finally:
        exporter.shutdown()
        thread.join(5)

    assert recorded[: len(before)] == before
    ids = [s.signal_id for s in recorded]
    assert len(ids) == len(set(ids)), "an interval recorded twice"
    starts = [s.requests.start.ToDatetime(tzinfo=UTC) for s in recorded]
    ends = [s.requests.end.ToDatetime(tzinfo=UTC) for s in recorded]
    assert all(e - s == timedelta(seconds=2) for s, e in zip(starts, ends, strict=True))
    assert starts[1:] == ends[:-1], "an interval lost (across the restart too)"
    for s, start in zip(recorded, starts, strict=True):
        assert (s.requests.good, s.requests.total) == (97, 100)
        assert s.signal_id == f"prom:email-http:{start.isoformat().replace('+00:00', 'Z')}"
        assert s.provenance.source == SOURCE and GOOD in s.provenance.reference and TOTAL in s.provenance.reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sources: []", "a non-empty list `sources`"),
        ("url: http://p:9090\nsources:\n  - service_id: email\n    good: a\n    total: b\n", "sources[0].step"),
        ("sources:\n  - {service_id: email, good: a, total: b, step: 1m}\n", "sources[0].url"),
        ("url: http://p\nsources:\n  - {service_id: email, good: a, total: b, step: soon}\n", "sources[0].step"),
        (
            "url: http://p\nsources:\n  - {service_id: email, good: a, total: b, step: 1m, start: 2026-03-01}\n",
            "sources[0].start: needs an offset",
        ),
    ],
)
def test_a_sources_file_that_does_not_say_what_is_needed_stops_the_start(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(SourcesError) as refused:
        load_sources(path)
    assert expected in str(refused.value)
    env = service_environ("metrics", tmp_path, "nats://127.0.0.1:1", "sqlite", METRICS_PROMETHEUS_SOURCES=str(path))
    with pytest.raises(SourcesError):
        build(load(env))
