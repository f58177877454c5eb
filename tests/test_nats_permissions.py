"""deploy/nats/accounts.conf on a real nats-server: a service publishes into its own stream and
no other, the gateway into none, and a department only signal batches to the intake subject —
a forbidden publish is refused by the server and nothing reaches the stream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js import api

from accord_kit.clusterrun import ACCOUNTS_CONF, NATS_USERS, SAFE_NATS_PASSWORD, nats_passwords
from accord_kit.nats_util import connect, ensure_stream
from accord_kit.testing.nats import die_with_parent, free_port, nats_server_binary

PASSWORDS: dict[str, str] = {}  # made by make run-cluster's own generator (the server fixture)
STREAMS = {"AGREEMENTS": "agreements", "METRICS": "metrics", "BILLING": "billing"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("nats-accounts")
    PASSWORDS.update(nats_passwords(d))
    port = free_port()
    conf = d / "node.conf"
    conf.write_text(
        f'server_name: accord-perm\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: "{d / "js"}" }}\n'
        f'include "{os.path.relpath(ACCOUNTS_CONF, d)}"\n'
    )
    env = dict(os.environ) | {f"NATS_PASSWORD_{u.upper()}": pw for u, pw in PASSWORDS.items()}
    log = open(d / "nats.log", "wb")  # noqa: SIM115 (kept open for the child)
    proc = subprocess.Popen(
        die_with_parent([nats_server_binary(), "-c", str(conf)]), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    url = f"nats://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@asynccontextmanager
async def as_user(url: str, user: str, errors: list[str]) -> AsyncIterator[Any]:
    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    nc = await connect(url, name=f"perm-{user}", user=user, password=PASSWORDS[user], error_cb=on_error)
    try:
        yield nc
    finally:
        await nc.close()


async def _setup(url: str) -> None:
    async with as_user(url, "admin", []) as nc:
        for stream, service in STREAMS.items():
            await ensure_stream(nc, stream, service)
        js = nc.jetstream()
        try:
            await js.stream_info("SIGNALS")
        except Exception:
            await js.add_stream(api.StreamConfig(name="SIGNALS", subjects=["accord.signals.v1.>"]))


async def _count(url: str, stream: str) -> int:
    async with as_user(url, "admin", []) as nc:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages)


async def _publish(url: str, user: str, subject: str) -> tuple[bool, list[str]]:
    """Whether JetStream stored the publish, and the errors the server sent."""
    errors: list[str] = []
    async with as_user(url, user, errors) as nc:
        try:
            await nc.jetstream().publish(subject, b"x", timeout=1.5)
            stored = True
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            stored = False
        await asyncio.sleep(0.2)  # the server's -ERR arrives asynchronously
    return stored, errors


@pytest.mark.parametrize(
    ("user", "subject", "stream", "allowed"),
    [
        ("agreements", "accord.agreements.v1.AgreementDrafted", "AGREEMENTS", True),
        ("agreements", "accord.billing.v1.StatementIssued", "BILLING", False),
        ("metrics", "accord.metrics.v1.WindowClosed", "METRICS", True),
        ("metrics", "accord.agreements.v1.AgreementDrafted", "AGREEMENTS", False),
        ("billing", "accord.metrics.v1.WindowClosed", "METRICS", False),
        ("gateway", "accord.agreements.v1.AgreementDrafted", "AGREEMENTS", False),
        ("departments", "accord.agreements.v1.AgreementDrafted", "AGREEMENTS", False),
        ("departments", "accord.billing.v1.StatementIssued", "BILLING", False),
        ("departments", "accord.signals.v1.email", "SIGNALS", True),
    ],
)
def test_publish_permissions(server: str, user: str, subject: str, stream: str, allowed: bool) -> None:
    async def run() -> None:
        await _setup(server)
        before = await _count(server, stream)
        stored, errors = await _publish(server, user, subject)
        after = await _count(server, stream)
        if allowed:
            assert stored and after == before + 1, errors
            assert not errors
        else:
            assert not stored, f"{user} published into {stream}"
            assert after == before
            assert any("permissions violation" in e.lower() for e in errors), errors

    asyncio.run(run())


def test_departments_cannot_touch_the_jetstream_api(server: str) -> None:
    async def run() -> None:
        await _setup(server)
        errors: list[str] = []
        async with as_user(server, "departments", errors) as nc:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.jetstream().purge_stream("AGREEMENTS")
            await asyncio.sleep(0.2)
        assert any("permissions violation" in e.lower() for e in errors), errors

    asyncio.run(run())


def test_a_wrong_password_is_refused(server: str) -> None:
    async def run() -> None:
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        with pytest.raises(Exception):  # noqa: B017 (nats-py raises its own errors, or ours on time-out)
            await asyncio.wait_for(
                nats.connect(
                    server, user="agreements", password="nope", allow_reconnect=False,
                    max_reconnect_attempts=0, connect_timeout=2, error_cb=on_error,
                ),
                timeout=15,
            )  # fmt: skip
        assert any("authorization" in e.lower() for e in errors), errors

    asyncio.run(run())


def test_accounts_file_names_every_user(tmp_path: Path) -> None:
    text = ACCOUNTS_CONF.read_text()
    for user in NATS_USERS:
        assert f"$NATS_PASSWORD_{user.upper()}" in text


def test_generated_passwords_are_text_to_nats_server(tmp_path: Path) -> None:
    """nats-server parses an environment variable's value as a configuration token: a password
    starting with a digit is read as a number and the node refuses to start. Every password
    make run-cluster makes is a letter and then letters and digits; one kept from before in
    another form is made again."""
    for i in range(300):
        keys = tmp_path / str(i)
        keys.mkdir()
        assert all(SAFE_NATS_PASSWORD.fullmatch(pw) for pw in nats_passwords(keys).values())
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "nats-passwords.json").write_text(json.dumps({u: "1a2b3c4d5e6f7g8h9" for u in NATS_USERS}))
    remade = nats_passwords(kept)
    assert all(SAFE_NATS_PASSWORD.fullmatch(pw) for pw in remade.values())
    assert json.loads((kept / "nats-passwords.json").read_text()) == remade
