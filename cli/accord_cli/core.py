"""`accord` — what a department or an auditor does, from a terminal or a script.

Tokens come from --token, the ACCORD_TOKEN environment variable, or `token = "…"` in
~/.config/accord/config.toml (or the file ACCORD_CONFIG names). Addresses come from
ACCORD_AGREEMENTS_ADDR, ACCORD_METRICS_ADDR, ACCORD_BILLING_ADDR, ACCORD_GATEWAY_ADDR
(defaults: 127.0.0.1:50051…50054). `--json` prints machine-readable output.

Exit codes scripts can rely on: 0 done; 2 bad usage; 3 not found; 4 not authenticated or
not allowed; 5 refused as invalid or not possible now; 6 a concurrent change won (retry);
1 anything else (the service unreachable, an internal error)."""

# This module holds what every command shares: the typer apps, options, tokens, channels, output.
from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

# The public event messages, so that replayed envelopes' payloads can be shown as JSON.
from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import events_pb2 as _agreement_events  # noqa: F401
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import events_pb2 as _billing_events  # noqa: F401
from accord.metrics.v1 import events_pb2 as _metric_events  # noqa: F401
from accord_cli import termsfile

EXIT = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.UNAUTHENTICATED: 4,
    grpc.StatusCode.PERMISSION_DENIED: 4,
    grpc.StatusCode.INVALID_ARGUMENT: 5,
    grpc.StatusCode.FAILED_PRECONDITION: 5,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.ABORTED: 6,
}
DEFAULT_ADDR = {
    "agreements": "127.0.0.1:50051",
    "metrics": "127.0.0.1:50052",
    "billing": "127.0.0.1:50053",
    "gateway": "127.0.0.1:50054",
}

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
register_app = typer.Typer(help="Reference data (admins).", no_args_is_help=True)
audit_app = typer.Typer(
    help="What an auditor does: replay, as-of, verify, re-derive, what-if, export.", no_args_is_help=True
)
app.add_typer(register_app, name="register")
app.add_typer(audit_app, name="audit")
out = Console()
err = Console(stderr=True)


class State:
    token: str = ""
    as_json: bool = False


state = State()


@app.callback()
def _options(
    token: Annotated[str, typer.Option(help="Bearer token (else ACCORD_TOKEN, else the config file)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    state.token = token or os.environ.get("ACCORD_TOKEN", "") or _config_token()
    state.as_json = as_json


def _config_token() -> str:
    path = Path(os.environ.get("ACCORD_CONFIG", Path.home() / ".config" / "accord" / "config.toml"))
    if not path.exists():
        return ""
    try:
        return str(tomllib.loads(path.read_text()).get("token", ""))
    except tomllib.TOMLDecodeError as e:
        err.print(f"[red]config file {path} is not valid TOML: {e}[/red]")
        raise typer.Exit(2) from None


def metadata() -> list[tuple[str, str]]:
    if not state.token:
        err.print(
            '[red]no token: pass --token, set ACCORD_TOKEN, or put token = "…" in ~/.config/accord/config.toml[/red]'
        )
        raise typer.Exit(4)
    return [("authorization", f"Bearer {state.token}")]


@contextmanager
def channel(service: str) -> Iterator[grpc.Channel]:
    addr = os.environ.get(f"ACCORD_{service.upper()}_ADDR", DEFAULT_ADDR[service])
    with grpc.insecure_channel(addr) as ch:
        try:
            yield ch
        except grpc.RpcError as e:
            code = e.code()
            details = e.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                err.print(f"[red]{service} at {addr} is not reachable: {details}[/red]")
                raise typer.Exit(1) from None
            if state.as_json:
                print(json.dumps({"error": details, "code": code.name}))
            else:
                err.print(f"[red]{code.name}: {details}[/red]")
            raise typer.Exit(EXIT.get(code, 1)) from None


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
    """Terms from a YAML or JSON file; decimals as strings or plain numbers (`accord validate`)."""
    try:
        data = termsfile.load(path)
    except termsfile.UnreadableError as e:
        err.print(f"[red]cannot read terms from {path}: {e}[/red]")
        raise typer.Exit(2) from None
    try:
        return termsfile.to_message(data)
    except json_format.ParseError as e:
        err.print(f"[red]{path} is not valid agreement terms: {e}[/red]")
        raise typer.Exit(5) from None


def timestamp_of(value: str) -> Timestamp:
    t = Timestamp()
    try:
        t.FromDatetime(datetime.fromisoformat(value).astimezone(UTC))
    except ValueError:
        err.print(f"[red]not an ISO-8601 instant with a time zone: {value!r}[/red]")
        raise typer.Exit(2) from None
    return t


def agreement_table(a: apb.Agreement) -> Table:
    t = Table(title=f"{a.terms.title} ({a.agreement_id})")
    t.add_column("state")
    t.add_column("version")
    t.add_column("revision")
    t.add_column("provider → customer")
    t.add_row(apb.AgreementState.Name(a.state).removeprefix("AGREEMENT_STATE_"), str(a.version), str(a.revision),
              f"{a.terms.parties.provider_department_id} → {a.terms.parties.customer_department_id}")  # fmt: skip
    return t
