"""`python -m accord_kit.keys DIR`: the signing key pair and the service token a deployment
mounts, and each event-sourced service's checkpoint (chain) signing key pair."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from accord_kit.auth import generate_keypair, mint_token
from accord_kit.chain import generate_chain_keypair, load_private_key, public_key_pem
from accord_kit.settings import EVENT_SOURCED

SERVICE_SUBJECT = "accord-services"
PRIVATE = "auth_private.pem"
PUBLIC = "auth_public.pem"
TOKEN = "service.token"


def chain_key_files(directory: Path, service: str) -> tuple[Path, Path]:
    """Where a service's checkpoint signing key pair lives in `directory` (private, public);
    the private one is the default `<SERVICE>_CHAIN_KEY_FILE` under `<VAR_DIR>/keys`."""
    return directory / f"{service}_chain_private.pem", directory / f"{service}_chain_public.pem"


def _check_chain_keys(directory: Path, services: tuple[str, ...]) -> None:
    for service in services:
        private, public = chain_key_files(directory, service)
        if public.exists() and not private.exists():
            # A new key would not be the one that signed the checkpoints already in the log.
            raise FileNotFoundError(
                f"{private} is missing but {public.name} exists; restore it, or move {public.name} aside and "
                f"name it in {service.upper()}_CHAIN_PREVIOUS_PUBLIC_KEY_FILES so its checkpoints still verify"
            )


def write_chain_keys(directory: Path, services: tuple[str, ...] = EVENT_SOURCED) -> list[str]:
    """Create each service's checkpoint signing key pair in `directory` unless it exists
    (a missing public half is derived from the private key). One line per file written."""
    _check_chain_keys(directory, services)
    lines: list[str] = []
    for service in services:
        private, public = chain_key_files(directory, service)
        if not private.exists():
            generate_chain_keypair(directory, service)
            lines.append(f"created {private} (checkpoint signing key of {service}, mode 0600) and {public.name}")
        elif not public.exists():
            public.write_bytes(public_key_pem(load_private_key(private).public_key()))
            lines.append(f"wrote {public} (the public half of {private.name})")
    return lines


def write_keys(directory: Path, token_days: float = 30.0) -> list[str]:
    """Create the key pair in `directory` unless it exists, then (re)mint the service token;
    create the event-sourced services' checkpoint signing keys unless they exist.

    Returns one line per file written, for the operator."""
    private, public = directory / PRIVATE, directory / PUBLIC
    lines: list[str] = []
    if private.exists() != public.exists():
        # Never overwrite half a pair: replacing either key silently invalidates every token in use.
        missing = public if private.exists() else private
        raise FileNotFoundError(f"{missing} is missing but its partner exists; restore it or empty {directory}")
    _check_chain_keys(directory, EVENT_SOURCED)
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
    return lines + write_chain_keys(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m accord_kit.keys",
        description=(
            f"Create an Ed25519 key pair ({PRIVATE}, {PUBLIC}) in DIR if absent and write "
            f"DIR/{TOKEN}, the bearer token the services present to one another; create each "
            "event-sourced service's checkpoint signing key pair (<service>_chain_private.pem, "
            "<service>_chain_public.pem) if absent."
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
