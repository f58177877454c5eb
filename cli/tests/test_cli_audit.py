"""The auditor's `accord audit …` commands, run as real processes against the three running
services (gRPC, real stores, real NATS) after two months of an e-mail SLA with a restated
January: replay, verify (online and offline from an export), as-of on both time axes,
re-derivation (clean, then after a stored signal is altered behind the service's back),
and what-if for a tightened and a loosened draft amendment."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_agreements.settings import load as load_agreements
from accord_billing.bootstrap import build as build_billing
from accord_billing.settings import load as load_billing
from accord_kit.auth import mint_token
from accord_kit.clock import FakeClock
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics
from cli.tests.test_cli import accord
from tests.suite import AMS, alter_stored_signal, at, outage

pytestmark = pytest.mark.slow


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 90) -> None:
    # 90 s as the other end-to-end waits (60–120 s): at 30 s, metrics learning the agreement timed
    # out once in a full `make test` on 2 cores (the test alone takes ≈ 7 s; not reproduced since).
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def draft_terms(path: Path, target: str, upper: str) -> Path:
    """The sample terms with another availability target and first credit band."""
    terms = sla_terms()
    availability = next(o for o in terms["objectives"] if o["objective_id"] == "availability")
    availability["target"] = target
    availability["credit_tiers"][0]["upper"] = upper
    path.write_text(yaml.safe_dump(terms))
    return path


async def test_the_auditors_commands(own_nats_server: NatsServer, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    tokens = {
        who: mint_token(keys.private, subject=who, role=role, department=dept)
        for who, role, dept in (("admin", "admin", ""), ("auditor", "auditor", ""), ("it", "department", IT),
                                ("fin", "department", FINANCE))
    }  # fmt: skip
    service_token = tmp_path / "keys" / "service.token"
    service_token.write_text(mint_token(keys.private, subject="svc", role="service"))
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))

    ports = {"agreements": free_port(), "metrics": free_port()}  # billing re-derives from their logs

    def env_of(service: str) -> dict[str, str]:
        return service_environ(
            service, tmp_path / service, own_nats_server.url, "sqlite", ACCORD_SERVICE_TOKEN_FILE=str(service_token),
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{ports['agreements']}",
            ACCORD_METRICS_ADDR=f"127.0.0.1:{ports['metrics']}",
            **({f"{service.upper()}_GRPC_PORT": str(ports[service])} if service in ports else {}),
        )  # fmt: skip

    def md(who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {tokens[who]}")]

    metrics_settings = load_metrics(env_of("metrics"))
    async with (
        running_service(build_agreements, load_agreements(env_of("agreements")), keys, clock=clock,
                        due_interval=0.2) as agreements,
        running_service(build_metrics, metrics_settings, keys, clock=clock, evaluate_every=0.2) as metrics,
        running_service(build_billing, load_billing(env_of("billing")), keys, clock=clock, due_every=0.2) as billing,
        grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{billing.port}") as b_ch,
    ):  # fmt: skip
        ag, me, bi = (
            apb_grpc.AgreementsServiceStub(a_ch),
            mpb_grpc.MetricsServiceStub(m_ch),
            bpb_grpc.BillingServiceStub(b_ch),
        )
        for dept in (IT, FINANCE):
            await ag.RegisterDepartment(
                apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=md("admin")
            )
        await ag.RegisterService(
            apb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=md("admin")
        )
        terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
        aid = (
            await ag.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=md("it"))
        ).agreement.agreement_id
        await ag.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=md("it"))
        await ag.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=md("fin"))

        async def record(*signals: spb.Signal) -> None:
            await until(lambda: _known(me, aid, md("it")), "metrics to know the agreement")
            await me.RecordSignalBatch(mpb.RecordSignalBatchRequest(signals=signals), metadata=md("it"))

        async def statements() -> list[Any]:
            try:
                r = await bi.ListStatements(bpb.ListStatementsRequest(agreement_id=aid), metadata=md("fin"))
            except grpc.aio.AioRpcError:
                return []
            return list(r.statements)

        # January: 30 minutes down (met). It closes and its statement is issued.
        await record(outage("jan", f"2026-01-12T10:00{AMS}", 30))
        clock.set(at(f"2026-02-01T02:00{AMS}"))

        async def january_issued() -> bool:
            s = await statements()
            return bool(s) and s[0].state == bpb.STATEMENT_STATE_ISSUED

        await until(january_issued, "January's statement issued")
        before = at(f"2026-02-02T00:00{AMS}")
        # 2 February: a late report adds 20 minutes to January (50 in all: breached, 10 % credit);
        # February has 30 minutes down (met).
        clock.set(at(f"2026-02-02T12:00{AMS}"))
        await record(outage("jan-late", f"2026-01-20T02:00{AMS}", 20), outage("feb", f"2026-02-03T08:00{AMS}", 30))

        async def adjusted_in_february() -> bool:
            s = await statements()
            return len(s) >= 2 and len(s[1].adjustments) == 1

        await until(adjusted_in_february, "January's restatement adjusted on February's statement")
        clock.set(at(f"2026-03-01T02:00{AMS}"))

        async def february_issued_with_adjustment() -> bool:
            s = await statements()
            return len(s) >= 2 and s[1].state == bpb.STATEMENT_STATE_ISSUED and len(s[1].adjustments) == 1

        await until(february_issued_with_adjustment, "February issued with January's adjustment")

        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
        env.update(
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}",
            ACCORD_METRICS_ADDR=f"127.0.0.1:{metrics.port}",
            ACCORD_BILLING_ADDR=f"127.0.0.1:{billing.port}",
            ACCORD_CONFIG=str(tmp_path / "none.toml"),
            ACCORD_TOKEN=tokens["auditor"],
        )

        # Replay: one causal history across the three services, each event with its chain hash.
        code, out, err = await accord(env, "--json", "audit", "replay", aid)
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        kinds = [e["type"].rsplit(".", 1)[1] for e in events]
        assert {"AgreementAccepted", "WindowClosed", "EvaluationRestated", "AdjustmentRecorded"} <= set(kinds)
        assert all(len(e["chain_hash"]) == 64 for e in events)
        assert kinds.index("AgreementAccepted") < kinds.index("WindowClosed") < kinds.index("EvaluationRestated")
        code, _, err = await accord(env, "audit", "replay", "no-such-agreement")
        assert code == 3, err
        code, _, _ = await accord({**env, "ACCORD_TOKEN": tokens["fin"]}, "audit", "replay", aid)
        assert code == 4

        # Verify: every log intact, here, from the raw records and the services' keys; the
        # metrics key also given explicitly.
        metrics_key = metrics_settings.chain_key_file.with_name(
            metrics_settings.chain_key_file.name.replace("_private", "_public")
        )
        code, out, err = await accord(env, "--json", "audit", "verify", "--key", f"metrics={metrics_key}")
        assert code == 0, out + err
        rows = {r["service"]: r for r in json.loads(out)["services"]}
        assert set(rows) == {"agreements", "metrics", "billing"} and all(r["ok"] for r in rows.values())
        assert rows["metrics"]["keys"] == "given" and rows["metrics"]["records"] > 0

        # Export, and check the export offline; a changed byte in it is caught.
        export_dir = tmp_path / "export"
        code, out, err = await accord(env, "--json", "audit", "export", aid, "--out", str(export_dir))
        assert code == 0, err
        assert {p.name for p in export_dir.iterdir()} >= {"history.jsonl", "history.csv", "evaluations.csv",
                                                         "keys.json", "manifest.json", "logs"}  # fmt: skip
        assert len((export_dir / "history.jsonl").read_text().splitlines()) == len(events)
        code, out, err = await accord(env, "--json", "audit", "verify", "--offline", str(export_dir))
        assert code == 0, out + err
        log = export_dir / "logs" / "billing.jsonl"
        lines = log.read_text().splitlines()
        record = json.loads(lines[3])
        state = bytearray(base64.b64decode(record["record"]["state"]))
        state[len(state) // 2] ^= 1
        record["record"]["state"] = base64.b64encode(bytes(state)).decode()
        lines[3] = json.dumps(record)
        log.write_text("\n".join(lines) + "\n")
        code, out, _ = await accord(env, "--json", "audit", "verify", "--offline", str(export_dir))
        assert code == 5
        failed = {r["service"]: r for r in json.loads(out)["services"] if not r["ok"]}
        assert failed["billing"]["problem"]["kind"] == "ALTERED"
        assert failed["billing"]["problem"]["position"] == record["record"]["position"]
        (export_dir / "logs" / "agreements.jsonl").unlink()
        code, out, err = await accord(env, "--json", "audit", "verify", "--offline", str(export_dir))
        assert code == 5 and "Traceback" not in err
        failed = {r["service"]: r for r in json.loads(out)["services"] if not r["ok"]}
        assert failed["agreements"]["problem"]["kind"] == "FILE"
        code, _, err = await accord(env, "audit", "export", "no-such-agreement", "--out", str(tmp_path / "none"))
        assert code == 3 and not (tmp_path / "none").exists()

        # As known on 2 February (before the late report) and as effective now.
        code, out, err = await accord(env, "--json", "audit", "as-of", aid, "--at", before.isoformat())
        assert code == 0, err
        doc = json.loads(out)
        jan = next(
            w for w in doc["compliance"]["windows"]
            if w["objective_id"] == "availability" and w["window_start"].startswith("2025-12-31T23:00")
        )  # fmt: skip
        assert jan["restated"] is True and {"value", "status"} <= set(jan["differences"])
        assert jan["as_known"]["status"] == "EVALUATION_STATUS_MET"
        assert jan["as_effective"]["status"] == "EVALUATION_STATUS_BREACHED"
        jan_period = doc["statements"]["periods"][0]
        assert jan_period["total_difference"] == "1198.39"  # 10 % of the 11,983.87 January charges
        code, out, _ = await accord(env, "--json", "audit", "as-of", aid, "--at", clock.now().isoformat())
        assert code == 0
        now_doc = json.loads(out)
        assert all(not w.get("differences") for w in now_doc["compliance"]["windows"])
        code, out, _ = await accord(env, "audit", "as-of", aid, "--at", "yesterday")
        assert code == 2

        # What-if, tightened and loosened, over January and February; nothing stored.
        tight = draft_terms(tmp_path / "tight.yaml", "99.95", "99.95")
        loose = draft_terms(tmp_path / "loose.yaml", "99.8", "99.8")
        code, out, err = await accord(env, "--json", "audit", "what-if", aid, "--terms", str(tight), "--periods", "2")
        assert code == 0, err
        tightened = json.loads(out)["totals"]
        code, out, err = await accord(env, "--json", "audit", "what-if", aid, "--terms", str(loose), "--periods", "2")
        assert code == 0, err
        loosened = json.loads(out)["totals"]
        assert tightened["breaches_actual"] == loosened["breaches_actual"] == 1  # January, as restated
        assert tightened["breaches_proposed"] == 2 and loosened["breaches_proposed"] == 0
        assert float(tightened["credits_proposed"]) > float(tightened["credits_actual"]) > 0
        assert float(loosened["credits_proposed"]) == 0
        code, _, _ = await accord(env, "audit", "what-if", aid)
        assert code == 2

        # Re-derivation: clean; then February's outage is lengthened in the store behind the
        # service's back, and the changed window is named (exit 5), and the log no longer verifies.
        code, out, err = await accord(env, "--json", "audit", "rederive", aid)
        assert code == 0, out + err
        assert json.loads(out)["mismatches"] == 0
        alter_stored_signal(
            {"SQLITE_DBNAME": str(metrics_settings.sqlite_path)}, "stored_events", "feb",
            lambda s: s.outage.end.FromDatetime(s.outage.start.ToDatetime() + timedelta(minutes=90)),
        )  # fmt: skip
        code, out, _ = await accord(env, "--json", "audit", "rederive", aid)
        assert code == 5
        mismatches = json.loads(out)["evaluations"]["mismatches"]
        assert [(m["objective_id"], m["window_start"][:16]) for m in mismatches] == [
            ("availability", "2026-01-31T23:00")
        ]
        code, out, _ = await accord(env, "--json", "audit", "verify", "--service", "metrics")
        assert code == 5
        assert json.loads(out)["services"][0]["problem"]["kind"] == "ALTERED"


async def _known(stub: mpb_grpc.MetricsServiceStub, aid: str, metadata: list[tuple[str, str]]) -> bool:
    try:
        await stub.GetCompliance(mpb.GetComplianceRequest(agreement_id=aid), metadata=metadata)
    except grpc.aio.AioRpcError:
        return False
    return True


def test_the_history_table_gives_each_events_reason_beside_who_and_when() -> None:
    """history.csv: a signal correction's reason (its why) beside its actor and time; an event
    stating none, empty."""
    from accord.events.v1 import events_pb2
    from accord.metrics.v1 import events_pb2 as mev
    from accord_cli.history import HISTORY_COLUMNS, Entry, history_rows

    kind = "accord.metrics.v1.SignalsCorrected"
    corrected = events_pb2.EventEnvelope(source_service="metrics", position=7, type=kind)
    corrected.payload.Pack(mev.SignalsCorrected(service_id=EMAIL, actor="department:ops", reason="end from the ticket"))
    corrected.actor.role, corrected.actor.department = "department", IT
    known = events_pb2.EventEnvelope(source_service="metrics", position=8, type="accord.metrics.v1.ServiceKnown")
    known.payload.Pack(mev.ServiceKnown(service_id=EMAIL, provider_department_id=IT))
    rows = history_rows([Entry(corrected, b"\x01"), Entry(known, b"\x02")])
    assert HISTORY_COLUMNS[-1] == "reason" and all(list(r) == HISTORY_COLUMNS for r in rows)
    assert (rows[0]["actor_department"], rows[0]["reason"]) == (IT, "end from the ticket")
    assert rows[1]["reason"] == ""
