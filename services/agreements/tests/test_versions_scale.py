"""An agreement that does not grow with its versions, on both stores: each accepted version
keeps its terms once, in the event that accepted it, and the aggregate (and so its snapshots
and every command's load) holds only the current terms and a small entry per version.
Earlier versions' terms are read back on demand — also by a process that never saw them —
and the library's aggregate cache follows saves made by another process."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_agreements.terms import TermsInvalidError
from accord_kit.clock import FakeClock

PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
AUDITOR = Actor("audrey", "auditor")
START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
VERSIONS = 55  # past the snapshot interval (50), so a snapshot is taken and loaded


def target_of(terms: dict[str, Any]) -> str:
    return str(next(o["target"] for o in terms["objectives"] if o["objective_id"] == "availability"))


def target(n: int) -> str:
    return f"99.{900 + n}"  # version n's availability target: 99.901, 99.902, …


@pytest.fixture
def env(make_store_env: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return make_store_env("agreements")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def app(env: dict[str, str], clock: FakeClock) -> Iterator[Agreements]:
    a = Agreements(env, clock=clock)
    for dept in (IT, FINANCE):
        a.register_department(dept, dept.title())
    a.register_service(EMAIL, "E-mail", IT)
    yield a
    a.close()


def many_versions(app: Agreements, clock: FakeClock) -> str:
    agg = app.draft(PROVIDER, with_target(sla_terms(), "availability", target(1)))
    aid = str(agg.id)
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)
    for n in range(2, VERSIONS + 1):
        clock.advance(timedelta(days=1))
        _, amendment = app.propose_amendment(
            PROVIDER,
            aid,
            with_target(sla_terms(), "availability", target(n)),
            clock.now() + timedelta(days=8),
            f"version {n}",
        )
        app.accept_amendment(CUSTOMER, aid, amendment)
    return aid


def test_the_aggregate_keeps_the_terms_once_not_once_per_version(app: Agreements, clock: FakeClock) -> None:
    aid = many_versions(app, clock)
    agg = app.get_agreement_aggregate(aid)
    assert agg.current_version == VERSIONS and agg.terms_version == VERSIONS
    assert all("terms" not in v for v in agg.versions)
    # The snapshot taken at revision 50 holds one copy of the terms, not fifty.
    assert app.snapshots is not None
    snapshot: Any = list(app.snapshots.get(agg.id))[-1]
    terms_size = len(json.dumps(agg.terms))
    state_size = len(json.dumps(snapshot.state, default=str))
    assert state_size < 3 * terms_size + 200 * VERSIONS, (state_size, terms_size)


def test_every_version_reads_back_with_its_own_terms_also_in_a_fresh_process(
    app: Agreements, clock: FakeClock, env: dict[str, str]
) -> None:
    aid = many_versions(app, clock)
    fresh = Agreements(env, clock=clock)  # nothing cached: the terms come from the store
    try:
        for a in (app, fresh):
            agg = a.get_agreement(AUDITOR, aid)
            for n in (1, 2, 30, VERSIONS - 1, VERSIONS):
                assert target_of(a.version_terms(agg, agg.get_version(n))) == target(n)
            changes = a.diff_versions(AUDITOR, aid, 1, VERSIONS)
            assert [(c["path"], c["old"], c["new"]) for c in changes] == [
                ("objectives[availability].target", target(1), target(VERSIONS))
            ]
            # As effective at an instant in version 3's time: version 3's terms.
            at = datetime.fromisoformat(agg.get_version(3)["effective_from"]) + timedelta(hours=1)
            r = a.get_agreement_at(AUDITOR, aid, at)
            assert r.effective.version is not None and r.effective.version["version"] == 3
            assert target_of(r.effective.version["terms"]) == target(3)
    finally:
        fresh.close()


def test_the_cache_follows_saves_made_by_another_process(
    app: Agreements, clock: FakeClock, env: dict[str, str]
) -> None:
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)
    assert app.get_agreement_aggregate(aid).version == agg.version + 2  # now cached here
    other = Agreements(env, clock=clock)  # another process on the same store
    try:
        _, amendment = other.propose_amendment(
            PROVIDER, aid, with_target(sla_terms(), "availability", "99.95"), clock.now() + timedelta(days=8), "r"
        )
        other.accept_amendment(CUSTOMER, aid, amendment)
    finally:
        other.close()
    # This process's cached copy is fast-forwarded: the next command builds on version 2.
    seen = app.get_agreement_aggregate(aid)
    assert (seen.current_version, target_of(seen.terms)) == (2, "99.95")
    _, again = app.propose_amendment(
        PROVIDER, aid, with_target(sla_terms(), "availability", "99.96"), clock.now() + timedelta(days=8), "r2"
    )
    assert app.accept_amendment(CUSTOMER, aid, again).current_version == 3


def test_a_failed_command_leaves_the_cached_agreement_untouched(app: Agreements, clock: FakeClock) -> None:
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)
    # Applied by the domain, then refused by a check after it (the terms end before the
    # amendment would take effect): nothing saved, and the cached agreement never saw it.
    ends_early = sla_terms()
    ends_early["term"]["effective_to"] = (clock.now() + timedelta(days=9)).isoformat()
    with pytest.raises(TermsInvalidError, match=r"before the amendment's effective_from"):
        app.propose_amendment(PROVIDER, aid, ends_early, clock.now() + timedelta(days=10), "ends too early")
    cached = app.get_agreement_aggregate(aid)
    assert cached.pending is None and cached.current_version == 1
    assert cached.version == agg.version + 2


def test_a_command_finds_the_agreement_it_saved_cached_and_decodes_no_event(
    app: Agreements, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)
    decoded: list[Any] = []
    to_domain_event = app.mapper.to_domain_event

    def counting(stored: Any) -> Any:
        decoded.append(stored)
        return to_domain_event(stored)

    monkeypatch.setattr(app.mapper, "to_domain_event", counting)
    for n in range(2, 5):
        clock.advance(timedelta(days=1))
        proposed, amendment = app.propose_amendment(
            PROVIDER, aid, with_target(sla_terms(), "availability", target(n)), clock.now() + timedelta(days=8), "r"
        )
        accepted = app.accept_amendment(CUSTOMER, aid, amendment, expected=proposed.version)
        assert accepted.current_version == n
    # Each command built on the agreement the one before saved: nothing was read back.
    assert decoded == []
    cached = app.get_agreement_aggregate(aid)
    assert (cached.version, cached.current_version, target_of(cached.terms)) == (accepted.version, 4, target(4))
    # What the cache holds is what the store holds.
    fresh = app.repository.get(agg.id, version=accepted.version)
    assert {k: v for k, v in vars(fresh).items() if k != "_pending_events"} == {
        k: v for k, v in vars(cached).items() if k != "_pending_events"
    }


def test_the_snapshot_is_taken_from_the_agreement_just_saved_without_reading_the_store(
    app: Agreements, clock: FakeClock, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    selected: list[Any] = []
    select_events = app.recorder.select_events

    def counting(*args: Any, **kwargs: Any) -> Any:
        found = select_events(*args, **kwargs)
        selected.extend(found)
        return found

    monkeypatch.setattr(app.recorder, "select_events", counting)
    aid = many_versions(app, clock)  # past revision 50, where the snapshot is taken
    assert [s for s in selected if s.originator_id == app.get_agreement_aggregate(aid).id] == []
    assert app.snapshots is not None
    snapshot: Any = list(app.snapshots.get(app.get_agreement_aggregate(aid).id))[-1]
    assert snapshot.originator_version == 100  # taken at revisions 50 and 100
    # The same state the library's own snapshot (rebuilt from the events) holds.
    rebuilt: Any = type(snapshot).take(app.repository.get(snapshot.originator_id, version=100))
    assert json.dumps(snapshot.state, sort_keys=True, default=str) == json.dumps(
        rebuilt.state, sort_keys=True, default=str
    )
    restored = Agreements(env, clock=clock)  # a process that starts from the snapshot
    try:
        agg = restored.get_agreement_aggregate(aid)
        assert (agg.current_version, target_of(agg.terms)) == (VERSIONS, target(VERSIONS))
    finally:
        restored.close()


def test_a_commands_result_stays_as_saved_when_the_cached_agreement_moves_on(
    app: Agreements, clock: FakeClock, env: dict[str, str]
) -> None:
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)
    proposed, amendment = app.propose_amendment(
        PROVIDER, aid, with_target(sla_terms(), "availability", "99.95"), clock.now() + timedelta(days=8), "r"
    )
    revision = proposed.version
    other = Agreements(env, clock=clock)  # another writer of the store accepts it
    try:
        other.accept_amendment(CUSTOMER, aid, amendment)
    finally:
        other.close()
    moved = app.get_agreement_aggregate(aid)  # the cached agreement is fast-forwarded
    assert (moved.version, moved.current_version, moved.pending) == (revision + 1, 2, None)
    # What the command returned (and its answer is built from) is still what it saved.
    assert (proposed.version, proposed.current_version) == (revision, 1)
    assert proposed.pending is not None and proposed.pending["amendment_id"] == amendment
