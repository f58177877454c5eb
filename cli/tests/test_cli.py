"""The real `accord` command against running services: exit codes scripts rely on, --json
output, tokens from the environment or a config file, terms from YAML, and an auditor's
replay across services."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import sla_terms
from accord_agreements.settings import load as load_agreements
from accord_billing.bootstrap import build as build_billing
from accord_billing.settings import load as load_billing
from accord_kit.auth import mint_token
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics

pytestmark = pytest.mark.slow


async def accord(env: dict[str, str], *args: str, token: str | None = None) -> tuple[int, str, str]:
    full = {**env}
    if token is not None:
        full["ACCORD_TOKEN"] = token
    # In a thread: the services under test answer from this test's event loop.
    p = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "accord_cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stdout, p.stderr


async def test_the_accord_command_line(own_nats_server: NatsServer, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    tokens = {
        who: mint_token(keys.private, subject=who, role=role, department=dept)
        for who, role, dept in (
            ("admin", "admin", ""),
            ("auditor", "auditor", ""),
            ("it", "department", "it-operations"),
            ("fin", "department", "finance"),
            ("mkt", "department", "marketing"),
        )
    }
    service_token = tmp_path / "keys" / "service.token"
    service_token.write_text(mint_token(keys.private, subject="svc", role="service"))
    nats = own_nats_server.url

    def env_of(service: str) -> dict[str, str]:
        return service_environ(
            service, tmp_path / service, nats, "sqlite", ACCORD_SERVICE_TOKEN_FILE=str(service_token)
        )

    async with (
        running_service(build_agreements, load_agreements(env_of("agreements")), keys) as agreements,
        running_service(build_metrics, load_metrics(env_of("metrics")), keys) as metrics,
        running_service(build_billing, load_billing(env_of("billing")), keys) as billing,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
        env.update(
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}",
            ACCORD_METRICS_ADDR=f"127.0.0.1:{metrics.port}",
            ACCORD_BILLING_ADDR=f"127.0.0.1:{billing.port}",
            ACCORD_CONFIG=str(tmp_path / "none.toml"),
        )
        # No token at all: exit 4 with a message saying where tokens come from.
        code, _, err = await accord(env, "register", "department", "it-operations", "IT")
        assert code == 4 and "ACCORD_TOKEN" in err
        for dept in ("it-operations", "finance", "marketing"):
            assert (await accord(env, "register", "department", dept, dept, token=tokens["admin"]))[0] == 0
        code, _, _ = await accord(env, "register", "service", "email", "E-mail", "it-operations", token=tokens["admin"])
        assert code == 0
        # Registering twice is refused as not possible: exit 5.
        assert (await accord(env, "register", "department", "finance", "again", token=tokens["admin"]))[0] == 5

        terms_file = tmp_path / "email-sla.yaml"
        terms_file.write_text(yaml.safe_dump(sla_terms()))
        code, out, _ = await accord(env, "--json", "draft", str(terms_file), token=tokens["it"])
        assert code == 0, out
        aid = json.loads(out)["agreement"]["agreement_id"]
        assert (await accord(env, "propose", aid, token=tokens["it"]))[0] == 0
        # The wrong party: exit 4. A missing agreement: exit 3. Garbled terms: exit 5.
        assert (await accord(env, "accept", aid, token=tokens["mkt"]))[0] == 4
        assert (await accord(env, "accept", "00000000-0000-0000-0000-000000000000", token=tokens["fin"]))[0] == 3
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"title": "x", "no_such_field": 1}))
        assert (await accord(env, "draft", str(bad), token=tokens["it"]))[0] == 5
        # The token from a config file this time.
        config = tmp_path / "config.toml"
        config.write_text(f'token = "{tokens["fin"]}"\n')
        code, out, _ = await accord({**env, "ACCORD_CONFIG": str(config)}, "--json", "accept", aid)
        assert code == 0 and json.loads(out)["agreement"]["state"] == "AGREEMENT_STATE_ACTIVE"
        # A human-readable table by default.
        code, out, _ = await accord(env, "reject", aid, "--reason", "too late", token=tokens["fin"])
        assert code == 5  # an active agreement cannot be rejected

        # The auditor's replay: every event of the agreement, across services, as JSON lines.
        code, out, err = await accord(env, "--json", "audit", "replay", aid, token=tokens["auditor"])
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        own = [e["type"].rsplit(".", 1)[1] for e in events if e["source_service"] == "agreements"]
        assert own == ["AgreementDrafted", "AgreementProposed", "AgreementAccepted"]
        # Metrics and billing learned of it too: their events are part of the replay.
        assert {e["source_service"] for e in events} >= {"agreements", "metrics", "billing"}
        recorded = [datetime.fromisoformat(e["recorded_at"].replace("Z", "+00:00")) for e in events]
        assert recorded == sorted(recorded)
        # A department may not replay: exit 4.
        assert (await accord(env, "audit", "replay", aid, token=tokens["fin"]))[0] == 4
