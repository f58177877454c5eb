"""Every example terms file under examples/terms/ drafted through the real agreements
service with `accord draft` (a gRPC server, real NATS and SQLite), after it passed
`accord validate`: the examples are terms the service takes, decimals written as plain YAML
numbers included. The multi-level examples are drafted parent first, with the placeholder
ids replaced by the ids the service gave, and the service-level agreement's effective terms
show what it inherits; `accord openslo export AGREEMENT_ID` exports those effective terms."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog
import yaml
from typer.testing import CliRunner

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.settings import load as load_agreements
from accord_cli import termsfile
from accord_cli.__main__ import app
from accord_kit.auth import mint_token
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "terms"
# Parents and underpinning agreements before the agreements that name them.
ORDER = ["sla-corporate.yaml", "sla-customer.yaml", "ola.yaml", "underpinning-contract.yaml", "sla-service.yaml"]
PLACEHOLDER = re.compile(r'"<agreement id of ([a-z-]+\.yaml)>"')


@pytest.fixture(autouse=True)
def service_logs_apart() -> Iterator[None]:
    """The service under test logs to the test's own stderr, fixed now: at structlog's defaults
    a line goes to whatever `sys.stdout` is when it is logged, and while the command runs that
    is the CliRunner's — a relay's line logged then became part of the command's JSON."""
    config = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**config)


async def accord(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The `accord` command's own code, in a worker thread (the service answers from this
    test's event loop); tests/test_cli.py runs it as a process."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


async def test_every_example_drafts_through_the_agreements_service(own_nats_server: NatsServer, tmp_path: Path) -> None:
    files = sorted(
        EXAMPLES.glob("*.yaml"),
        key=lambda p: (p.name not in ORDER, ORDER.index(p.name) if p.name in ORDER else 0, p.name),
    )
    docs = {p.name: termsfile.load(p) for p in files}
    keys = make_keys(tmp_path / "keys")
    settings = load_agreements(service_environ("agreements", tmp_path / "agreements", own_nats_server.url, "sqlite"))
    async with running_service(build_agreements, settings, keys) as agreements:
        admin = keys.metadata("admin")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as ch:
            stub = apb_grpc.AgreementsServiceStub(ch)
            departments = {
                d["parties"][f] for d in docs.values() for f in ("provider_department_id", "customer_department_id")
            }
            for dept in sorted(departments):
                await stub.RegisterDepartment(
                    apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin
                )
            for d in docs.values():
                for sid in (d.get("service") or {}).get("service_ids") or []:
                    try:
                        await stub.RegisterService(
                            apb.RegisterServiceRequest(
                                service_id=sid, name=sid, provider_department_id=d["parties"]["provider_department_id"]
                            ),
                            metadata=admin,
                        )
                    except grpc.aio.AioRpcError as e:
                        assert e.code() == grpc.StatusCode.ALREADY_EXISTS

            env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
            env.update(ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}", ACCORD_CONFIG=str(tmp_path / "none.toml"))
            ids: dict[str, str] = {}
            for path in files:
                text = PLACEHOLDER.sub(lambda m: json.dumps(ids[m.group(1)]), path.read_text())
                ready = tmp_path / path.name
                ready.write_text(text)
                code, out, err = await accord(env, "validate", str(ready))
                assert code == 0, out + err
                provider = docs[path.name]["parties"]["provider_department_id"]
                token = mint_token(keys.private, subject=provider, role="department", department=provider)
                code, out, err = await accord({**env, "ACCORD_TOKEN": token}, "--json", "draft", str(ready))
                assert code == 0, f"{path.name}: {out}{err}"
                agreement = json.loads(out)["agreement"]
                ids[path.name] = agreement["agreement_id"]
                # The plain YAML numbers arrived as the proto's decimal strings, exactly.
                want = [str(o["target"]) for o in docs[path.name].get("objectives") or []]
                assert [o["target"] for o in agreement["terms"].get("objectives") or []] == want

            # The service-level agreement's effective terms: corporate ← customer ← service.
            r = await stub.GetAgreement(
                apb.GetAgreementRequest(agreement_id=ids["sla-service.yaml"], effective_terms=True),
                metadata=keys.metadata("auditor"),
            )
            effective = r.agreement.effective_terms
            assert [o.target for o in effective.objectives] == ["99.9"]  # the child's objective replaced its parents'
            assert effective.fee.amount == "8000.00"  # from the customer level
            assert [p.priority for p in effective.support.priorities] == ["P1", "P2", "P3", "P4"]  # from corporate
            assert list(r.agreement.terms.objectives[0].underpinned_by) == [
                ids["ola.yaml"],
                ids["underpinning-contract.yaml"],
            ]

            # `accord openslo export AGREEMENT_ID`: the agreement's effective terms, from the service.
            provider = mint_token(keys.private, subject="it", role="department", department="it-operations")
            out = tmp_path / "openslo"
            code, stdout, stderr = await accord(
                {**env, "ACCORD_TOKEN": provider}, "openslo", "export", ids["sla-service.yaml"], "--out", str(out)
            )
            assert code == 0, stdout + stderr
            assert [Path(line).name for line in stdout.splitlines()] == ["availability.yaml", "accord-ledger.yaml"]
            _sli, slo, *policies = yaml.safe_load_all((out / "availability.yaml").read_text())
            assert slo["metadata"]["annotations"]["accord/agreement-id"] == ids["sla-service.yaml"]
            assert slo["spec"]["objectives"][0]["target"] == 0.999 and len(policies) == 4
            # An agreement that does not exist: exit 3, as every command.
            code, _, _ = await accord(
                {**env, "ACCORD_TOKEN": provider}, "openslo", "export", "00000000-0000-0000-0000-000000000000"
            )
            assert code == 3
