"""Request counts pulled from Prometheus: for request-based availability and latency SLIs, a
task of the metrics service's runtime asks each configured Prometheus, interval by interval,
for the good and the total requests of a service (range queries evaluated at each
interval's end, e.g. `sum(increase(http_requests_total{code!~"5.."}[1m]))` with a step of
1m) and records them as RequestCount signals, exactly as a producer's RecordSignalBatch would
(same validation; the caller is the service identity "prometheus").

The sources are a YAML file named by `METRICS_PROMETHEUS_SOURCES`:

    url: http://prometheus:9090      # default Prometheus of every source
    poll_seconds: 15                 # how often to look for ended intervals (default 15)
    sources:
      - service_id: email            # a registered service
        name: email-http             # optional (default: the service id); part of the signal ids
        url: http://other:9090       # optional: this source's own Prometheus
        good: sum(increase(http_requests_total{job="smtp",code!~"5.."}[1m]))
        total: sum(increase(http_requests_total{job="smtp"}[1m]))
        step: 1m                     # the interval: seconds or a Prometheus duration (30s, 5m, 1h)
        lag: 30s                     # how long after an interval ends it is read (scrapes, rules)
        start: 2026-03-01T00:00:00Z  # optional: the first interval when nothing is recorded yet
                                     # (default: the interval under way at the first start)

Each interval [start, start + step) becomes the signal `prom:<name>:<start RFC 3339>` with
good and total rounded to whole requests (`increase` extrapolates; good is capped at total),
provenance source "prometheus" and reference the two queries. An interval whose total is
absent or zero (no requests, or no series yet) records nothing.

Its position — the last interval recorded — is the recorded signals themselves: at start the
task reads the latest end among its source's request counts from the store, so a restart
neither loses an interval (it resumes after the last one recorded) nor repeats one (and the
ids derived from source and interval would make a repeat a duplicate anyway). Nothing else
is stored, so the position can never disagree with what was recorded. A Prometheus that
cannot be asked, or a batch metrics refuses, leaves the position where it was: the same
intervals are asked again at the next poll (health service `accord.source.prometheus`
NOT_SERVING, log `prometheus_source_failed`, until it succeeds)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from accord.metrics.v1 import signals_pb2 as spb
from accord_kit.context import Principal
from accord_kit.logging import get_logger
from accord_kit.runtime import HealthBoard
from accord_kit.settings import SettingsError
from accord_kit.threads import finish_in_thread
from accord_metrics.application import Metrics

log = get_logger("accord.metrics.prometheus")

SOURCE = "prometheus"
HEALTH = "accord.source.prometheus"
CALLER = Principal("prometheus", "service")
MAX_POINTS = 1000  # intervals asked for in one range query (Prometheus allows 11,000)
MAX_REFERENCE = 256
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SourcesError(SettingsError):
    """The sources file does not say what is needed; the message names the entry and key (the
    service refuses to start with it, as with any bad setting)."""


def duration(raw: Any, where: str) -> timedelta:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = float(raw)
    else:
        found = _DURATION.match(str(raw).strip())
        if not found:
            raise SourcesError(f"{where}: a duration such as 30s, 1m or 60, not {raw!r}")
        seconds = int(found.group(1)) * _UNIT[found.group(2)]
    if seconds <= 0:
        raise SourcesError(f"{where}: must be positive, not {raw!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Source:
    name: str
    service_id: str
    url: str
    good: str
    total: str
    step: timedelta
    lag: timedelta
    start: datetime | None

    @property
    def id_prefix(self) -> str:
        return f"prom:{self.name}:"

    @property
    def reference(self) -> str:
        text = " ".join(f"good: {self.good} / total: {self.total}".split())
        return text if len(text) <= MAX_REFERENCE else text[: MAX_REFERENCE - 1] + "…"


@dataclass(frozen=True)
class Sources:
    sources: tuple[Source, ...]
    poll_seconds: float


def load_sources(path: Path) -> Sources:
    """Read and check the sources file (SourcesError names what is wrong)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise SourcesError(f"{path}: cannot be read ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list) or not doc["sources"]:
        raise SourcesError(f"{path}: a mapping with a non-empty list `sources` is required")
    default_url = str(doc.get("url") or "")
    poll = duration(doc.get("poll_seconds", 15), f"{path}: poll_seconds").total_seconds()
    out: list[Source] = []
    for i, entry in enumerate(doc["sources"]):
        where = f"{path}: sources[{i}]"
        if not isinstance(entry, dict):
            raise SourcesError(f"{where}: must be a mapping")
        for key in ("service_id", "good", "total", "step"):
            if not entry.get(key):
                raise SourcesError(f"{where}.{key}: is required")
        url = str(entry.get("url") or default_url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SourcesError(f"{where}.url: the Prometheus URL (http:// or https://) is required, not {url!r}")
        start = entry.get("start")
        if start is not None:
            try:
                start = start if isinstance(start, datetime) else datetime.fromisoformat(str(start))
            except ValueError:
                raise SourcesError(f"{where}.start: an RFC 3339 instant, not {start!r}") from None
            if start.tzinfo is None:
                raise SourcesError(f"{where}.start: needs an offset (e.g. Z)")
        name = str(entry.get("name") or entry["service_id"])
        if not name.isprintable() or ":" in name or len(name) > 64:
            raise SourcesError(f"{where}.name: at most 64 printable characters without ':', not {name!r}")
        out.append(
            Source(
                name=name,
                service_id=str(entry["service_id"]),
                url=url,
                good=str(entry["good"]),
                total=str(entry["total"]),
                step=duration(entry["step"], f"{where}.step"),
                lag=duration(entry.get("lag", "30s"), f"{where}.lag"),
                start=start.astimezone(UTC) if start is not None else None,
            )
        )
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SourcesError(f"{path}: two sources named {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    return Sources(tuple(out), poll)


def _floor(t: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    epoch = t.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def query_range(url: str, query: str, start: datetime, end: datetime, step: timedelta) -> dict[float, float]:
    """The query's value at each step from start to end (both included), summed over the
    series it returns; instants without a value are absent."""
    params = urllib.parse.urlencode(
        {"query": query, "start": start.timestamp(), "end": end.timestamp(), "step": step.total_seconds()}
    )
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise RuntimeError(f"{doc.get('errorType', 'error')}: {doc.get('error', doc)}")
    out: dict[float, float] = {}
    for series in doc["data"]["result"]:
        for at, value in series.get("values", []):
            v = float(value)
            if v == v:  # NaN (e.g. a division by nothing) counts as no value
                out[float(at)] = out.get(float(at), 0.0) + v
    return out


def _ts(t: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(t)
    return out


class PrometheusSource:
    """Pulls every configured source's ended intervals and records them (see the module)."""

    def __init__(self, app: Metrics, sources: Sources, *, health: HealthBoard | None = None) -> None:
        self.app = app
        self.sources = sources
        self.health = health
        self.position: dict[str, datetime] = {}  # source name → start of the next interval to record
        self.recorded = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            failures = []
            for source in self.sources.sources:
                try:
                    await self.pull(source)
                except Exception as e:
                    failures.append(f"{source.name}: {type(e).__name__}: {e}")
                    log.warning("prometheus_source_failed", source=source.name, error=f"{type(e).__name__}: {e}")
            if self.health is not None:
                await self.health.set(HEALTH, not failures, "; ".join(failures))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.sources.poll_seconds)
            except TimeoutError:
                pass

    def _next(self, source: Source, now: datetime) -> datetime:
        if source.name not in self.position:
            last = self.app.last_request_count_end(source.service_id, source.id_prefix)
            if last is not None:
                self.position[source.name] = last
            else:
                self.position[source.name] = _floor(source.start or now, source.step)
        return self.position[source.name]

    async def pull(self, source: Source) -> int:
        """Record the source's intervals that have ended (and waited `lag`) since its position;
        returns how many were recorded."""
        now = self.app.clock.now()
        first = self._next(source, now)
        ready = _floor(now - source.lag, source.step)  # intervals ending by then may be read
        done = 0
        while first + source.step <= ready:
            n = min(MAX_POINTS, int((ready - first) / source.step))
            ends = (first + source.step, first + n * source.step)
            good, total = await asyncio.gather(
                asyncio.to_thread(query_range, source.url, source.good, *ends, source.step),
                asyncio.to_thread(query_range, source.url, source.total, *ends, source.step),
            )
            signals = []
            for k in range(n):
                start = first + k * source.step
                end = start + source.step
                t = max(0, round(total.get(end.timestamp(), 0.0)))
                if t == 0:
                    continue
                g = min(t, max(0, round(good.get(end.timestamp(), 0.0))))
                signals.append(
                    spb.Signal(
                        signal_id=f"{source.id_prefix}{start.isoformat().replace('+00:00', 'Z')}",
                        service_id=source.service_id,
                        provenance=spb.Provenance(source=SOURCE, reference=source.reference),
                        requests=spb.RequestCount(start=_ts(start), end=_ts(end), good=g, total=t),
                    )
                )
            if signals:
                outcome = await finish_in_thread(self.app.record, CALLER, signals)
                self.recorded += outcome.accepted
                done += outcome.accepted
                log.info(
                    "prometheus_intervals_recorded", source=source.name, intervals=n, accepted=outcome.accepted,
                    duplicates=outcome.duplicates, corrections=outcome.corrections,
                )  # fmt: skip
            first = first + n * source.step
            self.position[source.name] = first
        return done
