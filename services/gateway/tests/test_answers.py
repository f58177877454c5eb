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

from accord.gateway.v1 import gateway_pb2 as pb
from accord_agreements.samples import EMAIL, FINANCE, IT
from accord_gateway import server
from accord_gateway.http import create_app
from accord_gateway.projection import NotVisibleError, ReadModel, portfolio_view
from accord_gateway.server import (
    GatewayServicer,
    KeptPositions,
    agreement_answer,
    agreement_response,
    view_response,
)
from accord_kit.auth import TokenVerifier
from accord_kit.context import Principal, RequestContext, request_context
from accord_kit.testing.asgi import asgi_get
from accord_kit.testing.service import make_keys
from tests.suite import PROVIDER, Suite, an_active_agreement, feed

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
