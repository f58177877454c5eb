"""`accord token mint`: a development bearer token, signed here with the development signing
key `make run` writes (var/keys/auth_private.pem), as accord_kit.devrun mints its own."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from accord_cli.core import app, fail, state

token_app = typer.Typer(help="Development tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

_TTL = re.compile(r"(\d+)([dhms])")
_UNIT = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
PRIVATE = "auth_private.pem"  # as accord_kit.keys writes it (imported lazily: a heavy import)
ROLES = ("admin", "auditor", "department", "service")  # accord_kit.auth.ROLES


def parse_ttl(text: str) -> timedelta:
    """ "8h", "30m", "1h30m", "7d", "90s"."""
    parts = _TTL.findall(text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        fail(f"--ttl: a duration like 8h, 30m, 1h30m, 7d, not {text!r}", 2)
    ttl = timedelta(**{_UNIT[u]: int(n) for n, u in parts})
    if ttl <= timedelta(0):
        fail(f"--ttl must be positive, not {text!r}", 2)
    return ttl


def signing_key_candidates() -> list[Path]:
    """Where the development signing key may be: ACCORD_VAR_DIR's keys, ./var/keys, the checkout's var/keys."""
    dirs = [Path(os.environ["ACCORD_VAR_DIR"]) / "keys"] if os.environ.get("ACCORD_VAR_DIR") else []
    dirs += [Path("var") / "keys", Path(__file__).resolve().parents[2] / "var" / "keys"]
    return [d / PRIVATE for d in dirs]


@token_app.command("mint")
def mint(
    role: Annotated[str, typer.Option(help=f"One of {', '.join(sorted(ROLES))}")],
    subject: Annotated[str, typer.Option(help="Who the token names (a person or a tool)")],
    department: Annotated[str, typer.Option(help="The department (required with role department)")] = "",
    ttl: Annotated[str, typer.Option(help="How long it is valid: 8h, 30m, 7d …")] = "8h",
    key: Annotated[
        Path | None, typer.Option(help="The Ed25519 signing key (PEM); default: var/keys/auth_private.pem")
    ] = None,
) -> None:
    """Mint a development token with the development signing key (what `make run` prints,
    for any role and department). Prints the token; with --json also its claims."""
    import jwt

    from accord_kit.auth import mint_token

    if role not in ROLES:
        fail(f"--role: one of {', '.join(sorted(ROLES))}, not {role!r}", 2)
    if role == "department" and not department:
        fail("--department is required with --role department", 2)
    if not subject.strip():
        fail("--subject must not be empty", 2)
    lifetime = parse_ttl(ttl)
    candidates = [key] if key else signing_key_candidates()
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        fail(f"no signing key at {', '.join(map(str, candidates))}: run `make run` once, or give --key", 2)
    try:
        token = mint_token(path.read_bytes(), subject=subject, role=role, department=department, ttl=lifetime)
    except (OSError, ValueError, TypeError) as e:
        fail(f"cannot mint with {path}: {' '.join(str(e).split())}", 2)
    if state.as_json:
        claims = jwt.decode(token, options={"verify_signature": False})
        expires = datetime.fromtimestamp(claims["exp"], UTC).isoformat()
        print(json.dumps({"token": token, "claims": claims, "expires_at": expires, "key": str(path)}, sort_keys=True))
    else:
        print(token)
