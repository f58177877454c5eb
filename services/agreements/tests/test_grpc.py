"""The agreements service over a real gRPC channel with a real NATS, on both stores: a
full journey read back by version, by instant, as a diff and as a history stream; every
event of it on NATS exactly once, in order, decodable with the public protos alone;
rejected calls with their status codes and nothing stored; and 8 clients amending one
agreement at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as pb
from accord.agreements.v1 import agreements_pb2_grpc as pb_grpc
from accord.agreements.v1 import events_pb2 as agreement_events
from accord.agreements.v1 import terms_pb2
from accord_agreements.bootstrap import build
from accord_agreements.samples import EMAIL, FINANCE, IT, NETWORK, ola_terms, sla_terms, with_target
from accord_agreements.settings import load
from accord_kit.nats_util import connect
from accord_kit.runtime import ServiceRuntime
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, make_keys, running_service, service_environ
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream


def terms_pb(terms: dict[str, Any]) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(terms, terms_pb2.AgreementTerms())


def stamp(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


@dataclass
class Client:
    stub: pb_grpc.AgreementsServiceStub
    keys: Keys
    runtime: ServiceRuntime

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        if who in ("admin", "auditor", "service"):
            return self.keys.metadata(who)
        return self.keys.metadata("department", who, subject=f"{who}-user")

    def head(self) -> int:
        app = self.runtime.parts.app
        assert app is not None
        return app.head_position()


@pytest.fixture
async def client(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> AsyncIterator[Client]:
    db = postgres_db() if store_kind == "postgres" else ""
    settings = load(service_environ("agreements", tmp_path, own_nats_server.url, store_kind, db))
    keys = make_keys(tmp_path / "keys")
    async with (
        running_service(build, settings, keys) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        c = Client(pb_grpc.AgreementsServiceStub(channel), keys, runtime)
        admin = c.md("admin")
        for dept in (IT, FINANCE, NETWORK, "marketing"):
            await c.stub.RegisterDepartment(pb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
        await c.stub.RegisterService(
            pb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=admin
        )
        yield c


async def rejected(c: Client, call: Any, code: grpc.StatusCode, *texts: str) -> str:
    before = c.head()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    for text in texts:
        assert text in details
    assert c.head() == before, "a rejected call stored something"
    return details


async def test_a_full_journey_read_back_every_way_and_published_exactly_once(
    client: Client, own_nats_server: NatsServer
) -> None:
    c, s = client, client.stub
    now = datetime.now(UTC)
    # Draft, propose, reject, revise, accept.
    drafted = await s.DraftAgreement(
        pb.DraftAgreementRequest(terms=terms_pb(sla_terms()), request_id="d1"), metadata=c.md(IT)
    )
    aid = drafted.agreement.agreement_id
    assert drafted.agreement.state == pb.AGREEMENT_STATE_DRAFT
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid), metadata=c.md(IT))
    r = await s.RejectProposal(
        pb.RejectProposalRequest(agreement_id=aid, reason="availability too low"), metadata=c.md(FINANCE)
    )
    assert r.agreement.last_rejection_reason == "availability too low"
    v1_terms = with_target(sla_terms(), "availability", "99.95")
    await s.ReviseDraft(pb.ReviseDraftRequest(agreement_id=aid, terms=terms_pb(v1_terms)), metadata=c.md(IT))
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid), metadata=c.md(IT))
    accepted = await s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=aid), metadata=c.md(FINANCE))
    assert (accepted.agreement.state, accepted.agreement.version) == (pb.AGREEMENT_STATE_ACTIVE, 1)
    # Amendment 1 by the customer, accepted: version 2 from now + 10 days.
    v2_start, v3_start = now + timedelta(days=10), now + timedelta(days=20)
    v2_terms = with_target(v1_terms, "service-level", "85")
    p = await s.ProposeAmendment(
        pb.ProposeAmendmentRequest(
            agreement_id=aid, terms=terms_pb(v2_terms), effective_from=stamp(v2_start), reason="more"
        ),
        metadata=c.md(FINANCE),
    )
    await s.AcceptAmendment(pb.AcceptAmendmentRequest(agreement_id=aid, amendment_id=p.amendment_id), metadata=c.md(IT))
    # Amendment 2 by the provider, rejected.
    cheaper = json.loads(json.dumps(v2_terms))
    cheaper["fee"]["amount"] = "15000.00"
    p = await s.ProposeAmendment(
        pb.ProposeAmendmentRequest(
            agreement_id=aid, terms=terms_pb(cheaper), effective_from=stamp(v2_start), reason="costs"
        ),
        metadata=c.md(IT),
    )
    await s.RejectAmendment(
        pb.RejectAmendmentRequest(agreement_id=aid, amendment_id=p.amendment_id, reason="no budget"),
        metadata=c.md(FINANCE),
    )
    # Amendment 3 by the provider, accepted: version 3 from now + 20 days.
    v3_terms = with_target(v2_terms, "availability", "99.5")
    v3_terms["fee"]["amount"] = "10000.00"
    p = await s.ProposeAmendment(
        pb.ProposeAmendmentRequest(
            agreement_id=aid, terms=terms_pb(v3_terms), effective_from=stamp(v3_start), reason="relax"
        ),
        metadata=c.md(IT),
    )
    await s.AcceptAmendment(
        pb.AcceptAmendmentRequest(agreement_id=aid, amendment_id=p.amendment_id), metadata=c.md(FINANCE)
    )
    # Suspend, resume, terminate with notice.
    await s.SuspendAgreement(pb.SuspendAgreementRequest(agreement_id=aid, reason="migration"), metadata=c.md(IT))
    await s.ResumeAgreement(pb.ResumeAgreementRequest(agreement_id=aid, reason="done"), metadata=c.md(IT))
    ended = await s.TerminateAgreement(
        pb.TerminateAgreementRequest(
            agreement_id=aid, reason="reorganisation", effective_at=stamp(now + timedelta(days=40))
        ),
        metadata=c.md(FINANCE),
    )
    assert ended.agreement.termination.scheduled

    # Read it back: version 1, version 3, in force at three instants, the diff, the history.
    auditor = c.md("auditor")
    got1 = (await s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid, version=1), metadata=auditor)).agreement
    got3 = (await s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid, version=3), metadata=auditor)).agreement
    assert got1.terms_version == 1 and got1.terms.objectives[0].target == "99.95"
    assert got3.terms_version == 3 and got3.terms.objectives[0].target == "99.5" and got3.terms.fee.amount == "10000.00"
    assert [v.version for v in got3.versions] == [1, 2, 3]
    for at, expected in ((now, 1), (v2_start + timedelta(hours=1), 2), (v3_start + timedelta(days=1), 3)):
        got = await s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid, in_force_at=stamp(at)), metadata=auditor)
        assert got.agreement.terms_version == expected, at
    changes = (
        await s.DiffVersions(pb.DiffVersionsRequest(agreement_id=aid, from_version=1, to_version=3), metadata=auditor)
    ).changes
    by_path = {ch.path: ch for ch in changes}
    assert json.loads(by_path["objectives[availability].target"].old_json) == "99.95"
    assert json.loads(by_path["objectives[availability].target"].new_json) == "99.5"
    assert json.loads(by_path["objectives[service-level].target"].new_json) == "85"
    assert json.loads(by_path["fee.amount"].new_json) == "10000.00"
    history = [e async for e in s.StreamHistory(pb.StreamHistoryRequest(agreement_id=aid), metadata=auditor)]
    names = [e.type.rsplit(".", 1)[1] for e in history]
    assert names == [
        "AgreementDrafted", "AgreementProposed", "ProposalRejected", "DraftRevised", "AgreementProposed",
        "AgreementAccepted", "AmendmentProposed", "AmendmentAccepted", "AmendmentProposed", "AmendmentRejected",
        "AmendmentProposed", "AmendmentAccepted", "AgreementSuspended", "AgreementResumed", "TerminationScheduled",
    ]  # fmt: skip
    assert history[0].actor.department == IT and history[2].actor.department == FINANCE

    # Every event of the journey is on NATS exactly once, in order, decodable with the protos.
    app = c.runtime.parts.app
    assert app is not None
    nc = await connect(own_nats_server.url, name="check")
    try:
        await eventually(
            lambda: c.runtime.relay is not None and c.runtime.relay.stats.head_position == app.head_position()
        )
        messages = await read_stream(nc, "AGREEMENTS")
    finally:
        await nc.close()
    assert_exactly_once_in_order(messages, [n.id for n in app.select_notifications(0, 10_000)])
    journey = [env for _, env in messages if env.aggregate_id == aid]
    assert [e.event_id for e in journey] == [e.event_id for e in history]
    for _, env in messages:
        message_class = getattr(agreement_events, env.type.rsplit(".", 1)[1])
        decoded = message_class()
        assert env.payload.Unpack(decoded), env.type
    accepted_v3 = agreement_events.AmendmentAccepted()
    journey[11].payload.Unpack(accepted_v3)
    assert accepted_v3.version == 3


async def test_rejected_calls_say_what_was_wrong_and_store_nothing(client: Client) -> None:
    c, s = client, client.stub
    bad = sla_terms(time_zone="Mars/Base")
    bad["objectives"][0]["target"] = "101"
    details = await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(bad)), metadata=c.md(IT)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "time_zone: unknown IANA time zone 'Mars/Base'", "objectives[0].target: must be at most 100",
    )  # fmt: skip
    assert details
    await rejected(
        c,
        s.DraftAgreement(pb.DraftAgreementRequest(), metadata=c.md(IT)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "terms is required",
    )
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(sla_terms())), metadata=c.md(FINANCE)),
        grpc.StatusCode.PERMISSION_DENIED, "only the provider named in the terms (it-operations)",
    )  # fmt: skip
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(sla_terms())), metadata=c.md("auditor")),
        grpc.StatusCode.PERMISSION_DENIED, "role 'auditor' may not call",
    )  # fmt: skip
    await rejected(
        c, s.RegisterDepartment(pb.RegisterDepartmentRequest(department_id="x", name="X"), metadata=c.md(IT)),
        grpc.StatusCode.PERMISSION_DENIED,
    )  # fmt: skip
    await rejected(
        c, s.RegisterDepartment(pb.RegisterDepartmentRequest(department_id=IT, name="again"), metadata=c.md("admin")),
        grpc.StatusCode.ALREADY_EXISTS, "department it-operations is already registered",
    )  # fmt: skip
    ghost = sla_terms(parties={"provider_department_id": IT, "customer_department_id": "ghosts"})
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(ghost)), metadata=c.md(IT)),
        grpc.StatusCode.FAILED_PRECONDITION, "department 'ghosts' is not registered",
    )  # fmt: skip
    d = await s.DraftAgreement(
        pb.DraftAgreementRequest(terms=terms_pb(sla_terms()), request_id="same"), metadata=c.md(IT)
    )
    aid = d.agreement.agreement_id
    # A retry with the same request id returns the first result and stores nothing.
    head = c.head()
    again = await s.DraftAgreement(
        pb.DraftAgreementRequest(terms=terms_pb(sla_terms()), request_id="same"), metadata=c.md(IT)
    )
    assert again.agreement.agreement_id == aid and c.head() == head
    await rejected(
        c, s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid, expected_revision=9), metadata=c.md(IT)),
        grpc.StatusCode.ABORTED, f"is at revision {d.agreement.revision}, not the expected 9",
    )  # fmt: skip
    await rejected(
        c, s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=aid), metadata=c.md(FINANCE)),
        grpc.StatusCode.FAILED_PRECONDITION, "the agreement is DRAFT",
    )  # fmt: skip
    await rejected(
        c, s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid), metadata=c.md("marketing")),
        grpc.StatusCode.PERMISSION_DENIED, "not a party",
    )  # fmt: skip
    await rejected(
        c, s.GetAgreement(pb.GetAgreementRequest(agreement_id="nope"), metadata=c.md("auditor")),
        grpc.StatusCode.NOT_FOUND, "agreement 'nope' does not exist",
    )  # fmt: skip
    await rejected(
        c, s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid, version=2), metadata=c.md("auditor")),
        grpc.StatusCode.NOT_FOUND, "has no version 2",
    )  # fmt: skip
    await rejected(
        c, s.ListAgreements(pb.ListAgreementsRequest(page_size=501), metadata=c.md("auditor")),
        grpc.StatusCode.INVALID_ARGUMENT, "page_size must be at most 500",
    )  # fmt: skip


async def test_eight_clients_amending_one_agreement_at_once(client: Client) -> None:
    c, s = client, client.stub
    d = await s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(sla_terms())), metadata=c.md(IT))
    aid = d.agreement.agreement_id
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid), metadata=c.md(IT))
    await s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=aid), metadata=c.md(FINANCE))
    outcomes: list[grpc.StatusCode] = []
    won: list[str] = []
    start = datetime.now(UTC) + timedelta(days=8)

    async def amend(i: int, wanted: int) -> None:
        proposer, counterparty = (IT, FINANCE) if i % 2 else (FINANCE, IT)
        done = 0
        while done < wanted:
            got = (await s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid), metadata=c.md(proposer))).agreement
            if got.HasField("pending_amendment"):
                await asyncio.sleep(0.005)
                continue
            terms = with_target(sla_terms(), "service-level", str(60 + i))
            try:
                p = await s.ProposeAmendment(
                    pb.ProposeAmendmentRequest(
                        agreement_id=aid, terms=terms_pb(terms), effective_from=stamp(start), reason=f"client {i}",
                        expected_revision=got.revision,
                    ),
                    metadata=c.md(proposer),
                )  # fmt: skip
            except grpc.aio.AioRpcError as e:
                outcomes.append(e.code())
                continue
            outcomes.append(grpc.StatusCode.OK)
            a = await s.AcceptAmendment(
                pb.AcceptAmendmentRequest(
                    agreement_id=aid, amendment_id=p.amendment_id, expected_revision=p.agreement.revision
                ),
                metadata=c.md(counterparty),
            )
            outcomes.append(grpc.StatusCode.OK)
            won.append(p.amendment_id)
            assert a.agreement.version >= 2
            done += 1

    await asyncio.gather(*(amend(i, 2) for i in range(8)))
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}
    final = (await s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid), metadata=c.md("auditor"))).agreement
    assert final.version == 1 + 16 == len(final.versions)
    assert [v.version for v in final.versions] == list(range(1, 18))
    assert sorted(v.amendment_id for v in final.versions[1:]) == sorted(won)
    assert len(set(won)) == 16


async def test_a_termination_right_from_billing_lets_the_customer_terminate_at_once(
    client: Client, own_nats_server: NatsServer
) -> None:
    from accord.billing.v1 import events_pb2 as billing_events
    from accord.events.v1 import events_pb2
    from accord_kit.nats_util import ensure_stream

    c, s = client, client.stub
    d = await s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(sla_terms())), metadata=c.md(IT))
    aid = d.agreement.agreement_id
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid), metadata=c.md(IT))
    await s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=aid), metadata=c.md(FINANCE))
    await rejected(
        c,
        s.TerminateAgreement(
            pb.TerminateAgreementRequest(agreement_id=aid, reason="now", immediate=True), metadata=c.md(FINANCE)
        ),
        grpc.StatusCode.PERMISSION_DENIED, "holding a termination right",
    )  # fmt: skip
    # Billing publishes the right, as its relay would: an envelope on stream BILLING.
    nc = await connect(own_nats_server.url, name="billing")
    try:
        await ensure_stream(nc, "BILLING", "billing")
        granted = billing_events.TerminationRightGranted(
            agreement_id=aid, objective_id="availability", reason="breached in 3 consecutive months"
        )
        env = events_pb2.EventEnvelope(
            event_id="billing:b1:1", source_service="billing", aggregate_id="b1", aggregate_version=1, position=1,
            previous_position=0, type=granted.DESCRIPTOR.full_name,
        )  # fmt: skip
        env.payload.Pack(granted)
        await nc.jetstream().publish(
            "accord.billing.v1.TerminationRightGranted",
            env.SerializeToString(),
            headers={"Nats-Msg-Id": env.event_id, "Accord-Position": "1", "Accord-Previous-Position": "0"},
        )
    finally:
        await nc.close()

    async def has_right() -> bool:
        got = await s.GetAgreement(pb.GetAgreementRequest(agreement_id=aid), metadata=c.md(FINANCE))
        return len(got.agreement.termination_rights) == 1

    await eventually(has_right, timeout=20, what="termination right recorded")
    done = await s.TerminateAgreement(
        pb.TerminateAgreementRequest(agreement_id=aid, reason="three bad months", immediate=True),
        metadata=c.md(FINANCE),
    )
    assert done.agreement.state == pb.AGREEMENT_STATE_TERMINATED
    assert done.agreement.termination.termination_right_used


async def test_bad_parameters_past_ends_and_weakened_olas_are_refused_over_grpc_storing_nothing(
    client: Client,
) -> None:
    c, s = client, client.stub
    notice = sla_terms()
    notice["objectives"][0]["parameters"]["maintenance_notice_hours"] = "48h"
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(notice)), metadata=c.md(IT)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "objectives[0].parameters.maintenance_notice_hours: must be a decimal number of hours",
        "not '48h' (objective 'availability')",
    )  # fmt: skip
    huge = sla_terms()
    huge["objectives"][0]["parameters"]["min_outage_seconds"] = "1e14"
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(huge)), metadata=c.md(IT)),
        grpc.StatusCode.INVALID_ARGUMENT, "objectives[0].parameters.min_outage_seconds: must be at most 86400",
    )  # fmt: skip
    unknown = sla_terms()
    unknown["objectives"][1]["parameters"]["threshold"] = "20"
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(unknown)), metadata=c.md(IT)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "objectives[1].parameters.threshold: is not a parameter of METRIC_SERVICE_LEVEL "
        "(valid parameters: short_abandon_seconds, threshold_seconds, variant)",
    )  # fmt: skip
    now = datetime.now(UTC)
    ended = sla_terms(
        term={
            "effective_from": (now - timedelta(days=60)).isoformat().replace("+00:00", "Z"),
            "effective_to": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        }
    )
    await rejected(
        c, s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(ended)), metadata=c.md(IT)),
        grpc.StatusCode.INVALID_ARGUMENT, "term.effective_to:", "is before now",
    )  # fmt: skip
    # A target written "2E+1" is kept as "20".
    exponent = with_target(sla_terms(), "service-level", "2E+1")
    d = await s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(exponent)), metadata=c.md(IT))
    assert [o.target for o in d.agreement.terms.objectives] == ["99.9", "20"]
    # An OLA under an active SLA cannot be amended to be weaker than the SLA.
    ola = await s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(ola_terms("99.95"))), metadata=c.md(NETWORK))
    ola_id = ola.agreement.agreement_id
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=ola_id), metadata=c.md(NETWORK))
    await s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=ola_id), metadata=c.md(IT))
    sla = sla_terms()
    sla["objectives"][0]["underpinned_by"] = [ola_id]
    sla_id = (
        await s.DraftAgreement(pb.DraftAgreementRequest(terms=terms_pb(sla)), metadata=c.md(IT))
    ).agreement.agreement_id
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=sla_id), metadata=c.md(IT))
    await s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=sla_id), metadata=c.md(FINANCE))
    weaker = pb.ProposeAmendmentRequest(
        agreement_id=ola_id, terms=terms_pb(ola_terms("99.5")), effective_from=stamp(now + timedelta(days=8)),
        reason="cheaper",
    )  # fmt: skip
    await rejected(
        c, s.ProposeAmendment(weaker, metadata=c.md(NETWORK)), grpc.StatusCode.FAILED_PRECONDITION,
        f"objective 'network-availability' of agreement {ola_id} (>= 99.5) would be less strict than objective "
        f"'availability' (METRIC_AVAILABILITY_TIME >= 99.9) of ACTIVE SLA {sla_id}",
    )  # fmt: skip
