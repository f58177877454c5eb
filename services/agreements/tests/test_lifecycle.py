"""The agreement lifecycle on the application, on both stores: every transition and
guard, who may do what (every role × every command), versions and amendments, effective
dating, multi-level terms, underpinning OLAs, idempotent requests and expected revisions."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.application import Repository

from accord.agreements.v1 import events_pb2 as agreement_events
from accord_agreements.application import Agreements, UnderpinningError
from accord_agreements.domain import (
    ACTIVE,
    DRAFT,
    EXPIRED,
    PROPOSED,
    SUSPENDED,
    TERMINATED,
    Actor,
    ConflictError,
    InvalidRequestError,
    NotAPartyError,
    NotFoundError,
    TransitionError,
    UnknownReferenceError,
)
from accord_agreements.samples import EMAIL, FINANCE, IT, NETWORK, ola_terms, sla_terms, with_target
from accord_agreements.terms import TermsInvalidError
from accord_kit.clock import FakeClock

PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
OUTSIDER = Actor("carol", "department", "marketing")
NET = Actor("nina", "department", NETWORK)
AUDITOR = Actor("audrey", "auditor")
ADMIN = Actor("root", "admin")
SERVICE = Actor("billing", "service")
START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def app(make_store_env: Callable[[str], dict[str, str]], clock: FakeClock) -> Iterator[Agreements]:
    a = Agreements(make_store_env("agreements"), clock=clock)
    for dept in (IT, FINANCE, NETWORK, "marketing"):
        a.register_department(dept, dept.replace("-", " ").title())
    a.register_service(EMAIL, "E-mail", IT)
    yield a
    a.close()


def active(app: Agreements, terms: dict[str, Any] | None = None) -> str:
    agg = app.draft(PROVIDER, terms or sla_terms())
    app.propose(PROVIDER, str(agg.id))
    app.accept(CUSTOMER, str(agg.id))
    return str(agg.id)


def test_the_whole_lifecycle_narrated(app: Agreements, clock: FakeClock) -> None:
    # The provider drafts and proposes; the customer rejects with a reason.
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    assert agg.state == DRAFT
    assert app.propose(PROVIDER, aid).state == PROPOSED
    rejected = app.reject_proposal(CUSTOMER, aid, "target too low")
    assert (rejected.state, rejected.last_rejection) == (DRAFT, "target too low")
    # The provider revises and proposes again; the customer accepts: version 1.
    app.revise(PROVIDER, aid, with_target(sla_terms(), "availability", "99.95"))
    app.propose(PROVIDER, aid)
    accepted = app.accept(CUSTOMER, aid)
    assert (accepted.state, accepted.current_version) == (ACTIVE, 1)
    assert accepted.get_version(1)["effective_from"] == "2026-01-01T00:00:00Z"
    # The customer proposes an amendment; the provider accepts: version 2.
    clock.advance(timedelta(days=1))
    _, amendment = app.propose_amendment(
        CUSTOMER,
        aid,
        with_target(accepted.terms, "service-level", "85"),
        START + timedelta(days=15),
        "more calls answered",
    )
    v2 = app.accept_amendment(PROVIDER, aid, amendment)
    assert v2.current_version == 2
    assert v2.get_version(2)["amendment_id"] == amendment
    # Suspended and resumed by the provider, then terminated with notice by the customer.
    assert app.suspend(PROVIDER, aid, "data-centre move").state == SUSPENDED
    assert app.resume(PROVIDER, aid, "moved").state == ACTIVE
    scheduled = app.terminate(CUSTOMER, aid, "moving to another provider")
    assert scheduled.state == ACTIVE and scheduled.termination is not None
    clock.advance(timedelta(days=31))
    assert app.process_due() == 1
    assert app.get_agreement(AUDITOR, aid).state == TERMINATED


def test_terms_in_force_at_an_instant_follow_the_effective_dates(app: Agreements, clock: FakeClock) -> None:
    aid = active(app)
    clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    _, am = app.propose_amendment(
        PROVIDER, aid, with_target(sla_terms(), "availability", "99.5"), datetime(2026, 3, 1, tzinfo=UTC), "cheaper"
    )
    agg = app.accept_amendment(CUSTOMER, aid, am)
    assert agg.version_in_force_at(datetime(2026, 2, 15, tzinfo=UTC))["version"] == 1
    assert agg.version_in_force_at(datetime(2026, 3, 1, tzinfo=UTC))["version"] == 2
    with pytest.raises(NotFoundError, match="no version"):
        agg.version_in_force_at(datetime(2025, 12, 31, tzinfo=UTC))


def test_an_amendment_accepted_after_its_date_takes_effect_when_accepted(app: Agreements, clock: FakeClock) -> None:
    aid = active(app)
    _, am = app.propose_amendment(PROVIDER, aid, sla_terms(title="New"), START + timedelta(days=7), "rename")
    clock.advance(timedelta(days=20))
    agg = app.accept_amendment(CUSTOMER, aid, am)
    assert agg.get_version(2)["effective_from"] == clock.now().isoformat()


def test_amendment_rules(app: Agreements) -> None:
    aid = active(app)
    with pytest.raises(InvalidRequestError, match="notice period is 7 days"):
        app.propose_amendment(PROVIDER, aid, sla_terms(), START + timedelta(days=2), "too soon")
    with pytest.raises(InvalidRequestError, match="reason is required"):
        app.propose_amendment(PROVIDER, aid, sla_terms(), START + timedelta(days=8), "")
    changed_parties = sla_terms(parties={"provider_department_id": IT, "customer_department_id": "marketing"})
    with pytest.raises(InvalidRequestError, match="cannot change the parties"):
        app.propose_amendment(PROVIDER, aid, changed_parties, START + timedelta(days=8), "x")
    _, am = app.propose_amendment(PROVIDER, aid, sla_terms(), START + timedelta(days=8), "x")
    with pytest.raises(TransitionError, match="already pending; one at a time"):
        app.propose_amendment(CUSTOMER, aid, sla_terms(), START + timedelta(days=8), "y")
    with pytest.raises(NotAPartyError, match="only the counterparty"):
        app.accept_amendment(PROVIDER, aid, am)
    with pytest.raises(NotAPartyError, match="only the proposer"):
        app.withdraw_amendment(CUSTOMER, aid, am, "no")
    with pytest.raises(TransitionError, match="the pending amendment is"):
        app.accept_amendment(CUSTOMER, aid, "other")
    agg = app.reject_amendment(CUSTOMER, aid, am, "no thanks")
    assert agg.pending is None and agg.current_version == 1
    _, am2 = app.propose_amendment(PROVIDER, aid, sla_terms(), START + timedelta(days=8), "again")
    assert app.withdraw_amendment(PROVIDER, aid, am2, "never mind").pending is None
    provider_only = sla_terms(amendment={"who_may_propose": "PROPOSER_PROVIDER", "notice_days": 0})
    aid2 = active(app, provider_only)
    with pytest.raises(NotAPartyError, match="only the provider"):
        app.propose_amendment(CUSTOMER, aid2, provider_only, START, "x")


def test_termination_needs_notice_unless_the_customer_holds_a_right(app: Agreements) -> None:
    aid = active(app)
    with pytest.raises(
        InvalidRequestError, match=r"a termination at .* \(effective_at\) is within the 30-day notice period"
    ):
        app.terminate(PROVIDER, aid, "bye", effective_at=START + timedelta(days=5))
    with pytest.raises(NotAPartyError, match="holding a termination right"):
        app.terminate(CUSTOMER, aid, "now", immediate=True)
    agg = app.get_agreement_aggregate(aid)
    agg.record_termination_right("availability", "breached 3 months running", "billing:x:1")
    app.save(agg)
    done = app.terminate(CUSTOMER, aid, "using our right", immediate=True)
    assert done.state == TERMINATED
    assert done.termination is not None and done.termination["right_used"] is True
    with pytest.raises(TransitionError, match="the agreement is TERMINATED"):
        app.suspend(PROVIDER, aid, "x")


def test_expiry_and_auto_renewal_run_from_the_clock(app: Agreements, clock: FakeClock) -> None:
    ending = sla_terms(term={"effective_from": "2026-01-01T00:00:00Z", "effective_to": "2026-03-01T00:00:00Z"})
    renewing = sla_terms(
        term={
            "effective_from": "2026-01-01T00:00:00Z",
            "effective_to": "2026-03-01T00:00:00Z",
            "auto_renew": True,
            "renewal_months": 12,
        }
    )
    a, b = active(app, ending), active(app, renewing)
    clock.set(datetime(2026, 2, 28, tzinfo=UTC))
    assert app.process_due() == 0
    clock.set(datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC))
    assert app.process_due() == 2
    assert app.get_agreement(AUDITOR, a).state == EXPIRED
    renewed = app.get_agreement(AUDITOR, b)
    assert renewed.state == ACTIVE and renewed.terms["term"]["effective_to"] == "2027-03-01T00:00:00+00:00"


def test_references_must_be_registered(app: Agreements) -> None:
    terms = sla_terms(parties={"provider_department_id": IT, "customer_department_id": "ghosts"})
    with pytest.raises(UnknownReferenceError, match="department 'ghosts' is not registered"):
        app.draft(PROVIDER, terms)
    terms = sla_terms()
    terms["service"]["service_ids"] = ["vpn"]
    terms["objectives"][0]["calendar_id"] = "office-hours"
    with pytest.raises(UnknownReferenceError) as err:
        app.draft(PROVIDER, terms)
    assert "service 'vpn' is not registered" in str(err.value)
    assert "calendar 'office-hours' is not defined" in str(err.value)
    app.define_calendar(
        "office-hours",
        {
            "time_zone": "Europe/Amsterdam",
            "hours": [{"weekday": 1, "opens": "09:00", "closes": "17:00"}],
            "holidays": [],
        },
    )
    terms["service"]["service_ids"] = [EMAIL]
    app.draft(PROVIDER, terms)


def test_nothing_is_stored_when_a_command_is_refused(app: Agreements) -> None:
    head = app.head_position()
    for attempt in (
        lambda: app.draft(PROVIDER, sla_terms(time_zone="Nowhere/City")),
        lambda: app.draft(CUSTOMER, sla_terms()),
        lambda: app.register_department(IT, "again"),
    ):
        with pytest.raises(Exception):  # noqa: B017 - each raises its own error; what matters is nothing stored
            attempt()
    assert app.head_position() == head


def test_multi_level_effective_terms_merge_the_parent_chain(app: Agreements) -> None:
    corporate = sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate")
    corporate["service"]["service_ids"] = []
    corporate["objectives"][1]["target"] = "70"
    parent_id = active(app, corporate)
    child = sla_terms(parent_agreement_id=parent_id)
    child["objectives"] = [child["objectives"][0]]  # only availability; inherits service-level
    child_id = active(app, child)
    effective = app.effective_terms(app.get_agreement_aggregate(child_id))
    by_id = {o["objective_id"]: o for o in effective["objectives"]}
    assert by_id["service-level"]["target"] == "70"
    assert by_id["availability"]["target"] == "99.9"
    with pytest.raises(UnknownReferenceError, match="not above"):
        app.draft(PROVIDER, sla_terms(level="SCOPE_LEVEL_CUSTOMER", parent_agreement_id=child_id))


def test_an_sla_stricter_than_its_underpinning_ola_is_refused_naming_both_objectives(app: Agreements) -> None:
    ola = ola_terms("99.5")
    ola_agg = app.draft(NET, ola)
    app.propose(NET, str(ola_agg.id))
    app.accept(PROVIDER, str(ola_agg.id))
    sla = sla_terms()
    sla["objectives"][0]["underpinned_by"] = [str(ola_agg.id)]
    draft = app.draft(PROVIDER, sla)
    with pytest.raises(UnderpinningError) as err:
        app.propose(PROVIDER, str(draft.id))
    assert "objective 'availability'" in str(err.value)
    assert "objective 'network-availability'" in str(err.value)
    assert app.get_agreement_aggregate(str(draft.id)).state == DRAFT
    # A stricter OLA (after an amendment) lets it through.
    _, am = app.propose_amendment(NET, str(ola_agg.id), ola_terms("99.95"), START + timedelta(days=7), "tighter")
    app.accept_amendment(PROVIDER, str(ola_agg.id), am)
    app.propose(PROVIDER, str(draft.id))
    assert app.accept(CUSTOMER, str(draft.id)).state == ACTIVE


def test_a_retried_request_returns_the_first_result_and_stores_nothing(app: Agreements) -> None:
    first = app.draft(PROVIDER, sla_terms(), request_id="req-1")
    head = app.head_position()
    again = app.draft(PROVIDER, sla_terms(), request_id="req-1")
    assert (again.id, again.version) == (first.id, first.version)
    assert app.head_position() == head
    aid = str(first.id)
    p1 = app.propose(PROVIDER, aid, request_id="req-2")
    head = app.head_position()
    p2 = app.propose(PROVIDER, aid, request_id="req-2")
    assert p2.version == p1.version and app.head_position() == head


def test_a_stale_expected_revision_is_a_conflict_saying_the_current_one(app: Agreements) -> None:
    agg = app.draft(PROVIDER, sla_terms())
    with pytest.raises(ConflictError, match=f"is at revision {agg.version}, not the expected 7"):
        app.propose(PROVIDER, str(agg.id), expected=7)
    assert app.propose(PROVIDER, str(agg.id), expected=agg.version).state == PROPOSED


def test_listing_filters_and_pages(app: Agreements) -> None:
    ids = [active(app) for _ in range(3)]
    app.draft(PROVIDER, sla_terms())
    page, token = app.list_agreements(AUDITOR, state="ACTIVE", page_size=2)
    assert len(page) == 2 and token
    rest, token2 = app.list_agreements(AUDITOR, state="ACTIVE", page_size=2, page_token=token)
    assert len(rest) == 1 and token2 == ""
    assert sorted(s.agreement_id for s in page + rest) == sorted(ids)
    assert len(app.list_agreements(CUSTOMER)[0]) == 4
    assert app.list_agreements(OUTSIDER)[0] == []
    assert len(app.list_agreements(AUDITOR, party=FINANCE, role="CUSTOMER")[0]) == 4
    assert app.list_agreements(AUDITOR, party=FINANCE, role="PROVIDER")[0] == []
    assert len(app.list_agreements(AUDITOR, service_id=EMAIL, state="DRAFT")[0]) == 1


def test_history_lists_every_event_of_the_agreement_in_order(app: Agreements) -> None:
    aid = active(app)
    history = app.history(AUDITOR, aid)
    assert [e.type.split(".")[-1] for e in history] == ["AgreementDrafted", "AgreementProposed", "AgreementAccepted"]
    assert [e.aggregate_version for e in history] == [1, 2, 3]
    with pytest.raises(NotAPartyError):
        app.history(OUTSIDER, aid)


# -- who may do what: every role × every command ------------------------------------------------
ROLES = {
    "provider": PROVIDER,
    "customer": CUSTOMER,
    "outsider": OUTSIDER,
    "auditor": AUDITOR,
    "admin": ADMIN,
    "service": SERVICE,
}


def _setup(app: Agreements, state: str) -> tuple[str, str]:
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    if state == "DRAFT":
        return aid, ""
    app.propose(PROVIDER, aid)
    if state == "PROPOSED":
        return aid, ""
    app.accept(CUSTOMER, aid)
    if state == "ACTIVE":
        return aid, ""
    if state == "SUSPENDED":
        app.suspend(PROVIDER, aid, "x")
        return aid, ""
    _, am = app.propose_amendment(PROVIDER, aid, sla_terms(), START + timedelta(days=8), "x")
    return aid, am


COMMANDS: dict[str, tuple[str, Callable[[Agreements, Actor, str, str], Any], set[str]]] = {
    "revise": ("DRAFT", lambda a, who, aid, am: a.revise(who, aid, sla_terms()), {"provider"}),
    "propose": ("DRAFT", lambda a, who, aid, am: a.propose(who, aid), {"provider"}),
    "reject_proposal": ("PROPOSED", lambda a, who, aid, am: a.reject_proposal(who, aid, "no"), {"customer"}),
    "accept": ("PROPOSED", lambda a, who, aid, am: a.accept(who, aid), {"customer"}),
    "propose_amendment": (
        "ACTIVE",
        lambda a, who, aid, am: a.propose_amendment(who, aid, sla_terms(), START + timedelta(days=8), "x"),
        {"provider", "customer"},
    ),
    "accept_amendment": ("AMENDING", lambda a, who, aid, am: a.accept_amendment(who, aid, am), {"customer"}),
    "reject_amendment": ("AMENDING", lambda a, who, aid, am: a.reject_amendment(who, aid, am, "no"), {"customer"}),
    "withdraw_amendment": ("AMENDING", lambda a, who, aid, am: a.withdraw_amendment(who, aid, am, "x"), {"provider"}),
    "suspend": ("ACTIVE", lambda a, who, aid, am: a.suspend(who, aid, "x"), {"provider"}),
    "resume": ("SUSPENDED", lambda a, who, aid, am: a.resume(who, aid, "x"), {"provider"}),
    "terminate": ("ACTIVE", lambda a, who, aid, am: a.terminate(who, aid, "x"), {"provider", "customer"}),
    "read": (
        "ACTIVE",
        lambda a, who, aid, am: a.get_agreement(who, aid),
        {"provider", "customer", "auditor", "admin", "service"},
    ),
}


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_who_may_do_what(app: Agreements, command: str) -> None:
    state, run, allowed = COMMANDS[command]
    for role, actor in ROLES.items():
        aid, am = _setup(app, state)
        head = app.head_position()
        if role in allowed:
            run(app, actor, aid, am)
        else:
            with pytest.raises(NotAPartyError):
                run(app, actor, aid, am)
            assert app.head_position() == head, f"{role} {command}: a refused command stored something"


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_drafting_is_for_the_provider_named_in_the_terms(app: Agreements) -> None:
    for actor in (CUSTOMER, OUTSIDER, AUDITOR, ADMIN, SERVICE):
        with pytest.raises(NotAPartyError, match="only the provider named in the terms"):
            app.draft(actor, sla_terms())
    with pytest.raises(TermsInvalidError):
        app.draft(PROVIDER, copy.deepcopy(sla_terms(title="")))


def test_a_long_lived_agreement_is_snapshotted_and_loads_the_same(app: Agreements, clock: FakeClock) -> None:
    aid = active(app)
    for i in range(30):
        _, am = app.propose_amendment(
            PROVIDER, aid, with_target(sla_terms(), "service-level", str(50 + i)), clock.now() + timedelta(days=8), "x"
        )
        app.accept_amendment(CUSTOMER, aid, am)
    agg = app.get_agreement_aggregate(aid)
    assert agg.version == 63 and agg.current_version == 31
    assert app.snapshots is not None
    snapshots = list(app.snapshots.get(agg.id))
    assert [s.originator_version for s in snapshots] == [50]
    # Replaying every event gives the same agreement as snapshot + tail.
    no_snapshots = Repository(event_store=app.events, snapshot_store=None)
    full = no_snapshots.get(agg.id)
    assert full.__dict__ == agg.__dict__


def active_ola(app: Agreements, target: str) -> str:
    ola = app.draft(NET, ola_terms(target))
    app.propose(NET, str(ola.id))
    app.accept(PROVIDER, str(ola.id))
    return str(ola.id)


def test_an_ola_weakened_by_amendment_under_an_active_sla_is_refused_naming_the_pair(
    app: Agreements, clock: FakeClock
) -> None:
    ola_id = active_ola(app, "99.95")
    sla = sla_terms()
    sla["objectives"][0]["underpinned_by"] = [ola_id]
    sla_id = active(app, sla)
    head = app.head_position()
    # The network team proposes a weaker availability than the SLA it underpins: refused.
    with pytest.raises(UnderpinningError) as err:
        app.propose_amendment(NET, ola_id, ola_terms("99.5"), START + timedelta(days=7), "cheaper")
    message = str(err.value)
    assert f"objective 'network-availability' of agreement {ola_id} (>= 99.5)" in message
    assert f"objective 'availability' (METRIC_AVAILABILITY_TIME >= 99.9) of ACTIVE SLA {sla_id}" in message
    assert app.head_position() == head and app.get_agreement_aggregate(ola_id).pending is None
    # Still refused while the SLA is suspended; equal strictness is fine.
    app.suspend(PROVIDER, sla_id, "office move")
    with pytest.raises(UnderpinningError):
        app.propose_amendment(NET, ola_id, ola_terms("99.8"), START + timedelta(days=7), "cheaper")
    _, am = app.propose_amendment(NET, ola_id, ola_terms("99.9"), START + timedelta(days=7), "as strict")
    assert app.accept_amendment(PROVIDER, ola_id, am).current_version == 2
    # Once the SLA has ended, the OLA may be weakened.
    app.terminate(CUSTOMER, sla_id, "done", effective_at=START + timedelta(days=30))
    clock.advance(timedelta(days=31))
    app.process_due()
    _, am = app.propose_amendment(NET, ola_id, ola_terms("99.5"), START + timedelta(days=40), "cheaper")
    assert app.accept_amendment(PROVIDER, ola_id, am).current_version == 3


def test_a_draft_ola_named_by_an_active_sla_cannot_be_revised_weaker(app: Agreements) -> None:
    ola = app.draft(NET, ola_terms("99.95"))
    sla = sla_terms()
    sla["objectives"][0]["underpinned_by"] = [str(ola.id)]
    sla_id = active(app, sla)
    with pytest.raises(UnderpinningError, match=f"of ACTIVE SLA {sla_id}"):
        app.revise(NET, str(ola.id), ola_terms("99.0"))
    assert app.get_agreement_aggregate(str(ola.id)).terms["objectives"][0]["target"] == "99.95"


def test_terms_ending_in_the_past_are_refused_at_draft_acceptance_and_amendment(
    app: Agreements, clock: FakeClock
) -> None:
    head = app.head_position()
    ended = sla_terms(term={"effective_from": "2025-01-01T00:00:00Z", "effective_to": "2025-12-31T00:00:00Z"})
    with pytest.raises(TermsInvalidError, match=r"term.effective_to: 2025-12-31T00:00:00\+00:00 is before now"):
        app.draft(PROVIDER, ended)
    assert app.head_position() == head
    # Proposed while still running, accepted after its end: refused, still PROPOSED.
    ending = sla_terms(term={"effective_from": "2026-01-01T00:00:00Z", "effective_to": "2026-02-01T00:00:00Z"})
    aid = str(app.draft(PROVIDER, ending).id)
    app.propose(PROVIDER, aid)
    clock.set(datetime(2026, 2, 2, tzinfo=UTC))
    with pytest.raises(TermsInvalidError, match="is before now"):
        app.accept(CUSTOMER, aid)
    assert app.get_agreement_aggregate(aid).state == PROPOSED
    # An amendment whose end comes before its own effective date would never be in force.
    live = active(app)
    amended = sla_terms(term={"effective_from": "2026-01-01T00:00:00Z", "effective_to": "2026-03-01T00:00:00Z"})
    with pytest.raises(TermsInvalidError, match="is before the amendment's effective_from"):
        app.propose_amendment(PROVIDER, live, amended, datetime(2026, 3, 10, tzinfo=UTC), "end it")
    assert app.get_agreement_aggregate(live).pending is None


def test_a_target_in_exponent_form_or_as_a_number_is_stored_in_plain_notation(app: Agreements) -> None:
    terms = sla_terms()
    terms["objectives"][1]["target"] = "2E+1"
    terms["objectives"][0]["target"] = 99.9
    aid = str(app.draft(PROVIDER, terms).id)
    stored = app.get_agreement_aggregate(aid).terms
    assert (stored["objectives"][0]["target"], stored["objectives"][1]["target"]) == ("99.9", "20")


def test_a_bad_parameter_is_refused_at_draft_revision_and_amendment_and_nothing_is_stored(app: Agreements) -> None:
    bad = sla_terms()
    bad["objectives"][0]["parameters"]["maintenance_notice_hours"] = "48h"
    head = app.head_position()
    with pytest.raises(TermsInvalidError, match=r"objectives\[0\].parameters.maintenance_notice_hours"):
        app.draft(PROVIDER, bad)
    assert app.head_position() == head
    aid = str(app.draft(PROVIDER, sla_terms()).id)
    head = app.head_position()
    with pytest.raises(TermsInvalidError, match="maintenance_notice_hours"):
        app.revise(PROVIDER, aid, bad)
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)
    head = app.head_position()
    huge = sla_terms()
    huge["objectives"][0]["parameters"]["min_outage_seconds"] = "1e14"
    with pytest.raises(TermsInvalidError, match=r"min_outage_seconds: must be at most 86400"):
        app.propose_amendment(PROVIDER, aid, huge, START + timedelta(days=7), "x")
    assert app.head_position() == head


def test_only_the_provider_suspends_and_resumes_and_the_events_carry_the_instants(
    app: Agreements, clock: FakeClock
) -> None:
    aid = active(app)
    with pytest.raises(NotAPartyError, match=r"only the provider \(it-operations\) may suspend"):
        app.suspend(CUSTOMER, aid, "we asked for it")
    with pytest.raises(InvalidRequestError, match="reason is required to suspend"):
        app.suspend(PROVIDER, aid, "")
    clock.set(datetime(2026, 2, 3, 8, 0, tzinfo=UTC))
    suspended = app.suspend(PROVIDER, aid, "at finance's request: year-end freeze")
    assert suspended.suspended_at == "2026-02-03T08:00:00+00:00"
    with pytest.raises(NotAPartyError, match="only the provider"):
        app.resume(CUSTOMER, aid, "")
    clock.set(datetime(2026, 2, 10, 8, 0, tzinfo=UTC))
    app.resume(PROVIDER, aid, "freeze over")
    envelopes = app.history(AUDITOR, aid)
    by_type = {e.type.rsplit(".", 1)[1]: e for e in envelopes}
    s, r = agreement_events.AgreementSuspended(), agreement_events.AgreementResumed()
    by_type["AgreementSuspended"].payload.Unpack(s)
    by_type["AgreementResumed"].payload.Unpack(r)
    assert s.suspended_at.ToDatetime(tzinfo=UTC) == datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
    assert r.resumed_at.ToDatetime(tzinfo=UTC) == datetime(2026, 2, 10, 8, 0, tzinfo=UTC)
