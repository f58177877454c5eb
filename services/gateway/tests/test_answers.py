"""An agreement's gRPC answer put together from kept bytes (`server.agreement_answer`) is the
answer the typed message serialises to: the same bytes, the positions the read model holds
now, and the same refusal for an agreement the caller may not see. Department, service and
portfolio answers are kept while the positions stand still (`server.KeptViews`), shared only by
callers who see the same agreements, and built again once an event moves the positions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from accord.gateway.v1 import gateway_pb2 as pb
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_gateway import http, schemas, server
from accord_gateway.http import create_app, department_json, portfolio_json, service_json
from accord_gateway.projection import (
    NotVisibleError,
    ReadModel,
    department_view,
    portfolio_view,
    service_view,
)
from accord_gateway.server import (
    GatewayServicer,
    KeptPositions,
    agreement_answer,
    agreement_response,
    department_bytes,
    portfolio_bytes,
    service_bytes,
    view_response,
)
from accord_kit.auth import TokenVerifier
from accord_kit.context import Principal, RequestContext, request_context
from accord_kit.testing.asgi import asgi_get, asgi_stream
from accord_kit.testing.service import make_keys
from tests.suite import AMS, COLLECTOR, PROVIDER, Suite, an_active_agreement, calls, feed, outage

pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)


@dataclass
class Known:
    """The sample SLA accepted, and a read model fed the agreements stream."""

    suite: Suite
    aid: str
    model: ReadModel

    def suspend(self) -> None:
        """The provider suspends the agreement; the model is fed the event."""
        self.suite.agreements.suspend(PROVIDER, self.aid, "planned move of the mail servers")
        feed("agreements", self.suite.agreements, self.model)


@pytest.fixture
def known(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Known]:
    suite = Suite(make_store_env)
    try:
        aid = an_active_agreement(suite)
        model = ReadModel()
        feed("agreements", suite.agreements, model)
        yield Known(suite, aid, model)
    finally:
        suite.close()


def test_the_answer_from_kept_bytes_is_the_typed_response_serialised(known: Known) -> None:
    aid, model = known.aid, known.model
    positions = KeptPositions(model)

    for role, department in (("department", FINANCE), ("department", IT), ("auditor", "")):
        answer = agreement_answer(model, aid, role, department, positions)
        typed = agreement_response(model, aid, role, department)
        assert answer == typed.SerializeToString(deterministic=True)
        assert pb.StatusResponse.FromString(answer) == typed
    assert dict(pb.StatusResponse.FromString(answer).positions) == model.positions()

    # Events move the positions and change the agreement: the answer says both at once.
    before = pb.StatusResponse.FromString(agreement_answer(model, aid, "auditor", "", positions))
    known.suspend()
    after = pb.StatusResponse.FromString(agreement_answer(model, aid, "auditor", "", positions))
    assert after.positions["agreements"] > before.positions["agreements"]
    assert (before.agreement.state, after.agreement.state) == ("ACTIVE", "SUSPENDED")
    assert after == agreement_response(model, aid, "auditor", "")

    # Refused as the typed response is: another department's agreement, an unknown id.
    for who, agreement in ((("department", "legal"), aid), (("auditor", ""), "no-such-agreement")):
        with pytest.raises(NotVisibleError, match="visible to this caller"):
            agreement_answer(model, agreement, *who, positions)
        with pytest.raises(NotVisibleError, match="visible to this caller"):
            agreement_response(model, agreement, *who)


async def test_views_are_kept_while_the_positions_stand_still_and_shared_only_by_who_sees_the_same(
    known: Known,
) -> None:
    model = known.model
    servicer = GatewayServicer(model)
    views = servicer.views.kept

    async def ask(who: Principal, rpc: str, request: Any) -> bytes:
        with request_context(RequestContext(principal=who)):
            answer = await getattr(servicer, rpc)(request, None)
        assert isinstance(answer, bytes)
        return answer

    finance, legal, auditor = (
        Principal("bob", "department", FINANCE),
        Principal("lee", "department", "legal"),
        Principal("ann", "auditor"),
    )
    portfolio = pb.GetPortfolioRequest()
    first = await ask(finance, "GetPortfolio", portfolio)
    assert views.builds == 1
    # The same caller, and another of the same department, again: the kept bytes, no build.
    assert await ask(finance, "GetPortfolio", portfolio) == first
    assert await ask(Principal("eve", "department", FINANCE), "GetPortfolio", portfolio) == first
    assert views.builds == 1
    typed = view_response("portfolio", portfolio_view(model, "department", FINANCE), model.positions(), False)
    assert pb.StatusResponse.FromString(first) == typed
    assert typed.portfolio.agreements == 1
    # Who sees other agreements gets a view of their own, never the one kept for another.
    assert pb.StatusResponse.FromString(await ask(legal, "GetPortfolio", portfolio)).portfolio.agreements == 0
    assert pb.StatusResponse.FromString(await ask(auditor, "GetPortfolio", portfolio)).portfolio.agreements == 1
    assert views.builds == 3

    # A department's view is kept for every caller who may see it — and still refused to others.
    mine = pb.GetDepartmentStatusRequest(department_id=FINANCE)
    by_finance = await ask(finance, "GetDepartmentStatus", mine)
    assert await ask(auditor, "GetDepartmentStatus", mine) == by_finance
    assert views.builds == 4
    with pytest.raises(NotVisibleError, match="not visible"):
        await ask(legal, "GetDepartmentStatus", mine)
    service = pb.GetServiceStatusRequest(service_id=EMAIL)
    assert len(pb.StatusResponse.FromString(await ask(finance, "GetServiceStatus", service)).service.agreements) == 1
    assert len(pb.StatusResponse.FromString(await ask(legal, "GetServiceStatus", service)).service.agreements) == 0

    # An event moves the positions: every view is built again, as the model now says.
    known.suspend()
    builds = views.builds
    after = pb.StatusResponse.FromString(await ask(finance, "GetPortfolio", portfolio))
    assert views.builds == builds + 1
    assert after.positions["agreements"] > pb.StatusResponse.FromString(first).positions["agreements"]
    assert dict(after.portfolio.by_state) == {"SUSPENDED": 1}
    assert after == view_response("portfolio", portfolio_view(model, "department", FINANCE), model.positions(), False)


async def test_the_http_views_are_kept_as_the_grpc_ones_and_seen_only_by_who_may(known: Known, tmp_path: Path) -> None:
    aid, model = known.aid, known.model
    keys = make_keys(tmp_path / "keys")
    app = create_app(lambda: True, model=model, verifier=TokenVerifier.from_file(keys.public_file))
    kept = app.state.kept_views

    def token(role: str, department: str = "") -> str:
        return dict(keys.metadata(role, department))["authorization"]

    finance, legal, auditor = token("department", FINANCE), token("department", "legal"), token("auditor")
    status, first = await asgi_get(app, "/v1/portfolio", finance)
    assert status == 200
    assert (await asgi_get(app, "/v1/portfolio", finance))[1] == first
    assert kept.builds == 1
    doc = json.loads(first)
    assert doc["positions"] == model.positions()
    assert doc["status"]["agreements"] == 1 and doc["status"]["list"][0]["agreement_id"] == aid
    assert json.loads((await asgi_get(app, "/v1/portfolio", legal))[1])["status"]["agreements"] == 0
    assert json.loads((await asgi_get(app, "/v1/portfolio", auditor))[1])["status"]["agreements"] == 1
    assert kept.builds == 3

    # A department's view: kept for whoever may see it, refused to another department all the same.
    assert (await asgi_get(app, f"/v1/departments/{FINANCE}", finance))[0] == 200
    status, body = await asgi_get(app, f"/v1/departments/{FINANCE}", legal)
    assert status == 403 and "may not read" in json.loads(body)["error"]
    service = json.loads((await asgi_get(app, f"/v1/services/{EMAIL}", legal))[1])
    assert service["status"]["agreements"] == []

    # An event moves the positions: the view is built again, as the model now says.
    known.suspend()
    after = json.loads((await asgi_get(app, "/v1/portfolio", finance))[1])
    assert after["positions"] == model.positions() != doc["positions"]
    assert after["status"]["by_state"] == {"SUSPENDED": 1}


async def test_an_agreements_watcher_is_sent_the_kept_bytes_and_each_change(
    known: Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    aid, model = known.aid, known.model
    monkeypatch.setattr(server, "WATCH_HEARTBEAT_SECONDS", 0.05)
    servicer = GatewayServicer(model)
    with request_context(RequestContext(principal=Principal("bob", "department", FINANCE))):
        watch = servicer.WatchStatus(pb.WatchStatusRequest(agreement_id=aid), None)
        first = await anext(watch)
        assert first == agreement_answer(model, aid, "department", FINANCE, servicer.positions)
        # The positions move, the agreement does not: the watcher looks again (its heartbeat)
        # and sends nothing.
        following = asyncio.ensure_future(anext(watch))
        known.suite.agreements.register_department("legal", "legal")
        feed("agreements", known.suite.agreements, model)
        await asyncio.sleep(0.3)
        assert not following.done(), "a watcher was sent an answer whose agreement had not changed"
        known.suspend()
        second = await asyncio.wait_for(following, timeout=5)
        await watch.aclose()
    assert isinstance(second, bytes)
    assert pb.StatusResponse.FromString(second) == agreement_response(model, aid, "department", FINANCE)
    assert pb.StatusResponse.FromString(second).agreement.state == "SUSPENDED"


def test_the_views_joined_from_each_agreements_kept_parts_are_the_typed_views_serialised(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """Department, service and portfolio views joined from each agreement's kept brief and worst
    objectives (`server.department_bytes`, `service_bytes`, `portfolio_bytes`; over HTTP
    `http.department_json`, …) are the bytes the typed view serialises to (and the JSON its
    schema writes the whole document as), for every kind of caller — over a portfolio of more than 50
    objectives (the worst ones cut at 50), healths of every kind, ties of health and budget and
    of titles (kept in the model's order, as the view's stable sorts keep them), agreements in
    both directions between departments; and after an event only the agreement it touched is
    encoded again."""
    suite = Suite(make_store_env)
    try:
        ag = suite.agreements
        for dept in (IT, FINANCE, "legal"):
            ag.register_department(dept, dept)
        for sid, provider in ((EMAIL, IT), ("crm", IT), ("payroll", FINANCE)):
            ag.register_service(sid, sid, provider)
        base = sla_terms()
        for i in range(32):  # 28 accepted: 56 objectives
            sid = (EMAIL, "crm", "payroll")[i % 3]
            parties = (IT, FINANCE) if sid != "payroll" else (FINANCE, "legal" if i % 2 else IT)
            terms = sla_terms(
                title=f"{sid} #{i % 4}",  # titles repeat: the list's ties are kept in the model's order
                parties={"provider_department_id": parties[0], "customer_department_id": parties[1]},
                service={**base["service"], "service_ids": [sid]},
            )
            aid = str(ag.draft(Actor("p", "department", parties[0]), terms).id)
            ag.propose(Actor("p", "department", parties[0]), aid)
            if i % 7 != 6:  # some stay proposed: another state
                ag.accept(Actor("c", "department", parties[1]), aid)
        suite.tick(f"2026-01-10T10:00{AMS}")
        # E-mail breached (a long outage, slow calls), the others without data.
        suite.metrics.record(
            COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 90), *calls("c", f"2026-01-13T10:00{AMS}", 5, 20)]
        )
        suite.tick(f"2026-01-20T10:00{AMS}")
        model = ReadModel()
        for source, app in (("agreements", ag), ("metrics", suite.metrics), ("billing", suite.billing)):
            feed(source, app, model)

        def typed(field: str, doc: dict[str, Any]) -> bytes:
            return getattr(view_response(field, doc, {}, False), field).SerializeToString(deterministic=True)

        def validated(schema: type[BaseModel], doc: dict[str, Any]) -> bytes:
            """The HTTP answer as the app wrote it before: the whole document through its schema."""
            answer = {"status": doc, "positions": model.positions()}
            return schema.model_validate(answer).model_dump_json(by_alias=True).encode()

        def check_all() -> None:
            for role, dept in (
                ("department", IT),
                ("department", FINANCE),
                ("department", "legal"),
                ("auditor", ""),
                ("department", "none"),
            ):
                at = model.positions()
                view = portfolio_view(model, role, dept)
                assert portfolio_bytes(model, role, dept) == typed("portfolio", view), (role, dept)
                assert portfolio_json(model, role, dept, at)[0] == validated(schemas.PortfolioAnswer, view), (
                    role,
                    dept,
                )
                for sid in (EMAIL, "crm", "payroll", "unknown"):
                    view = service_view(model, sid, role, dept)
                    assert service_bytes(model, sid, role, dept) == typed("service", view)
                    assert service_json(model, sid, role, dept, at)[0] == validated(schemas.ServiceAnswer, view)
                for did in (IT, FINANCE, "legal"):
                    if role != "department" or did == dept:
                        view = department_view(model, did, role, dept)
                        assert department_bytes(model, did, role, dept) == typed("department", view)
                        assert department_json(model, did, role, dept, at)[0] == validated(
                            schemas.DepartmentAnswer, view
                        )

        check_all()
        whole = pb.Portfolio.FromString(portfolio_bytes(model, "auditor", ""))
        assert whole.agreements == 32 and len(whole.worst_objectives) == 50 and len(whole.list) == 32
        assert {"BREACHED", "NO_DATA"} <= set(whole.by_health) and {"ACTIVE", "PROPOSED"} <= set(whole.by_state)
        assert len({w.budget_remaining for w in whole.worst_objectives}) < 50  # ties to order

        # An event touches one agreement: only its parts are encoded again.
        kept = {a.summary["agreement_id"]: a for a in model.answers()}
        assert all(a.parts is not None for a in kept.values())
        some = whole.list[0].agreement_id
        ag.suspend(Actor("p", "department", kept[some].summary["parties"]["provider_department_id"]), some, "moved")
        feed("agreements", ag, model)
        again = {a.summary["agreement_id"]: a for a in model.answers()}
        assert [aid for aid in kept if again[aid] is not kept[aid]] == [some]
        check_all()
        assert pb.Portfolio.FromString(portfolio_bytes(model, "auditor", "")).by_state["SUSPENDED"] == 1
    finally:
        suite.close()


async def test_server_sent_events_send_the_kept_json_and_only_a_changed_status(
    known: Known, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /v1/watch` sends what the GETs answer — the portfolio's kept JSON (shared with them and
    with every watcher who sees the same agreements: not built per watcher), an agreement's kept
    JSON with the positions — and an event only when the status changed, never for positions
    moving alone."""
    aid, model = known.aid, known.model
    monkeypatch.setattr(http, "KEEP_ALIVE_SECONDS", 0.05)  # each stream looks again every 0.05 s
    keys = make_keys(tmp_path / "keys")
    app = create_app(lambda: True, model=model, verifier=TokenVerifier.from_file(keys.public_file))
    kept = app.state.kept_views
    finance = dict(keys.metadata("department", FINANCE))["authorization"]

    async def event(stream: Any) -> bytes:
        """The next event's data (keep-alive comments passed over)."""
        while (chunk := await stream.next_chunk()) == b": keep-alive\n\n":
            pass
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk
        return bytes(chunk[6:-2])

    def sent(stream: Any) -> list[bytes]:
        """The events' data sent since, keep-alive comments left out."""
        chunks = [stream.chunks.get_nowait() for _ in range(stream.chunks.qsize())]
        return [c for c in chunks if c != b": keep-alive\n\n"]

    async with (
        asgi_stream(app, "/v1/watch", finance) as portfolio,
        asgi_stream(app, f"/v1/watch?agreement_id={aid}", finance) as one,
    ):
        assert (portfolio.status, one.status) == (200, 200)
        assert await event(portfolio) == (await asgi_get(app, "/v1/portfolio", finance))[1]
        assert await event(one) == (await asgi_get(app, f"/v1/agreements/{aid}", finance))[1]
        async with asgi_stream(app, "/v1/watch", finance) as another:
            await event(another)
        assert kept.builds == 1  # one portfolio built, for the GET and both watchers
        # The positions move, no status does: nothing is sent.
        known.suite.agreements.register_department("legal", "legal")
        feed("agreements", known.suite.agreements, model)
        await asyncio.sleep(0.3)
        assert sent(portfolio) == [] and sent(one) == [], "an event sent for positions that moved alone"
        known.suspend()
        changed = json.loads(await event(portfolio))
        assert changed["status"]["by_state"] == {"SUSPENDED": 1} and changed["positions"] == model.positions()
        assert json.loads(await event(one))["status"]["state"] == "SUSPENDED"
    async with asgi_stream(app, "/v1/watch?agreement_id=no-such", finance) as missing:
        assert missing.status == 404
