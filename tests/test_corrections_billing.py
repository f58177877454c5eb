"""A correction of a recorded signal reaches the money, on both stores: the sample SLA's
January closes met and is billed at nothing; the provider then corrects the January
outage's end (30 → 90 minutes), metrics restates January, and billing adjusts it on the
next statement like a late signal — the issued statement is never changed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from accord_billing.domain import ISSUED
from tests.suite import AMS, COLLECTOR, P_CUSTOMER, P_PROVIDER, Suite, an_active_agreement, outage


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def test_a_corrected_outage_end_is_billed_as_an_adjustment(suite: Suite) -> None:
    m, b = suite.metrics, suite.billing
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30)])
    suite.tick(f"2026-02-01T02:00{AMS}")  # January closed (99.93 %: met) and its statement issued
    jan = b.statements(P_CUSTOMER, aid)[0]
    assert jan.state == ISSUED and Decimal(jan.totals["net"]) == 0

    corrected = m.record(P_PROVIDER, [outage("o1", f"2026-01-12T10:00{AMS}", 90)])
    assert (corrected.accepted, corrected.duplicates, corrected.corrections) == (0, 0, 1)
    suite.tick(f"2026-02-10T12:00{AMS}")
    statements = b.statements(P_CUSTOMER, aid)
    assert Decimal(statements[0].totals["net"]) == 0, "an issued statement is never changed"
    feb = statements[1]
    assert [a["key"].split("|")[0] for a in feb.adjustments] == ["availability"]
    # January restated: (44,580 − 90) ÷ 44,580 = 99.80 % → 10 % of the 11,983.87 January charges
    # (the agreement starts an hour into it: 743 of its 744 hours) more than 0.00.
    assert Decimal(feb.adjustments[0]["difference"]) == Decimal("1198.39")
