"""Settings from environment variables: the one place the kit reads the environment.

Every setting is declared once (name, default, meaning) so that services, the README's
configuration table, `make run` and the docker-compose check all agree on the names.
Per-service settings are read as `<SERVICE>_<NAME>` (e.g. `AGREEMENTS_GRPC_PORT`);
suite-wide settings as `ACCORD_<NAME>`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from accord_kit.clock import Clock, FileClock, SystemClock


class SettingsError(ValueError):
    """A setting is missing, malformed, or would make the service unsafe to run."""


@dataclass(frozen=True)
class Setting:
    name: str  # without prefix, e.g. "GRPC_PORT"
    default: str
    help: str
    scope: str = "service"  # "service" → <SERVICE>_NAME, "suite" → ACCORD_NAME


# Each service's default gRPC port. Like every port the suite listens on by default, below Linux's
# ephemeral range (32768–60999), where an outgoing connection could already hold it at start.
SERVICES: dict[str, int] = {
    "agreements": 7051,
    "metrics": 7052,
    "billing": 7053,
    "gateway": 7054,
    "notifier": 7055,
}
# Which services keep an event store (the gateway only keeps a read model).
EVENT_SOURCED = ("agreements", "metrics", "billing", "notifier")

SUITE_SETTINGS: tuple[Setting, ...] = (
    Setting("NATS_URL", "nats://127.0.0.1:4322", "NATS server(s), comma separated", "suite"),
    Setting("NATS_REPLICAS", "1", "JetStream replicas of each service's stream (3 in production)", "suite"),
    Setting("NATS_USER", "", "NATS user this process connects as (empty: no NATS authentication)", "suite"),
    Setting("NATS_PASSWORD", "", "that NATS user's password", "suite"),
    Setting(
        "LEASE",
        "none",
        "single-writer lease: none, or postgres (an advisory lock; a second instance waits as a hot standby)",
        "suite",
    ),
    Setting(
        "LEASE_IDLE_SECONDS",
        "10",
        "how long a lease holder may go silent (frozen, a stalled VM) before it loses the lease and a standby "
        "takes over (3–3600)",
        "suite",
    ),
    Setting("PERSISTENCE", "sqlite", "event store engine: sqlite or postgres", "suite"),
    Setting("VAR_DIR", "var", "directory of the SQLite files and dev keys", "suite"),
    Setting("POSTGRES_HOST", "127.0.0.1", "PostgreSQL host", "suite"),
    Setting("POSTGRES_PORT", "5432", "PostgreSQL port", "suite"),
    Setting("POSTGRES_USER", "postgres", "PostgreSQL user", "suite"),
    Setting("POSTGRES_PASSWORD", "", "PostgreSQL password", "suite"),
    Setting(
        "AUTH_PUBLIC_KEY_FILE", "var/keys/auth_public.pem", "Ed25519 public key that verifies bearer tokens", "suite"
    ),
    Setting("SERVICE_TOKEN_FILE", "var/keys/service.token", "bearer token this service presents to others", "suite"),
    Setting("AGREEMENTS_ADDR", "127.0.0.1:7051", "gRPC address of the agreements service", "suite"),
    Setting("METRICS_ADDR", "127.0.0.1:7052", "gRPC address of the metrics service", "suite"),
    Setting("BILLING_ADDR", "127.0.0.1:7053", "gRPC address of the billing service", "suite"),
    Setting("NOTIFIER_ADDR", "127.0.0.1:7055", "gRPC address of the notifier service", "suite"),
    Setting("LOG_LEVEL", "info", "debug, info, warning, error", "suite"),
    Setting("LOG_FORMAT", "auto", "json, console, or auto (console on a terminal)", "suite"),
    Setting(
        "CLOCK_FILE",
        "",
        "end-to-end tests and demos only: the services read 'now' from this file (an RFC 3339 instant, "
        "rewritten to move time) instead of the system clock; a warning is logged at start",
        "suite",
    ),
)

SERVICE_SETTINGS: tuple[Setting, ...] = (
    Setting("GRPC_HOST", "127.0.0.1", "address the gRPC server binds"),
    Setting(
        "GRPC_PORT",
        "<per service>",
        "gRPC port: agreements 7051, metrics 7052, billing 7053, gateway 7054, notifier 7055",
    ),
    Setting("SQLITE_PATH", "<VAR_DIR>/<service>.sqlite", "SQLite event store file"),
    Setting("POSTGRES_DBNAME", "accord_<service>", "PostgreSQL database of the service"),
    Setting("INSTANCE", "", "this instance's name among several of the service (its NATS and durable names)"),
    Setting("GRACE_SECONDS", "10", "how long in-flight calls may run after SIGTERM"),
    Setting("MAX_MESSAGE_BYTES", "16777216", "largest gRPC message accepted or sent"),
    Setting("RELAY_POLL_SECONDS", "1.0", "how often the relay looks for events saved by other processes"),
    Setting(
        "ACK_WAIT_SECONDS",
        "30",
        "how long JetStream waits for a consumer's ack before it delivers an upstream event again "
        "(what a killed instance fetched comes back to the next one after this)",
    ),
    Setting(
        "CHAIN_KEY_FILE",
        "<VAR_DIR>/keys/<service>_chain_private.pem",
        "Ed25519 private key (PEM) that signs the service's log checkpoints",
    ),
    Setting(
        "SEAL_SECONDS", "60", "how often the service seals its log with a signed checkpoint (also at stop); 0: never"
    ),
    Setting(
        "CHAIN_PREVIOUS_PUBLIC_KEY_FILES",
        "",
        "comma-separated public keys (PEM) of earlier chain keys, still trusted for older checkpoints",
    ),
    Setting(
        "TICK_SECONDS",
        "<per service>",
        "how often the service's periodic work runs: metrics' evaluation rounds (5), agreements' and billing's "
        "due processing (30)",
    ),
    Setting("METRICS_HOST", "127.0.0.1", "address the Prometheus /metrics endpoint binds"),
    Setting("METRICS_PORT", "", "port of the Prometheus /metrics endpoint; empty: no endpoint"),
)
# Settings only an event-sourced service reads (the gateway keeps no store).
STORE_SETTINGS = frozenset(
    {
        "SQLITE_PATH",
        "POSTGRES_DBNAME",
        "RELAY_POLL_SECONDS",
        "CHAIN_KEY_FILE",
        "SEAL_SECONDS",
        "CHAIN_PREVIOUS_PUBLIC_KEY_FILES",
        "TICK_SECONDS",
    }
)

# OpenTelemetry's own variables (read under their standard names): traces are exported only
# when an endpoint is set.
OTEL_SETTINGS: tuple[Setting, ...] = (
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT", "", "OTLP collector that receives traces; empty: no tracing", "otel"),
    Setting("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTLP transport: grpc or http/protobuf", "otel"),
)

GATEWAY_SETTINGS: tuple[Setting, ...] = (
    Setting("HTTP_HOST", "127.0.0.1", "address the gateway's HTTP server binds"),
    Setting("HTTP_PORT", "8080", "the gateway's HTTP port"),
    Setting(
        "SNAPSHOT_PATH",
        "<VAR_DIR>/gateway[-<instance>]-snapshot.json",
        "the read model's snapshot, loaded at start so the streams are read on from its positions; empty: none",
    ),
    Setting("SNAPSHOT_SECONDS", "60", "how often the read model's snapshot is written (when it changed; also at stop)"),
)

METRICS_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "PROMETHEUS_SOURCES",
        "",
        "YAML file of Prometheus sources metrics pulls request counts from (empty: none)",
    ),
    Setting(
        "AGGREGATE_CACHE",
        "10000",
        "agreement views and window evaluations kept in memory between rounds (least recently used beyond); 0: none",
    ),
    Setting(
        "CLOSED_KEPT_SECONDS",
        "3600",
        "how long after its end a window closed from its running evaluation keeps it and its inputs, so that late "
        "signals are folded in rather than the window read and computed again (0–2678400: up to 31 days)",
    ),
    Setting(
        "RECORDER",
        "process",
        "where signals are recorded: process (a recording process of the service's own, beside it: a core of "
        "its own for recording) or in-process",
    ),
)

NOTIFIER_SETTINGS: tuple[Setting, ...] = (
    Setting("ALERTMANAGER_URL", "", "Alertmanager to send burn-rate alerts to (its /api/v2/alerts); empty: none"),
    Setting("DELIVERY_TIMEOUT_SECONDS", "10", "how long one delivery attempt may take"),
    Setting("MAX_ATTEMPTS", "8", "delivery attempts of one notification before it is abandoned with an alert"),
    Setting("RETRY_BASE_SECONDS", "2", "wait after the first failed attempt; doubles after each one"),
    Setting("RETRY_MAX_SECONDS", "600", "the longest wait between two attempts"),
    Setting("DISPUTE_NOTICE_DAYS", "3", "how long before a statement's dispute deadline its customer is reminded"),
    Setting("ALERT_HOLD_HOURS", "744", "how long a firing alert lasts in Alertmanager unless resolved sooner"),
)


def env_names(service: str) -> list[str]:
    """Every environment variable the named service reads."""
    names = [f"ACCORD_{s.name}" for s in SUITE_SETTINGS] + [s.name for s in OTEL_SETTINGS]
    per = list(SERVICE_SETTINGS) + (list(GATEWAY_SETTINGS) if service == "gateway" else [])
    per += list(METRICS_SETTINGS) if service == "metrics" else []
    per += list(NOTIFIER_SETTINGS) if service == "notifier" else []
    if service not in EVENT_SOURCED:
        per = [s for s in per if s.name not in STORE_SETTINGS]
    names += [f"{service.upper()}_{s.name}" for s in per]
    return names


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: str
    dbname: str


@dataclass(frozen=True)
class ServiceSettings:
    service: str
    grpc_host: str
    grpc_port: int
    nats_url: str
    nats_replicas: int
    persistence: str
    sqlite_path: Path
    postgres: PostgresSettings
    var_dir: Path
    auth_public_key_file: Path
    service_token_file: Path
    addresses: dict[str, str]
    log_level: str
    log_format: str
    grace_seconds: float
    max_message_bytes: int
    relay_poll_seconds: float
    ack_wait_seconds: float = 30.0
    chain_key_file: Path = Path("var/keys/accord_chain_private.pem")
    seal_seconds: float = 60.0
    chain_previous_public_key_files: tuple[Path, ...] = ()
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    snapshot_path: Path | None = None  # the gateway's read-model snapshot (None: none)
    snapshot_seconds: float = 60.0
    clock_file: Path | None = None  # end-to-end tests and demos: "now" read from this file
    tick_seconds: float = 0.0  # the periodic work's interval; 0: the service's own default
    heap_settle_seconds: float = 300.0  # how often the long-lived heap is settled (accord_kit.heap); 0: never
    prometheus_sources: Path | None = None  # metrics only
    aggregate_cache: int = 0  # metrics only: aggregates kept in memory between loads (0: none)
    closed_kept_seconds: float = 3600.0  # metrics only: a closed window's running evaluation kept this long
    recorder: str = "in-process"  # metrics only: "process" (a recording process beside it) or "in-process"
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no /metrics endpoint
    otlp_endpoint: str = ""  # empty: no tracing
    otlp_protocol: str = "grpc"
    nats_user: str = ""
    nats_password: str = ""
    lease: str = "none"
    lease_idle_seconds: float = 10.0  # a holder silent this long loses the lease (accord_kit.lease)
    instance: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def clock(self) -> Clock:
        """The service's clock: the system's, or the instant in ACCORD_CLOCK_FILE."""
        if not self.clock_file:
            return SystemClock()
        try:
            return FileClock(self.clock_file)
        except ValueError as e:
            raise SettingsError(f"ACCORD_CLOCK_FILE: {e}") from None

    @property
    def stream(self) -> str:
        """The service's JetStream stream name."""
        return self.service.upper()

    @property
    def consumer_name(self) -> str:
        """The name its durable consumers start with: the service's, or for a service with
        several instances that each keep their own read model (the gateway), the instance's."""
        if self.instance and self.service not in EVENT_SOURCED:
            return f"{self.service}-{self.instance}"
        return self.service

    @property
    def nats_auth(self) -> dict[str, str]:
        """nats-py connect options of this process's NATS user (none without one)."""
        return {"user": self.nats_user, "password": self.nats_password} if self.nats_user else {}

    @property
    def subject_prefix(self) -> str:
        return f"accord.{self.service}.v1"

    def event_store_env(self) -> dict[str, str]:
        """The eventsourcing library's settings for this service's store."""
        if self.persistence == "sqlite":
            return {
                "PERSISTENCE_MODULE": "accord_kit.persistence:DurableSQLiteFactory",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        return {
            "PERSISTENCE_MODULE": "accord_kit.persistence:ChainedPostgresFactory",
            "POSTGRES_DBNAME": self.postgres.dbname,
            "POSTGRES_HOST": self.postgres.host,
            "POSTGRES_PORT": str(self.postgres.port),
            "POSTGRES_USER": self.postgres.user,
            "POSTGRES_PASSWORD": self.postgres.password,
        }

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = dict(os.environ if environ is None else environ)
        p = service.upper()

        def suite(name: str) -> str:
            default = next(s.default for s in SUITE_SETTINGS if s.name == name)
            return env.get(f"ACCORD_{name}", default)

        def own(name: str, default: str) -> str:
            return env.get(f"{p}_{name}", default)

        var_dir = Path(suite("VAR_DIR"))
        persistence = suite("PERSISTENCE").lower()
        if persistence not in ("sqlite", "postgres"):
            raise SettingsError(f"ACCORD_PERSISTENCE must be 'sqlite' or 'postgres', not {persistence!r}")
        log_format = suite("LOG_FORMAT").lower()
        if log_format not in ("json", "console", "auto"):
            raise SettingsError(f"ACCORD_LOG_FORMAT must be json, console or auto, not {log_format!r}")
        otlp_protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower() or "grpc"
        if otlp_protocol not in ("grpc", "http/protobuf"):
            raise SettingsError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {otlp_protocol!r}")
        raw_metrics_port = own("METRICS_PORT", "").strip()
        lease = suite("LEASE").lower()
        if lease not in ("none", "postgres"):
            raise SettingsError(f"ACCORD_LEASE must be 'none' or 'postgres', not {lease!r}")
        if lease == "postgres" and persistence != "postgres":
            raise SettingsError("ACCORD_LEASE=postgres needs ACCORD_PERSISTENCE=postgres (its lock is in the store)")
        instance = own("INSTANCE", "")
        if instance and not all(c.isalnum() or c in "-_" for c in instance):
            raise SettingsError(f"{p}_INSTANCE may hold only letters, digits, '-' and '_', not {instance!r}")
        sqlite_path = Path(own("SQLITE_PATH", str(var_dir / f"{service}.sqlite")))
        # The gateway's read-model snapshot: one per instance (several may share a var dir).
        snapshot_name = f"{service}-{instance}-snapshot.json" if instance else f"{service}-snapshot.json"
        if ":memory:" in str(sqlite_path) or "mode=memory" in str(sqlite_path):
            raise SettingsError(
                f"{p}_SQLITE_PATH={sqlite_path} is an in-memory database: it would acknowledge "
                "writes that a restart loses; give a file path"
            )
        return cls(
            service=service,
            grpc_host=own("GRPC_HOST", "127.0.0.1"),
            grpc_port=_int(f"{p}_GRPC_PORT", own("GRPC_PORT", str(SERVICES.get(service, 0))), 0, 65535),
            nats_url=suite("NATS_URL"),
            nats_replicas=_int("ACCORD_NATS_REPLICAS", suite("NATS_REPLICAS"), 1, 5),
            persistence=persistence,
            sqlite_path=sqlite_path,
            postgres=PostgresSettings(
                host=suite("POSTGRES_HOST"),
                port=_int("ACCORD_POSTGRES_PORT", suite("POSTGRES_PORT"), 1, 65535),
                user=suite("POSTGRES_USER"),
                password=suite("POSTGRES_PASSWORD"),
                dbname=own("POSTGRES_DBNAME", f"accord_{service}"),
            ),
            var_dir=var_dir,
            auth_public_key_file=Path(suite("AUTH_PUBLIC_KEY_FILE")),
            service_token_file=Path(suite("SERVICE_TOKEN_FILE")),
            addresses={name: suite(f"{name.upper()}_ADDR") for name in EVENT_SOURCED},
            log_level=suite("LOG_LEVEL").lower(),
            log_format=log_format,
            grace_seconds=_float(f"{p}_GRACE_SECONDS", own("GRACE_SECONDS", "10"), 0, 3600),
            max_message_bytes=_int(
                f"{p}_MAX_MESSAGE_BYTES", own("MAX_MESSAGE_BYTES", str(16 * 1024 * 1024)), 1024, 2**31 - 1
            ),
            relay_poll_seconds=_float(f"{p}_RELAY_POLL_SECONDS", own("RELAY_POLL_SECONDS", "1.0"), 0.01, 60),
            ack_wait_seconds=_float(f"{p}_ACK_WAIT_SECONDS", own("ACK_WAIT_SECONDS", "30"), 1, 3600),
            chain_key_file=Path(own("CHAIN_KEY_FILE", str(var_dir / "keys" / f"{service}_chain_private.pem"))),
            seal_seconds=_seal_seconds(f"{p}_SEAL_SECONDS", own("SEAL_SECONDS", "60")),
            chain_previous_public_key_files=tuple(
                Path(f.strip()) for f in own("CHAIN_PREVIOUS_PUBLIC_KEY_FILES", "").split(",") if f.strip()
            ),
            http_host=own("HTTP_HOST", "127.0.0.1"),
            http_port=_int(f"{p}_HTTP_PORT", own("HTTP_PORT", "8080"), 0, 65535),
            snapshot_path=(
                Path(own("SNAPSHOT_PATH", str(var_dir / snapshot_name)))
                if service == "gateway" and own("SNAPSHOT_PATH", "x").strip()
                else None
            ),
            snapshot_seconds=_float(f"{p}_SNAPSHOT_SECONDS", own("SNAPSHOT_SECONDS", "60"), 0.1, 86400),
            clock_file=Path(suite("CLOCK_FILE")) if suite("CLOCK_FILE") else None,
            tick_seconds=_float(f"{p}_TICK_SECONDS", own("TICK_SECONDS", "0"), 0, 86400),
            heap_settle_seconds=_float(f"{p}_HEAP_SETTLE_SECONDS", own("HEAP_SETTLE_SECONDS", "300"), 0, 86400),
            prometheus_sources=(
                Path(own("PROMETHEUS_SOURCES", "")) if service == "metrics" and own("PROMETHEUS_SOURCES", "") else None
            ),
            aggregate_cache=(
                _int(f"{p}_AGGREGATE_CACHE", own("AGGREGATE_CACHE", "10000"), 0, 10_000_000)
                if service == "metrics"
                else 0
            ),
            closed_kept_seconds=(
                _float(f"{p}_CLOSED_KEPT_SECONDS", own("CLOSED_KEPT_SECONDS", "3600"), 0, 31 * 86400)
                if service == "metrics"
                else 3600.0
            ),
            recorder=_recorder(f"{p}_RECORDER", own("RECORDER", "process")) if service == "metrics" else "in-process",
            metrics_host=own("METRICS_HOST", "127.0.0.1"),
            metrics_port=_int(f"{p}_METRICS_PORT", raw_metrics_port, 0, 65535) if raw_metrics_port else None,
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip(),
            otlp_protocol=otlp_protocol,
            nats_user=suite("NATS_USER"),
            nats_password=suite("NATS_PASSWORD"),
            lease=lease,
            lease_idle_seconds=_float("ACCORD_LEASE_IDLE_SECONDS", suite("LEASE_IDLE_SECONDS"), 3, 3600),
            instance=instance,
        )


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _recorder(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("process", "in-process"):
        raise SettingsError(f"{name} must be 'process' or 'in-process', not {raw!r}")
    return value


def _seal_seconds(name: str, raw: str) -> float:
    value = _float(name, raw, 0, 86400)
    if 0 < value < 0.05:
        raise SettingsError(f"{name} must be 0 (never seal) or at least 0.05 seconds, not {value}")
    return value
