"""Rules of the agreements contract that consumers apply themselves stay equal to the
agreements service's own."""

from __future__ import annotations

import copy

from accord_agreements.samples import sla_terms
from accord_agreements.terms import merge
from accord_kit.agreement_terms import effective_terms


def test_the_consumers_effective_terms_equal_the_agreements_services() -> None:
    parent = sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate")
    parent["objectives"].append({**copy.deepcopy(parent["objectives"][0]), "objective_id": "only-parent"})
    child = sla_terms(title="Child", parent_agreement_id="p")
    child["objectives"] = [{**copy.deepcopy(child["objectives"][0]), "target": "99.5"}]
    child.pop("fee")
    child["support"] = {}
    assert effective_terms(parent, child) == merge(parent, child)
    assert effective_terms(child, parent) == merge(child, parent)
