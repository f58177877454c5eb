"""`python -m accord_kit.keys DIR`: the signing key pair and the service token a deployment mounts."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from accord_kit.auth import generate_keypair, mint_token

SERVICE_SUBJECT = "accord-services"
PRIVATE = "auth_private.pem"
PUBLIC = "auth_public.pem"
TOKEN = "service.token"


def write_keys(directory: Path, token_days: float = 30.0) -> list[str]:
    """Create the key pair in `directory` unless it exists, then (re)mint the service token.

    Returns one line per file written, for the operator."""
    private, public = directory / PRIVATE, directory / PUBLIC
    lines: list[str] = []
    if private.exists() != public.exists():
        # Never overwrite half a pair: replacing either key silently invalidates every token in use.
        missing = public if private.exists() else private
        raise FileNotFoundError(f"{missing} is missing but its partner exists; restore it or empty {directory}")
    if not private.exists():
        generate_keypair(directory)
        lines += [f"created {private} (signing key, mode 0600: keep it secret)", f"created {public}"]
    else:
        lines.append(f"kept existing key pair in {directory}")
    token = mint_token(private.read_bytes(), subject=SERVICE_SUBJECT, role="service", ttl=timedelta(days=token_days))
    path = directory / TOKEN
    path.write_text(token + "\n")
    path.chmod(0o600)
    lines.append(f"wrote {path} (role service, subject {SERVICE_SUBJECT}, valid {token_days:g} days, mode 0600)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m accord_kit.keys",
        description=(
            f"Create an Ed25519 key pair ({PRIVATE}, {PUBLIC}) in DIR if absent and write "
            f"DIR/{TOKEN}, the bearer token the services present to one another."
        ),
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="where the keys go, e.g. deploy/keys")
    parser.add_argument(
        "--service-token-days",
        metavar="N",
        type=float,
        default=30.0,
        help="how long the service token is valid (default 30); re-run to rotate it",
    )
    args = parser.parse_args(argv)
    if args.service_token_days <= 0:
        parser.error("--service-token-days must be positive")
    try:
        lines = write_keys(args.directory, args.service_token_days)
    except (FileNotFoundError, PermissionError) as e:
        print(f"accord_kit.keys: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
