"""Signals from the terminal through the real `accord` process into the real metrics service:
an outage typed while under way and completed later (a correction, not a second outage), a
re-run that is a duplicate, request counts, a call, a ticket's updates, and CSV and JSON
Lines imports with a progress line, a summary and each rejected line's reason — every
signal stored with its provenance."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import events_pb2 as mev
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import EMAIL, FINANCE, IT
from accord_agreements.settings import load as load_agreements
from accord_kit.auth import mint_token
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics
from cli.tests.cliproc import arun, clean_env, one_line_error

pytestmark = pytest.mark.slow


async def stored_signals(channel: grpc.aio.Channel, md: Any) -> list[tuple[str, spb.Signal]]:
    """Every signal metrics stored, in log order, as ("recorded" | "corrected", signal)."""
    found: list[tuple[str, spb.Signal]] = []
    r = await events_pb2_grpc.EventLogServiceStub(channel).ReadEvents(
        events_pb2.ReadEventsRequest(after_position=0, limit=5000), metadata=md
    )
    for env in r.events:
        for kind, message in (("recorded", mev.SignalsRecorded()), ("corrected", mev.SignalsCorrected())):
            if env.payload.Is(message.DESCRIPTOR):
                env.payload.Unpack(message)
                found += [(kind, s) for s in message.batch.signals]
    return found


async def test_signals_from_the_terminal(own_nats_server: NatsServer, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    tokens = {
        who: mint_token(keys.private, subject=who, role=role, department=dept)
        for who, role, dept in (("admin", "admin", ""), ("it", "department", IT), ("fin", "department", FINANCE))
    }
    service_token = tmp_path / "keys" / "service.token"
    service_token.write_text(mint_token(keys.private, subject="svc", role="service"))
    ports = {"agreements": free_port()}

    def env_of(service: str) -> dict[str, str]:
        return service_environ(
            service, tmp_path / service, own_nats_server.url, "sqlite", ACCORD_SERVICE_TOKEN_FILE=str(service_token),
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{ports['agreements']}",
            **({"AGREEMENTS_GRPC_PORT": str(ports["agreements"])} if service == "agreements" else {}),
        )  # fmt: skip

    def md(who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {tokens[who]}")]

    async with (
        running_service(build_agreements, load_agreements(env_of("agreements")), keys) as agreements,
        running_service(build_metrics, load_metrics(env_of("metrics")), keys) as metrics,
        grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
    ):
        ag = apb_grpc.AgreementsServiceStub(a_ch)
        for dept in (IT, FINANCE):
            await ag.RegisterDepartment(
                apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=md("admin")
            )
        await ag.RegisterService(
            apb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=md("admin")
        )
        # Metrics learns the service from the agreements stream.
        me = mpb_grpc.MetricsServiceStub(m_ch)
        for _ in range(300):
            try:
                await me.RecordSignalBatch(mpb.RecordSignalBatchRequest(), metadata=md("it"))
                probe = spb.Signal(signal_id="warm-up", service_id=EMAIL, probe=spb.Probe(success=True))
                probe.probe.at.FromJsonString("2026-11-01T00:00:00Z")
                await me.RecordSignalBatch(mpb.RecordSignalBatchRequest(signals=[probe]), metadata=md("it"))
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        env = clean_env(tmp_path, ACCORD_METRICS_ADDR=f"127.0.0.1:{metrics.port}")
        it, fin = {**env, "ACCORD_TOKEN": tokens["it"]}, {**env, "ACCORD_TOKEN": tokens["fin"]}

        # An outage typed while under way (a local time and --tz), typed again: a duplicate;
        # then with its end: the same outage completed; then a corrected end: a correction.
        under_way = ("signal", "outage", EMAIL, "--start", "2026-11-02T10:00", "--tz", "Europe/Amsterdam",
                     "--cause", "disk full")  # fmt: skip
        r = await arun(it, "--json", *under_way)
        assert r.code == 0, r.err
        first = json.loads(r.out)
        assert (first["accepted"], first["duplicates"], first["corrections"]) == (1, 0, 0)
        r = await arun(it, *under_way, "--json")
        assert r.code == 0 and json.loads(r.out)["duplicates"] == 1
        r = await arun(it, "--json", *under_way, "--end", "2026-11-02T10:45:00+01:00")
        done = json.loads(r.out)
        assert (done["accepted"], done["corrections"], done["signal_id"]) == (1, 0, first["signal_id"])
        r = await arun(it, "--json", *under_way, "--end", "2026-11-02T10:50:00+01:00",
                       "--correction-reason", "end read from the incident ticket")  # fmt: skip
        assert json.loads(r.out)["corrections"] == 1
        # The reason is the correction's, with who and when; one metrics refuses names the field.
        log = await events_pb2_grpc.EventLogServiceStub(m_ch).ReadEvents(
            events_pb2.ReadEventsRequest(after_position=0, limit=5000), metadata=md("admin")
        )
        why = [mev.SignalsCorrected.FromString(e.payload.value).reason
               for e in log.events if e.payload.Is(mev.SignalsCorrected.DESCRIPTOR)]  # fmt: skip
        assert why == ["end read from the incident ticket"]
        r = await arun(it, *under_way, "--end", "2026-11-02T10:55:00+01:00", "--correction-reason", "two\nlines")
        assert r.code != 0 and "correction_reason: must be printable text" in one_line_error(r), r.err
        r = await arun(fin, *under_way)
        assert r.code == 4 and "PERMISSION_DENIED" in one_line_error(r)

        # Request counts; good above total is refused with the reason (exit 5).
        counts = ("signal", "requests", EMAIL, "--start", "2026-11-02T10:00:00Z", "--end", "2026-11-02T11:00:00Z")
        r = await arun(it, *counts, "--good", "990", "--total", "1000")
        assert r.code == 0 and "recorded" in r.out, r.err
        r = await arun(it, *counts, "--good", "1001", "--total", "1000")
        assert r.code == 5 and "exceeds total" in one_line_error(r)
        r = await arun(it, "signal", "outage", EMAIL, "--start", "2026-11-02T10:00")
        assert r.code == 2 and "--tz" in one_line_error(r)

        # A failed probe (a request of one), typed again: a duplicate; a maintenance announcement.
        failed_probe = ("--json", "signal", "probe", EMAIL, "--at", "2026-11-02T10:05:00Z", "--failed")
        r = await arun(it, *failed_probe, "--latency-ms", "950")
        assert r.code == 0 and json.loads(r.out)["accepted"] == 1, r.err
        probe_id = json.loads(r.out)["signal_id"]
        r = await arun(it, *failed_probe, "--latency-ms", "950")
        assert r.code == 0 and json.loads(r.out)["duplicates"] == 1, r.err
        # The same check said to have succeeded is another content of it: a correction.
        r = await arun(it, "--json", "signal", "probe", EMAIL, "--at", "2026-11-02T10:05:00Z", "--latency-ms", "950",
                       "--id", probe_id)  # fmt: skip
        assert r.code == 0 and json.loads(r.out)["corrections"] == 1, r.err
        r = await arun(it, "--json", "signal", "maintenance", EMAIL, "--start", "2026-11-09T22:00:00Z",
                       "--end", "2026-11-09T23:00:00Z", "--announced", "2026-11-02T09:00:00Z",
                       "--reason", "upgrade")  # fmt: skip
        assert r.code == 0 and json.loads(r.out)["accepted"] == 1, r.err

        # A call, and a ticket's life: opened, first response, paused and resumed, resolved.
        call = ("--entered", "2026-11-02T09:00:00Z", "--answered", "2026-11-02T09:00:15Z", "--talk", "120")
        r = await arun(it, "--json", "signal", "calls", EMAIL, *call, "--first-contact", "resolved")
        assert r.code == 0 and json.loads(r.out)["accepted"] == 1, r.err
        ticket = ("--json", "signal", "tickets", EMAIL, "--priority", "P2", "--opened", "2026-11-02T08:00:00Z")
        r = await arun(it, *ticket)
        assert json.loads(r.out)["accepted"] == 1, r.err
        ticket_id = json.loads(r.out)["signal_id"]
        r = await arun(it, *ticket, "--first-response", "2026-11-02T08:20:00Z", "--paused", "2026-11-02T09:00:00Z/")
        assert json.loads(r.out)["corrections"] == 1, r.err
        pause = "2026-11-02T09:00:00Z/2026-11-02T10:00:00Z"
        r = await arun(it, *ticket, "--first-response", "2026-11-02T08:20:00Z", "--paused", pause,
                       "--resolved", "2026-11-02T12:00:00Z")  # fmt: skip
        assert json.loads(r.out)["corrections"] == 1 and json.loads(r.out)["signal_id"] == ticket_id, r.err

        # A CSV import: two good rows, three bad ones (each named by its line), a progress line.
        csv_file = tmp_path / "signals.csv"
        csv_file.write_text(
            "kind,id,start,end,cause,good,total\n"
            "outage,csv-1,2026-11-03T10:00:00Z,2026-11-03T10:30:00Z,network,,\n"
            "requests,csv-2,2026-11-03T10:00:00Z,2026-11-03T11:00:00Z,,50,60\n"
            "outage,csv-3,yesterday,,,,\n"
            "requests,csv-4,2026-11-03T11:00:00Z,2026-11-03T12:00:00Z,,70,60\n"
            "meteor,csv-5,2026-11-03T11:00:00Z,,,,\n"
        )
        r = await arun(it, "signal", "import", str(csv_file), "--service", EMAIL, "--json")
        assert r.code == 5, r.err
        summary = json.loads(r.out)
        assert (summary["accepted"], summary["duplicates"], summary["corrections"]) == (2, 0, 0)
        assert [x["line"] for x in summary["rejected"]] == [4, 5, 6]
        reasons = {x["line"]: x["reason"] for x in summary["rejected"]}
        assert "start" in reasons[4] and "exceeds total" in reasons[5] and "kind" in reasons[6]
        assert "3/3 signals" in r.err and "signals/s" in r.err  # the third refused by metrics
        r = await arun(fin, "signal", "import", str(csv_file), "--service", EMAIL)  # not the provider
        assert r.code == 4 and "accepted 0" in r.out and "rejected 5" in r.out
        assert "signals.csv:2: PERMISSION_DENIED" in r.out
        r = await arun(it, "signal", "import", str(csv_file), "--service", EMAIL)  # again: nothing twice
        assert r.code == 5
        assert "accepted 0, duplicates 2, corrections 0, rejected 3" in r.out
        assert "signals.csv:5: requests: good (70) exceeds total (60)" in r.out

        # A JSON Lines import in batches of two: the Signal's own JSON form with a local time,
        # a ticket and its later update (a correction), and a line that is not JSON.
        jsonl = tmp_path / "signals.jsonl"
        jsonl.write_text(
            json.dumps({"signal_id": "j-1", "outage": {"start": "2026-11-04T09:00", "end": "2026-11-04T09:10"}}) + "\n"
            + json.dumps({"kind": "ticket", "id": "T-7", "priority": "P1", "opened": "2026-11-04T08:00"}) + "\n"
            + "{not json\n\n"
            + json.dumps({"kind": "ticket", "id": "T-7", "priority": "P1", "opened": "2026-11-04T08:00",
                          "first_response": "2026-11-04T08:05"}) + "\n"
        )  # fmt: skip
        r = await arun(it, "--json", "signal", "import", str(jsonl), "--service", EMAIL, "--tz", "Europe/Amsterdam",
                       "--batch", "2")  # fmt: skip
        summary = json.loads(r.out)
        assert (summary["accepted"], summary["corrections"], summary["records"]) == (2, 1, 4), r.out + r.err
        assert [x["line"] for x in summary["rejected"]] == [3] and r.code == 5

        # What metrics stored: each signal with its provenance.
        stored = await stored_signals(m_ch, md("admin"))
        by_id = {s.signal_id: (kind, s) for kind, s in stored}
        kind, outage = by_id[first["signal_id"]]
        assert kind == "corrected" and outage.outage.end.ToJsonString() == "2026-11-02T09:50:00Z"
        assert outage.outage.start.ToJsonString() == "2026-11-02T09:00:00Z"
        assert (outage.provenance.source, outage.provenance.manual, outage.provenance.reference) == ("cli", True, "")
        # Recorded under way, completed, corrected: one outage.
        assert [k for k, s in stored if s.signal_id == first["signal_id"]] == ["recorded", "recorded", "corrected"]
        _, imported = by_id["csv-2"]
        assert (imported.provenance.source, imported.provenance.manual) == ("cli", False)
        assert imported.provenance.reference == "signals.csv:3"
        kind, t7 = by_id["T-7"]
        assert kind == "corrected" and t7.ticket.first_response.ToJsonString() == "2026-11-04T07:05:00Z"
        assert t7.provenance.reference == "signals.jsonl:5"
        assert by_id["j-1"][1].outage.start.ToJsonString() == "2026-11-04T08:00:00Z"
        assert not any(s.signal_id in ("csv-3", "csv-4", "csv-5") for _, s in stored)
