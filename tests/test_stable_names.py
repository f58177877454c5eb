"""Every aggregate and event class a service stores has a declared stored name, equal to the
string its stores already hold (kept here, written out: a name changed by accident fails this
test), found through the declaration and not through the class's module path (a release store
loads with billing's domain module moved and its old path unimportable); snapshots carry the
aggregate's declared name too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from eventsourcing.domain import Aggregate, CanMutateAggregate, Snapshot
from eventsourcing.utils import get_topic, resolve_topic

import accord_agreements.domain
import accord_billing.domain
import accord_kit.chain
import accord_kit.testing.counter
import accord_metrics.domain
import accord_notifier.domain
from accord_agreements.domain import Agreement
from accord_agreements.samples import sla_terms
from accord_kit.topics import DECLARED, event_classes
from accord_metrics.domain import WindowEvaluation

ROOT = Path(__file__).resolve().parent.parent

# The names the stores of release e7fca92 hold (and every store written since). Never edit one.
EXPECTED: dict[str, list[str]] = {
    "agreements": [
        "accord_agreements.domain:Agreement",
        "accord_agreements.domain:Agreement.Drafted",
        "accord_agreements.domain:Agreement.DraftRevised",
        "accord_agreements.domain:Agreement.Proposed",
        "accord_agreements.domain:Agreement.ProposalRejected",
        "accord_agreements.domain:Agreement.Accepted",
        "accord_agreements.domain:Agreement.AmendmentProposed",
        "accord_agreements.domain:Agreement.AmendmentAccepted",
        "accord_agreements.domain:Agreement.AmendmentRejected",
        "accord_agreements.domain:Agreement.AmendmentWithdrawn",
        "accord_agreements.domain:Agreement.Suspended",
        "accord_agreements.domain:Agreement.Resumed",
        "accord_agreements.domain:Agreement.TerminationScheduled",
        "accord_agreements.domain:Agreement.Terminated",
        "accord_agreements.domain:Agreement.TerminationRightGranted",
        "accord_agreements.domain:Agreement.Renewed",
        "accord_agreements.domain:Agreement.Expired",
        "accord_agreements.domain:Department",
        "accord_agreements.domain:Department.Registered",
        "accord_agreements.domain:Service",
        "accord_agreements.domain:Service.Registered",
        "accord_agreements.domain:Calendar",
        "accord_agreements.domain:Calendar.Defined",
        "accord_agreements.domain:Calendar.Redefined",
        "accord_agreements.domain:ProcessedRequest",
        "accord_agreements.domain:ProcessedRequest.Recorded",
    ],
    "metrics": [
        "accord_metrics.domain:SignalBatch",
        "accord_metrics.domain:SignalBatch.Recorded",
        "accord_metrics.domain:SignalCorrection",
        "accord_metrics.domain:SignalCorrection.Corrected",
        "accord_metrics.domain:KnownService",
        "accord_metrics.domain:KnownService.Known",
        "accord_metrics.domain:AgreementView",
        "accord_metrics.domain:AgreementView.Seen",
        "accord_metrics.domain:AgreementView.DraftNoted",
        "accord_metrics.domain:AgreementView.AmendmentNoted",
        "accord_metrics.domain:AgreementView.AmendmentConcluded",
        "accord_metrics.domain:AgreementView.VersionInForce",
        "accord_metrics.domain:AgreementView.Ended",
        "accord_metrics.domain:AgreementView.Suspended",
        "accord_metrics.domain:AgreementView.Resumed",
        "accord_metrics.domain:AgreementView.Renewed",
        "accord_metrics.domain:CalendarView",
        "accord_metrics.domain:CalendarView.Seen",
        "accord_metrics.domain:CalendarView.Defined",
        "accord_metrics.domain:WindowEvaluation",
        "accord_metrics.domain:WindowEvaluation.Opened",
        "accord_metrics.domain:WindowEvaluation.Evaluated",
        "accord_metrics.domain:WindowEvaluation.Restated",
        "accord_metrics.domain:WindowEvaluation.Closed",
        "accord_metrics.domain:WindowEvaluation.Breached",
        "accord_metrics.domain:WindowEvaluation.BudgetWarning",
        "accord_metrics.domain:WindowEvaluation.BurnRateAlert",
        "accord_metrics.domain:WindowEvaluation.BurnRateAlertResolved",
    ],
    "billing": [
        "accord_billing.domain:BilledAgreement",
        "accord_billing.domain:BilledAgreement.Seen",
        "accord_billing.domain:BilledAgreement.VersionInForce",
        "accord_billing.domain:BilledAgreement.Ended",
        "accord_billing.domain:BilledAgreement.Suspended",
        "accord_billing.domain:BilledAgreement.Resumed",
        "accord_billing.domain:Statement",
        "accord_billing.domain:Statement.Opened",
        "accord_billing.domain:Statement.Assessed",
        "accord_billing.domain:Statement.Adjusted",
        "accord_billing.domain:Statement.TotalsStated",
        "accord_billing.domain:Statement.Issued",
        "accord_billing.domain:Statement.Disputed",
        "accord_billing.domain:Statement.Resolved",
        "accord_billing.domain:Statement.Finalized",
        "accord_billing.domain:LedgerTransaction",
        "accord_billing.domain:LedgerTransaction.Posted",
        "accord_billing.domain:TerminationWatch",
        "accord_billing.domain:TerminationWatch.Started",
        "accord_billing.domain:TerminationWatch.Noted",
        "accord_billing.domain:TerminationWatch.Granted",
    ],
    "notifier": [
        "accord_notifier.domain:Subscriptions",
        "accord_notifier.domain:Subscriptions.Started",
        "accord_notifier.domain:Subscriptions.Added",
        "accord_notifier.domain:Subscriptions.Removed",
        "accord_notifier.domain:AgreementParties",
        "accord_notifier.domain:AgreementParties.Seen",
        "accord_notifier.domain:AgreementParties.Known",
        "accord_notifier.domain:AgreementParties.Held",
        "accord_notifier.domain:StatementRef",
        "accord_notifier.domain:StatementRef.Known",
        "accord_notifier.domain:StatementRef.Noticed",
        "accord_notifier.domain:Notification",
        "accord_notifier.domain:Notification.Queued",
        "accord_notifier.domain:Notification.Attempted",
        "accord_notifier.domain:Notification.Delivered",
        "accord_notifier.domain:Notification.Abandoned",
    ],
    "chain": [
        "accord_kit.chain:Checkpoints",
        "accord_kit.chain:Checkpoints.Opened",
        "accord_kit.chain:Checkpoints.Sealed",
    ],
    "counter": [
        "accord_kit.testing.counter:Counter",
        "accord_kit.testing.counter:Counter.Created",
        "accord_kit.testing.counter:Counter.Incremented",
        "accord_kit.testing.counter:Tally",
        "accord_kit.testing.counter:Tally.Started",
        "accord_kit.testing.counter:Tally.Recorded",
    ],
}
MODULES: dict[str, types.ModuleType] = {
    "agreements": accord_agreements.domain,
    "metrics": accord_metrics.domain,
    "billing": accord_billing.domain,
    "notifier": accord_notifier.domain,
    "chain": accord_kit.chain,
    "counter": accord_kit.testing.counter,
}


def stored_classes(module: types.ModuleType) -> list[type]:
    """Every aggregate class the module defines, each followed by every event class it can
    record: all event classes on it but the base ones eventsourcing gives every aggregate
    (`Event`, and `Created` when the aggregate declares another created event)."""
    out: list[type] = []
    for value in vars(module).values():
        if not (isinstance(value, type) and issubclass(value, Aggregate) and value.__module__ == module.__name__):
            continue
        out.append(value)
        for name, member in vars(value).items():
            if not (isinstance(member, type) and issubclass(member, CanMutateAggregate)):
                continue
            if name == "Event" or (name == "Created" and Aggregate.Created in member.__bases__):
                continue
            out.append(member)
    return out


@pytest.mark.parametrize("store", sorted(EXPECTED))
def test_every_stored_class_declares_the_name_its_stores_hold(store: str) -> None:
    classes = stored_classes(MODULES[store])
    assert [get_topic(c) for c in classes] == EXPECTED[store]
    for cls in classes:
        name = get_topic(cls)
        assert DECLARED[name] is cls, f"{cls.__qualname__}: {name!r} is not declared"
        assert resolve_topic(name) is cls
    for aggregate in (c for c in classes if issubclass(c, Aggregate)):
        assert "TOPIC" in vars(aggregate), f"{aggregate.__qualname__} declares no stored name of its own"
        for name, event_class in event_classes(aggregate).items():
            assert get_topic(event_class) == name


def test_the_services_declare_exactly_the_expected_names() -> None:
    modules = {m.__name__ for m in MODULES.values()}
    declared = [name for name, cls in DECLARED.items() if cls.__module__ in modules]
    assert sorted(declared) == sorted(n for names in EXPECTED.values() for n in names)


def test_a_snapshot_carries_the_aggregate_s_declared_name_and_restores() -> None:
    from datetime import UTC, datetime

    agreement = Agreement(sla_terms(), datetime(2026, 1, 5, tzinfo=UTC))
    snapshot = Snapshot.take(agreement)
    assert snapshot.topic == "accord_agreements.domain:Agreement"
    restored = snapshot.mutate(None)
    assert type(restored) is Agreement and restored.terms == agreement.terms
    assert WindowEvaluation.TOPIC == "accord_metrics.domain:WindowEvaluation"  # type: ignore[attr-defined]


MOVED = """
import importlib.util, shutil, sys
from pathlib import Path
from eventsourcing.application import Application
from eventsourcing.utils import resolve_topic
from accord_kit.chain import Checkpoints
from accord_kit.persistence import AccordMapper

sys.modules["accord_billing"] = None  # the old module path cannot be imported at all
spec = importlib.util.spec_from_file_location("relocated.billing_domain", sys.argv[1])
moved = importlib.util.module_from_spec(spec)
sys.modules["relocated.billing_domain"] = moved
spec.loader.exec_module(moved)


class Billing(Application):
    def construct_mapper(self):
        return AccordMapper(transcoder=self.construct_transcoder())


app = Billing(env={"PERSISTENCE_MODULE": "accord_kit.persistence:DurableSQLiteFactory", "SQLITE_DBNAME": sys.argv[2]})
ids, count = set(), 0
for n in app.recorder.select_notifications(0, 10_000):
    cls = resolve_topic(n.topic)
    assert cls.__module__ in ("relocated.billing_domain", "accord_kit.chain"), (n.topic, cls)
    event = app.mapper.to_domain_event(app.recorder.select_events(n.originator_id, gt=n.originator_version - 1,
                                                                  lte=n.originator_version)[0])
    assert type(event) is cls
    ids.add(n.originator_id)
    count += 1
statements = [app.repository.get(i) for i in ids]
assert any(type(s) is moved.Statement and s.state == moved.ISSUED for s in statements)
assert "accord_billing.domain" not in sys.modules
print(count, len(statements))
"""


def test_a_release_store_loads_with_the_domain_module_moved(tmp_path: Path) -> None:
    """Billing's domain module executed under another name (the old path made unimportable):
    every event of the release's billing store resolves to the moved classes through its
    declared name, and the statements rebuild."""
    store = tmp_path / "billing.sqlite"
    shutil.copyfile(ROOT / "tests" / "fixtures" / "upgrade" / "billing.sqlite", store)
    domain = ROOT / "services" / "billing" / "accord_billing" / "domain.py"
    done = subprocess.run(
        [sys.executable, "-c", MOVED, str(domain), str(store)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    events, aggregates = map(int, done.stdout.split())
    manifest = json.loads((ROOT / "tests" / "fixtures" / "upgrade" / "manifest.json").read_text())
    assert events == manifest["sqlite"]["stores"]["billing"]["events"] and aggregates > 3
