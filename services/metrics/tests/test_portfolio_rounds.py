"""Rounds over a portfolio of agreements, on both stores: what a round costs for each agreement
it judges. The views and open windows judged last round are not decoded from the store again
(the aggregate cache, fast-forwarded by what was stored since); the views a round reads are
left exactly as stored; a round that fails half-way leaves nothing it changed behind, in the
store or in memory; and each window length's burn-rate pairs are worked out once, not for
every window of every agreement each round. The cache's size is a setting
(`METRICS_AGGREGATE_CACHE`; 0: none). Agreements measuring a service by the same objective
share one outcome a round (an agreement that differs in anything the outcome reads is judged
on its own), and a window loaded to be changed shares its values with the cached one, never
its changes. What this process saved is loaded without asking the store for events since;
what another process stored is seen by the next round."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import LRUCache

from accord_agreements.samples import sla_terms
from accord_kit.application import project_events
from accord_kit.settings import ServiceSettings, SettingsError
from accord_metrics import judging
from accord_metrics.application import Metrics
from accord_metrics.bootstrap import store_env
from accord_metrics.domain import AgreementView, WindowEvaluation
from accord_metrics.formulas import reliability
from tests.suite import (
    AMS,
    COLLECTOR,
    CUSTOMER,
    PROVIDER,
    Suite,
    active_agreements_alike,
    at,
    calls,
    outage,
)

AGREEMENTS = 4
FEB = "2026-01-31T23:00:00+00:00"


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _portfolio(suite: Suite) -> list[str]:
    """AGREEMENTS accepted agreements on the e-mail service (the sample SLA), with signals."""
    ids = active_agreements_alike(suite, AGREEMENTS)
    suite.metrics.record(
        COLLECTOR, [outage("o1", f"2026-02-02T10:00{AMS}", 30), *calls("a", f"2026-02-02T09:00{AMS}", 8, 2)]
    )
    suite.tick(f"2026-02-03T10:00{AMS}")
    return ids


def _a_stricter_agreement(suite: Suite, then: str) -> str:
    """One more accepted agreement on the e-mail service, its availability target 99.99 %; the
    clock then at `then`."""
    terms = sla_terms(title="E-mail, stricter")
    terms["objectives"][0]["target"] = "99.99"
    own = str(suite.agreements.draft(PROVIDER, terms).id)
    suite.agreements.propose(PROVIDER, own)
    suite.agreements.accept(CUSTOMER, own)
    suite.tick(then)
    return own


def _a_batch(m: Metrics, n: int) -> None:
    m.record(
        COLLECTOR,
        [outage(f"o-{n}", f"2026-02-03T{10 + n:02d}:00{AMS}", 5), *calls(f"c{n}", f"2026-02-03T11:00{AMS}", 3, n)],
    )


def _judged_once(suite: Suite) -> tuple[Metrics, list[str]]:
    """The portfolio, a batch on its service, and a round that judged it."""
    m = suite.metrics
    ids = _portfolio(suite)
    _a_batch(m, 1)
    m.evaluate(at(f"2026-02-03T12:00{AMS}"))
    return m, ids


def _as_stored(suite: Suite, m: Metrics, ids: list[str], objectives: tuple[str, ...] = ("service-level",)) -> None:
    """Each agreement's February windows in `m` are what a process decoding everything from the
    store (no cache) reads: the same latest evaluation, the same version."""
    fresh = Metrics({**suite.envs["metrics"], "AGGREGATE_CACHE_MAXSIZE": ""}, clock=suite.clock)
    try:
        for aid in ids:
            for objective in objectives:
                kept, stored = m.window(None, aid, objective, FEB), fresh.window(None, aid, objective, FEB)
                assert (kept.latest, kept.version) == (stored.latest, stored.version)
    finally:
        fresh.close()


def _another_process_judges(suite: Suite, n: int, instant: str) -> None:
    """A second process on the store records batch `n` and judges a round at `instant`."""
    other = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        _a_batch(other, n)
        other.evaluate(at(instant))
        assert other.last_round.windows_changed >= AGREEMENTS
    finally:
        other.close()


def _spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, pick: Callable[..., Any]) -> list[Any]:
    """Spy on `owner.name`: what `pick(*args, **kwargs)` says of each call (None: not kept)."""
    seen: list[Any] = []
    method = getattr(owner, name)

    def spying(*args: Any, **kwargs: Any) -> Any:
        if (kept := pick(*args, **kwargs)) is not None:
            seen.append(kept)
        return method(*args, **kwargs)

    monkeypatch.setattr(owner, name, spying)
    return seen


def _decoded(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """The ids of the aggregates `m` decodes from the store (not found in its cache)."""
    return _spy(monkeypatch, m.repository, "_reconstruct_aggregate", lambda aggregate_id, *a, **k: aggregate_id)


def _store_reads(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ids whose events `m` reads from the store to load them (decoded or fast-forwarded)."""
    return _spy(monkeypatch, m.repository.event_store, "get", lambda originator_id, *a, **k: originator_id)


def _log_scans(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`m`'s reads of the log for other processes' saves of views, calendars and windows."""
    return _spy(
        monkeypatch,
        m.recorder,
        "select_notifications",
        lambda *a, **k: k if k.get("topics") == judging.KEPT_TOPICS else None,
    )


def test_a_round_decodes_no_view_or_open_window_that_the_last_round_loaded(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = suite.metrics
    ids = _portfolio(suite)
    _a_batch(m, 1)
    m.evaluate(at(f"2026-02-03T12:00{AMS}"))  # a window made in a round is decoded once, at its next load
    decoded = _decoded(m, monkeypatch)

    # A batch on the service every agreement measures: every agreement's two open windows are
    # judged again, each loaded from memory and brought up to date with what was stored since.
    _a_batch(m, 2)
    head = m.head_position()
    m.evaluate(at(f"2026-02-03T13:00{AMS}"))
    assert m.last_round.agreements_judged == AGREEMENTS
    assert m.last_round.windows_judged == 2 * AGREEMENTS
    assert m.head_position() > head  # evaluations recorded
    assert decoded == []

    # What the round recorded is what a process decoding everything from the store records.
    fresh = Metrics({**suite.envs["metrics"], "AGGREGATE_CACHE_MAXSIZE": ""}, clock=suite.clock)
    try:
        assert fresh.repository.cache is None
        for aid in ids:
            for objective in ("availability", "service-level"):
                kept = m.window(None, aid, objective, FEB)
                stored = fresh.window(None, aid, objective, FEB)
                assert kept.latest == stored.latest
                assert kept.version == stored.version
    finally:
        fresh.close()


def test_a_round_leaves_the_views_it_read_exactly_as_stored(suite: Suite) -> None:
    m = suite.metrics
    ids = _portfolio(suite)
    for n in (1, 2):
        _a_batch(m, n)
        m.evaluate(at(f"2026-02-03T{12 + n}:00{AMS}"))
    # The views in memory (read by the rounds without a copy) against the same views decoded
    # from the store now.
    for aid in ids:
        uid = AgreementView.create_id(aid)
        kept = m.repository.get(uid, deepcopy_from_cache=False)
        stored = m.repository._reconstruct_aggregate(uid, None, project_events)
        assert vars(kept) == vars(stored)


def test_a_round_that_fails_half_way_leaves_nothing_it_changed_in_memory(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judging changes the window evaluations it loaded before saving them: when saving fails,
    the next round starts from what is stored, not from the changes that were never saved."""
    m = suite.metrics
    ids = _portfolio(suite)
    windows = [WindowEvaluation.create_id(aid, "availability", FEB) for aid in ids]
    first = windows[0]
    before = [m.repository.get(w).version for w in windows]

    save = m.save
    failed: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(1)
            raise RuntimeError("the store went away")
        return save(*args, **kwargs)

    _a_batch(m, 1)
    monkeypatch.setattr(m, "save", failing_once)
    m.evaluate(at(f"2026-02-03T12:00{AMS}"))  # the round's save fails: none of its agreements is judged
    assert failed == [1]
    assert m.last_round.windows_changed == 0
    assert [m.repository.get(w).version for w in windows] == before  # not the versions of the unsaved changes

    # The next round judges them again, and their evaluations are those of a process that never failed.
    m.evaluate(at(f"2026-02-03T12:05{AMS}"))
    assert m.last_round.agreements_judged == AGREEMENTS
    fresh = Metrics({**suite.envs["metrics"], "AGGREGATE_CACHE_MAXSIZE": ""}, clock=suite.clock)
    try:
        for aid in ids:
            kept = m.window(None, aid, "availability", FEB)
            stored = fresh.window(None, aid, "availability", FEB)
            assert kept.latest == stored.latest
            assert kept.version == stored.version
        stored_versions = [e.originator_version for e in fresh.repository.event_store.get(first)]
        assert stored_versions == list(range(stored_versions[0], stored_versions[0] + len(stored_versions)))
    finally:
        fresh.close()


def test_a_round_saves_the_agreements_it_judged_together(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction (one commit) for the evaluations of many agreements, not one an agreement;
    beyond `SAVE_BATCH` window evaluations, another."""
    m = suite.metrics
    ids = _portfolio(suite)
    saves: list[int] = []
    save = m.save

    def counting(*args: Any, **kwargs: Any) -> Any:
        saves.append(len(args))
        return save(*args, **kwargs)

    _a_batch(m, 1)
    monkeypatch.setattr(m, "save", counting)
    m.evaluate(at(f"2026-02-03T12:00{AMS}"))
    assert m.last_round.agreements_judged == AGREEMENTS
    assert saves == [m.last_round.windows_changed] and saves[0] >= AGREEMENTS
    monkeypatch.setattr(judging, "SAVE_BATCH", 2)
    _a_batch(m, 2)
    saves.clear()
    m.evaluate(at(f"2026-02-03T13:00{AMS}"))
    assert len(saves) >= 2 and sum(saves) == m.last_round.windows_changed
    for aid in ids:
        assert m.window(None, aid, "service-level", FEB).version > 1


def test_each_window_lengths_burn_rate_pairs_are_worked_out_once(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    m = suite.metrics
    _portfolio(suite)
    forget = getattr(reliability.burn_windows, "cache_clear", None)  # none kept: nothing to forget
    if forget is not None:
        forget()
    scaled: list[Any] = []
    original = reliability._scaled

    def counting(*args: Any) -> Any:
        scaled.append(args)
        return original(*args)

    monkeypatch.setattr(reliability, "_scaled", counting)
    for n in (1, 2, 3):
        _a_batch(m, n)
        m.evaluate(at(f"2026-02-03T{12 + n}:00{AMS}"))
        assert m.last_round.windows_judged == 2 * AGREEMENTS
    # February's length alone: its four pairs, two look-backs each — once for every round and agreement.
    lengths = {args[1] for args in scaled}
    assert lengths == {at(f"2026-03-01T00:00{AMS}") - at(f"2026-02-01T00:00{AMS}")}
    assert len(scaled) == 8


def test_each_objectives_outcome_key_is_encoded_once_not_each_window_and_round(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = suite.metrics
    _portfolio(suite)  # judged once as it was set up: each objective's key worked out then
    encoded = _spy(monkeypatch, judging, "_objective_key", lambda objective: objective["objective_id"])
    for n in (1, 2, 3):
        _a_batch(m, n)
        m.evaluate(at(f"2026-02-03T{12 + n}:00{AMS}"))
        assert m.last_round.windows_judged == 2 * AGREEMENTS
        assert m.last_round.windows_shared == 2 * AGREEMENTS - 2
    # Their terms are the same dicts round after round: no key worked out again.
    assert encoded == []
    # A new agreement's objectives: worked out once, and the one that differs is judged on its own.
    own = _a_stricter_agreement(suite, f"2026-02-03T16:00{AMS}")
    _a_batch(m, 4)
    m.evaluate(at(f"2026-02-03T17:00{AMS}"))
    assert sorted(encoded) == ["availability", "service-level"]
    assert m.last_round.windows_judged == 2 * (AGREEMENTS + 1)
    assert m.last_round.windows_shared == 2 * (AGREEMENTS + 1) - 3
    stricter = m.window(None, own, "availability", FEB).latest
    assert stricter["target"] == "99.99" and m.recompute(own, "availability", FEB)["matches"]


def test_an_objectives_kept_key_is_its_own_and_the_keys_kept_are_bounded() -> None:
    keys = judging.ObjectiveKeys(limit=2)
    objective = sla_terms()["objectives"][0]
    key = keys(objective)
    assert key == judging._objective_key(objective) and keys(objective) is key and keys.encoded == 1
    # The same content in another dict (another agreement's terms): the same key, worked out for it.
    alike = copy.deepcopy(objective)
    alike["objective_id"] = "another-id"
    assert keys(alike) == key and keys.encoded == 2
    # Anything else the outcome reads: another key.
    stricter = {**objective, "target": "99.99"}
    assert keys(stricter) != key and keys.encoded == 3
    # It was full (two held): dropped as a whole for the stricter one, so the first is worked out
    # again, and the stricter one is still held.
    assert keys(objective) == key and keys.encoded == 4
    assert keys(stricter) == judging._objective_key(stricter) and keys.encoded == 4


def test_the_aggregate_cache_is_a_setting(tmp_path: Path) -> None:
    def app(**environ: str) -> Metrics:
        settings = ServiceSettings.from_env("metrics", {"ACCORD_VAR_DIR": str(tmp_path), **environ})
        return Metrics(store_env(settings))

    for environ, size in (({}, 10000), ({"METRICS_AGGREGATE_CACHE": "50"}, 50)):
        m = app(**environ)
        try:
            assert isinstance(m.repository.cache, LRUCache) and m.repository.cache.maxsize == size
        finally:
            m.close()
    m = app(METRICS_AGGREGATE_CACHE="0")
    try:
        assert m.repository.cache is None
    finally:
        m.close()
    for bad, why in (("-1", "between 0 and 10000000"), ("lots", "a whole number")):
        with pytest.raises(SettingsError, match=f"METRICS_AGGREGATE_CACHE.*{why}"):
            ServiceSettings.from_env("metrics", {"METRICS_AGGREGATE_CACHE": bad})


def test_how_long_a_closed_window_keeps_its_running_evaluation_is_a_setting_too(tmp_path: Path) -> None:
    """`METRICS_CLOSED_KEPT_SECONDS` reaches the application (an hour unset; 0 to 31 days)."""
    for environ, kept in (({}, timedelta(hours=1)), ({"METRICS_CLOSED_KEPT_SECONDS": "600"}, timedelta(minutes=10))):
        settings = ServiceSettings.from_env("metrics", {"ACCORD_VAR_DIR": str(tmp_path), **environ})
        m = Metrics(store_env(settings))
        try:
            assert m.closed_kept == kept
        finally:
            m.close()
    for bad, why in (("-1", "between 0 and 2678400"), ("long", "a number")):
        with pytest.raises(SettingsError, match=f"METRICS_CLOSED_KEPT_SECONDS.*{why}"):
            ServiceSettings.from_env("metrics", {"METRICS_CLOSED_KEPT_SECONDS": bad})


def test_agreements_measuring_a_service_by_the_same_objective_share_one_outcome_a_round(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = suite.metrics
    ids = _portfolio(suite)
    # One more on the same service whose availability target differs: judged on its own.
    own = _a_stricter_agreement(suite, f"2026-02-03T11:00{AMS}")
    judged = _spy(monkeypatch, judging, "judge", lambda objective, *a, **k: objective["objective_id"])
    _a_batch(m, 1)
    m.evaluate(at(f"2026-02-03T12:00{AMS}"))
    assert m.last_round.agreements_judged == AGREEMENTS + 1
    assert m.last_round.windows_judged == 2 * (AGREEMENTS + 1)
    # Availability: the portfolio's once and the stricter one's once; the service level, shared by all.
    assert sorted(judged) == ["availability", "availability", "service-level"]
    assert m.last_round.windows_shared == 2 * (AGREEMENTS + 1) - 3

    # Each agreement's evaluation is its own (its id, its version) and is what judging it alone gives.
    for aid in [*ids, own]:
        for objective in ("availability", "service-level"):
            kept = m.window(None, aid, objective, FEB).latest
            assert kept["agreement_id"] == aid and kept["objective_id"] == objective
            alone = m.recompute(aid, objective, FEB)
            assert alone["matches"], alone
    portfolio = m.window(None, ids[0], "availability", FEB).latest
    stricter = m.window(None, own, "availability", FEB).latest
    assert (portfolio["target"], stricter["target"]) == ("99.9", "99.99")
    assert portfolio["value"] == stricter["value"] and portfolio["budget_consumed"] != stricter["budget_consumed"]


def test_a_window_loaded_to_be_changed_shares_its_values_with_the_cached_one_never_its_changes(suite: Suite) -> None:
    m, ids = _judged_once(suite)
    wid = WindowEvaluation.create_id(ids[0], "availability", FEB)
    cached: Any = m.repository.get(wid, deepcopy_from_cache=False)
    before = copy.deepcopy({k: v for k, v in vars(cached).items() if k != "_pending_events"})
    loaded: Any = m.repository.get(wid)
    assert loaded is not cached and loaded.current is cached.current  # not copied value by value
    # Every change a round can make, on the loaded one.
    evaluation = {**loaded.current, "value": "12.5", "status": "BREACHED", "input_digest": "other"}
    loaded.update(evaluation)
    loaded.breach("", "12.5", "99.9", certain_before_close=True)
    loaded.warn("50", "60")
    loaded.burn_alert("page-1h", "14.4", "20", "20")
    loaded.resolve_burn_alert("page-1h", "cleared")
    loaded.close({**evaluation, "closed": True})
    loaded.update({**evaluation, "closed": True, "input_digest": "restated"})
    assert len(loaded.pending_events) >= 5 and loaded.version > cached.version
    assert cached.pending_events == []
    assert {k: v for k, v in vars(cached).items() if k != "_pending_events"} == before


def test_a_round_asks_the_store_nothing_for_the_views_and_windows_this_process_saved(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, ids = _judged_once(suite)
    read = _store_reads(m, monkeypatch)
    # Nor the log for other processes' saves of them: every position since is this process's.
    scans = _log_scans(m, monkeypatch)
    for n in (2, 3):
        _a_batch(m, n)
        m.evaluate(at(f"2026-02-03T{11 + n}:00{AMS}"))
        assert m.last_round.windows_judged == 2 * AGREEMENTS and m.last_round.windows_changed >= AGREEMENTS
    assert read == []  # before: a fast-forward query for each view and window loaded (four an agreement)
    assert scans == []
    _as_stored(suite, m, ids, ("availability", "service-level"))


def test_what_another_process_stored_is_seen_by_the_next_round(suite: Suite) -> None:
    """Two processes on one store (one after the other holding the lease): the windows the
    other judged and saved since are not judged from this process's cached copies."""
    m, ids = _judged_once(suite)
    _another_process_judges(suite, 2, f"2026-02-03T13:00{AMS}")
    _a_batch(m, 3)
    m.evaluate(at(f"2026-02-03T14:00{AMS}"))
    assert m.evaluation_failures() == {}  # before: each save refused, its version taken by the other
    assert m.last_round.windows_changed >= AGREEMENTS
    _as_stored(suite, m, ids)


def test_a_save_refused_for_a_version_another_process_took_is_judged_again_from_the_store(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the round did not learn of the other's saves (its look at the log left out),
    the refused save takes its windows out of the cache's current ones: the next round loads
    them from the store and saves."""
    m, ids = _judged_once(suite)
    _another_process_judges(suite, 2, f"2026-02-03T13:00{AMS}")
    monkeypatch.setattr(m, "_refresh_current", lambda: None)
    _a_batch(m, 3)
    m.evaluate(at(f"2026-02-03T14:00{AMS}"))
    assert m.last_round.windows_changed == 0 and m.evaluation_failures()  # refused: stale copies
    _a_batch(m, 4)
    m.evaluate(at(f"2026-02-03T15:00{AMS}"))
    assert m.evaluation_failures() == {} and m.last_round.windows_changed >= AGREEMENTS
    _as_stored(suite, m, ids)


def test_a_process_with_nothing_current_does_not_read_what_others_stored_before_it_judged(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby that takes over has cached nothing: what the active stored while it waited
    (every window evaluation of every round) is not read back at its first round."""
    m = suite.metrics
    _portfolio(suite)
    standby = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        for n in (1, 2):
            _a_batch(m, n)
            m.evaluate(at(f"2026-02-03T{11 + n}:00{AMS}"))
        scans = _log_scans(standby, monkeypatch)
        _a_batch(m, 3)
        standby.evaluate(at(f"2026-02-03T14:00{AMS}"))
        assert standby.evaluation_failures() == {} and standby.last_round.windows_changed >= AGREEMENTS
        assert scans == []
        # Then the other way round, with more stored by the other than is worth reading: nothing
        # of the first is current any more, and it judges from the store.
        monkeypatch.setattr(judging, "CURRENT_SCAN_LIMIT", 3)
        _a_batch(m, 4)
        m.evaluate(at(f"2026-02-03T14:30{AMS}"))
        assert m.evaluation_failures() == {} and m.last_round.windows_changed >= AGREEMENTS
    finally:
        standby.close()


def test_a_batch_recorded_while_a_round_runs_reaches_the_agreements_judged_after_it(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signals a round read for one agreement are shared with the next only while nothing
    was recorded in between: an agreement judged after a batch arrived judges it, as when each
    agreement read its own (and the earlier ones judge it next round)."""
    m, ids = _judged_once(suite)
    evaluate_agreement = m._evaluate_agreement
    order: list[str] = []
    mid = calls("mid", f"2026-02-03T12:30{AMS}", 5, 5)

    def recording_after_the_first(view: Any, *args: Any, **kwargs: Any) -> Any:
        judged = evaluate_agreement(view, *args, **kwargs)
        order.append(view.agreement_id)
        if len(order) == 1:
            m.record(COLLECTOR, mid)
        return judged

    monkeypatch.setattr(m, "_evaluate_agreement", recording_after_the_first)
    _a_batch(m, 2)
    m.evaluate(at(f"2026-02-03T13:00{AMS}"))
    assert len(order) == AGREEMENTS

    def answered(aid: str) -> int:
        return int(m.window(None, aid, "service-level", FEB).latest["detail"]["answered"])

    first, later = order[0], order[1:]
    assert [answered(aid) - answered(first) for aid in later] == [len(mid)] * len(later)  # recorded meanwhile
    monkeypatch.setattr(m, "_evaluate_agreement", evaluate_agreement)
    m.evaluate(at(f"2026-02-03T13:05{AMS}"))  # the first judges it in the next round
    assert {answered(aid) for aid in ids} == {answered(later[0])}
