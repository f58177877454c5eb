"""Rounds over a portfolio of agreements, on both stores: what a round costs for each agreement
it judges. The views and open windows judged last round are not decoded from the store again
(the aggregate cache, fast-forwarded by what was stored since); the views a round reads are
left exactly as stored; a round that fails half-way leaves nothing it changed behind, in the
store or in memory; and each window length's burn-rate pairs are worked out once, not for
every window of every agreement each round. The cache's size is a setting
(`METRICS_AGGREGATE_CACHE`; 0: none)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from tests.suite import AMS, COLLECTOR, CUSTOMER, PROVIDER, Suite, an_active_agreement, at, calls, outage

AGREEMENTS = 4
FEB = "2026-01-31T23:00:00+00:00"


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _portfolio(suite: Suite) -> list[str]:
    """AGREEMENTS accepted agreements on the e-mail service (the sample SLA), with signals."""
    ids = [an_active_agreement(suite)]
    for i in range(1, AGREEMENTS):
        aid = str(suite.agreements.draft(PROVIDER, sla_terms(title=f"E-mail #{i}")).id)
        suite.agreements.propose(PROVIDER, aid)
        suite.agreements.accept(CUSTOMER, aid)
        ids.append(aid)
    suite.metrics.record(
        COLLECTOR, [outage("o1", f"2026-02-02T10:00{AMS}", 30), *calls("a", f"2026-02-02T09:00{AMS}", 8, 2)]
    )
    suite.tick(f"2026-02-03T10:00{AMS}")
    return ids


def _a_batch(m: Metrics, n: int) -> None:
    m.record(
        COLLECTOR,
        [outage(f"o-{n}", f"2026-02-03T{10 + n:02d}:00{AMS}", 5), *calls(f"c{n}", f"2026-02-03T11:00{AMS}", 3, n)],
    )


def _decoded(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """Spy: the ids of the aggregates `m` decodes from the store (not found in its cache)."""
    decoded: list[UUID] = []
    reconstruct = m.repository._reconstruct_aggregate

    def spying(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(aggregate_id)
        return reconstruct(aggregate_id, *args, **kwargs)

    monkeypatch.setattr(m.repository, "_reconstruct_aggregate", spying)
    return decoded


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
