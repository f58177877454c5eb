"""`accord` — what a department or an auditor does, from a terminal or a script.

Tokens: --token, else ACCORD_TOKEN, else the profile's `token`, else `token = "…"` at the
top of ~/.config/accord/config.toml (or the file ACCORD_CONFIG names). Addresses:
--addr SERVICE=HOST:PORT, else ACCORD_<SERVICE>_ADDR, else the profile's, else the config
file's top level, else 127.0.0.1:7051…7054 (agreements, metrics, billing, gateway).
Profiles: the config file's `profiles.NAME` tables (token, agreements, metrics, billing,
gateway), chosen with --profile NAME or ACCORD_PROFILE. --json (anywhere on the line)
prints machine-readable output on stdout.

Exit codes scripts can rely on: 0 done; 2 bad usage (also an unreadable or malformed
file); 3 not found; 4 not authenticated or not allowed; 5 refused as invalid or not
possible now; 6 a concurrent change won (retry); 1 anything else (the service
unreachable, an internal error). Every error is one line on stderr."""

# This module holds what every command shares: the typer apps, options, tokens, channels, output.
from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
import typer
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# The public event messages, so that replayed envelopes' payloads can be shown as JSON.
from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import events_pb2 as _agreement_events  # noqa: F401
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import events_pb2 as _billing_events  # noqa: F401
from accord.metrics.v1 import events_pb2 as _metric_events  # noqa: F401
from accord_cli import __version__, termsfile
from accord_cli.yamlio import for_message, load_yaml
from accord_kit.settings import SERVICES as DEFAULT_GRPC_PORTS

EXIT = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.UNAUTHENTICATED: 4,
    grpc.StatusCode.PERMISSION_DENIED: 4,
    grpc.StatusCode.INVALID_ARGUMENT: 5,
    grpc.StatusCode.FAILED_PRECONDITION: 5,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.ABORTED: 6,
}
# Where each service listens by default (agreements, metrics, billing, gateway, notifier).
DEFAULT_ADDR = {service: f"127.0.0.1:{port}" for service, port in DEFAULT_GRPC_PORTS.items()}

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
register_app = typer.Typer(help="Reference data (admins).", no_args_is_help=True)
audit_app = typer.Typer(
    help="What an auditor does: replay, as-of, verify, re-derive, what-if, export.", no_args_is_help=True
)
app.add_typer(register_app, name="register")
app.add_typer(audit_app, name="audit")
out = Console()
# soft_wrap: an error stays one line however narrow the terminal (or a pipe's 80 columns).
err = Console(stderr=True, soft_wrap=True)
SERVICES = tuple(DEFAULT_ADDR)


class State:
    token: str = ""
    as_json: bool = False
    addr: dict[str, str] = {}
    profile: dict[str, Any] = {}
    config: dict[str, Any] = {}


state = State()


def fail(message: str, code: int) -> NoReturn:
    """Stop with one line on stderr (no markup: messages quote field paths like `a[b]`)."""
    say(message)
    raise typer.Exit(code)


def say(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    err.print(" ".join(message.split()), style="red", markup=False, highlight=False)


def _version(value: bool) -> None:
    if value:
        print(f"accord {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    token: Annotated[str, typer.Option(help="Bearer token (else ACCORD_TOKEN, the profile, the config file)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (anywhere on the line)")] = False,
    addr: Annotated[
        list[str] | None, typer.Option("--addr", help="SERVICE=HOST:PORT (agreements, metrics, billing, gateway)")
    ] = None,
    profile: Annotated[str, typer.Option(help="The config file's profiles.NAME (else ACCORD_PROFILE)")] = "",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    state.as_json = as_json
    state.config = _config()
    state.profile = _profile(profile or os.environ.get("ACCORD_PROFILE", ""))
    state.addr = {}
    for item in addr or []:
        service, sep, where = item.partition("=")
        if not sep or service not in SERVICES or not where:
            fail(f"--addr wants SERVICE=HOST:PORT with SERVICE one of {', '.join(SERVICES)}: {item!r}", 2)
        state.addr[service] = where
    state.token = (
        token
        or os.environ.get("ACCORD_TOKEN", "")
        or str(state.profile.get("token", ""))
        or str(state.config.get("token", ""))
    )


def config_path() -> Path:
    return Path(os.environ.get("ACCORD_CONFIG", Path.home() / ".config" / "accord" / "config.toml"))


def _config() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        fail(f"config file {path} is not valid TOML: {e}", 2)


def _profile(name: str) -> dict[str, Any]:
    if not name:
        return {}
    profiles = state.config.get("profiles", {})
    if not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) and profiles else "none"
        fail(f"no profile {name!r} in {config_path()} (profiles: {known})", 2)
    return dict(profiles[name])


def address(service: str) -> str:
    """Where a service listens: --addr, ACCORD_<SERVICE>_ADDR, the profile, the config file, the default."""
    return (
        state.addr.get(service)
        or os.environ.get(f"ACCORD_{service.upper()}_ADDR", "")
        or str(state.profile.get(service, ""))
        or str(state.config.get(service, ""))
        or DEFAULT_ADDR[service]
    )


def metadata() -> list[tuple[str, str]]:
    if not state.token:
        fail(
            'no token: pass --token, set ACCORD_TOKEN, or put token = "…" in ~/.config/accord/config.toml '
            "(or a [profiles.NAME] of it); `accord token mint` makes a development token",
            4,
        )
    return [("authorization", f"Bearer {state.token}")]


def rpc_failed(service: str, e: grpc.RpcError) -> NoReturn:
    """A failed call: one line on stderr (and the error as JSON on stdout with --json), exit by status."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = (e.details() if hasattr(e, "details") else "") or str(code)
    if state.as_json:
        print(json.dumps({"error": details, "code": code.name}))
    if code == grpc.StatusCode.UNAVAILABLE:
        fail(f"{service} at {address(service)} is not reachable: {details}", 1)
    fail(f"{code.name}: {details}", EXIT.get(code, 1))


@contextmanager
def channel(service: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address(service)) as ch:
        try:
            yield ch
        except grpc.RpcError as e:
            rpc_failed(service, e)


def emit(message: Message | dict[str, Any], table: Table | None = None) -> None:
    if state.as_json or table is None:
        doc = (
            json_format.MessageToDict(message, preserving_proto_field_name=True)
            if isinstance(message, Message)
            else message
        )
        print(json.dumps(doc, indent=None if state.as_json else 2, sort_keys=True))
    else:
        out.print(table)


def read_terms(path: Path) -> terms_pb2.AgreementTerms:
    """Terms from a YAML or JSON file, read as `accord validate` reads them: decimals as strings
    or plain numbers taken as written. Unreadable, empty or malformed: exit 2; not valid: exit 5."""
    try:
        data = termsfile.load(path)
    except termsfile.UnreadableError as e:
        fail(f"cannot read agreement terms from {path}: {e}", 2)
    if data is None:
        fail(f"{path} is empty: it should hold agreement terms", 2)
    if not isinstance(data, dict):
        fail(f"{path} should hold agreement terms as a mapping of fields, not a {type(data).__name__}", 2)
    try:
        return termsfile.to_message(data)
    except json_format.ParseError as e:
        fail(f"{path} is not valid agreement terms: {e}", 5)


M = TypeVar("M", bound=Message)


def read_message(path: Path, message: M, what: str) -> M:
    """A YAML (or JSON) file in the proto's JSON form; plain numbers are taken for decimal
    string fields as written (`target: 99.9` is "99.9"). Unreadable, empty or malformed: exit 2;
    not valid as the message: exit 5."""
    try:
        data = load_yaml(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        fail(f"cannot read {what} from {path}: {' '.join(str(e).split())}", 2)
    if data is None:
        fail(f"{path} is empty: it should hold {what}", 2)
    if not isinstance(data, dict):
        fail(f"{path} should hold {what} as a mapping of fields, not a {type(data).__name__}", 2)
    try:
        return json_format.ParseDict(for_message(data, message.DESCRIPTOR), message)
    except json_format.ParseError as e:
        fail(f"{path} is not valid {what}: {e}", 5)


def instant_of(value: str, tz: str = "", what: str = "instant") -> datetime:
    """RFC 3339 with an offset, or a local time read in `tz` (an IANA name)."""
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"{what}: not an ISO-8601 instant: {value!r} (e.g. 2026-03-14T09:30:00+01:00)", 2)
    if dt.tzinfo is None:
        if not tz:
            fail(f"{what}: {value!r} has no offset: add one (…+01:00) or give --tz ZONE", 2)
        try:
            dt = dt.replace(tzinfo=ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            fail(f"--tz: not an IANA time zone: {tz!r}", 2)
    return dt.astimezone(UTC)


def timestamp_of(value: str, tz: str = "", what: str = "instant") -> Timestamp:
    t = Timestamp()
    t.FromDatetime(instant_of(value, tz, what))
    return t


def agreement_table(a: apb.Agreement) -> Table:
    t = table(f"{a.terms.title} ({a.agreement_id})")
    t.add_column("state")
    t.add_column("version")
    t.add_column("revision")
    t.add_column("provider → customer")
    t.add_row(apb.AgreementState.Name(a.state).removeprefix("AGREEMENT_STATE_"), str(a.version), str(a.revision),
              f"{a.terms.parties.provider_department_id} → {a.terms.parties.customer_department_id}")  # fmt: skip
    return t


def add_row(t: Table, *cells: str) -> None:
    """A table row of plain text: `objectives[availability]` is a path, not markup."""
    t.add_row(*(escape(c) for c in cells))


def table(title: str) -> Table:
    """A table whose title is plain text."""
    return Table(title=escape(title))
