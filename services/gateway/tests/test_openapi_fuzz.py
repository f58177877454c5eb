"""The gateway's HTTP API against its own OpenAPI document, fuzzed with schemathesis: the
app as it runs (its read model fed by a suite's real stores), requests generated from the
document (any string where the document says string) with an admin token, a department token, a department that
sees nothing, and whatever token the generator writes. Every answer is one the document
lists, with the body it describes; none is a server error. Bounded: a fixed number of
derandomized examples per operation."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from accord_agreements.samples import FINANCE
from accord_gateway.http import create_app
from accord_gateway.projection import ReadModel
from accord_kit.auth import TokenVerifier, mint_token
from accord_kit.testing.service import make_keys
from tests.suite import Suite, an_active_agreement, feed

EXAMPLES_PER_OPERATION = 60


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_every_gateway_answer_is_listed_in_its_openapi_document(
    tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    suite = Suite(make_store_env)
    try:
        aid = an_active_agreement(suite)
        model = ReadModel()
        for source, app in (("agreements", suite.agreements), ("metrics", suite.metrics), ("billing", suite.billing)):
            feed(source, app, model)
        keys = make_keys(tmp_path / "keys")
        http = create_app(lambda: True, model, TokenVerifier(keys.public_file.read_bytes()))
        schema = schemathesis.openapi.from_asgi("/openapi.json", http)
        tokens = itertools.cycle(
            [
                mint_token(keys.private, subject="a", role="admin"),
                mint_token(keys.private, subject="b", role="department", department=FINANCE),
                mint_token(keys.private, subject="c", role="department", department="marketing"),
                None,  # the generated Authorization header, if any
            ]
        )
        codes: dict[str, set[int]] = {}
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path == "/v1/watch":
                continue  # a stream that does not end
            run(operation, tokens, codes)
        # The answers the document lists were given (the fuzzing reached them).
        assert {401, 404} <= codes["/v1/agreements/{agreement_id}"], codes
        assert aid
    finally:
        suite.close()


def run(operation: Any, tokens: Any, codes: dict[str, set[int]]) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        token = next(tokens)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        response = case.call_and_validate(headers=headers)
        codes.setdefault(operation.path, set()).add(response.status_code)

    check()


def test_the_openapi_document_lists_every_refusal_of_each_route(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    spec = create_app(lambda: True, ReadModel(), TokenVerifier(keys.public_file.read_bytes())).openapi()
    listed = {path: set(ops["get"]["responses"]) for path, ops in spec["paths"].items()}
    assert listed == {
        "/healthz": {"200"},
        "/v1/agreements/{agreement_id}": {"200", "401", "404", "422"},
        "/v1/agreements/{agreement_id}/objectives/{objective_id}/budget": {"200", "401", "404", "422"},
        "/v1/agreements/{agreement_id}/objectives/{objective_id}/breaches": {"200", "401", "404", "422"},
        "/v1/departments/{department_id}": {"200", "401", "403", "404", "422"},
        "/v1/services/{service_id}": {"200", "401", "404", "422"},
        "/v1/portfolio": {"200", "401", "422"},
        "/v1/watch": {"200", "401", "404", "422"},
    }
    error = spec["paths"]["/v1/departments/{department_id}"]["get"]["responses"]["403"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "text/event-stream" in spec["paths"]["/v1/watch"]["get"]["responses"]["200"]["content"]
