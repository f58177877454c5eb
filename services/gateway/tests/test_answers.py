"""An agreement's gRPC answer put together from kept bytes (`server.agreement_answer`) is the
answer the typed message serialises to: the same bytes, the positions the read model holds
now, and the same refusal for an agreement the caller may not see."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accord.gateway.v1 import gateway_pb2 as pb
from accord_agreements.samples import FINANCE, IT
from accord_gateway.projection import NotVisibleError, ReadModel
from accord_gateway.server import KeptPositions, agreement_answer, agreement_response
from tests.suite import PROVIDER, Suite, an_active_agreement, feed


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_answer_from_kept_bytes_is_the_typed_response_serialised(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    suite = Suite(make_store_env)
    try:
        aid = an_active_agreement(suite)
        model = ReadModel()
        feed("agreements", suite.agreements, model)
        positions = KeptPositions(model)

        for role, department in (("department", FINANCE), ("department", IT), ("auditor", "")):
            answer = agreement_answer(model, aid, role, department, positions)
            typed = agreement_response(model, aid, role, department)
            assert answer == typed.SerializeToString(deterministic=True)
            assert pb.StatusResponse.FromString(answer) == typed
        assert dict(pb.StatusResponse.FromString(answer).positions) == model.positions()

        # Events move the positions and change the agreement: the answer says both at once.
        before = pb.StatusResponse.FromString(agreement_answer(model, aid, "auditor", "", positions))
        suite.agreements.suspend(PROVIDER, aid, "planned move of the mail servers")
        feed("agreements", suite.agreements, model)
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
    finally:
        suite.close()
